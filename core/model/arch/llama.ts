/**
 * `llama` (Mixtral-style MoE, and dense llama): NORM RoPE, softmax router with renormalised
 * top-k and optional `expert_weights_scale`, tied output allowed, legacy per-expert tensors
 * accepted. llama.cpp: `src/models/llama.cpp`.
 *
 * @module
 */

import { HPARAM_FLOAT_RANGES, HPARAM_LIMITS } from "../hparams.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec } from "./types.ts";

/** The `llama` architecture. */
export const llama: ArchSpec = {
  name: "llama",
  ropeMode: 0,
  gating: "softmax",
  normTopK: true,
  tiedOutput: true,
  readHParams: (c) => ({
    nFfExp: c.check("expert_feed_forward_length", c.nFf, 1, HPARAM_LIMITS.nFf),
    nFfShexp: 0,
    expertWeightsScale: c.float("expert_weights_scale", 0, HPARAM_FLOAT_RANGES.expertWeightsScale),
  }),
  loadLayer: (ld, hp, l) =>
    loadStandardLayer(ld, hp, l, { qkNorm: "none", shared: "none", legacyExperts: true }),
  forwardLayer: (c, l) => preNormBlock(c, l, "none"),
  synth: {
    vocab: "llama",
    meta: (c, p) => [
      ...p.head,
      ...p.keyLength,
      c.u32("rope.dimension_count", c.headDim),
      ...p.experts,
    ],
  },
};
