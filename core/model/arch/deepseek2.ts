/**
 * `deepseek2` (DeepSeek-V2-Lite 16B-A2.4B, DeepSeek-V2/V3 layouts): multi-head latent attention
 * in its absorbed form, leading dense blocks, routed + shared experts, softmax or sigmoid gating
 * with the selection bias `exp_probs_b`, group-limited routing, `expert_weights_norm`/`scale`,
 * YaRN. llama.cpp: `src/models/deepseek2.cpp` (MLA branch).
 *
 * MLA as llama.cpp runs it: the KV cache holds, per token, one "head" of `kv_lora_rank + n_rot`
 * (the RMS-normed latent and the rotated shared key) and the latent again as V — not `n_head`
 * full keys and values. Each query head's no-rope part is absorbed into the latent space by
 * `attn_k_b[h]`, attention runs as MQA over the cache, and `attn_v_b[h]` decompresses each head's
 * output before `attn_output`. Files without the MLA keys (older conversions with `attn_kv_b`)
 * run llama.cpp's other branch: the latent is decompressed per head and the cache holds full K/V.
 *
 * @module
 */

import { ModelError } from "../../errors.ts";
import { gguf } from "../../formats/gguf_types.ts";
import { GgmlType } from "../../tensor/ggml_type.ts";
import type { Gating } from "../../moe/router.ts";
import { badHparam, HPARAM_FLOAT_RANGES, HPARAM_LIMITS } from "../hparams.ts";
import type { LayerWeights } from "../weights.ts";
import { addResidual, attend, expertLocations, feedForward, loadFfn, rmsNorm } from "./blocks.ts";
import { applyRope } from "./rope.ts";
import { gatingOf, readExpertGroups } from "./routing.ts";
import type {
  ArchSpec,
  LayerContext,
  SynthContext,
  SynthMetaEntry,
  SynthMetaParts,
} from "./types.ts";
import type { SyntheticDeepseekSpec } from "../synthetic.ts";

const f = Math.fround;

/** The `deepseek2` architecture. */
export const deepseek2: ArchSpec = {
  name: "deepseek2",
  ropeMode: 0,
  gating: "softmax",
  normTopK: false,
  tiedOutput: true,
  readHParams: (c) => {
    const L = HPARAM_LIMITS;
    const nHeadKv = c.num("attention.head_count_kv", 0);
    const hasK = c.has("attention.key_length_mla"), hasV = c.has("attention.value_length_mla");
    if (hasK !== hasV) {
      throw badHparam(
        "attention.key_length_mla",
        "attention.key_length_mla and attention.value_length_mla must be both present (MLA) " +
          "or both absent",
      );
    }
    const absorbed = hasK;
    const kvLoraRank = c.int("attention.kv_lora_rank", undefined, 1, L.headDim);
    const qLoraRank = c.int("attention.q_lora_rank", 0, 0, L.nEmbd);
    const keyLength = c.num("attention.key_length", 0);
    const valueLength = c.num("attention.value_length", 0);
    const nRot = c.num("rope.dimension_count", keyLength);
    let headDimKMla: number, headDimVMla: number;
    if (absorbed) {
      headDimKMla = c.int("attention.key_length_mla", undefined, 2, L.headDim);
      headDimVMla = c.int("attention.value_length_mla", undefined, 1, L.headDim);
      // the converter writes MLA as MQA over the latent: one KV head of kv_lora_rank + n_rot
      if (nHeadKv !== 1 || keyLength !== kvLoraRank + nRot || valueLength !== kvLoraRank) {
        throw badHparam(
          "attention.key_length",
          `deepseek2 MLA needs head_count_kv 1, key_length kv_lora_rank + rope.dimension_count ` +
            `(${kvLoraRank} + ${nRot}) and value_length kv_lora_rank: received ${nHeadKv}, ` +
            `${keyLength}, ${valueLength}`,
        );
      }
    } else {
      // older conversions (attn_kv_b): full multi-head K/V of key_length / value_length per head
      headDimKMla = keyLength;
      headDimVMla = valueLength;
      if (nHeadKv !== c.num("attention.head_count", 0)) {
        throw badHparam(
          "attention.head_count_kv",
          `deepseek2 without MLA keys needs head_count_kv = head_count: received ${nHeadKv}`,
        );
      }
    }
    if (headDimKMla <= nRot) {
      throw badHparam(
        "attention.key_length_mla",
        `deepseek2 per-head key length ${headDimKMla} must exceed rope.dimension_count ${nRot}`,
      );
    }
    const nLayerDenseLead = c.int("leading_dense_block_count", 0, 0, c.nLayer);
    const nFfExp = c.int("expert_feed_forward_length", undefined, 1, L.nFf);
    const nShared = c.int("expert_shared_count", undefined, 0, L.nExpert);
    if (nLayerDenseLead < c.nLayer && c.nExpert === 0) {
      throw badHparam("expert_count", "deepseek2 MoE blocks need expert_count > 0");
    }
    for (const key of ["nextn_predict_layers", "attention.temperature_scale"]) {
      // multi-token-prediction blocks and attention temperature are not run here: refuse them
      // rather than evaluate the MTP block as a trunk block or skip a score scale
      if (c.has(key) && c.num(key) !== 0) {
        throw new ModelError(
          "unsupported_hparam",
          `Cannot load model: deepseek2.${key} ${c.num(key)} is not supported`,
          { field: key },
        );
      }
    }
    const gf = c.int("expert_gating_func", 0, 0, 4);
    // llama.cpp: unset gating is softmax, except GLM-4.7-Flash (47/48 blocks, 154880 tokens)
    const glm = (c.nLayer === 47 || c.nLayer === 48) && c.nVocab === 154880;
    const gating: Gating = gf === 0 ? (glm ? "sigmoid" : "softmax") : gatingOf(c, gf);
    const { nGroups, nGroupUsed } = readExpertGroups(c);
    const expertWeightsScale = c.float(
      "expert_weights_scale",
      0,
      HPARAM_FLOAT_RANGES.expertWeightsScale,
    );
    // llama.cpp stores rope.scaling.yarn_log_multiplier / 0.1 (the converter wrote 0.1 × mscale_all_dim)
    const yarnLogMul = c.has("rope.scaling.yarn_log_multiplier")
      ? f(c.float("rope.scaling.yarn_log_multiplier", 0, [0, 1e3]) / f(0.1))
      : 0;
    const yarn = c.yarn(yarnLogMul, true);
    const kqScale = deepseek2KqScale(
      yarn?.attnFactor ?? 1,
      c.ropeFreqScale,
      yarnLogMul,
      headDimKMla,
    );
    return {
      nFfExp,
      nFfShexp: nFfExp * nShared,
      expertWeightsScale,
      routing: {
        gating,
        normTopK: c.bool("expert_weights_norm", false),
        weightsScale: expertWeightsScale,
        nGroups,
        nGroupUsed,
      },
      nLayerDenseLead,
      yarn,
      scales: { attention: kqScale },
      mla: {
        absorbed,
        qLoraRank,
        kvLoraRank,
        headDimK: headDimKMla,
        headDimV: headDimVMla,
        kqScale,
      },
    };
  },
  loadLayer: loadDeepseek2Layer,
  forwardLayer: deepseek2Block,
  synth: { vocab: "gpt2", layer: synthLayer, meta: synthMeta },
};

/**
 * The attention score scale of the deepseek2 graph: `mscale² / sqrt(key_length_mla)` with
 * `mscale = attn_factor·(1 + 0.1·ln(1/freq_scale))·(1 + 0.1·log_mul·ln(1/freq_scale))`, in f32.
 */
export function deepseek2KqScale(
  attnFactor: number,
  freqScale: number,
  logMul: number,
  headDimKMla: number,
): number {
  const ln = f(Math.log(f(1 / f(freqScale))));
  const org = f(f(attnFactor) * f(1 + f(0.1 * ln)));
  const mscale = f(org * f(1 + f(f(f(0.1 * f(logMul)) * ln))));
  return f(f(mscale * mscale) / f(Math.sqrt(headDimKMla)));
}

async function loadDeepseek2Layer(
  ld: Parameters<ArchSpec["loadLayer"]>[0],
  hp: Parameters<ArchSpec["loadLayer"]>[1],
  l: number,
): Promise<LayerWeights> {
  const m = hp.mla!;
  const { nEmbd, nHead, nRot } = hp;
  const pre = `blk.${l}`;
  const nope = m.headDimK - nRot;
  const qLora = m.qLoraRank > 0;
  const attnNorm = await ld.vector(`${pre}.attn_norm.weight`, nEmbd);
  const mla = {
    wq: qLora ? null : await ld.matrix(`${pre}.attn_q.weight`, nEmbd, nHead * m.headDimK),
    wqA: qLora ? await ld.matrix(`${pre}.attn_q_a.weight`, nEmbd, m.qLoraRank) : null,
    qANorm: qLora ? await ld.vector(`${pre}.attn_q_a_norm.weight`, m.qLoraRank) : null,
    wqB: qLora ? await ld.matrix(`${pre}.attn_q_b.weight`, m.qLoraRank, nHead * m.headDimK) : null,
    wkvA: await ld.matrix(`${pre}.attn_kv_a_mqa.weight`, nEmbd, m.kvLoraRank + nRot),
    kvANorm: await ld.vector(`${pre}.attn_kv_a_norm.weight`, m.kvLoraRank),
    wkB: m.absorbed
      ? await ld.matrixStack(`${pre}.attn_k_b.weight`, nope, m.kvLoraRank, nHead)
      : [],
    wvB: m.absorbed
      ? await ld.matrixStack(`${pre}.attn_v_b.weight`, m.kvLoraRank, m.headDimV, nHead)
      : [],
    wkvB: m.absorbed
      ? null
      : await ld.matrix(`${pre}.attn_kv_b.weight`, m.kvLoraRank, nHead * (nope + m.headDimV)),
  };
  const wo = await ld.matrix(`${pre}.attn_output.weight`, nHead * m.headDimV, nEmbd);
  const ffnNorm = await ld.vector(`${pre}.ffn_norm.weight`, nEmbd);
  const isMoe = l >= hp.nLayerDenseLead;
  const gateInp = isMoe ? await ld.matrix(`${pre}.ffn_gate_inp.weight`, nEmbd, hp.nExpert) : null;
  const expProbsB = isMoe ? await ld.vector(`${pre}.exp_probs_b.bias`, hp.nExpert, false) : null;
  const shared = isMoe && hp.nFfShexp > 0
    ? { weights: await loadFfn(ld, pre, "_shexp", nEmbd, hp.nFfShexp), gate: null }
    : null;
  return {
    attnNorm,
    wq: null,
    wk: null,
    wv: null,
    wo,
    mla,
    bq: null,
    bk: null,
    bv: null,
    bo: null,
    qNorm: null,
    kNorm: null,
    ffnNorm,
    gateInp,
    expProbsB,
    dense: isMoe ? null : await loadFfn(ld, pre, "", nEmbd, hp.nFf),
    shared,
    experts: isMoe ? expertLocations(ld, hp, l, false) : [],
  };
}

/**
 * Multi-head latent attention of block `l` on normed rows `h` into `out` (`n × n_embd`).
 * Follows the MLA branch of llama.cpp's deepseek2 graph op for op.
 */
export function mlaAttention(
  c: LayerContext,
  l: number,
  lw: LayerWeights,
  h: Float32Array,
  out: Float32Array,
): void {
  const { be, hp, S, n } = c;
  const m = hp.mla!, w = lw.mla!;
  const { nHead: H, nRot, rmsEps } = hp;
  const kvr = m.kvLoraRank, dk = m.headDimK, dv = m.headDimV, nope = dk - nRot;
  const qkDim = kvr + nRot;
  // Q: direct, or through the low-rank q_a → norm → q_b
  const q = S.get("mla.q", n * H * dk);
  if (w.wq) be.matmul(w.wq, h, n, q);
  else {
    const qa = S.get("mla.qa", n * m.qLoraRank);
    be.matmul(w.wqA!, h, n, qa);
    be.rmsnorm(qa, m.qLoraRank, rmsEps, w.qANorm, qa);
    be.matmul(w.wqB!, qa, n, q);
  }
  // compressed KV: the latent (normed) and the shared rope key
  const kvpe = S.get("mla.kvpe", n * qkDim);
  be.matmul(w.wkvA, h, n, kvpe);
  const latent = S.get("mla.latent", n * kvr);
  const kpe = S.get("mla.kpe", n * nRot);
  for (let t = 0; t < n; t++) {
    latent.set(kvpe.subarray(t * qkDim, t * qkDim + kvr), t * kvr);
    kpe.set(kvpe.subarray(t * qkDim + kvr, (t + 1) * qkDim), t * nRot);
  }
  applyRope(be, kpe, n, 1, nRot, c.positions, c.rope, hp.yarn);
  be.rmsnorm(latent, kvr, rmsEps, w.kvANorm, latent);
  // query rope part, then the no-rope part absorbed per head into the latent space
  const qpe = S.get("mla.qpe", n * H * nRot);
  for (let t = 0; t < n; t++) {
    for (let hd = 0; hd < H; hd++) {
      const src = (t * H + hd) * dk + nope;
      qpe.set(q.subarray(src, src + nRot), (t * H + hd) * nRot);
    }
  }
  applyRope(be, qpe, n, H, nRot, c.positions, c.rope, hp.yarn);
  if (!m.absorbed) {
    decompressedAttention(c, l, lw, q, qpe, latent, kpe, out);
    return;
  }
  const Q = S.get("mla.Q", n * H * qkDim);
  const qn = S.get("mla.qn", n * nope);
  const qabs = S.get("mla.qabs", n * kvr);
  for (let hd = 0; hd < H; hd++) {
    for (let t = 0; t < n; t++) {
      const src = (t * H + hd) * dk;
      qn.set(q.subarray(src, src + nope), t * nope);
    }
    be.matmul(w.wkB[hd], qn, n, qabs);
    for (let t = 0; t < n; t++) {
      const dst = (t * H + hd) * qkDim;
      Q.set(qabs.subarray(t * kvr, (t + 1) * kvr), dst);
      Q.set(qpe.subarray((t * H + hd) * nRot, (t * H + hd + 1) * nRot), dst + kvr);
    }
  }
  const K = S.get("mla.K", n * qkDim);
  for (let t = 0; t < n; t++) {
    K.set(latent.subarray(t * kvr, (t + 1) * kvr), t * qkDim);
    K.set(kpe.subarray(t * nRot, (t + 1) * nRot), t * qkDim + kvr);
  }
  // MQA over the cache (K = latent ‖ rope key, V = latent), then decompress each head
  const att = S.get("mla.att", n * H * kvr);
  attend(c, l, Q, K, latent, att);
  const ah = S.get("mla.ah", n * kvr);
  const vh = S.get("mla.vh", n * dv);
  const o = S.get("mla.o", n * H * dv);
  for (let hd = 0; hd < H; hd++) {
    for (let t = 0; t < n; t++) {
      ah.set(att.subarray((t * H + hd) * kvr, (t * H + hd + 1) * kvr), t * kvr);
    }
    be.matmul(w.wvB[hd], ah, n, vh);
    for (let t = 0; t < n; t++) o.set(vh.subarray(t * dv, (t + 1) * dv), (t * H + hd) * dv);
  }
  // not through the adapters: their attn_output shape is n_head·value_length, not ·value_length_mla
  be.matmul(lw.wo, o, n, out);
}

/**
 * The non-MLA branch of llama.cpp's deepseek2 graph (older conversions with `attn_kv_b`): the
 * latent is decompressed to per-head `k_nope ‖ v`, each head's key is `k_nope ‖ k_pe` (the rope
 * key shared by all heads), and attention runs as plain MHA with full K/V in the cache.
 */
function decompressedAttention(
  c: LayerContext,
  l: number,
  lw: LayerWeights,
  q: Float32Array,
  qpe: Float32Array,
  latent: Float32Array,
  kpe: Float32Array,
  out: Float32Array,
): void {
  const { be, hp, S, n } = c;
  const m = hp.mla!, w = lw.mla!;
  const { nHead: H, nRot } = hp;
  const dk = m.headDimK, dv = m.headDimV, nope = dk - nRot, row = nope + dv;
  const kv = S.get("mla.kv", n * H * row);
  be.matmul(w.wkvB!, latent, n, kv);
  const K = S.get("mla.Kfull", n * H * dk), V = S.get("mla.Vfull", n * H * dv);
  for (let t = 0; t < n; t++) {
    for (let hd = 0; hd < H; hd++) {
      const src = (t * H + hd) * row, kd = (t * H + hd) * dk;
      K.set(kv.subarray(src, src + nope), kd);
      K.set(kpe.subarray(t * nRot, (t + 1) * nRot), kd + nope);
      V.set(kv.subarray(src + nope, src + row), (t * H + hd) * dv);
      // the query's rope part, rotated in place (ggml_rope_set_offset(q, qk_nope))
      q.set(qpe.subarray((t * H + hd) * nRot, (t * H + hd + 1) * nRot), kd + nope);
    }
  }
  const att = S.get("mla.attfull", n * H * dv);
  attend(c, l, q, K, V, att);
  be.matmul(lw.wo, att, n, out);
}

/** One deepseek2 block: `x += mla(norm(x)); x += ffn(norm(x))` (dense, or routed + shared). */
async function deepseek2Block(c: LayerContext, l: number): Promise<void> {
  const { hp, S, n, x } = c;
  const lw = c.weights.layers[l];
  const nx = n * hp.nEmbd;
  const h = S.get("h", nx);
  const ffo = S.get("ffo", nx);
  rmsNorm(c, x, lw.attnNorm, h);
  mlaAttention(c, l, lw, h, h);
  addResidual(x, h, nx);
  rmsNorm(c, x, lw.ffnNorm, h);
  await feedForward(c, l, lw, h, ffo);
  addResidual(x, ffo, nx);
}

type DeepseekResolved =
  & Required<Omit<SyntheticDeepseekSpec, "nFfDense" | "groups" | "yarn" | "mla">>
  & Pick<SyntheticDeepseekSpec, "nFfDense" | "groups" | "yarn" | "mla">;

/**
 * Defaults of a synthetic deepseek2 model ({@link SyntheticDeepseekSpec}): no q_lora,
 * kv_lora_rank 32, no-rope 16, rope 16, V 16, 1 dense block, 1 shared expert, softmax gating, no
 * bias, no groups, no norm, no scale, no YaRN, MLA keys.
 */
const SYNTH_DEFAULTS: DeepseekResolved = {
  qLoraRank: 0,
  kvLoraRank: 32,
  nopeDim: 16,
  ropeDim: 16,
  vDim: 16,
  denseLead: 1,
  nShared: 1,
  gating: "softmax",
  probsBias: false,
  norm: false,
  scale: 0,
};

/** The tensors of a synthetic deepseek2 block after `attn_norm`: MLA, then a dense or MoE FFN. */
function synthLayer(c: SynthContext, l: number): void {
  const ds: DeepseekResolved = { ...SYNTH_DEFAULTS, ...c.spec.deepseek };
  const p = `blk.${l}`;
  const { nEmbd, nHead, nExpert, nFf } = c;
  const dk = ds.nopeDim + ds.ropeDim;
  if (ds.qLoraRank > 0) {
    c.mat(`${p}.attn_q_a.weight`, nEmbd, ds.qLoraRank);
    c.norm(`${p}.attn_q_a_norm.weight`, ds.qLoraRank);
    c.mat(`${p}.attn_q_b.weight`, ds.qLoraRank, nHead * dk);
  } else {
    c.mat(`${p}.attn_q.weight`, nEmbd, nHead * dk);
  }
  c.mat(`${p}.attn_kv_a_mqa.weight`, nEmbd, ds.kvLoraRank + ds.ropeDim);
  c.norm(`${p}.attn_kv_a_norm.weight`, ds.kvLoraRank);
  if (ds.mla === false) {
    c.mat(`${p}.attn_kv_b.weight`, ds.kvLoraRank, nHead * (ds.nopeDim + ds.vDim));
  } else {
    c.mat(`${p}.attn_k_b.weight`, ds.nopeDim, ds.kvLoraRank, [nHead]);
    c.mat(`${p}.attn_v_b.weight`, ds.kvLoraRank, ds.vDim, [nHead]);
  }
  c.mat(`${p}.attn_output.weight`, nHead * ds.vDim, nEmbd);
  c.norm(`${p}.ffn_norm.weight`, nEmbd);
  const nFfD = ds.nFfDense ?? nFf;
  if (nExpert === 0 || l < ds.denseLead) {
    c.mat(`${p}.ffn_gate.weight`, nEmbd, nFfD);
    c.mat(`${p}.ffn_up.weight`, nEmbd, nFfD);
    c.mat(`${p}.ffn_down.weight`, nFfD, nEmbd);
    return;
  }
  c.add(`${p}.ffn_gate_inp.weight`, [nEmbd, nExpert], GgmlType.F32, 1 / Math.sqrt(nEmbd));
  if (ds.probsBias) c.add(`${p}.exp_probs_b.bias`, [nExpert], GgmlType.F32, 0.3);
  c.mat(`${p}.ffn_gate_exps.weight`, nEmbd, nFf, [nExpert]);
  c.mat(`${p}.ffn_down_exps.weight`, nFf, nEmbd, [nExpert]);
  c.mat(`${p}.ffn_up_exps.weight`, nEmbd, nFf, [nExpert]);
  if (ds.nShared > 0) {
    const w = nFf * ds.nShared;
    c.mat(`${p}.ffn_gate_shexp.weight`, nEmbd, w);
    c.mat(`${p}.ffn_down_shexp.weight`, w, nEmbd);
    c.mat(`${p}.ffn_up_shexp.weight`, nEmbd, w);
  }
}

/** Synthetic deepseek2 metadata: MLA as MQA over the latent, as llama.cpp's converter writes it. */
function synthMeta(c: SynthContext, parts: SynthMetaParts): SynthMetaEntry[] {
  const ds: DeepseekResolved = { ...SYNTH_DEFAULTS, ...c.spec.deepseek };
  const { nHead, nFf } = c;
  const replaced = new Set(
    [
      "attention.head_count_kv",
      "attention.key_length",
      "attention.value_length",
      "feed_forward_length",
    ].map(c.key),
  );
  const meta = [...parts.head, ...parts.keyLength, ...parts.experts].filter((e) =>
    !replaced.has(e[0])
  );
  if (ds.mla === false) {
    meta.push(
      c.u32("attention.head_count_kv", nHead),
      c.u32("attention.key_length", ds.nopeDim + ds.ropeDim),
      c.u32("attention.value_length", ds.vDim),
    );
  } else {
    meta.push(
      c.u32("attention.head_count_kv", 1),
      c.u32("attention.key_length", ds.kvLoraRank + ds.ropeDim),
      c.u32("attention.value_length", ds.kvLoraRank),
      c.u32("attention.key_length_mla", ds.nopeDim + ds.ropeDim),
      c.u32("attention.value_length_mla", ds.vDim),
    );
  }
  meta.push(
    c.u32("attention.kv_lora_rank", ds.kvLoraRank),
    c.u32("attention.q_lora_rank", ds.qLoraRank),
    c.u32("rope.dimension_count", ds.ropeDim),
    c.u32("feed_forward_length", ds.nFfDense ?? nFf),
    c.u32("expert_feed_forward_length", nFf),
    c.u32("leading_dense_block_count", ds.denseLead),
    c.u32("expert_shared_count", ds.nShared),
    c.u32("expert_gating_func", ds.gating === "sigmoid" ? 2 : 1),
    [c.key("expert_weights_norm"), gguf.bool(ds.norm)],
  );
  if (ds.scale) meta.push(c.f32("expert_weights_scale", ds.scale));
  if (ds.groups) {
    meta.push(
      c.u32("expert_group_count", ds.groups[0]),
      c.u32("expert_group_used_count", ds.groups[1]),
    );
  }
  if (ds.yarn) {
    meta.push(
      [c.key("rope.scaling.type"), gguf.str("yarn")],
      c.f32("rope.scaling.factor", ds.yarn.factor),
      c.u32("rope.scaling.original_context_length", ds.yarn.origCtx),
    );
    if (ds.yarn.logMul) meta.push(c.f32("rope.scaling.yarn_log_multiplier", ds.yarn.logMul));
  }
  return meta;
}
