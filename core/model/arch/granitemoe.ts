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
};
