/**
 * `gpt-oss` (gpt-oss-20b, 120b): attention with per-head sinks, sliding-window attention on
 * alternating blocks (even blocks windowed by default, `attention.sliding_window_pattern` 2),
 * biases on Q/K/V/O, the router and the experts, the clamped SwiGLU (`swiglu_oai`: α 1.702,
 * limit 7), softmax over the selected top-k logits, `post_attention_norm` before the FFN, NEOX
 * RoPE with YaRN. llama.cpp: `src/models/openai-moe.cpp`.
 *
 * Sinks and the window go through the optional `Backend.attentionExt` (the reference and WASM
 * backends have it); for backends without it `arch/attention.ts` runs that attention in core over
 * its own f16 KV rows per session cache.
 *
 * @module
 */

import type { Backend, RopeParams } from "../../backend/backend.ts";
import { ModelError } from "../../errors.ts";
import type { Expert, ExpertKey, ExpertWeights, Scratch } from "../../moe/expert.ts";
import { gguf } from "../../formats/gguf_types.ts";
import { expfScalar } from "../../tensor/ggml_math.ts";
import { GgmlType } from "../../tensor/ggml_type.ts";
import { HPARAM_FLOAT_RANGES, HPARAM_LIMITS } from "../hparams.ts";
import type { ExpertBiases, LayerWeights } from "../weights.ts";
import { attentionExt as attentionExtCore } from "./attention.ts";
import { addBias, addResidual, feedForward, loadStandardLayer, rmsNorm } from "./blocks.ts";
import { applyRope } from "./rope.ts";
import type {
  ArchSpec,
  LayerContext,
  SynthContext,
  SynthMetaEntry,
  SynthMetaParts,
} from "./types.ts";

const f = Math.fround;
/** `swiglu_oai` constants of llama.cpp's `LLM_FFN_SWIGLU_OAI_MOE`. */
export const SWIGLU_OAI = { alpha: 1.702, limit: 7 } as const;

/**
 * ggml `swiglu_oai` over `n` values in f32: `x = min(g, limit)`, `y = clamp(u, ±limit)`,
 * `out = x / (1 + exp(−α·x)) · (y + 1)`.
 */
export function swigluOai(
  gate: Float32Array,
  up: Float32Array,
  out: Float32Array,
  n: number = out.length,
): void {
  const alpha = f(SWIGLU_OAI.alpha), limit = SWIGLU_OAI.limit;
  for (let i = 0; i < n; i++) {
    const x = Math.min(gate[i], limit);
    const y = Math.min(Math.max(up[i], -limit), limit);
    const glu = f(x / f(1 + expfScalar(f(alpha * -x))));
    out[i] = f(glu * f(y + 1));
  }
}

/** A gpt-oss expert: biased gate/up/down projections around the clamped SwiGLU. */
export class OaiSwigluExpert implements Expert {
  readonly kind = "swiglu-oai";
  readonly layer: number;
  readonly index: number;
  readonly #backend: Backend;
  readonly #weights: () => ExpertWeights;
  readonly #scratch: Scratch;
  readonly #bias: ExpertBiases;

  /**
   * @param key layer and index
   * @param backend backend running the matmuls
   * @param weights resolves the resident weights (the expert store)
   * @param scratch shared scratch
   * @param bias the layer's expert biases (this expert's rows are used)
   */
  constructor(
    key: ExpertKey,
    backend: Backend,
    weights: () => ExpertWeights,
    scratch: Scratch,
    bias: ExpertBiases,
  ) {
    this.layer = key.layer;
    this.index = key.index;
    this.#backend = backend;
    this.#weights = weights;
    this.#scratch = scratch;
    this.#bias = bias;
  }

  /** `out[t] = down·swiglu_oai(gate·x + bg, up·x + bu) + bd` for `nTokens` rows. */
  forward(x: Float32Array, nTokens: number, out: Float32Array): void {
    const w = this.#weights(), be = this.#backend, S = this.#scratch;
    if (!w.gate) {
      throw new ModelError("missing_tensor", `Cannot run expert ${this.index}: it has no gate`);
    }
    const nFf = w.up.rows, nEmbd = w.down.rows, e = this.index;
    const up = S.get("oai.up", nTokens * nFf), gate = S.get("oai.gate", nTokens * nFf);
    be.matmul(w.up, x, nTokens, up);
    be.matmul(w.gate, x, nTokens, gate);
    addBias(up, this.#bias.up.subarray(e * nFf, (e + 1) * nFf));
    addBias(gate, this.#bias.gate.subarray(e * nFf, (e + 1) * nFf));
    const act = S.get("oai.act", nTokens * nFf);
    swigluOai(gate, up, act);
    be.matmul(w.down, act, nTokens, out);
    addBias(out.subarray(0, nTokens * nEmbd), this.#bias.down.subarray(e * nEmbd, (e + 1) * nEmbd));
  }
}

/** The `gpt-oss` architecture. */
export const gptOss: ArchSpec = {
  name: "gpt-oss",
  ropeMode: 2,
  gating: "softmax_weight",
  normTopK: false,
  tiedOutput: false,
  readHParams: (c) => {
    const nFfExp = c.int("expert_feed_forward_length", undefined, 1, HPARAM_LIMITS.nFf);
    const window = c.int("attention.sliding_window", undefined, 1, HPARAM_LIMITS.nCtx);
    // load_swa_pattern(ml, 2): block l is windowed when l % n < n − 1 (n = 0: every block)
    const n = c.int("attention.sliding_window_pattern", 2, 0, c.nLayer);
    const layers = Array.from({ length: c.nLayer }, (_, l) => n === 0 || l % n < n - 1);
    const freqBase = c.float(
      "rope.freq_base_swa",
      c.ropeFreqBase,
      HPARAM_FLOAT_RANGES.ropeFreqBase,
      {
        openMin: true,
      },
    );
    return {
      nFfExp,
      nFfShexp: 0,
      expertWeightsScale: 0,
      swa: { window, layers, freqBase },
    };
  },
  loadLayer: async (ld, hp, l) => {
    const base = await loadStandardLayer(ld, hp, l, {
      qkNorm: "none",
      shared: "none",
      legacyExperts: false,
      ffnNorm: "post_attention_norm",
    });
    const pre = `blk.${l}`;
    const { nExpert, nFfExp, nEmbd, nHead } = hp;
    const isMoe = base.gateInp !== null;
    return {
      ...base,
      attnSinks: await ld.vector(`${pre}.attn_sinks.weight`, nHead),
      gateInpB: isMoe ? await ld.vector(`${pre}.ffn_gate_inp.bias`, nExpert) : null,
      expertBiases: isMoe
        ? {
          gate: await ld.table(`${pre}.ffn_gate_exps.bias`, nFfExp, nExpert),
          up: await ld.table(`${pre}.ffn_up_exps.bias`, nFfExp, nExpert),
          down: await ld.table(`${pre}.ffn_down_exps.bias`, nEmbd, nExpert),
        }
        : null,
    };
  },
  forwardLayer: gptOssBlock,
  createExpert: (key, backend, weights, scratch, lw) => {
    if (!lw.expertBiases) {
      throw new ModelError("missing_tensor", `Cannot build expert ${key.index}: no expert biases`);
    }
    return new OaiSwigluExpert(key, backend, weights, scratch, lw.expertBiases);
  },
  synth: { vocab: "gpt2", layer: synthLayer, meta: synthMeta },
};

/**
 * The tensors of a synthetic gpt-oss block after `attn_norm` (llama.cpp openai-moe): biased
 * Q/K/V/O, sinks, `post_attention_norm`, biased router and experts.
 */
function synthLayer(c: SynthContext, l: number): void {
  const p = `blk.${l}`, F32 = GgmlType.F32;
  const { nEmbd, nExpert, nFf, qDim, kvDim } = c;
  c.mat(`${p}.attn_q.weight`, nEmbd, qDim);
  c.vec(`${p}.attn_q.bias`, qDim);
  c.mat(`${p}.attn_k.weight`, nEmbd, kvDim);
  c.vec(`${p}.attn_k.bias`, kvDim);
  c.mat(`${p}.attn_v.weight`, nEmbd, kvDim);
  c.vec(`${p}.attn_v.bias`, kvDim);
  c.mat(`${p}.attn_output.weight`, qDim, nEmbd);
  c.vec(`${p}.attn_output.bias`, nEmbd);
  c.add(`${p}.attn_sinks.weight`, [c.nHead], F32, 1);
  c.norm(`${p}.post_attention_norm.weight`, nEmbd);
  c.add(`${p}.ffn_gate_inp.weight`, [nEmbd, nExpert], F32, 1 / Math.sqrt(nEmbd));
  c.vec(`${p}.ffn_gate_inp.bias`, nExpert);
  c.mat(`${p}.ffn_gate_exps.weight`, nEmbd, nFf, [nExpert]);
  c.add(`${p}.ffn_gate_exps.bias`, [nFf, nExpert], F32, 0.1);
  c.mat(`${p}.ffn_down_exps.weight`, nFf, nEmbd, [nExpert]);
  c.add(`${p}.ffn_down_exps.bias`, [nEmbd, nExpert], F32, 0.1);
  c.mat(`${p}.ffn_up_exps.weight`, nEmbd, nFf, [nExpert]);
  c.add(`${p}.ffn_up_exps.bias`, [nFf, nExpert], F32, 0.1);
}

/**
 * Synthetic gpt-oss metadata: the expert width, the sliding window (default 4 tokens, so short
 * prompts cross it), the window pattern (default: absent, llama.cpp's 2) and YaRN (default none)
 * of `spec.gptOss`.
 */
function synthMeta(c: SynthContext, p: SynthMetaParts): SynthMetaEntry[] {
  const go = c.spec.gptOss ?? {};
  const meta: SynthMetaEntry[] = [
    ...p.head,
    ...p.keyLength,
    ...p.experts,
    c.u32("expert_feed_forward_length", c.nFf),
    c.u32("attention.sliding_window", go.window ?? 4),
  ];
  if (go.pattern !== undefined) meta.push(c.u32("attention.sliding_window_pattern", go.pattern));
  if (go.yarn) {
    meta.push(
      [c.key("rope.scaling.type"), gguf.str("yarn")],
      c.f32("rope.scaling.factor", go.yarn.factor),
      c.u32("rope.scaling.original_context_length", go.yarn.origCtx),
    );
  }
  return meta;
}

/** Attention with sinks (and the window on windowed blocks) of block `l` into `out`. */
function sinkAttention(
  c: LayerContext,
  l: number,
  lw: LayerWeights,
  h: Float32Array,
  out: Float32Array,
): void {
  const { be, hp, S, n } = c;
  const { nHead, nHeadKv, headDimK, headDimV } = hp;
  const qDim = nHead * headDimK, kDim = nHeadKv * headDimK, vDim = nHeadKv * headDimV;
  const q = S.get("q", n * qDim), k = S.get("k", n * kDim), v = S.get("v", n * vDim);
  const att = S.get("att", n * nHead * headDimV);
  c.linear(l, "attn_q", lw.wq!, h, n, q);
  c.linear(l, "attn_k", lw.wk!, h, n, k);
  c.linear(l, "attn_v", lw.wv!, h, n, v);
  if (lw.bq) addBias(q, lw.bq);
  if (lw.bk) addBias(k, lw.bk);
  if (lw.bv) addBias(v, lw.bv);
  const swa = hp.swa!;
  const windowed = swa.layers[l];
  const rope: RopeParams = windowed ? { ...c.rope, freqBase: swa.freqBase } : c.rope;
  applyRope(be, q, n, nHead, headDimK, c.positions, rope, hp.yarn);
  applyRope(be, k, n, nHeadKv, headDimK, c.positions, rope, hp.yarn);
  const extras = { sinks: lw.attnSinks ?? null, window: windowed ? swa.window : 0 };
  // the backend's op when it has one (its own cache), else the core composition (its own rows)
  const attentionExt = be.attentionExt ? be.attentionExt.bind(be) : attentionExtCore;
  if (!c.seqs) {
    attentionExt(c.cache, l, c.startPos, n, q, k, v, c.attn, extras, att);
  } else {
    const od = nHead * headDimV;
    let r = 0;
    for (const s of c.seqs) {
      const e = r + s.n;
      attentionExt(
        s.cache,
        l,
        s.startPos,
        s.n,
        q.subarray(r * qDim, e * qDim),
        k.subarray(r * kDim, e * kDim),
        v.subarray(r * vDim, e * vDim),
        c.attn,
        extras,
        att.subarray(r * od, e * od),
      );
      r = e;
    }
  }
  c.linear(l, "attn_output", lw.wo, att, n, out);
  if (lw.bo) addBias(out, lw.bo);
}

/** One gpt-oss block: `x += attn(norm(x)); x += moe(post_attention_norm(x))`. */
async function gptOssBlock(c: LayerContext, l: number): Promise<void> {
  const { hp, S, n, x } = c;
  const lw = c.weights.layers[l];
  const nx = n * hp.nEmbd;
  const h = S.get("h", nx);
  const ffo = S.get("ffo", nx);
  rmsNorm(c, x, lw.attnNorm, h);
  sinkAttention(c, l, lw, h, h);
  addResidual(x, h, nx);
  rmsNorm(c, x, lw.ffnNorm, h);
  await feedForward(c, l, lw, h, ffo);
  addResidual(x, ffo, nx);
}
