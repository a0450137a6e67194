/**
 * The architecture table: one entry per supported GGUF `general.architecture`.
 * Adding an architecture = adding one entry here (plus tests).
 *
 * @module
 */

import type { RopeMode } from "../backend/backend.ts";
import type { Gating } from "../moe/router.ts";

/** How Q/K are normalised before RoPE. */
export type QkNorm =
  /** no Q/K norm */
  | "none"
  /** RMSNorm per head (`attn_q_norm` has `head_dim` weights): Qwen3-MoE */
  | "per_head"
  /** RMSNorm over the whole projected vector: OLMoE */
  | "full";

/** Facts about one architecture, taken from llama.cpp's model graphs. */
export interface ArchSpec {
  /** GGUF `general.architecture`. */
  readonly name: string;
  /** RoPE flavour. */
  readonly ropeMode: RopeMode;
  /** Q/K normalisation. */
  readonly qkNorm: QkNorm;
  /** Gate function of the router. */
  readonly gating: Gating;
  /** Renormalise the top-k weights (`norm_w`). */
  readonly normTopK: boolean;
  /** Whether `expert_weights_scale` is read. */
  readonly readsWeightsScale: boolean;
  /** Metadata key (without arch prefix) of the routed expert FFN width, tried before `feed_forward_length`. */
  readonly expertFfKey: string | null;
  /** Whether a Qwen2-style shared expert with a sigmoid gate may be present. */
  readonly sharedExpert: boolean;
  /** Whether `output.weight` may be absent (tied to `token_embd`). */
  readonly tiedOutput: boolean;
  /** Whether legacy per-expert tensors `blk.N.ffn_gate.E.weight` are accepted. */
  readonly legacyExperts: boolean;
}

const ARCHS: Record<string, ArchSpec> = {
  llama: {
    name: "llama",
    ropeMode: 0,
    qkNorm: "none",
    gating: "softmax",
    normTopK: true,
    readsWeightsScale: true,
    expertFfKey: null,
    sharedExpert: false,
    tiedOutput: true,
    legacyExperts: true,
  },
  qwen2moe: {
    name: "qwen2moe",
    ropeMode: 2,
    qkNorm: "none",
    gating: "softmax",
    normTopK: false,
    readsWeightsScale: false,
    expertFfKey: "expert_feed_forward_length",
    sharedExpert: true,
    tiedOutput: false,
    legacyExperts: false,
  },
  qwen3moe: {
    name: "qwen3moe",
    ropeMode: 2,
    qkNorm: "per_head",
    gating: "softmax",
    normTopK: true,
    readsWeightsScale: false,
    expertFfKey: "expert_feed_forward_length",
    sharedExpert: false,
    tiedOutput: true,
    legacyExperts: false,
  },
  olmoe: {
    name: "olmoe",
    ropeMode: 2,
    qkNorm: "full",
    gating: "softmax",
    normTopK: false,
    readsWeightsScale: false,
    expertFfKey: null,
    sharedExpert: false,
    tiedOutput: false,
    legacyExperts: false,
  },
};

/** Supported architecture names. */
export const SUPPORTED_ARCHS: readonly string[] = Object.keys(ARCHS);

/** The spec of `name`, or undefined when unsupported. */
export function archSpec(name: string): ArchSpec | undefined {
  return Object.hasOwn(ARCHS, name) ? ARCHS[name] : undefined;
}
