/**
 * Legacy 32-element formats: x86 AVX2 activation quantization (Q8_0, Q8_1) and the
 * `ggml-cpu/quants.c` generic dot kernels `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0`,
 * `ggml_vec_dot_{q4_1,q5_1}_q8_1` in their C evaluation order (docs/specs-llamacpp.md §2.4-2.5): integer sums
 * exact, every float operation rounded to f32.
 *
 * Offsets are in bytes for byte arrays and in elements for float arrays; `n` is a multiple of 32.
 *
 * @module
 */

import { F16_TO_F32 } from "./f16.ts";
import { absMax32, putF16, roundHalfEven, u32At } from "./block_util.ts";

const F = Math.fround;
const H = F16_TO_F32;

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
export function vecDotQ4_0(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
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
export function vecDotQ4_1(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
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
export function vecDotQ5_0(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
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
export function vecDotQ5_1(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
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
export function vecDotQ8_0(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
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
