/**
 * Attention with per-head sinks and a sliding window (gpt-oss) for backends
 * without the optional `Backend.attentionExt`: this block keeps its
 * own f16 KV rows per backend cache (a `WeakMap` keyed by the session's
 * `KvCache`, freed with it) and computes llama.cpp's non-flash
 * `build_attn_mha` + `ggml_soft_max_ext` with sinks, like the reference
 * backend: Q rounded to f16, f16 K/V, scores × scale, softmax whose max and
 * sum include the head's sink logit, probabilities rounded to f16.
 *
 * @module
 */

import type { AttentionExtras, AttentionParams, KvCache } from "../../backend/backend.ts";
import { ModelError } from "../../errors.ts";
import { f16ToF32, f32ToF16 } from "../../tensor/f16.ts";
import { expfScalar, softmaxExpSum } from "../../tensor/ggml_math.ts";

interface JsKv {
  readonly k: Uint16Array[];
  readonly v: Uint16Array[];
}

const stores = new WeakMap<KvCache, JsKv>();

function store(cache: KvCache, kRow: number, vRow: number): JsKv {
  let s = stores.get(cache);
  const { layers, nCtx } = cache.spec;
  if (!s || s.k[0]?.length !== nCtx * kRow || s.v[0]?.length !== nCtx * vRow) {
    s = {
      k: Array.from({ length: layers }, () => new Uint16Array(nCtx * kRow)),
      v: Array.from({ length: layers }, () => new Uint16Array(nCtx * vRow)),
    };
    stores.set(cache, s);
  }
  return s;
}

/**
 * Causal attention for `nTokens` rows at `startPos…` with sinks and a sliding window; stores `k`
 * and `v` (f16) for `layer` first. Shapes as `Backend.attention`.
 */
export function attentionExt(
  cache: KvCache,
  layer: number,
  startPos: number,
  nTokens: number,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  p: AttentionParams,
  x: AttentionExtras,
  out: Float32Array,
): void {
  const { nCtx } = cache.spec;
  if (startPos < 0 || startPos + nTokens > nCtx) {
    throw new ModelError(
      "context_full",
      `Cannot attend: positions ${startPos}..${
        startPos + nTokens - 1
      } exceed the context of ${nCtx}`,
      { startPos, nTokens, nCtx },
    );
  }
  const { nHeads, nKvHeads, headDimK: dk, headDimV: dv, scale } = p;
  const kRow = nKvHeads * dk, vRow = nKvHeads * dv;
  const s0 = store(cache, kRow, vRow);
  const K = s0.k[layer], V = s0.v[layer];
  for (let t = 0; t < nTokens; t++) {
    const pos = startPos + t;
    for (let i = 0; i < kRow; i++) K[pos * kRow + i] = f32ToF16(k[t * kRow + i]);
    for (let i = 0; i < vRow; i++) V[pos * vRow + i] = f32ToF16(v[t * vRow + i]);
  }
  const f = Math.fround;
  const nKv = startPos + nTokens;
  const s = new Float32Array(nKv), p16 = new Float32Array(nKv), q16 = new Float32Array(dk);
  const group = nHeads / nKvHeads;
  for (let t = 0; t < nTokens; t++) {
    const pos = startPos + t;
    // llama.cpp masks key p0 when p1 − p0 ≥ n_swa (LLAMA_SWA_TYPE_STANDARD)
    const first = x.window > 0 ? Math.max(0, pos - x.window + 1) : 0;
    const n = pos + 1 - first;
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (t * nHeads + h) * dk;
      for (let i = 0; i < dk; i++) q16[i] = f16ToF32(f32ToF16(q[qo + i]));
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const ko = (first + j) * kRow + kvh * dk;
        let dot = 0;
        for (let i = 0; i < dk; i++) dot += q16[i] * f16ToF32(K[ko + i]);
        const sc = f(f(dot) * scale);
        s[j] = sc;
        if (sc > max) max = sc;
      }
      const sink = x.sinks ? x.sinks[h] : -Infinity;
      if (sink > max) max = sink;
      let sum = softmaxExpSum(n, s, s, max);
      if (x.sinks) sum += expfScalar(f(sink - max));
      const inv = f(1 / sum);
      for (let j = 0; j < n; j++) p16[j] = f16ToF32(f32ToF16(f(s[j] * inv)));
      const oo = (t * nHeads + h) * dv;
      for (let i = 0; i < dv; i++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += p16[j] * f16ToF32(V[(first + j) * vRow + kvh * dv + i]);
        out[oo + i] = acc;
      }
    }
  }
}
