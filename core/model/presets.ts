/**
 * Real-size model presets for the synthesizer: the shapes (hyper-parameters,
 * vocabulary size, tensor set) of published MoE models, with random weights
 * quantized by llama.cpp's type mixes (`Q4_K_M`, `Q3_K_M`, `Q2_K`: see
 * `quantMixType` in synthetic.ts, after `llama_tensor_get_type` in llama.cpp
 * src/llama-quant.cpp). Written to disk by `tools/synth.ts` through the
 * streaming writer (synthetic_stream.ts), so an 18 GB file needs little RAM.
 *
 * Shapes are from the models' GGUF metadata as llama.cpp's converter writes
 * it (docs/memory.md lists them with their file sizes).
 *
 * @module
 */

import { ModelError } from "../errors.ts";
import { buildTestVocab } from "../tokenizer/test_vocab.ts";
import type { VocabSpec } from "../tokenizer/types.ts";
import type { QuantMix, SyntheticModelSpec } from "./synthetic.ts";

/** A named real-size shape. */
export interface ModelPreset {
  /** Preset name (`olmoe-1b-7b`, …). */
  readonly name: string;
  /** The published model it copies the shape of. */
  readonly model: string;
  /** Synthesizer spec at full depth, without `mix` (added by {@linkcode presetSpec}). */
  readonly spec: SyntheticModelSpec;
  /** gpt2 pre-tokenizer name of its vocabulary. */
  readonly pre: string;
}

/**
 * The mixes presets are made with (llama.cpp `--ftype` names; `MXFP4_MOE` is how gpt-oss ships:
 * MXFP4 experts, Q8_0 elsewhere).
 */
export const PRESET_MIXES: readonly QuantMix[] = ["Q4_K_M", "Q3_K_M", "Q2_K", "MXFP4_MOE"];

/** Every preset, by name. */
export const PRESETS: Readonly<Record<string, ModelPreset>> = {
  "olmoe-1b-7b": {
    name: "olmoe-1b-7b",
    model: "allenai/OLMoE-1B-7B-0924",
    pre: "olmo",
    spec: {
      arch: "olmoe",
      nEmbd: 2048,
      nLayer: 16,
      nHead: 16,
      nHeadKv: 16,
      headDim: 128,
      nExpert: 64,
      nExpertUsed: 8,
      nFf: 1024,
      nVocab: 50304,
      nCtx: 4096,
      ropeBase: 10000,
    },
  },
  "qwen3-30b-a3b": {
    name: "qwen3-30b-a3b",
    model: "Qwen/Qwen3-30B-A3B",
    pre: "qwen2",
    spec: {
      arch: "qwen3moe",
      nEmbd: 2048,
      nLayer: 48,
      nHead: 32,
      nHeadKv: 4,
      headDim: 128,
      nExpert: 128,
      nExpertUsed: 8,
      nFf: 768,
      nVocab: 151936,
      nCtx: 40960,
      ropeBase: 1000000,
    },
  },
  "gpt-oss-20b": {
    name: "gpt-oss-20b",
    model: "openai/gpt-oss-20b",
    pre: "gpt-2", // the real one is "gpt-4o" (not implemented by the tokenizer)
    spec: {
      arch: "gpt-oss",
      nEmbd: 2880,
      nLayer: 24,
      nHead: 64,
      nHeadKv: 8,
      headDim: 64,
      nExpert: 32,
      nExpertUsed: 4,
      nFf: 2880,
      nVocab: 201088,
      nCtx: 131072,
      ropeBase: 150000,
      gptOss: { window: 128, pattern: 2, yarn: { factor: 32, origCtx: 4096 } },
    },
  },
  "granite-3.1-3b-a800m": {
    name: "granite-3.1-3b-a800m",
    model: "ibm-granite/granite-3.1-3b-a800m-instruct",
    pre: "gpt-2", // the real one is "refact" (not implemented by the tokenizer)
    spec: {
      arch: "granitemoe",
      nEmbd: 1536,
      nLayer: 32,
      nHead: 24,
      nHeadKv: 8,
      headDim: 64,
      nExpert: 40,
      nExpertUsed: 8,
      nFf: 512,
      nVocab: 49155,
      nCtx: 131072,
      ropeBase: 10000000,
      graniteScales: { embedding: 12, residual: 0.22, attention: 0.015625, logit: 6 },
    },
  },
  "deepseek-v2-lite": {
    name: "deepseek-v2-lite",
    model: "deepseek-ai/DeepSeek-V2-Lite",
    pre: "gpt-2", // the real one is "deepseek-llm" (not implemented by the tokenizer)
    spec: {
      arch: "deepseek2",
      nEmbd: 2048,
      nLayer: 27,
      nHead: 16,
      nExpert: 64,
      nExpertUsed: 6,
      nFf: 1408,
      nVocab: 102400,
      nCtx: 163840,
      ropeBase: 10000,
      deepseek: {
        qLoraRank: 0,
        kvLoraRank: 512,
        nopeDim: 128,
        ropeDim: 64,
        vDim: 128,
        denseLead: 1,
        nFfDense: 10944,
        nShared: 2,
        gating: "softmax",
        scale: 1,
        yarn: { factor: 40, origCtx: 4096, logMul: 0.0707 },
      },
    },
  },
  "ernie-4.5-21b-a3b": {
    name: "ernie-4.5-21b-a3b",
    model: "baidu/ERNIE-4.5-21B-A3B-PT",
    pre: "gpt-2", // the real vocabulary is SentencePiece (llama), not byte-level BPE
    spec: {
      arch: "ernie4_5-moe",
      nEmbd: 2560,
      nLayer: 28,
      nHead: 20,
      nHeadKv: 4,
      headDim: 128,
      nExpert: 64,
      nExpertUsed: 6,
      nFf: 1536,
      // the converter writes intermediate_size / num_key_value_heads (2 shared experts of 1536)
      nFfShared: 3072,
      nVocab: 103424,
      nCtx: 131072,
      ropeBase: 500000,
      tiedOutput: true,
      ernie: { denseLead: 1, nFfDense: 12288, probsBias: true },
    },
  },
  "ling-mini-2.0": {
    name: "ling-mini-2.0",
    model: "inclusionAI/Ling-mini-2.0",
    pre: "bailingmoe2",
    // sizes, layers, experts, dense layer and vocabulary as published; heads, RoPE base, expert
    // groups used and routed scale from its config.json as recalled, not checked against a GGUF
    spec: {
      arch: "bailingmoe2",
      nEmbd: 2048,
      nLayer: 20,
      nHead: 16,
      nHeadKv: 4,
      headDim: 128,
      nExpert: 256,
      nExpertUsed: 8,
      nFf: 512,
      nVocab: 157184,
      nCtx: 32768,
      ropeBase: 600000,
      bailing: {
        denseLead: 1,
        nFfDense: 5120,
        gating: "sigmoid",
        probsBias: true,
        groups: [8, 4],
        norm: true,
        scale: 2.5,
        nShared: 1,
        ropeDim: 64,
        nextn: 1,
      },
    },
  },
};

/** Options of {@linkcode presetSpec}. */
export interface PresetOptions {
  /** Type mix (default `Q4_K_M`). */
  readonly mix?: QuantMix;
  /** Keep only the first `layers` blocks (reduced-depth tests; the mix follows the new depth). */
  readonly layers?: number;
  /** Keep only this many experts per layer (reduced tests; top-k clamped to it). */
  readonly experts?: number;
  /** Vocabulary size override (reduced tests). */
  readonly vocab?: number;
  /** Seed of the random weights (default 1). */
  readonly seed?: number;
}

/**
 * The synthesizer spec of preset `name` with `opts`. Throws `ModelError`
 * `"unknown_preset"` (naming the presets) or `"bad_spec"`.
 */
export function presetSpec(name: string, opts: PresetOptions = {}): SyntheticModelSpec {
  const p = PRESETS[name];
  if (!p) {
    throw new ModelError(
      "unknown_preset",
      `Unknown preset '${name}': one of ${Object.keys(PRESETS).join(", ")}`,
      { name },
    );
  }
  const mix = opts.mix ?? "Q4_K_M";
  if (!PRESET_MIXES.includes(mix)) {
    throw new ModelError("bad_spec", `Unknown mix '${mix}': one of ${PRESET_MIXES.join(", ")}`);
  }
  for (const k of ["layers", "experts", "vocab"] as const) {
    const v = opts[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) {
      throw new ModelError("bad_spec", `Preset option ${k} must be a positive integer: ${v}`);
    }
  }
  const s = p.spec;
  const nExpert = Math.min(opts.experts ?? s.nExpert!, s.nExpert!);
  const nVocab = opts.vocab ?? s.nVocab!;
  const nLayer = Math.min(opts.layers ?? s.nLayer!, s.nLayer!);
  return {
    ...s,
    nLayer,
    nExpert,
    nExpertUsed: Math.min(s.nExpertUsed!, nExpert),
    nVocab,
    vocab: presetVocab(nVocab, p.pre),
    mix,
    seed: opts.seed ?? 1,
  };
}

/** Largest vocabulary the test-vocabulary builder learns. */
const LEARNED_MAX = 65536;

/**
 * A gpt2 (byte-level BPE) vocabulary of exactly `size` tokens: the test
 * vocabulary (learned merges, up to 65 536 tokens) followed by inert NORMAL
 * tokens `<extra_N>` that no merge produces (real vocabularies of 100–200 k
 * tokens are mostly such rare pieces as far as a random-weight model goes).
 */
export function presetVocab(size: number, pre: string): VocabSpec {
  const v = buildTestVocab("gpt2", { size: Math.min(size, LEARNED_MAX), pre });
  if (size <= LEARNED_MAX) return v;
  const tokens = [...v.tokens];
  const types = Array.from(v.tokenTypes ?? new Array(tokens.length).fill(1));
  const seen = new Set(tokens);
  for (let i = 0; tokens.length < size; i++) {
    const t = `<extra_${i}>`;
    if (seen.has(t)) continue;
    tokens.push(t);
    types.push(1);
  }
  return {
    ...v,
    tokens,
    tokenTypes: Int32Array.from(types),
    scores: v.scores === undefined ? undefined : Float32Array.from(
      { length: size },
      (_, i) => i < v.scores!.length ? v.scores![i] : 0,
    ),
  };
}
