/**
 * Legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * - `dequantize*`: `ggml-quants.c` `dequantize_row_*` (spec §2.2).
 * - `quantize*`: the weight quantizers `quantize_row_*_ref` (used by our GGUF writer).
 * - `quantizeActQ8_0` / `quantizeActQ8_1`: activation quantization with the x86 AVX2 rule
 *   (spec §2.4): `d = amax/127`, `id = amax ? 127/amax : 0`, `q = roundTiesToEven(x*id)`,
 *   stored `f16(d)`; Q8_1 also stores `s = f16(d * Σq)` with the unrounded `d`.
 * - `vecDot*`: `ggml-cpu/quants.c` generic kernels (spec §2.5) in their C evaluation order,
 *   every float operation rounded to f32; integer sums exact.
 *
 * Offsets are in bytes for byte arrays and in elements for float arrays; `n` is a multiple of 32.
 *
 * @module
 */

import { F16_TO_F32, f32ToF16 } from "./f16.ts";

const F = Math.fround;
const H = F16_TO_F32;

/** Round to nearest, ties to even (x86 `_mm256_round_ps(_MM_FROUND_TO_NEAREST_INT)`, `nearest_int`). */
export function roundHalfEven(v: number): number {
  let r = Math.round(v);
  if (r - v === 0.5 && (r & 1) !== 0) r -= 1;
  return r;
}

/** C `roundf`: round half away from zero. */
export function roundHalfAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function putF16(out: Uint8Array, o: number, x: number): void {
  const h = f32ToF16(x);
  out[o] = h & 0xff;
  out[o + 1] = h >>> 8;
}

function u32At(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

// ---------------------------------------------------------------- dequantize

/** `dequantize_row_q4_0`. */
export function dequantizeQ4_0(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 18, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j];
      out[o + j] = ((q & 15) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/** `dequantize_row_q4_1`. */
export function dequantizeQ4_1(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 20, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    const m = H[src[b + 2] | (src[b + 3] << 8)];
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j];
      out[o + j] = F((q & 15) * d) + m;
      out[o + j + 16] = F((q >> 4) * d) + m;
    }
  }
}

/** `dequantize_row_q5_0`: element j uses bit j of qh, element j+16 uses bit j+16. */
export function dequantizeQ5_0(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 22, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    const qh = u32At(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 6 + j];
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = (((q & 15) | xh0) - 16) * d;
      out[o + j + 16] = (((q >> 4) | xh1) - 16) * d;
    }
  }
}

/** `dequantize_row_q5_1`. */
export function dequantizeQ5_1(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 24, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    const m = H[src[b + 2] | (src[b + 3] << 8)];
    const qh = u32At(src, b + 4);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 8 + j];
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = F(((q & 15) | xh0) * d) + m;
      out[o + j + 16] = F(((q >> 4) | xh1) * d) + m;
    }
  }
}

/** `dequantize_row_q8_0`. */
export function dequantizeQ8_0(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 34, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    for (let j = 0; j < 32; j++) out[o + j] = ((src[b + 2 + j] << 24) >> 24) * d;
  }
}

/** Q8_1 dequantization (`qs * d`; the `s` field is ignored). */
export function dequantizeQ8_1(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 36, o += 32) {
    const d = H[src[b] | (src[b + 1] << 8)];
    for (let j = 0; j < 32; j++) out[o + j] = ((src[b + 4 + j] << 24) >> 24) * d;
  }
}

// ---------------------------------------------------------------- weight quantizers (ref)

/** Signed value with the largest |x| in `x[o..o+32)` (first occurrence, strict `<`). */
function signedAbsMax(x: Float32Array, o: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[o + j];
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/** `quantize_row_q4_0_ref`: `d = max/-8`, `q = min(15, trunc(x*id + 8.5))`. */
export function quantizeQ4_0(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 18) {
    const d = F(signedAbsMax(src, i) / -8);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    for (let j = 0; j < 16; j++) {
      const x0 = Math.min(15, Math.trunc(F(F(src[i + j] * id) + 8.5)));
      const x1 = Math.min(15, Math.trunc(F(F(src[i + 16 + j] * id) + 8.5)));
      out[b + 2 + j] = x0 | (x1 << 4);
    }
  }
}

function minMax32(x: Float32Array, o: number, mm: Float64Array): void {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    const v = x[o + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  mm[0] = min;
  mm[1] = max;
}
const MM = new Float64Array(2);

/** `quantize_row_q4_1_ref`: `d = (max-min)/15`, `m = min`, `q = min(15, trunc((x-min)*id + 0.5))`. */
export function quantizeQ4_1(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 20) {
    minMax32(src, i, MM);
    const min = MM[0];
    const d = F(F(MM[1] - min) / 15);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    putF16(out, b + 2, min);
    for (let j = 0; j < 16; j++) {
      const x0 = Math.min(15, Math.trunc(F(F(F(src[i + j] - min) * id) + 0.5)));
      const x1 = Math.min(15, Math.trunc(F(F(F(src[i + 16 + j] - min) * id) + 0.5)));
      out[b + 4 + j] = x0 | (x1 << 4);
    }
  }
}

function putU32(out: Uint8Array, o: number, v: number): void {
  out[o] = v & 0xff;
  out[o + 1] = (v >>> 8) & 0xff;
  out[o + 2] = (v >>> 16) & 0xff;
  out[o + 3] = (v >>> 24) & 0xff;
}

/** `quantize_row_q5_0_ref`: `d = max/-16`, `q = min(31, trunc(x*id + 16.5))`, 5th bits in qh. */
export function quantizeQ5_0(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 22) {
    const d = F(signedAbsMax(src, i) / -16);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = Math.min(31, Math.trunc(F(F(src[i + j] * id) + 16.5)));
      const x1 = Math.min(31, Math.trunc(F(F(src[i + 16 + j] * id) + 16.5)));
      out[b + 6 + j] = (x0 & 15) | ((x1 & 15) << 4);
      qh |= ((x0 & 0x10) >>> 4) << j;
      qh |= ((x1 & 0x10) >>> 4) << (j + 16);
    }
    putU32(out, b + 2, qh);
  }
}

/** `quantize_row_q5_1_ref`: `d = (max-min)/31`, `m = min`, `q = min(31, trunc((x-min)*id + 0.5))`. */
export function quantizeQ5_1(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 24) {
    minMax32(src, i, MM);
    const min = MM[0];
    const d = F(F(MM[1] - min) / 31);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    putF16(out, b + 2, min);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = Math.min(31, Math.trunc(F(F(F(src[i + j] - min) * id) + 0.5)));
      const x1 = Math.min(31, Math.trunc(F(F(F(src[i + 16 + j] - min) * id) + 0.5)));
      out[b + 8 + j] = (x0 & 15) | ((x1 & 15) << 4);
      qh |= ((x0 & 0x10) >>> 4) << j;
      qh |= ((x1 & 0x10) >>> 4) << (j + 16);
    }
    putU32(out, b + 4, qh);
  }
}

function absMax32(x: Float32Array, o: number): number {
  let amax = 0;
  for (let j = 0; j < 32; j++) {
    const v = Math.abs(x[o + j]);
    if (v > amax) amax = v;
  }
  return amax;
}

/** `quantize_row_q8_0_ref`: `d = amax/127`, `id = 1/d`, `q = roundf(x*id)` (half away from zero). */
export function quantizeQ8_0(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 34) {
    const d = F(absMax32(src, i) / 127);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    for (let j = 0; j < 32; j++) out[b + 2 + j] = roundHalfAway(F(src[i + j] * id)) & 0xff;
  }
}

/** `quantize_row_q8_1_ref`: as Q8_0 ref plus `s = f16(Σq * d)`. */
export function quantizeQ8_1(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 36) {
    const d = F(absMax32(src, i) / 127);
    const id = d !== 0 ? F(1 / d) : 0;
    putF16(out, b, d);
    let sum = 0;
    for (let j = 0; j < 32; j++) {
      const q = roundHalfAway(F(src[i + j] * id));
      out[b + 4 + j] = q & 0xff;
      sum += q;
    }
    putF16(out, b + 2, F(sum * d));
  }
}

// ---------------------------------------------------------------- activations (x86 AVX2 rule)

/** x86 AVX2 `quantize_row_q8_0`: `id = 127/amax`, ties-to-even. */
export function quantizeActQ8_0(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 34) {
    const amax = absMax32(src, i);
    const d = F(amax / 127);
    const id = amax !== 0 ? F(127 / amax) : 0;
    putF16(out, b, d);
    for (let j = 0; j < 32; j++) out[b + 2 + j] = roundHalfEven(F(src[i + j] * id)) & 0xff;
  }
}

/** x86 AVX2 `quantize_row_q8_1`: as {@link quantizeActQ8_0} plus `s = f16(d * Σq)`. */
export function quantizeActQ8_1(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += 36) {
    const amax = absMax32(src, i);
    const d = F(amax / 127);
    const id = amax !== 0 ? F(127 / amax) : 0;
    putF16(out, b, d);
    let sum = 0;
    for (let j = 0; j < 32; j++) {
      const q = roundHalfEven(F(src[i + j] * id));
      out[b + 4 + j] = q & 0xff;
      sum += q;
    }
    putF16(out, b + 2, F(d * sum));
  }
}

// ---------------------------------------------------------------- dot products

/** `ggml_vec_dot_q4_0_q8_0`: `sumf += (sumi*dx)*dy`. */
export function vecDotQ4_0(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * 18; x < end; x += 18, y += 34) {
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[x + 2 + j];
      sumi0 += ((q & 15) - 8) * ((a[y + 2 + j] << 24) >> 24);
      sumi1 += ((q >> 4) - 8) * ((a[y + 18 + j] << 24) >> 24);
    }
    const dx = H[w[x] | (w[x + 1] << 8)];
    const dy = H[a[y] | (a[y + 1] << 8)];
    sumf = F(sumf + F(F((sumi0 + sumi1) * dx) * dy));
  }
  return sumf;
}

/** `ggml_vec_dot_q4_1_q8_1`: `sumf += (dx*dy)*sumi + mx*sy`. */
export function vecDotQ4_1(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * 20; x < end; x += 20, y += 36) {
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[x + 4 + j];
      sumi0 += (q & 15) * ((a[y + 4 + j] << 24) >> 24);
      sumi1 += (q >> 4) * ((a[y + 20 + j] << 24) >> 24);
    }
    const dx = H[w[x] | (w[x + 1] << 8)];
    const mx = H[w[x + 2] | (w[x + 3] << 8)];
    const dy = H[a[y] | (a[y + 1] << 8)];
    const sy = H[a[y + 2] | (a[y + 3] << 8)];
    sumf = F(sumf + F(F(F(dx * dy) * (sumi0 + sumi1)) + F(mx * sy)));
  }
  return sumf;
}

/** `ggml_vec_dot_q5_0_q8_0`: `sumf += (dx*dy)*sumi`. */
export function vecDotQ5_0(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * 22; x < end; x += 22, y += 34) {
    const qh = u32At(w, x + 2);
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[x + 6 + j];
      const x0 = ((q & 15) | (((qh >>> j) & 1) << 4)) - 16;
      const x1 = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
      sumi0 += x0 * ((a[y + 2 + j] << 24) >> 24);
      sumi1 += x1 * ((a[y + 18 + j] << 24) >> 24);
    }
    const dx = H[w[x] | (w[x + 1] << 8)];
    const dy = H[a[y] | (a[y + 1] << 8)];
    sumf = F(sumf + F(F(dx * dy) * (sumi0 + sumi1)));
  }
  return sumf;
}

/** `ggml_vec_dot_q5_1_q8_1`: `sumf += (dx*dy)*sumi + mx*sy`. */
export function vecDotQ5_1(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * 24; x < end; x += 24, y += 36) {
    const qh = u32At(w, x + 4);
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[x + 8 + j];
      const x0 = (q & 15) | (((qh >>> j) & 1) << 4);
      const x1 = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      sumi0 += x0 * ((a[y + 4 + j] << 24) >> 24);
      sumi1 += x1 * ((a[y + 20 + j] << 24) >> 24);
    }
    const dx = H[w[x] | (w[x + 1] << 8)];
    const mx = H[w[x + 2] | (w[x + 3] << 8)];
    const dy = H[a[y] | (a[y + 1] << 8)];
    const sy = H[a[y + 2] | (a[y + 3] << 8)];
    sumf = F(sumf + F(F(F(dx * dy) * (sumi0 + sumi1)) + F(mx * sy)));
  }
  return sumf;
}

/** `ggml_vec_dot_q8_0_q8_0`: `sumf += sumi*(dx*dy)`. */
export function vecDotQ8_0(n: number, w: Uint8Array, wo: number, a: Uint8Array, ao: number): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * 34; x < end; x += 34, y += 34) {
    let sumi = 0;
    for (let j = 2; j < 34; j++) sumi += ((w[x + j] << 24) >> 24) * ((a[y + j] << 24) >> 24);
    const dx = H[w[x] | (w[x + 1] << 8)];
    const dy = H[a[y] | (a[y + 1] << 8)];
    sumf = F(sumf + F(sumi * F(dx * dy)));
  }
  return sumf;
}
