/**
 * `olmoe` (OLMoE-1B-7B): NEOX RoPE, RMSNorm of the whole projected Q and K, softmax router
 * without renormalisation. llama.cpp: `src/models/olmoe.cpp`.
 *
 * @module
 */

import { HPARAM_LIMITS } from "../hparams.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec } from "./types.ts";

/** The `olmoe` architecture. */
export const olmoe: ArchSpec = {
  name: "olmoe",
  ropeMode: 2,
  gating: "softmax",
  normTopK: false,
  tiedOutput: false,
  readHParams: (c) => ({
    nFfExp: c.check("expert_feed_forward_length", c.nFf, 1, HPARAM_LIMITS.nFf),
    nFfShexp: 0,
    expertWeightsScale: 0,
  }),
  loadLayer: (ld, hp, l) =>
    loadStandardLayer(ld, hp, l, { qkNorm: "full", shared: "none", legacyExperts: false }),
  forwardLayer: (c, l) => preNormBlock(c, l, "full"),
  synth: {
    vocab: "gpt2",
    // llama.cpp's olmoe declares attn_k_norm as [n_embd]: OLMoE has no GQA
    nHeadKv: (nHead) => nHead,
    layer: (c, l) => c.standardLayer(l, { qkNorm: "full" }),
  },
};
