/**
 * `granitemoe` (IBM granite-3.x-1b-a400m, 3b-a800m): a llama block with four multipliers —
 * token embeddings × `embedding_scale`, attention and FFN outputs × `residual_scale` before each
 * residual add, attention scores × `attention.scale` (instead of `1/sqrt(head_dim)`), logits ÷
 * `logit_scale` — NORM RoPE, softmax router with renormalised top-k, an optional plain shared
 * expert (`expert_shared_feed_forward_length`, Granite-MoE-Shared). llama.cpp:
 * `src/models/granite-moe.cpp` (hparams, tensors) and `src/models/granite.cpp` (graph).
 *
 * @module
 */

import { HPARAM_LIMITS } from "../hparams.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec } from "./types.ts";

/** Bounds of Granite's multipliers: finite and positive (0 means "not set" where llama.cpp allows it). */
export const GRANITE_SCALE_RANGE: readonly [number, number] = [1e-6, 1e6];

/** Default multipliers of a synthetic granitemoe model (granite-3.x-1b-a400m's). */
export const GRANITE_SYNTH_SCALES = {
  embedding: 12,
  residual: 0.22,
  attention: 1 / 64,
  logit: 6,
} as const;

/** The `granitemoe` architecture. */
export const granitemoe: ArchSpec = {
  name: "granitemoe",
  ropeMode: 0,
  gating: "softmax",
  normTopK: true,
  tiedOutput: true,
  readHParams: (c) => {
    const R = GRANITE_SCALE_RANGE;
    return {
      nFfExp: c.check("expert_feed_forward_length", c.nFf, 1, HPARAM_LIMITS.nFf),
      nFfShexp: c.int("expert_shared_feed_forward_length", 0, 0, HPARAM_LIMITS.nFf),
      expertWeightsScale: 0,
      scales: {
        embedding: c.float("embedding_scale", 0, R, { orZero: true }),
        residual: c.float("residual_scale", 0, R, { orZero: true }),
        attention: c.float("attention.scale", 0, R, { orZero: true }),
        // required, as in llama.cpp (ml.get_key without `false`)
        logit: c.float("logit_scale", undefined, R),
      },
    };
  },
  loadLayer: (ld, hp, l) =>
    loadStandardLayer(ld, hp, l, { qkNorm: "none", shared: "plain", legacyExperts: false }),
  forwardLayer: (c, l) => preNormBlock(c, l, "none"),
  synth: {
    vocab: "gpt2",
    // Granite-MoE-Shared: a plain shared expert of spec.nFfShared (default none)
    layer: (c, l) => {
      const width = c.spec.nFfShared ?? 0;
      c.standardLayer(l, { shared: width > 0 ? { gated: false, width } : undefined });
    },
    meta: (c, p) => {
      // granite-3.x-1b-a400m's multipliers by default; 0 leaves one out of the file
      const gs = { ...GRANITE_SYNTH_SCALES, ...c.spec.graniteScales };
      const keys = [
        ["embedding_scale", gs.embedding],
        ["residual_scale", gs.residual],
        ["attention.scale", gs.attention],
        ["logit_scale", gs.logit],
      ] as const;
      const width = c.spec.nFfShared ?? 0;
      return [
        ...p.head,
        ...p.keyLength,
        c.u32("rope.dimension_count", c.headDim),
        ...keys.filter(([, v]) => v !== 0).map(([k, v]) => c.f32(k, v)),
        ...(width > 0 ? [c.u32("expert_shared_feed_forward_length", width)] : []),
        ...p.experts,
      ];
    },
  },
};
