/**
 * `ernie4_5-moe` (Baidu ERNIE-4.5-21B-A3B, 300B-A47B): a llama block (NORM RoPE over the whole
 * head, GQA, optional Q/K/V biases) with leading dense blocks (`leading_dense_block_count`), then
 * MoE blocks: softmax router with renormalised top-k and the `exp_probs_b` selection bias
 * (ERNIE's `e_score_correction_bias`), an optional plain shared expert
 * (`expert_shared_feed_forward_length`), tied output allowed. llama.cpp: `src/models/ernie4-5.cpp`
 * (hparams, tensors) and `src/models/ernie4-5-moe.cpp` (graph).
 *
 * As llama.cpp: `attn_output.bias` is loaded there but never added (the graph passes no bias), so
 * it is ignored here too; `expert_weights_scale` is not read (no scaling); a block is MoE when
 * `l ≥ leading_dense_block_count` and `(l + 1) % interleave_moe_layer_step = 0`, and only those
 * blocks have router and expert tensors, so a step that would leave a later block dense (without
 * dense tensors) is refused.
 *
 * @module
 */

import { ModelError } from "../../errors.ts";
import { badHparam, HPARAM_FLOAT_RANGES, HPARAM_LIMITS } from "../hparams.ts";
import type { SyntheticErnieSpec } from "../synthetic.ts";
import { loadStandardLayer, preNormBlock } from "./blocks.ts";
import type { ArchSpec, SynthContext, SynthMetaEntry, SynthMetaParts } from "./types.ts";

/**
 * A synthetic model's ERNIE options ({@link SyntheticErnieSpec}) with their defaults: 1 leading
 * dense block (every block when there are no experts) of `2·nFf`, `exp_probs_b` on, a shared
 * expert of `nFfShared` (default `nFf`).
 */
function synthOptions(c: SynthContext) {
  const e: SyntheticErnieSpec = c.spec.ernie ?? {};
  return {
    denseLead: c.nExpert === 0 ? c.nLayer : Math.min(c.nLayer, e.denseLead ?? 1),
    nFfDense: e.nFfDense ?? 2 * c.nFf,
    probsBias: e.probsBias ?? true,
    shared: c.spec.nFfShared ?? c.nFf,
  };
}

/** The `ernie4_5-moe` architecture. */
export const ernie45Moe: ArchSpec = {
  name: "ernie4_5-moe",
  ropeMode: 0,
  gating: "softmax",
  normTopK: true,
  tiedOutput: true,
  readHParams: (c) => {
    const L = HPARAM_LIMITS;
    // required by llama.cpp (ml.get_key without `false`)
    c.float("attention.layer_norm_rms_epsilon", undefined, HPARAM_FLOAT_RANGES.rmsEps, {
      openMin: true,
      openMax: true,
    });
    const nFfExp = c.int("expert_feed_forward_length", undefined, 1, L.nFf);
    const nFfShexp = c.int("expert_shared_feed_forward_length", 0, 0, L.nFf);
    const step = c.int("interleave_moe_layer_step", undefined, 1, c.nLayer);
    const lead = c.int("leading_dense_block_count", 0, 0, c.nLayer);
    for (let l = lead; l < c.nLayer; l++) {
      if ((l + 1) % step !== 0) {
        throw new ModelError(
          "unsupported_hparam",
          `Cannot load model: ${c.arch}.interleave_moe_layer_step ${step} makes block ${l} ` +
            `(after the ${lead} leading dense blocks) dense, but llama.cpp gives such blocks ` +
            `expert tensors only`,
          { field: "interleave_moe_layer_step" },
        );
      }
    }
    if (lead < c.nLayer && c.nExpert === 0) {
      throw badHparam("expert_count", `${c.arch} MoE blocks need expert_count > 0`);
    }
    if (lead > 0 && c.nFf === 0) {
      throw badHparam("feed_forward_length", `${c.arch} dense blocks need feed_forward_length > 0`);
    }
    return { nFfExp, nFfShexp, expertWeightsScale: 0, nLayerDenseLead: lead };
  },
  loadLayer: async (ld, hp, l) => {
    if (hp.nRot !== hp.headDimK || hp.headDimV !== hp.headDimK) {
      // llama.cpp asserts n_embd_head_v == n_embd_head_k == n_rot
      throw badHparam(
        "rope.dimension_count",
        `ernie4_5-moe needs rope.dimension_count = key_length = value_length: ` +
          `received ${hp.nRot}, ${hp.headDimK}, ${hp.headDimV}`,
      );
    }
    const dense = l < hp.nLayerDenseLead;
    const lw = await loadStandardLayer(ld, hp, l, {
      qkNorm: "none",
      shared: "plain",
      legacyExperts: false,
      dense,
    });
    return {
      ...lw,
      // loaded by llama.cpp, not used by its graph
      bo: null,
      expProbsB: dense ? null : await ld.vector(`blk.${l}.exp_probs_b.bias`, hp.nExpert, false),
    };
  },
  forwardLayer: (c, l) => preNormBlock(c, l, "none"),
  synth: {
    vocab: "llama",
    layer: (c: SynthContext, l: number) => {
      const e = synthOptions(c);
      c.standardLayer(l, {
        dense: l < e.denseLead ? e.nFfDense : undefined,
        probsBias: e.probsBias,
        shared: e.shared > 0 ? { gated: false, width: e.shared } : undefined,
      });
    },
    // the converter's order: common keys, expert counts, then the MoE keys
    meta: (c: SynthContext, p: SynthMetaParts): SynthMetaEntry[] => {
      const e = synthOptions(c);
      const ff = c.key("feed_forward_length");
      return [
        ...p.head.map((m): SynthMetaEntry =>
          m[0] === ff ? c.u32("feed_forward_length", e.nFfDense) : m
        ),
        ...p.keyLength,
        ...p.experts,
        c.u32("interleave_moe_layer_step", 1),
        c.u32("leading_dense_block_count", e.denseLead),
        c.u32("expert_feed_forward_length", c.nFf),
        ...(e.shared > 0
          ? [c.u32("expert_shared_count", 1), c.u32("expert_shared_feed_forward_length", e.shared)]
          : []),
      ];
    },
  },
};
