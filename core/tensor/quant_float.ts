/**
 * Float rows of the traits table: F32, F16, BF16 (dequantize, quantize, dot).
 *
 * The dot products reproduce llama.cpp's x86-64 AVX2 `ggml_vec_dot_f32`,
 * `ggml_vec_dot_f16` and `ggml_vec_dot_bf16` (`ggml/src/ggml-cpu/vec.cpp`,
 * `simd-mappings.h`), the kernels `mul_mat`/`mul_mat_id` call for one token:
 *
 * - F32 / F16: 4 accumulators × 8 f32 lanes (GGML_F32_STEP = GGML_F16_STEP = 32),
 *   `acc = fma(x, y, acc)`; reduce `x0+=x2, x1+=x3; x0+=x1`, then
 *   `t0 = lo128 + hi128; t1 = hadd(t0,t0); res = hadd(t1,t1)[0]`;
 *   leftovers (n % 32) are added after: in f32 for F32, in double for F16.
 * - BF16: 4 accumulators × 8 lanes, `c = c + x*y` (no FMA);
 *   `c1 = (c1+c3) + (c2+c4)`; `g = hi128 + lo128; g += movehl(g); g0 + g1`; leftovers in double.
 *
 * FMA is emulated as `fround(acc + x*y)` in f64. For F16/BF16 operands `x*y` is exact in f32,
 * so this is bit-exact; for F32 the f64 double rounding can differ from a true FMA in rare
 * last-bit cases.
 *
 * @module
 */

import { F16_TO_F32, f32ToBf16, f32ToF16 } from "./f16.ts";

const F = Math.fround;
const H = F16_TO_F32;

// ---- cached whole-buffer views (avoid per-call allocation) --------------------------------

/** A whole-buffer typed view of the last buffer seen, rebuilt only when the buffer changes. */
class ViewCache<T extends Float32Array<ArrayBufferLike> | Uint16Array<ArrayBufferLike>> {
  #buf: ArrayBufferLike | null = null;
  #view: T;
  readonly #make: (buf: ArrayBufferLike) => T;

  constructor(make: (buf: ArrayBufferLike) => T) {
    this.#make = make;
    this.#view = make(new ArrayBuffer(0));
  }

  of(b: Uint8Array): T {
    const buf = b.buffer;
    if (
      buf !== this.#buf ||
      this.#view.byteLength !== (buf.byteLength & ~(this.#view.BYTES_PER_ELEMENT - 1))
    ) {
      this.#buf = buf;
      this.#view = this.#make(buf);
    }
    return this.#view;
  }
}

// two caches per element type: weights (A) and activations (B) alternate in every matmul
const f32A = new ViewCache((b) => new Float32Array(b, 0, b.byteLength >>> 2));
const f32B = new ViewCache((b) => new Float32Array(b, 0, b.byteLength >>> 2));
const u16A = new ViewCache((b) => new Uint16Array(b, 0, b.byteLength >>> 1));
const u16B = new ViewCache((b) => new Uint16Array(b, 0, b.byteLength >>> 1));

let scratchA = new Float32Array(256);
let scratchB = new Float32Array(256);

/** Copy `n` little-endian f32 values at byte `off` of `b` into a reusable scratch array. */
function copyF32(b: Uint8Array, off: number, n: number, which: 0 | 1): Float32Array {
  let s = which === 0 ? scratchA : scratchB;
  if (s.length < n) {
    s = new Float32Array(Math.max(n, s.length * 2));
    if (which === 0) scratchA = s;
    else scratchB = s;
  }
  new Uint8Array(s.buffer, 0, n * 4).set(b.subarray(off, off + n * 4));
  return s;
}

const ACC = new Float32Array(32);

/** Reduce the 32 lane accumulators as GGML_F32x8_REDUCE does (result is an f32 value). */
function reduce32(acc: Float32Array): number {
  // x[0] += x[2]; x[1] += x[3]; x[0] += x[1]   (vectors of 8 lanes)
  for (let l = 0; l < 8; l++) {
    acc[l] += acc[16 + l];
    acc[8 + l] += acc[24 + l];
  }
  for (let l = 0; l < 8; l++) acc[l] += acc[8 + l];
  const t0 = F(acc[0] + acc[4]);
  const t1 = F(acc[1] + acc[5]);
  const t2 = F(acc[2] + acc[6]);
  const t3 = F(acc[3] + acc[7]);
  return F(F(t0 + t1) + F(t2 + t3));
}

/** AVX2 `ggml_vec_dot_f32` over f32 arrays. */
export function dotF32Arrays(
  n: number,
  x: Float32Array,
  xi: number,
  y: Float32Array,
  yi: number,
): number {
  const np = n & ~31;
  const acc = ACC;
  acc.fill(0);
  for (let i = 0; i < np; i += 32) {
    const xb = xi + i;
    const yb = yi + i;
    for (let k = 0; k < 32; k++) acc[k] += x[xb + k] * y[yb + k];
  }
  let sumf = reduce32(acc);
  for (let i = np; i < n; i++) sumf = F(sumf + F(x[xi + i] * y[yi + i]));
  return sumf;
}

/** F32 weight · F32 activation (`ggml_vec_dot_f32`, AVX2 order). Offsets are in bytes. */
export function vecDotF32(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let x: Float32Array, xi: number, y: Float32Array, yi: number;
  const wb = w.byteOffset + wo;
  if ((wb & 3) === 0) {
    x = f32A.of(w);
    xi = wb >>> 2;
  } else {
    x = copyF32(w, wo, n, 0);
    xi = 0;
  }
  const ab = a.byteOffset + ao;
  if ((ab & 3) === 0) {
    y = f32B.of(a);
    yi = ab >>> 2;
  } else {
    y = copyF32(a, ao, n, 1);
    yi = 0;
  }
  return dotF32Arrays(n, x, xi, y, yi);
}

/** F16 weight · F16 activation (`ggml_vec_dot_f16`, AVX2/F16C order). Offsets are in bytes. */
export function vecDotF16(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  const wb = w.byteOffset + wo;
  const ab = a.byteOffset + ao;
  const np = n & ~31;
  const acc = ACC;
  acc.fill(0);
  if (((wb | ab) & 1) === 0) {
    const x = u16A.of(w);
    const y = u16B.of(a);
    const xi = wb >>> 1;
    const yi = ab >>> 1;
    for (let i = 0; i < np; i += 32) {
      for (let k = 0; k < 32; k++) acc[k] += H[x[xi + i + k]] * H[y[yi + i + k]];
    }
    let sumf = reduce32(acc);
    for (let i = np; i < n; i++) sumf += H[x[xi + i]] * H[y[yi + i]];
    return F(sumf);
  }
  for (let i = 0; i < np; i += 32) {
    for (let k = 0; k < 32; k++) {
      const p = 2 * (i + k);
      acc[k] += H[w[wo + p] | (w[wo + p + 1] << 8)] * H[a[ao + p] | (a[ao + p + 1] << 8)];
    }
  }
  let sumf = reduce32(acc);
  for (let i = np; i < n; i++) {
    const p = 2 * i;
    sumf += H[w[wo + p] | (w[wo + p + 1] << 8)] * H[a[ao + p] | (a[ao + p + 1] << 8)];
  }
  return F(sumf);
}

const BF = new Float32Array(2);
const BF_U32 = new Uint32Array(BF.buffer);

/** F32 value of the bf16 stored little-endian at byte `p` of `b`. */
function bfAt(b: Uint8Array, p: number): number {
  BF_U32[0] = (b[p] << 16) | (b[p + 1] << 24);
  return BF[0];
}

/** BF16 weight · BF16 activation (`ggml_vec_dot_bf16`, AVX2 order). Offsets are in bytes. */
export function vecDotBF16(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  const np = n & ~31;
  const c = ACC;
  c.fill(0);
  for (let i = 0; i < np; i += 32) {
    for (let k = 0; k < 32; k++) {
      const p = 2 * (i + k);
      c[k] += bfAt(w, wo + p) * bfAt(a, ao + p); // product exact in f32; `+=` rounds to f32
    }
  }
  let sumf = 0;
  if (np > 0) {
    // c1 = (c1 + c3) + (c2 + c4), lane-wise (c1 = lanes 0..7, c2 = 8..15, …)
    for (let l = 0; l < 8; l++) {
      c[l] = F(F(c[l] + c[16 + l]) + F(c[8 + l] + c[24 + l]));
    }
    // g = hi128 + lo128; g += movehl(g); g0 + g1
    const g0 = F(c[4] + c[0]);
    const g1 = F(c[5] + c[1]);
    const g2 = F(c[6] + c[2]);
    const g3 = F(c[7] + c[3]);
    sumf = F(F(g0 + g2) + F(g1 + g3));
  }
  for (let i = np; i < n; i++) sumf += bfAt(w, wo + 2 * i) * bfAt(a, ao + 2 * i);
  return F(sumf);
}

/** Copy `n` f32 values stored little-endian at byte `so` of `src` into `out[oo..]`. */
export function dequantizeF32(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  const sb = src.byteOffset + so;
  if ((sb & 3) === 0) {
    const v = f32A.of(src);
    out.set(v.subarray(sb >>> 2, (sb >>> 2) + n), oo);
  } else {
    new Uint8Array(out.buffer, out.byteOffset + oo * 4, n * 4).set(src.subarray(so, so + n * 4));
  }
}

/** Store `n` f32 values little-endian at byte `oo` of `out`. */
export function quantizeF32(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  out.set(new Uint8Array(src.buffer, src.byteOffset + so * 4, n * 4), oo);
}

/** Decode `n` fp16 values at byte `so` of `src` into `out[oo..]`. */
export function dequantizeF16(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let i = 0; i < n; i++) out[oo + i] = H[src[so + 2 * i] | (src[so + 2 * i + 1] << 8)];
}

/** Round `n` values to fp16 (RNE) and store them little-endian at byte `oo` of `out`. */
export function quantizeF16(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = 0; i < n; i++) {
    const h = f32ToF16(src[so + i]);
    out[oo + 2 * i] = h & 0xff;
    out[oo + 2 * i + 1] = h >>> 8;
  }
}

/** Decode `n` bf16 values at byte `so` of `src` into `out[oo..]`. */
export function dequantizeBF16(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let i = 0; i < n; i++) out[oo + i] = bfAt(src, so + 2 * i);
}

/** Round `n` values to bf16 (RNE) and store them little-endian at byte `oo` of `out`. */
export function quantizeBF16(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = 0; i < n; i++) {
    const h = f32ToBf16(src[so + i]);
    out[oo + 2 * i] = h & 0xff;
    out[oo + 2 * i + 1] = h >>> 8;
  }
}
