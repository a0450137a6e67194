/**
 * Shared building blocks of the architecture modules, after llama.cpp's
 * `build_norm`, `build_attn`, `build_moe_ffn` and `build_ffn`: each block has
 * a loader (the tensors it needs, checked by name and shape) and a forward
 * function over a `LayerContext`. An architecture composes them; a new
 * attention or routing variant is a new block here.
 *
 * @module
 */

import type { AttentionParams, KvCache, RopeParams, WeightView } from "../../backend/backend.ts";
import type { ExpertWeights } from "../../moe/expert.ts";
import { swigluFfn } from "../../moe/expert.ts";
import type { HParams } from "../hparams.ts";
import type { ExpertLocation, LayerWeights, MatrixRef, WeightLoader } from "../weights.ts";
import { ModelError } from "../../errors.ts";
import { applyRope } from "./rope.ts";
import type { LayerContext } from "./types.ts";

/** How Q/K are normalised before RoPE. */
export type QkNorm =
  /** no Q/K norm */
  | "none"
  /** RMSNorm per head (`attn_q_norm` has `head_dim` weights): Qwen3-MoE */
  | "per_head"
  /** RMSNorm over the whole projected vector: OLMoE */
  | "full";

/** Which shared expert a MoE layer may carry. */
export type SharedExpertKind =
  /** none */
  | "none"
  /** Qwen2-MoE: `ffn_*_shexp` gated by `sigmoid(ffn_gate_inp_shexp · x)`, optional per layer */
  | "gated"
  /** Granite/DeepSeek: `ffn_*_shexp` added as is */
  | "plain";

// ---------------------------------------------------------------- loaders

/** Load a SwiGLU FFN `blk.N.ffn_{gate,up,down}<suffix>` (gate optional). */
export async function loadFfn(
  ld: WeightLoader,
  pre: string,
  suffix: string,
  nEmbd: number,
  nFf: number,
): Promise<ExpertWeights> {
  return {
    gate: await ld.matrix(`${pre}.ffn_gate${suffix}.weight`, nEmbd, nFf, false),
    up: await ld.matrix(`${pre}.ffn_up${suffix}.weight`, nEmbd, nFf),
    down: await ld.matrix(`${pre}.ffn_down${suffix}.weight`, nFf, nEmbd),
  };
}

/**
 * Locate the routed experts of layer `l` (merged `ffn_*_exps` tensors, or the legacy per-expert
 * `ffn_*.E.weight` tensors when `legacy` allows them and the merged ones are absent).
 */
export function expertLocations(
  ld: WeightLoader,
  hp: HParams,
  l: number,
  legacy: boolean,
): ExpertLocation[] {
  const pre = `blk.${l}`;
  const { nEmbd, nFfExp: nFf, nExpert } = hp;
  let gate: (MatrixRef | null)[] | null, up: MatrixRef[], down: MatrixRef[];
  if (ld.info(`${pre}.ffn_up_exps.weight`, false) || !legacy) {
    up = ld.expertSlices(`${pre}.ffn_up_exps.weight`, nEmbd, nFf, nExpert)!;
    down = ld.expertSlices(`${pre}.ffn_down_exps.weight`, nFf, nEmbd, nExpert)!;
    gate = ld.expertSlices(`${pre}.ffn_gate_exps.weight`, nEmbd, nFf, nExpert, false);
  } else {
    up = [], down = [], gate = [];
    for (let e = 0; e < nExpert; e++) {
      up.push(ld.matrixRef(`${pre}.ffn_up.${e}.weight`, nEmbd, nFf));
      down.push(ld.matrixRef(`${pre}.ffn_down.${e}.weight`, nFf, nEmbd));
      gate.push(
        ld.info(`${pre}.ffn_gate.${e}.weight`, false)
          ? ld.matrixRef(`${pre}.ffn_gate.${e}.weight`, nEmbd, nFf)
          : null,
      );
    }
  }
  return up.map((u, e) => {
    const g = gate ? gate[e] : null;
    return {
      layer: l,
      index: e,
      gate: g,
      up: u,
      down: down[e],
      bytes: u.nbytes + down[e].nbytes + (g?.nbytes ?? 0),
    };
  });
}

/** Options of {@link loadStandardLayer}. */
export interface StandardLayerOptions {
  /** Q/K norm tensors. */
  readonly qkNorm: QkNorm;
  /** Shared expert. */
  readonly shared: SharedExpertKind;
  /** Accept legacy per-expert tensors. */
  readonly legacyExperts: boolean;
  /** Whether block `l` is dense (default: `hp.nExpert === 0`). */
  readonly dense?: boolean;
  /** Name stem of the FFN's input norm (default `ffn_norm`; gpt-oss: `post_attention_norm`). */
  readonly ffnNorm?: string;
}

/**
 * Load a llama-style block: `attn_norm`, `attn_{q,k,v,output}` (+ optional biases, Q/K norms),
 * `ffn_norm`, then a router with routed (and shared) experts, or a dense FFN.
 */
export async function loadStandardLayer(
  ld: WeightLoader,
  hp: HParams,
  l: number,
  o: StandardLayerOptions,
): Promise<LayerWeights> {
  const { nEmbd, nHead, nHeadKv, headDimK, headDimV } = hp;
  const qDim = nHead * headDimK, kDim = nHeadKv * headDimK, vDim = nHeadKv * headDimV;
  const pre = `blk.${l}`;
  const qkN = o.qkNorm === "per_head"
    ? [headDimK, headDimK]
    : o.qkNorm === "full"
    ? [qDim, kDim]
    : null;
  const isMoe = !(o.dense ?? hp.nExpert === 0);
  const hasShared = isMoe && (
    o.shared === "gated"
      ? ld.info(`${pre}.ffn_up_shexp.weight`, false) !== null
      : o.shared === "plain" && hp.nFfShexp > 0
  );
  const shared = hasShared
    ? {
      weights: await loadFfn(ld, pre, "_shexp", nEmbd, hp.nFfShexp),
      gate: o.shared === "gated"
        ? await ld.matrix(`${pre}.ffn_gate_inp_shexp.weight`, nEmbd, 1, false)
        : null,
    }
    : null;
  return {
    attnNorm: await ld.vector(`${pre}.attn_norm.weight`, nEmbd),
    wq: await ld.matrix(`${pre}.attn_q.weight`, nEmbd, qDim),
    wk: await ld.matrix(`${pre}.attn_k.weight`, nEmbd, kDim),
    wv: await ld.matrix(`${pre}.attn_v.weight`, nEmbd, vDim),
    wo: await ld.matrix(`${pre}.attn_output.weight`, nHead * headDimV, nEmbd),
    bq: await ld.vector(`${pre}.attn_q.bias`, qDim, false),
    bk: await ld.vector(`${pre}.attn_k.bias`, kDim, false),
    bv: await ld.vector(`${pre}.attn_v.bias`, vDim, false),
    bo: await ld.vector(`${pre}.attn_output.bias`, nEmbd, false),
    mla: null,
    qNorm: qkN ? await ld.vector(`${pre}.attn_q_norm.weight`, qkN[0]) : null,
    kNorm: qkN ? await ld.vector(`${pre}.attn_k_norm.weight`, qkN[1]) : null,
    ffnNorm: await ld.vector(`${pre}.${o.ffnNorm ?? "ffn_norm"}.weight`, nEmbd),
    gateInp: isMoe ? await ld.matrix(`${pre}.ffn_gate_inp.weight`, nEmbd, hp.nExpert) : null,
    expProbsB: null,
    dense: isMoe ? null : await loadFfn(ld, pre, "", nEmbd, hp.nFf),
    shared,
    experts: isMoe ? expertLocations(ld, hp, l, o.legacyExperts) : [],
  };
}

// ---------------------------------------------------------------- forward

/** `out = rmsnorm(x) · w` over rows of `n_embd` (llama.cpp `build_norm`, `LLM_NORM_RMS`). */
export function rmsNorm(
  c: LayerContext,
  x: Float32Array,
  w: Float32Array,
  out: Float32Array,
): void {
  c.be.rmsnorm(x, c.hp.nEmbd, c.hp.rmsEps, w, out);
}

/** `x[i] += b[i mod b.length]`. */
export function addBias(x: Float32Array, b: Float32Array): void {
  const m = b.length;
  for (let i = 0; i < x.length; i++) x[i] += b[i % m];
}

/** `x += y` over `n` floats, with `y` scaled first (`ggml_scale`, f32) when `scale` ≠ 0. */
export function addResidual(x: Float32Array, y: Float32Array, n: number, scale = 0): void {
  if (scale !== 0) {
    const s = Math.fround(scale);
    for (let i = 0; i < n; i++) x[i] += Math.fround(y[i] * s);
  } else {
    for (let i = 0; i < n; i++) x[i] += y[i];
  }
}

/**
 * Grouped-query self-attention (llama.cpp `build_qkv` + `ggml_rope_ext` + `build_attn`):
 * `h` → Q/K/V (+ biases, + Q/K norm) → RoPE → causal attention with the KV cache → `attn_output`
 * (+ bias) into `out` (`n × n_embd`; may alias `h`).
 */
export function selfAttention(
  c: LayerContext,
  l: number,
  lw: LayerWeights,
  h: Float32Array,
  out: Float32Array,
  qkNorm: QkNorm,
): void {
  const { be, hp, S, n } = c;
  const { nHead, nHeadKv, headDimK, headDimV, rmsEps } = hp;
  const qDim = nHead * headDimK, kDim = nHeadKv * headDimK, vDim = nHeadKv * headDimV;
  if (!lw.wq || !lw.wk || !lw.wv) {
    throw new ModelError("missing_tensor", `Cannot run block ${l}: it has no Q/K/V projections`);
  }
  if (
    lw.wo && !lw.bq && !lw.bk && !lw.bv && qkNorm === "none" &&
    attentionBlockTogether(c, l, lw.wq, lw.wk, lw.wv, lw.wo, h, out)
  ) {
    if (lw.bo) addBias(out, lw.bo);
    return;
  }
  const q = S.get("q", n * qDim), k = S.get("k", n * kDim), v = S.get("v", n * vDim);
  const att = S.get("att", n * nHead * headDimV);
  if (!qkvTogether(c, l, lw.wq, lw.wk, lw.wv, h, q, k, v)) {
    c.linear(l, "attn_q", lw.wq, h, n, q);
    c.linear(l, "attn_k", lw.wk, h, n, k);
    c.linear(l, "attn_v", lw.wv, h, n, v);
  }
  if (lw.bq) addBias(q, lw.bq);
  if (lw.bk) addBias(k, lw.bk);
  if (lw.bv) addBias(v, lw.bv);
  if (qkNorm === "per_head") {
    be.rmsnorm(q, headDimK, rmsEps, lw.qNorm, q);
    be.rmsnorm(k, headDimK, rmsEps, lw.kNorm, k);
  } else if (qkNorm === "full") {
    be.rmsnorm(q, qDim, rmsEps, lw.qNorm, q);
    be.rmsnorm(k, kDim, rmsEps, lw.kNorm, k);
  }
  applyRope(be, q, n, nHead, headDimK, c.positions, c.rope, hp.yarn);
  applyRope(be, k, n, nHeadKv, headDimK, c.positions, c.rope, hp.yarn);
  if (!attendOutputTogether(c, l, lw.wo, q, k, v, out)) {
    attend(c, l, q, k, v, att);
    c.linear(l, "attn_output", lw.wo, att, n, out);
  }
  if (lw.bo) addBias(out, lw.bo);
}

/**
 * A backend that may run several matmuls over the same rows, or attention
 * and the output projection, in one call (WASM on threads; false: not done).
 */
type FusingBackend = {
  readonly threads?: number;
  matmulMany?(
    ws: readonly WeightView[],
    x: Float32Array,
    n: number,
    outs: readonly Float32Array[],
  ): boolean;
  attentionBlock?(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    x: Float32Array,
    w: {
      readonly q: WeightView;
      readonly k: WeightView;
      readonly v: WeightView;
      readonly o: WeightView;
    },
    positions: Int32Array,
    rope: RopeParams,
    p: AttentionParams,
    out: Float32Array,
  ): boolean;
  attentionOutput?(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    wo: WeightView,
    out: Float32Array,
  ): boolean;
};

/**
 * Attention and the output projection in one backend call (one parallel
 * region on a threaded backend) for a single sequence when no adapter
 * touches `attn_output`; false when not done (the caller runs `attend` and
 * the projection). Results are identical either way.
 */
function attendOutputTogether(
  c: LayerContext,
  l: number,
  wo: WeightView,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
): boolean {
  const be = c.be as FusingBackend;
  if (
    be.attentionOutput === undefined || !((be.threads ?? 1) > 1) || c.seqs !== undefined ||
    c.plain === undefined || !c.plain(l, "attn_output")
  ) return false;
  return be.attentionOutput(c.cache, l, c.startPos, c.n, q, k, v, c.attn, wo, out);
}

/** The weights argument of `attentionBlock` (reused; cleared after each call). */
const BLOCK_W: { q: WeightView; k: WeightView; v: WeightView; o: WeightView } = {
  q: null!,
  k: null!,
  v: null!,
  o: null!,
};

/**
 * The whole attention of a single sequence — Q/K/V, RoPE, the K/V store,
 * attention and the output projection — in one backend call (one parallel
 * region on a threaded backend) when no adapter touches the four
 * projections and RoPE has no YaRN scaling (the caller checks biases and
 * Q/K norms); false when not done. Results are identical either way.
 */
function attentionBlockTogether(
  c: LayerContext,
  l: number,
  wq: WeightView,
  wk: WeightView,
  wv: WeightView,
  wo: WeightView,
  h: Float32Array,
  out: Float32Array,
): boolean {
  const be = c.be as FusingBackend;
  if (
    be.attentionBlock === undefined || !((be.threads ?? 1) > 1) || c.seqs !== undefined ||
    c.plain === undefined
  ) return false;
  const y = c.hp.yarn;
  if (y && !(y.extFactor === 0 && Math.fround(y.attnFactor) === 1)) return false;
  if (
    !c.plain(l, "attn_q") || !c.plain(l, "attn_k") || !c.plain(l, "attn_v") ||
    !c.plain(l, "attn_output")
  ) return false;
  BLOCK_W.q = wq, BLOCK_W.k = wk, BLOCK_W.v = wv, BLOCK_W.o = wo;
  try {
    return be.attentionBlock(
      c.cache,
      l,
      c.startPos,
      c.n,
      h,
      BLOCK_W,
      c.positions,
      c.rope,
      c.attn,
      out,
    );
  } finally {
    BLOCK_W.q =
      BLOCK_W.k =
      BLOCK_W.v =
      BLOCK_W.o =
        null!;
  }
}

const QKV_W: WeightView[] = [];
const QKV_OUT: Float32Array[] = [];

/**
 * Q, K and V projections in one backend call (one parallel region on a
 * threaded backend) when no adapter touches them; false when not done (the
 * caller runs them one by one). Results are identical either way.
 */
function qkvTogether(
  c: LayerContext,
  l: number,
  wq: WeightView,
  wk: WeightView,
  wv: WeightView,
  h: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
): boolean {
  const be = c.be as FusingBackend;
  if (be.matmulMany === undefined || !((be.threads ?? 1) > 1) || c.plain === undefined) {
    return false;
  }
  if (!c.plain(l, "attn_q") || !c.plain(l, "attn_k") || !c.plain(l, "attn_v")) return false;
  QKV_W[0] = wq, QKV_W[1] = wk, QKV_W[2] = wv;
  QKV_OUT[0] = q, QKV_OUT[1] = k, QKV_OUT[2] = v;
  const done = be.matmulMany(QKV_W, h, c.n, QKV_OUT);
  QKV_W.length = 0;
  QKV_OUT.length = 0;
  return done;
}

/**
 * Causal attention of the context's rows against the KV cache (`Backend.attention`); in a batch
 * (`c.seqs`) each sequence's rows attend only to its own cache, from its own position.
 */
export function attend(
  c: LayerContext,
  l: number,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  att: Float32Array,
): void {
  const seqs = c.seqs;
  if (!seqs) {
    c.be.attention(c.cache, l, c.startPos, c.n, q, k, v, c.attn, att);
    return;
  }
  const { nHeads, nKvHeads, headDimK, headDimV } = c.attn;
  const qd = nHeads * headDimK, kd = nKvHeads * headDimK, vd = nKvHeads * headDimV;
  const od = nHeads * headDimV;
  let r = 0;
  for (const s of seqs) {
    const e = r + s.n;
    c.be.attention(
      s.cache,
      l,
      s.startPos,
      s.n,
      q.subarray(r * qd, e * qd),
      k.subarray(r * kd, e * kd),
      v.subarray(r * vd, e * vd),
      c.attn,
      att.subarray(r * od, e * od),
    );
    r = e;
  }
}

/**
 * The FFN of block `l` on normed rows `h` into `out`: the MoE layer (router, routed experts,
 * shared expert) when the block has one, else the dense SwiGLU FFN.
 */
export async function feedForward(
  c: LayerContext,
  l: number,
  lw: LayerWeights,
  h: Float32Array,
  out: Float32Array,
): Promise<void> {
  const moe = c.moe[l];
  if (moe) await moe.forward(h, c.n, out, c.signal);
  else swigluFfn(c.be, lw.dense!, h, c.n, out, c.S, c.ffn?.(l));
}

/**
 * The pre-norm block shared by the llama family:
 * `x += attn(norm(x))·r; x += ffn(norm(x))·r` with `r` = `hp.scales.residual` (0 = none).
 */
export async function preNormBlock(c: LayerContext, l: number, qkNorm: QkNorm): Promise<void> {
  const { hp, S, n, x } = c;
  const lw = c.weights.layers[l];
  const nx = n * hp.nEmbd;
  const h = S.get("h", nx);
  const ffo = S.get("ffo", nx);
  rmsNorm(c, x, lw.attnNorm, h);
  selfAttention(c, l, lw, h, h, qkNorm);
  addResidual(x, h, nx, hp.scales.residual);
  rmsNorm(c, x, lw.ffnNorm, h);
  await feedForward(c, l, lw, h, ffo);
  addResidual(x, ffo, nx, hp.scales.residual);
}
