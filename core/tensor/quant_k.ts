/**
 * K-quants (256-element super-blocks): Q4_K, Q5_K, Q6_K weights and Q8_K activations.
 *
 * - `dequantize*`: `ggml-quants.c` `dequantize_row_q{4,5,6}_K` (docs/specs-llamacpp.md §2.2).
 * - `quantizeActQ8_K`: `quantize_row_q8_K_ref` (docs/specs-llamacpp.md §2.4) — the rule x86, ARM and scalar builds
 *   share: `max` = signed value of largest |x| (first, strict `>`), `iscale = -127/max`,
 *   `q = min(127, nearest_int(iscale*x))` (RNE), `d = 1/iscale` kept as f32, `bsums` per 16.
 * - `vecDot*`: `ggml-cpu/quants.c` generic `ggml_vec_dot_q{4,5,6}_K_q8_K` in C order: integer
 *   8-lane partials `aux32`, `sums[l] += (dx*y.d)*aux32[l]` across blocks,
 *   `sumf -= (dmin*y.d)*Σ bsums*mins`, finally `sumf += Σ sums[l]`.
 * - Weight quantizers live in quant_k_quantize.ts.
 *
 * @module
 */

import { f32ToBits } from "./f16.ts";
import { f16At, f32At, roundHalfEven } from "./block_util.ts";

const F = Math.fround;

/** `get_scale_min_k4`: 6-bit scale (`which` = 0) or min (`which` = 1) of sub-block `j` (0..7). */
export function scaleMinK4(j: number, q: Uint8Array, qo: number, which: 0 | 1): number {
  if (j < 4) return which === 0 ? q[qo + j] & 63 : q[qo + j + 4] & 63;
  return which === 0
    ? (q[qo + j + 4] & 0xf) | ((q[qo + j - 4] >> 6) << 4)
    : (q[qo + j + 4] >> 4) | ((q[qo + j] >> 6) << 4);
}

// ---------------------------------------------------------------- dequantize

function dequantK45(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
  five: boolean,
): void {
  const bs = five ? 176 : 144;
  const qso = five ? 48 : 16;
  for (let b = so, o = oo, end = oo + n; o < end; b += bs, o += 256) {
    const d = f16At(src, b);
    const dmin = f16At(src, b + 2);
    for (let c = 0; c < 4; c++) {
      const d1 = F(d * scaleMinK4(2 * c, src, b + 4, 0));
      const m1 = F(dmin * scaleMinK4(2 * c, src, b + 4, 1));
      const d2 = F(d * scaleMinK4(2 * c + 1, src, b + 4, 0));
      const m2 = F(dmin * scaleMinK4(2 * c + 1, src, b + 4, 1));
      const u1 = 1 << (2 * c);
      const u2 = 2 << (2 * c);
      for (let l = 0; l < 32; l++) {
        const q = src[b + qso + 32 * c + l];
        let lo = q & 0xf;
        let hi = q >> 4;
        if (five) {
          const h = src[b + 16 + l];
          if (h & u1) lo += 16;
          if (h & u2) hi += 16;
        }
        out[o + 64 * c + l] = F(d1 * lo) - m1;
        out[o + 64 * c + 32 + l] = F(d2 * hi) - m2;
      }
    }
  }
}

/** `dequantize_row_q4_K`. */
export function dequantizeQ4_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  dequantK45(src, so, n, out, oo, false);
}

/** `dequantize_row_q5_K`. */
export function dequantizeQ5_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  dequantK45(src, so, n, out, oo, true);
}

/** `dequantize_row_q6_K`. */
export function dequantizeQ6_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 210, o += 256) {
    const d = f16At(src, b + 208);
    for (let h = 0; h < 2; h++) {
      const ql = b + 64 * h;
      const qh = b + 128 + 32 * h;
      const sc = b + 192 + 8 * h;
      const y = o + 128 * h;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const hb = src[qh + l];
        const q1 = ((src[ql + l] & 0xf) | ((hb & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 0xf) | (((hb >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32;
        out[y + l] = F(d * ((src[sc + is] << 24) >> 24)) * q1;
        out[y + l + 32] = F(d * ((src[sc + is + 2] << 24) >> 24)) * q2;
        out[y + l + 64] = F(d * ((src[sc + is + 4] << 24) >> 24)) * q3;
        out[y + l + 96] = F(d * ((src[sc + is + 6] << 24) >> 24)) * q4;
      }
    }
  }
}

/** `dequantize_row_q8_K`: `y = d*qs`. */
export function dequantizeQ8_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += 292, o += 256) {
    const d = f32At(src, b);
    for (let j = 0; j < 256; j++) out[o + j] = d * ((src[b + 4 + j] << 24) >> 24);
  }
}

// ---------------------------------------------------------------- Q8_K activations

/** `quantize_row_q8_K_ref` (x86 uses the ref): RNE, `iscale = -127/max` with the sign of max. */
export function quantizeActQ8_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += 292) {
    let max = 0;
    let amax = 0;
    for (let j = 0; j < 256; j++) {
      const ax = Math.abs(src[i + j]);
      if (ax > amax) {
        amax = ax;
        max = src[i + j];
      }
    }
    if (amax === 0) {
      out.fill(0, b, b + 292); // llama.cpp leaves bsums unwritten; with d = 0 they never matter
      continue;
    }
    const iscale = F(-127 / max);
    for (let j = 0; j < 256; j++) {
      out[b + 4 + j] = Math.min(127, roundHalfEven(F(iscale * src[i + j]))) & 0xff;
    }
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let k = 0; k < 16; k++) sum += (out[b + 4 + 16 * g + k] << 24) >> 24;
      out[b + 260 + 2 * g] = sum & 0xff;
      out[b + 261 + 2 * g] = (sum >> 8) & 0xff;
    }
    const u = f32ToBits(F(1 / iscale));
    out[b] = u & 0xff;
    out[b + 1] = (u >>> 8) & 0xff;
    out[b + 2] = (u >>> 16) & 0xff;
    out[b + 3] = u >>> 24;
  }
}

// ---------------------------------------------------------------- dot products

const AUX8 = new Int8Array(256);
const AUX32 = new Int32Array(8);
const SUMS = new Float32Array(8);
const SC = new Int32Array(16);

/** Shared tail of the Q4_K/Q5_K/Q6_K generic kernels: integer lanes over AUX8 × q8. */
function laneSums(a: Uint8Array, q8: number, groupsPerScale: number, nScales: number): void {
  const aux32 = AUX32;
  aux32.fill(0);
  let p = 0;
  for (let s = 0; s < nScales; s++) {
    const scale = SC[s];
    for (let g = 0; g < groupsPerScale; g++) {
      for (let l = 0; l < 8; l++) {
        aux32[l] += scale * (((a[q8 + p + l] << 24) >> 24) * AUX8[p + l]);
      }
      p += 8;
    }
  }
}

function vecDotK45(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
  five: boolean,
): number {
  const bs = five ? 176 : 144;
  const qso = five ? 48 : 16;
  const aux8 = AUX8;
  const sums = SUMS;
  sums.fill(0);
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 8) * bs; x < end; x += bs, y += 292) {
    for (let c = 0; c < 4; c++) {
      const u1 = 1 << (2 * c);
      const u2 = 2 << (2 * c);
      for (let l = 0; l < 32; l++) {
        const q = w[x + qso + 32 * c + l];
        let lo = q & 0xf;
        let hi = q >> 4;
        if (five) {
          const h = w[x + 16 + l];
          if (h & u1) lo += 16;
          if (h & u2) hi += 16;
        }
        aux8[64 * c + l] = lo;
        aux8[64 * c + 32 + l] = hi;
      }
    }
    let sumi = 0;
    for (let j = 0; j < 16; j++) {
      const bsum = ((a[y + 260 + 2 * j] | (a[y + 261 + 2 * j] << 8)) << 16) >> 16;
      sumi += bsum * scaleMinK4(j >> 1, w, x + 4, 1);
    }
    for (let s = 0; s < 8; s++) SC[s] = scaleMinK4(s, w, x + 4, 0);
    laneSums(a, y + 4, 4, 8);
    const yd = f32At(a, y);
    const d = F(f16At(w, x) * yd);
    for (let l = 0; l < 8; l++) sums[l] += d * AUX32[l];
    const dmin = F(f16At(w, x + 2) * yd);
    sumf = F(sumf - F(dmin * sumi));
  }
  for (let l = 0; l < 8; l++) sumf = F(sumf + sums[l]);
  return sumf;
}

/** `ggml_vec_dot_q4_K_q8_K` (generic order). */
export function vecDotQ4_K(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  return vecDotK45(n, w, wo, a, ao, false);
}

/** `ggml_vec_dot_q5_K_q8_K` (generic order). */
export function vecDotQ5_K(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  return vecDotK45(n, w, wo, a, ao, true);
}

/** `ggml_vec_dot_q6_K_q8_K` (generic order). */
export function vecDotQ6_K(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  const aux8 = AUX8;
  const sums = SUMS;
  sums.fill(0);
  for (let x = wo, y = ao, end = wo + (n >>> 8) * 210; x < end; x += 210, y += 292) {
    for (let h = 0; h < 2; h++) {
      const ql = x + 64 * h;
      const qh = x + 128 + 32 * h;
      const o = 128 * h;
      for (let l = 0; l < 32; l++) {
        const hb = w[qh + l];
        aux8[o + l] = ((w[ql + l] & 0xf) | ((hb & 3) << 4)) - 32;
        aux8[o + l + 32] = ((w[ql + l + 32] & 0xf) | (((hb >> 2) & 3) << 4)) - 32;
        aux8[o + l + 64] = ((w[ql + l] >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        aux8[o + l + 96] = ((w[ql + l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32;
      }
    }
    for (let s = 0; s < 16; s++) SC[s] = (w[x + 192 + s] << 24) >> 24;
    laneSums(a, y + 4, 2, 16);
    const d = F(f16At(w, x + 208) * f32At(a, y));
    for (let l = 0; l < 8; l++) sums[l] += d * AUX32[l];
  }
  let sumf = 0;
  for (let l = 0; l < 8; l++) sumf = F(sumf + sums[l]);
  return sumf;
}
