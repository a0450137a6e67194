/**
 * `qwen3moe` (Qwen3-30B-A3B, 235B-A22B): NEOX RoPE, per-head RMSNorm of Q and K, softmax router
 * with renormalised top-k, tied output allowed. llama.cpp: `src/models/qwen3moe.cpp`.
 *
 * @module
 */

import { HPARAM_LIMITS } from "../hparams.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec } from "./types.ts";

/** The `qwen3moe` architecture. */
export const qwen3moe: ArchSpec = {
  name: "qwen3moe",
  ropeMode: 2,
  gating: "softmax",
  normTopK: true,
  tiedOutput: true,
  readHParams: (c) => {
    const L = HPARAM_LIMITS.nFf;
    return {
      nFfExp: c.check(
        "expert_feed_forward_length",
        c.num("expert_feed_forward_length", 0) || c.nFf,
        1,
        L,
      ),
      nFfShexp: 0,
      expertWeightsScale: 0,
    };
  },
  loadLayer: (ld, hp, l) =>
    loadStandardLayer(ld, hp, l, { qkNorm: "per_head", shared: "none", legacyExperts: false }),
  forwardLayer: (c, l) => preNormBlock(c, l, "per_head"),
  synth: {
    vocab: "gpt2",
    layer: (c, l) => c.standardLayer(l, { qkNorm: "per_head" }),
    // the converter always writes the head dim (Qwen3 heads are not n_embd / n_head wide)
    meta: (c, p) => [
      ...p.head,
      c.u32("attention.key_length", c.headDim),
      c.u32("attention.value_length", c.headDim),
      ...p.experts,
      c.u32("expert_feed_forward_length", c.nFf),
    ],
  },
};
