/**
 * The pure-TypeScript reference backend: the oracle every other backend is
 * tested against. Clear code over speed, but no allocation per token: all
 * scratch buffers are grown once and reused.
 *
 * Numerics follow llama.cpp's x86 CPU path (see docs/specs-llamacpp.md): per-row
 * activation quantization to the weight's `vec_dot_type`, f16 KV cache,
 * non-flash attention (Q and probabilities rounded to f16), RMSNorm and
 * softmax sums in double.
 *
 * @module
 */

import { BackendError } from "../errors.ts";
import type { GgmlType } from "../tensor/ggml_type.ts";
import {
  activationBytes,
  quantizeActivation,
  rowBytes,
  traitsOf,
  WEIGHT_TYPES,
} from "../tensor/traits.ts";
import { f16ToF32, f32ToF16 } from "../tensor/f16.ts";
import { expfScalar, softmaxExpSum, swigluRow } from "../tensor/ggml_math.ts";
import type {
  AttentionExtras,
  AttentionParams,
  Backend,
  BackendCapabilities,
  KvCache,
  KvCacheSpec,
  OpName,
  RopeParams,
  Slot,
  WeightView,
} from "./backend.ts";

interface RefKv extends KvCache {
  k: Uint16Array[];
  v: Uint16Array[];
}

const MAX_SLOT = 2 ** 31 - 1;

/** Check a weight view fits its slot and its input length. */
export function checkMatmul(w: WeightView, xLen: number, nTokens: number, outLen: number): void {
  if (xLen < nTokens * w.cols || outLen < nTokens * w.rows) {
    throw new BackendError(
      "bad_shape",
      `Cannot matmul: weight ${w.rows}x${w.cols} with ${nTokens} tokens needs x ≥ ${
        nTokens * w.cols
      } and out ≥ ${nTokens * w.rows}: received ${xLen} and ${outLen}`,
    );
  }
  if (w.offset + w.rows * rowBytes(w.type, w.cols) > w.slot.bytes) {
    throw new BackendError("bad_view", `Cannot matmul: weight view exceeds slot ${w.slot.id}`);
  }
}

/** ggml RoPE cos/sin for one position (iterative theta in f32). */
export function ropeCache(pos: number, p: RopeParams, cos: Float32Array, sin: Float32Array): void {
  const f = Math.fround;
  const thetaScale = f(Math.pow(f(p.freqBase), f(-2 / p.nRot)));
  let theta = f(pos);
  for (let j = 0; j < p.nRot / 2; j++) {
    const th = f(p.freqScale * theta);
    cos[j] = f(Math.cos(th));
    sin[j] = f(Math.sin(th));
    theta = f(theta * thetaScale);
  }
}

/** The reference backend. */
export class RefBackend implements Backend {
  readonly name = "ref";
  readonly caps: BackendCapabilities = { formats: WEIGHT_TYPES, maxSlotBytes: MAX_SLOT };
  #slots = new Map<number, Uint8Array>();
  #caches = new Map<number, RefKv>();
  #nextId = 1;
  #act = new Uint8Array(0);
  #ropeCos = new Float32Array(0);
  #ropeSin = new Float32Array(0);
  #q16 = new Float32Array(0);
  #scores = new Float32Array(0);
  #probs16 = new Float32Array(0);

  /** All ops, for every type in the traits table. */
  supportsOp(op: OpName, type?: GgmlType): boolean {
    if ((op === "matmul" || op === "getRows") && type !== undefined) {
      return WEIGHT_TYPES.includes(type);
    }
    return true;
  }

  /** Allocate a zeroed slot. */
  allocSlot(bytes: number): Slot {
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_SLOT) {
      throw new BackendError(
        "bad_size",
        `Cannot allocate slot: ${bytes} bytes is outside [0, ${MAX_SLOT}]`,
      );
    }
    const id = this.#nextId++;
    this.#slots.set(id, new Uint8Array(bytes));
    return { id, bytes };
  }

  /** Copy bytes into a slot. */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void {
    const buf = this.#slot(slot);
    if (offset < 0 || offset + data.byteLength > buf.byteLength) {
      throw new BackendError(
        "bad_range",
        `Cannot write slot ${slot.id}: [${offset}, ${
          offset + data.byteLength
        }) exceeds ${buf.byteLength} bytes`,
      );
    }
    buf.set(data, offset);
  }

  /** Release a slot. */
  freeSlot(slot: Slot): void {
    this.#slots.delete(slot.id);
  }

  #slot(slot: Slot): Uint8Array {
    const b = this.#slots.get(slot.id);
    if (!b) {
      throw new BackendError(
        "bad_slot",
        `Cannot use slot ${slot.id}: it was freed or never allocated`,
      );
    }
    return b;
  }

  /** Quantize each activation row, then one vec_dot per output element. */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void {
    checkMatmul(w, x.length, nTokens, out.length);
    const tr = traitsOf(w.type);
    const buf = this.#slot(w.slot);
    const rb = rowBytes(w.type, w.cols);
    const ab = activationBytes(tr.vecDotType, w.cols);
    if (this.#act.length < ab) this.#act = new Uint8Array(ab);
    const act = this.#act;
    for (let t = 0; t < nTokens; t++) {
      quantizeActivation(tr.vecDotType, x, t * w.cols, w.cols, act, 0);
      const o = t * w.rows;
      for (let r = 0; r < w.rows; r++) {
        out[o + r] = tr.vecDot(w.cols, buf, w.offset + r * rb, act, 0);
      }
    }
  }

  /** Dequantize embedding rows. */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void {
    const tr = traitsOf(w.type);
    const buf = this.#slot(w.slot);
    const rb = rowBytes(w.type, w.cols);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < w.rows)) {
        throw new BackendError(
          "bad_token",
          `Cannot embed token ${id}: vocabulary has ${w.rows} rows`,
        );
      }
      tr.dequantize(buf, w.offset + id * rb, w.cols, out, i * w.cols);
    }
  }

  /** ggml RMSNorm: sum of f32 squares in double, `scale = 1/sqrtf(mean+eps)`. */
  rmsnorm(
    x: Float32Array,
    n: number,
    eps: number,
    weight: Float32Array | null,
    out: Float32Array,
  ): void {
    const f = Math.fround;
    const rows = x.length / n;
    for (let r = 0; r < rows; r++) {
      const o = r * n;
      let sum = 0;
      for (let i = 0; i < n; i++) sum += f(x[o + i] * x[o + i]);
      const mean = f(sum / n);
      const scale = f(1 / f(Math.sqrt(f(mean + eps))));
      if (weight) { for (let i = 0; i < n; i++) out[o + i] = f(x[o + i] * scale) * weight[i]; }
      else for (let i = 0; i < n; i++) out[o + i] = x[o + i] * scale;
    }
  }

  /** ggml `rope_ext` (no YaRN), NORM or NEOX, partial rotary passes the tail through. */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    p: RopeParams,
  ): void {
    const half = p.nRot / 2;
    if (this.#ropeCos.length < half) {
      this.#ropeCos = new Float32Array(half);
      this.#ropeSin = new Float32Array(half);
    }
    const cos = this.#ropeCos, sin = this.#ropeSin;
    for (let t = 0; t < nTokens; t++) {
      ropeCache(positions[t], p, cos, sin);
      for (let h = 0; h < nHeads; h++) {
        const o = (t * nHeads + h) * headDim;
        for (let j = 0; j < half; j++) {
          const i0 = p.mode === 0 ? o + 2 * j : o + j;
          const i1 = p.mode === 0 ? i0 + 1 : i0 + half;
          const a = x[i0], b = x[i1];
          x[i0] = Math.fround(a * cos[j]) - Math.fround(b * sin[j]);
          x[i1] = Math.fround(a * sin[j]) + Math.fround(b * cos[j]);
        }
      }
    }
  }

  /** `silu(g)·u` as ggml's AVX2 `ggml_vec_swiglu_f32` evaluates it. */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array, rowLen = out.length): void {
    for (let o = 0; o < out.length; o += rowLen) {
      swigluRow(Math.min(rowLen, out.length - o), out, gate, up, o);
    }
  }

  /** A KV cache of f16 values. */
  createKvCache(spec: KvCacheSpec): KvCache {
    const kRow = spec.nKvHeads * spec.headDimK, vRow = spec.nKvHeads * spec.headDimV;
    const total = spec.layers * spec.nCtx * (kRow + vRow) * 2;
    if (!Number.isSafeInteger(total) || total > 2 ** 32) {
      throw new BackendError("bad_size", `Cannot create KV cache: ${total} bytes is too large`);
    }
    const id = this.#nextId++;
    const c: RefKv = {
      id,
      spec,
      k: Array.from({ length: spec.layers }, () => new Uint16Array(spec.nCtx * kRow)),
      v: Array.from({ length: spec.layers }, () => new Uint16Array(spec.nCtx * vRow)),
    };
    this.#caches.set(id, c);
    return { id, spec };
  }

  /** Free a KV cache. */
  freeKvCache(cache: KvCache): void {
    this.#caches.delete(cache.id);
  }

  /** Non-flash causal GQA attention over the f16 cache (llama.cpp `build_attn_mha`). */
  attention(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    out: Float32Array,
  ): void {
    this.#attend(cache, layer, startPos, nTokens, q, k, v, p, null, out);
  }

  /** `attention` with per-head sinks and a sliding window (gpt-oss). */
  attentionExt(
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
    this.#attend(cache, layer, startPos, nTokens, q, k, v, p, x, out);
  }

  #attend(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    x: AttentionExtras | null,
    out: Float32Array,
  ): void {
    const c = this.#caches.get(cache.id);
    if (!c) throw new BackendError("bad_cache", `Cannot attend: KV cache ${cache.id} was freed`);
    const { nCtx } = c.spec;
    if (startPos < 0 || startPos + nTokens > nCtx) {
      throw new BackendError(
        "context_full",
        `Cannot attend: positions ${startPos}..${
          startPos + nTokens - 1
        } exceed the context of ${nCtx}`,
        { startPos, nTokens, nCtx },
      );
    }
    const { nHeads, nKvHeads, headDimK: dk, headDimV: dv, scale } = p;
    const kRow = nKvHeads * dk, vRow = nKvHeads * dv;
    const K = c.k[layer], V = c.v[layer];
    for (let t = 0; t < nTokens; t++) {
      const pos = startPos + t;
      for (let i = 0; i < kRow; i++) K[pos * kRow + i] = f32ToF16(k[t * kRow + i]);
      for (let i = 0; i < vRow; i++) V[pos * vRow + i] = f32ToF16(v[t * vRow + i]);
    }
    const nKv = startPos + nTokens;
    if (this.#scores.length < nKv) {
      this.#scores = new Float32Array(nKv);
      this.#probs16 = new Float32Array(nKv);
    }
    if (this.#q16.length < dk) this.#q16 = new Float32Array(dk);
    const s = this.#scores, p16 = this.#probs16, q16 = this.#q16;
    const group = nHeads / nKvHeads;
    const f = Math.fround;
    const window = x?.window ?? 0, sinks = x?.sinks ?? null;
    for (let t = 0; t < nTokens; t++) {
      const pos = startPos + t;
      // causal: positions ≤ own; windowed: llama.cpp masks p0 when pos − p0 ≥ window
      const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
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
        if (sinks && sinks[h] > max) max = sinks[h];
        let sum = softmaxExpSum(n, s, s, max);
        if (sinks) sum += expfScalar(f(sinks[h] - max));
        const inv = f(1 / sum);
        for (let j = 0; j < n; j++) p16[j] = f16ToF32(f32ToF16(f(s[j] * inv)));
        const oo = (t * nHeads + h) * dv;
        for (let i = 0; i < dv; i++) {
          let acc = 0;
          for (let j = 0; j < n; j++) {
            acc += p16[j] * f16ToF32(V[(first + j) * vRow + kvh * dv + i]);
          }
          out[oo + i] = acc;
        }
      }
    }
  }

  /** Bytes held by slots and caches. */
  memoryBytes(): number {
    let n = 0;
    for (const b of this.#slots.values()) n += b.byteLength;
    for (const c of this.#caches.values()) {
      for (const a of c.k) n += a.byteLength;
      for (const a of c.v) n += a.byteLength;
    }
    return n;
  }

  /** Drop all slots and caches. */
  dispose(): void {
    this.#slots.clear();
    this.#caches.clear();
  }
}

/** Create the reference backend. */
export function createRefBackend(): RefBackend {
  return new RefBackend();
}
