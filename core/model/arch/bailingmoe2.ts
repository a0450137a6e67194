/**
 * `bailingmoe2` (inclusionAI Ling-mini-2.0 16B-A1.4B, Ling-flash-2.0 100B-A6B): fused `attn_qkv`,
 * per-head Q/K RMSNorm, NEOX RoPE over part of each head (`rope.dimension_count`, half the head in
 * Ling 2.0), leading dense blocks, then MoE blocks with a router configured by keys
 * (`expert_gating_func`: sigmoid in Ling 2.0; the `exp_probs_b` selection bias; group-limited
 * top-k; `expert_weights_norm`; `expert_weights_scale`) and an always-present plain shared expert.
 * `block_count` also counts the NextN/MTP blocks (`nextn_predict_layers`) after the trunk: they
 * are not run (llama.cpp skips their tensors). llama.cpp: `src/models/bailingmoe2.cpp`.
 *
 * As llama.cpp: no attention biases (a file with `attn_qkv.bias` or `attn_output.bias`, which
 * llama.cpp refuses by its tensor count, is refused: `unsupported_tensor`); the Q part of `attn_qkv` is `n_embd` rows (so `n_head · head_dim` must be `n_embd`);
 * the shared expert is `(expert_shared_feed_forward_length or expert_feed_forward_length) ·
 * expert_shared_count` wide; the output matrix is required (no tied embeddings).
 *
 * @module
 */

import { ModelError } from "../../errors.ts";
import { gguf } from "../../formats/gguf_types.ts";
import { badHparam, HPARAM_FLOAT_RANGES, HPARAM_LIMITS } from "../hparams.ts";
import type { SyntheticBailingSpec } from "../synthetic.ts";
import type { LayerWeights } from "../weights.ts";
import { expertLocations, loadFfn, preNormBlock } from "./blocks.ts";
import { gatingOf, readExpertGroups } from "./routing.ts";
import type { ArchSpec, SynthContext, SynthMetaEntry, SynthMetaParts } from "./types.ts";

/** The `bailingmoe2` architecture. */
export const bailingmoe2: ArchSpec = {
  name: "bailingmoe2",
  ropeMode: 2,
  gating: "sigmoid",
  normTopK: false,
  tiedOutput: false,
  readHParams: (c) => {
    const L = HPARAM_LIMITS;
    // required by llama.cpp (ml.get_key without `false`)
    c.float("attention.layer_norm_rms_epsilon", undefined, HPARAM_FLOAT_RANGES.rmsEps, {
      openMin: true,
      openMax: true,
    });
    // block_count counts the NextN/MTP blocks after the trunk (llama.cpp n_layer_nextn)
    const nextn = c.int("nextn_predict_layers", 0, 0, c.nLayer - 1);
    const nLayer = c.nLayer - nextn;
    const lead = c.int("leading_dense_block_count", 0, 0, nLayer);
    if (c.nExpert === 0) {
      throw badHparam("expert_count", `${c.arch} needs expert_count > 0 (llama.cpp asserts it)`);
    }
    if (lead > 0 && c.nFf === 0) {
      throw badHparam("feed_forward_length", `${c.arch} dense blocks need feed_forward_length > 0`);
    }
    const nFfExp = c.int("expert_feed_forward_length", undefined, 1, L.nFf);
    const nFfSh = c.int("expert_shared_feed_forward_length", 0, 0, L.nFf);
    const nShared = c.int("expert_shared_count", undefined, 1, L.nExpert);
    const nFfShexp = c.check(
      "expert_shared_feed_forward_length × expert_shared_count",
      (nFfSh || nFfExp) * nShared,
      1,
      L.nFf,
    );
    const weightsScale = c.float(
      "expert_weights_scale",
      0,
      HPARAM_FLOAT_RANGES.expertWeightsScale,
    );
    const gating = gatingOf(c, c.int("expert_gating_func", undefined, 0, 255));
    const { nGroups, nGroupUsed } = readExpertGroups(c);
    return {
      nFfExp,
      nFfShexp,
      expertWeightsScale: weightsScale,
      nLayerDenseLead: lead,
      nLayer,
      routing: {
        gating,
        normTopK: c.bool("expert_weights_norm", false),
        weightsScale,
        nGroups,
        nGroupUsed,
      },
    };
  },
  loadLayer: loadBailingLayer,
  forwardLayer: (c, l) => preNormBlock(c, l, "per_head"),
  synth: {
    vocab: "gpt2",
    blockCount: (spec, nLayer) => nLayer + (spec.bailing?.nextn ?? 1),
    layer: synthLayer,
    meta: synthMeta,
  },
};

async function loadBailingLayer(
  ld: Parameters<ArchSpec["loadLayer"]>[0],
  hp: Parameters<ArchSpec["loadLayer"]>[1],
  l: number,
): Promise<LayerWeights> {
  const { nEmbd, nHead, nHeadKv, headDimK, headDimV } = hp;
  if (headDimV !== headDimK || nHead * headDimK !== nEmbd) {
    // llama.cpp: attn_qkv is [n_embd, n_embd + 2·n_embd_gqa] and the graph asserts equal K/V heads
    throw badHparam(
      "attention.key_length",
      `bailingmoe2 needs key_length = value_length and head_count × key_length = ` +
        `embedding_length: received ${headDimK}, ${headDimV}, ${nHead} × ${headDimK} vs ${nEmbd}`,
    );
  }
  const pre = `blk.${l}`;
  for (const b of ["attn_qkv.bias", "attn_output.bias"]) {
    // llama.cpp creates no attention biases for this architecture, so a file with them (a Ling
    // checkpoint with use_qkv_bias or use_bias) fails its tensor count there: refused, not ignored
    if (ld.info(`${pre}.${b}`, false)) {
      throw new ModelError(
        "unsupported_tensor",
        `Cannot load model: bailingmoe2 has no attention biases in llama.cpp, but '${pre}.${b}' ` +
          `is in the file`,
        { tensor: `${pre}.${b}` },
      );
    }
  }
  const kvDim = nHeadKv * headDimK;
  const attnNorm = await ld.vector(`${pre}.attn_norm.weight`, nEmbd);
  const [wq, wk, wv] = await ld.matrixSplit(`${pre}.attn_qkv.weight`, nEmbd, [nEmbd, kvDim, kvDim]);
  const wo = await ld.matrix(`${pre}.attn_output.weight`, nHead * headDimK, nEmbd);
  const qNorm = await ld.vector(`${pre}.attn_q_norm.weight`, headDimK);
  const kNorm = await ld.vector(`${pre}.attn_k_norm.weight`, headDimK);
  const ffnNorm = await ld.vector(`${pre}.ffn_norm.weight`, nEmbd);
  const isMoe = l >= hp.nLayerDenseLead;
  const gateInp = isMoe ? await ld.matrix(`${pre}.ffn_gate_inp.weight`, nEmbd, hp.nExpert) : null;
  const expProbsB = isMoe ? await ld.vector(`${pre}.exp_probs_b.bias`, hp.nExpert, false) : null;
  // llama.cpp requires the routed experts' gate (expertLocations alone would accept silu(up))
  if (isMoe) ld.info(`${pre}.ffn_gate_exps.weight`, true);
  const shared = isMoe
    ? { weights: await loadFfn(ld, pre, "_shexp", nEmbd, hp.nFfShexp), gate: null }
    : null;
  return {
    attnNorm,
    wq,
    wk,
    wv,
    wo,
    mla: null,
    bq: null,
    bk: null,
    bv: null,
    bo: null,
    qNorm,
    kNorm,
    ffnNorm,
    gateInp,
    expProbsB,
    dense: isMoe ? null : await loadFfn(ld, pre, "", nEmbd, hp.nFf),
    shared,
    experts: isMoe ? expertLocations(ld, hp, l, false) : [],
  };
}

/**
 * A synthetic model's bailingmoe2 options ({@link SyntheticBailingSpec}) with their defaults:
 * 1 leading dense block of `2·nFf`, sigmoid gating with `exp_probs_b`, no groups, renormalised
 * weights × 2.5, 1 shared expert, half-head rotary, 1 NextN block.
 */
function synthOptions(c: SynthContext) {
  const b: SyntheticBailingSpec = c.spec.bailing ?? {};
  return {
    denseLead: Math.min(c.nLayer, b.denseLead ?? 1),
    nFfDense: b.nFfDense ?? 2 * c.nFf,
    gating: b.gating ?? "sigmoid",
    probsBias: b.probsBias ?? true,
    groups: b.groups,
    norm: b.norm ?? true,
    scale: b.scale ?? 2.5,
    nShared: b.nShared ?? 1,
    ropeDim: b.ropeDim ?? c.headDim / 2,
    nextn: b.nextn ?? 1,
  };
}

/** The tensors of synthetic block `l` after `attn_norm`; the NextN blocks follow the last one. */
function synthLayer(c: SynthContext, l: number): void {
  const b = synthOptions(c);
  const block = (i: number, dense: boolean) =>
    c.standardLayer(i, {
      fusedQkv: true,
      qkNorm: "per_head",
      dense: dense ? b.nFfDense : undefined,
      probsBias: b.probsBias,
      shared: { gated: false, width: c.nFf * b.nShared },
    });
  block(l, l < b.denseLead);
  if (l !== c.nLayer - 1) return;
  // NextN/MTP blocks: a full MoE block plus the nextn tensors llama.cpp declares (and skips)
  for (let i = c.nLayer; i < c.nLayer + b.nextn; i++) {
    const p = `blk.${i}`;
    c.norm(`${p}.attn_norm.weight`, c.nEmbd);
    block(i, false);
    c.mat(`${p}.nextn.eh_proj.weight`, 2 * c.nEmbd, c.nEmbd);
    c.norm(`${p}.nextn.enorm.weight`, c.nEmbd);
    c.norm(`${p}.nextn.hnorm.weight`, c.nEmbd);
    c.norm(`${p}.layer_output_norm.weight`, c.nEmbd);
  }
}

/** Synthetic bailingmoe2 metadata, in the order llama.cpp's converter writes it. */
function synthMeta(c: SynthContext, p: SynthMetaParts): SynthMetaEntry[] {
  const b = synthOptions(c);
  const ff = c.key("feed_forward_length"), bc = c.key("block_count");
  const meta: SynthMetaEntry[] = [
    ...p.head.map((m): SynthMetaEntry =>
      m[0] === ff
        ? c.u32("feed_forward_length", b.nFfDense)
        : m[0] === bc
        ? c.u32("block_count", c.nLayer + b.nextn)
        : m
    ),
    ...p.keyLength,
    ...p.experts,
  ];
  if (b.groups) {
    meta.push(
      c.u32("expert_group_count", b.groups[0]),
      c.u32("expert_group_used_count", b.groups[1]),
    );
  }
  meta.push(
    c.u32("expert_gating_func", b.gating === "sigmoid" ? 2 : 1),
    c.u32("rope.dimension_count", b.ropeDim),
    c.u32("leading_dense_block_count", b.denseLead),
    c.u32("expert_feed_forward_length", c.nFf),
    // per shared expert: llama.cpp multiplies it by expert_shared_count
    c.u32("expert_shared_feed_forward_length", c.nFf),
    c.f32("expert_weights_scale", b.scale),
    c.u32("expert_shared_count", b.nShared),
    [c.key("expert_weights_norm"), gguf.bool(b.norm)],
    c.u32("nextn_predict_layers", b.nextn),
  );
  return meta;
}
