/**
 * `qwen2moe` (Qwen1.5-MoE, Qwen2-57B-A14B): NEOX RoPE, Q/K/V biases, softmax router without
 * renormalisation, and a shared expert gated by `sigmoid(ffn_gate_inp_shexp · x)`.
 * llama.cpp: `src/models/qwen2moe.cpp`.
 *
 * @module
 */

import { HPARAM_LIMITS } from "../hparams.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec, SynthMetaEntry } from "./types.ts";

/** The `qwen2moe` architecture. */
export const qwen2moe: ArchSpec = {
  name: "qwen2moe",
  ropeMode: 2,
  gating: "softmax",
  normTopK: false,
  tiedOutput: false,
  readHParams: (c) => {
    const L = HPARAM_LIMITS.nFf;
    // without expert_feed_forward_length, llama.cpp's converter meant n_ff / n_expert_used
    const fallback = c.nExpertUsed ? Math.floor(c.nFf / c.nExpertUsed) : c.nFf;
    return {
      nFfExp: c.check(
        "expert_feed_forward_length",
        c.num("expert_feed_forward_length", 0) || fallback,
        1,
        L,
      ),
      nFfShexp: c.int("expert_shared_feed_forward_length", c.nFf, 0, L),
      expertWeightsScale: 0,
    };
  },
  loadLayer: (ld, hp, l) =>
    loadStandardLayer(ld, hp, l, { qkNorm: "none", shared: "gated", legacyExperts: false }),
  forwardLayer: (c, l) => preNormBlock(c, l, "none"),
  synth: {
    vocab: "gpt2",
    // shared expert width: spec.nFfShared, default the expert width
    layer: (c, l) =>
      c.standardLayer(l, { shared: { gated: true, width: c.spec.nFfShared ?? c.nFf } }),
    meta: (c, p) => {
      const nFfSh = c.spec.nFfShared ?? c.nFf;
      const ff = c.key("feed_forward_length");
      return [
        ...p.head.map((e): SynthMetaEntry => e[0] === ff ? c.u32("feed_forward_length", nFfSh) : e),
        ...p.keyLength,
        ...p.experts,
        c.u32("expert_feed_forward_length", c.nFf),
        c.u32("expert_shared_feed_forward_length", nFfSh),
      ];
    },
  },
};
