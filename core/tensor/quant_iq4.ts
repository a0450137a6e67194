/**
 * Non-linear 4-bit formats: IQ4_NL, IQ4_XS (the `kvalues_iq4nl` codebook) and MXFP4 (OCP
 * microscaling FP4: E2M1 values doubled, E8M0 block exponent).
 *
 * - `dequantize*`: `ggml-quants.c` `dequantize_row_{iq4_nl,iq4_xs,mxfp4}`.
 * - `quantize*`: `quantize_row_{iq4_nl,iq4_xs,mxfp4}_ref` with every float operation rounded to f32
 *   in C order (bit-exact with llama.cpp's reference compiled without FP contraction; see
 *   quant_known_test.ts). IQ4_NL's reference runs `quantize_row_iq4_nl_impl` with `ntry = -1`
 *   (one pass, no scale search); llama-quantize uses `ntry = 7` ({@link quantizeIQ4_NLSearch}).
 *   For an all-zero IQ4_NL block llama.cpp leaves the quants uninitialized (d = 0, so they never
 *   matter); we write index 8 (value 1, the codebook entry nearest 0).
 * - `vecDot*`: `ggml-cpu/quants.c` generic `ggml_vec_dot_{iq4_nl,mxfp4}_q8_0`,
 *   `ggml_vec_dot_iq4_xs_q8_K` in C order.
 *
 * Layouts (docs/quant-types.md):
 * - IQ4_NL (18 B / 32): `d: f16`, `qs[16]` (element j low nibble, j+16 high nibble of `qs[j]`);
 *   `x = d·kvalues[q]`.
 * - IQ4_XS (136 B / 256): `d: f16`, `scales_h: u16` (2 high bits per 32-sub-block), `scales_l[4]`
 *   (low nibbles, sub-block `ib` at `scales_l[ib/2] >> 4·(ib%2)`), `qs[128]` (16 bytes per
 *   sub-block, nibbles as IQ4_NL); `x = d·(ls − 32)·kvalues[q]`.
 * - MXFP4 (17 B / 32): `e: u8` (E8M0), `qs[16]` as IQ4_NL; `x = 2^(e−128)·kvalues_mxfp4[q]`.
 *
 * @module
 */

import { f16At, f32At, putF16 } from "./block_util.ts";
import { bitsToF32 } from "./f16.ts";
import { nearestInt } from "./quant_k_low.ts";

const F = Math.fround;

/** `kvalues_iq4nl`: the IQ4_NL / IQ4_XS codebook. */
export const KVALUES_IQ4NL: Int8Array = Int8Array.of(
  -127,
  -104,
  -83,
  -65,
  -49,
  -35,
  -22,
  -10,
  1,
  13,
  25,
  38,
  53,
  69,
  89,
  113,
);

/** `kvalues_mxfp4`: E2M1 values times two (index bit 3 is the sign). */
export const KVALUES_MXFP4: Int8Array = Int8Array.of(
  0,
  1,
  2,
  3,
  4,
  6,
  8,
  12,
  0,
  -1,
  -2,
  -3,
  -4,
  -6,
  -8,
  -12,
);

/** Bytes of one IQ4_NL block. */
export const IQ4_NL_BYTES = 18;
/** Bytes of one IQ4_XS block. */
export const IQ4_XS_BYTES = 136;
/** Bytes of one MXFP4 block. */
export const MXFP4_BYTES = 17;

/** `ggml_e8m0_to_fp32_half`: `2^(e − 128)` (subnormal for e < 2). */
export function e8m0Half(e: number): number {
  return bitsToF32(e < 2 ? 0x00200000 << e : (e - 1) << 23);
}

// ---------------------------------------------------------------- dequantize

/** `dequantize_row_iq4_nl`. */
export function dequantizeIQ4_NL(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += IQ4_NL_BYTES, o += 32) {
    const d = f16At(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j];
      out[o + j] = F(d * KVALUES_IQ4NL[q & 0xf]);
      out[o + j + 16] = F(d * KVALUES_IQ4NL[q >> 4]);
    }
  }
}

/** 6-bit scale (biased by 32) of sub-block `ib` of the IQ4_XS block at `b`. */
export function iq4xsScale(src: Uint8Array, b: number, ib: number): number {
  const h = src[b + 2] | (src[b + 3] << 8);
  return ((src[b + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((h >> (2 * ib)) & 3) << 4);
}

/** `dequantize_row_iq4_xs`. */
export function dequantizeIQ4_XS(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += IQ4_XS_BYTES, o += 256) {
    const d = f16At(src, b);
    for (let ib = 0; ib < 8; ib++) {
      const dl = F(d * (iq4xsScale(src, b, ib) - 32));
      const qs = b + 8 + 16 * ib;
      const y = o + 32 * ib;
      for (let j = 0; j < 16; j++) {
        out[y + j] = F(dl * KVALUES_IQ4NL[src[qs + j] & 0xf]);
        out[y + j + 16] = F(dl * KVALUES_IQ4NL[src[qs + j] >> 4]);
      }
    }
  }
}

/** `dequantize_row_mxfp4`. */
export function dequantizeMXFP4(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += MXFP4_BYTES, o += 32) {
    const d = e8m0Half(src[b]);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 1 + j];
      out[o + j] = F(KVALUES_MXFP4[q & 0xf] * d);
      out[o + j + 16] = F(KVALUES_MXFP4[q >> 4] * d);
    }
  }
}

// ---------------------------------------------------------------- quantize

/** `best_index_int8(16, values, x)`: nearest codebook index (binary search, C tie rule). */
export function bestIndexInt8(values: Int8Array, x: number): number {
  const n = values.length;
  if (x <= values[0]) return 0;
  if (x >= values[n - 1]) return n - 1;
  let ml = 0;
  let mu = n - 1;
  while (mu - ml > 1) {
    const mav = (ml + mu) >> 1;
    if (x < values[mav]) mu = mav;
    else ml = mav;
  }
  return F(x - values[mu - 1]) < F(values[mu] - x) ? mu - 1 : mu;
}

const L256 = new Uint8Array(256);
const SCALES8 = new Float32Array(8);
const WEIGHT32 = new Float32Array(32);
const GROUP_MAX_EPS = F(1e-15);

/**
 * `quantize_row_iq4_nl_impl` without importance weights for one super-block of `sbs` (32 or 256)
 * values at `x[xo..]`; writes `d` (f16 at `dOff`), the nibbles at `qOff` and, for 256, the
 * scales (`scales_h` at `shOff`, `scales_l` at `shOff + 2`).
 */
function iq4Impl(
  sbs: number,
  x: Float32Array,
  xo: number,
  out: Uint8Array,
  dOff: number,
  shOff: number,
  qOff: number,
  ntry: number,
): void {
  const values = KVALUES_IQ4NL;
  out.fill(0, qOff, qOff + sbs / 2);
  putF16(out, dOff, 0);
  let maxScale = 0;
  let amaxScale = 0;
  const nb = sbs / 32;
  for (let ib = 0; ib < nb; ib++) {
    const xb = xo + 32 * ib;
    const lb = 32 * ib;
    for (let j = 0; j < 32; j++) WEIGHT32[j] = F(x[xb + j] * x[xb + j]);
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const ax = Math.abs(x[xb + j]);
      if (ax > amax) {
        amax = ax;
        max = x[xb + j];
      }
    }
    if (amax < GROUP_MAX_EPS) {
      SCALES8[ib] = 0;
      // llama.cpp leaves L unwritten here (only reached with d = 0 for IQ4_NL): use index 8
      L256.fill(8, lb, lb + 32);
      continue;
    }
    let d = ntry > 0 ? F(-max / values[0]) : F(max / values[0]);
    let id = F(1 / d);
    let sumqx = 0;
    let sumq2 = 0;
    for (let j = 0; j < 32; j++) {
      const l = bestIndexInt8(values, F(id * x[xb + j]));
      L256[lb + j] = l;
      const q = values[l];
      const wq = F(WEIGHT32[j] * q);
      sumqx = F(sumqx + F(wq * x[xb + j]));
      sumq2 = F(sumq2 + F(wq * q));
    }
    d = sumq2 > 0 ? F(sumqx / sumq2) : 0;
    let best = F(d * sumqx);
    for (let itry = -ntry; itry <= ntry; itry++) {
      id = F((itry + values[0]) / max);
      sumqx = 0;
      sumq2 = 0;
      for (let j = 0; j < 32; j++) {
        const q = values[bestIndexInt8(values, F(id * x[xb + j]))];
        const wq = F(WEIGHT32[j] * q);
        sumqx = F(sumqx + F(wq * x[xb + j]));
        sumq2 = F(sumq2 + F(wq * q));
      }
      if (sumq2 > 0 && F(sumqx * sumqx) > F(best * sumq2)) {
        d = F(sumqx / sumq2);
        best = F(d * sumqx);
      }
    }
    SCALES8[ib] = d;
    const ad = Math.abs(d);
    if (ad > amaxScale) {
      amaxScale = ad;
      maxScale = d;
    }
  }
  if (nb > 1) {
    out[shOff] = 0;
    out[shOff + 1] = 0;
    const d = F(-maxScale / 32);
    putF16(out, dOff, d);
    const id = d !== 0 ? F(1 / d) : 0;
    let sh = 0;
    for (let ib = 0; ib < nb; ib++) {
      let l = Math.max(-32, Math.min(31, nearestInt(F(id * SCALES8[ib]))));
      const dl = F(d * l);
      const idl = dl !== 0 ? F(1 / dl) : 0;
      for (let j = 0; j < 32; j++) {
        L256[32 * ib + j] = bestIndexInt8(values, F(idl * x[xo + 32 * ib + j]));
      }
      l += 32;
      const ll = l & 0xf;
      const lh = l >> 4;
      if (ib % 2 === 0) out[shOff + 2 + (ib >> 1)] = ll;
      else out[shOff + 2 + (ib >> 1)] |= ll << 4;
      sh |= lh << (2 * (ib % 8));
    }
    out[shOff] = sh & 0xff;
    out[shOff + 1] = (sh >> 8) & 0xff;
  } else {
    putF16(out, dOff, SCALES8[0]);
    if (ntry > 0) {
      const id = SCALES8[0] !== 0 ? F(1 / SCALES8[0]) : 0;
      for (let j = 0; j < sbs; j++) L256[j] = bestIndexInt8(values, F(id * x[xo + j]));
    }
  }
  for (let i = 0; i < sbs / 32; i++) {
    for (let j = 0; j < 16; j++) {
      out[qOff + 16 * i + j] = L256[32 * i + j] | (L256[32 * i + 16 + j] << 4);
    }
  }
}

/** `quantize_row_iq4_nl_ref` (`ntry = -1`: one pass, no scale search). */
export function quantizeIQ4_NL(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += IQ4_NL_BYTES) {
    iq4Impl(32, src, i, out, b, -1, b + 2, -1);
  }
}

/** `quantize_iq4_nl` without an importance matrix (`ntry = 7`, what llama-quantize writes). */
export function quantizeIQ4_NLSearch(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += IQ4_NL_BYTES) {
    iq4Impl(32, src, i, out, b, -1, b + 2, 7);
  }
}

/** `quantize_row_iq4_xs_ref` (= `quantize_iq4_xs` without an importance matrix, `ntry = 7`). */
export function quantizeIQ4_XS(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += IQ4_XS_BYTES) {
    iq4Impl(256, src, i, out, b, b + 2, b + 8, 7);
  }
}

/** `best_index_mxfp4`: first index of least `|kvalues[i]·e − x|`. */
function bestIndexMxfp4(x: number, e: number): number {
  let best = 0;
  let bestErr = Math.abs(F(F(KVALUES_MXFP4[0] * e) - x));
  for (let i = 1; i < 16; i++) {
    const err = Math.abs(F(F(KVALUES_MXFP4[i] * e) - x));
    if (err < bestErr) {
      best = i;
      bestErr = err;
    }
  }
  return best;
}

/**
 * `quantize_row_mxfp4_ref`: `e = floor(log2f(amax)) − 2 + 127` (0 for an all-zero block), then
 * each value to the nearest `kvalues_mxfp4[i]·2^(e−128)`. `log2f` is taken as `log2` rounded to
 * f32 (correctly rounded; glibc's `log2f` agrees except possibly within 1 ulp of an integer).
 */
export function quantizeMXFP4(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 32, b += MXFP4_BYTES) {
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const v = Math.abs(src[i + j]);
      if (amax < v) amax = v;
    }
    // (uint8_t)(float): x86 truncates through a 32-bit int, keeping the low byte
    const e = amax > 0 ? (Math.trunc(F(Math.floor(F(Math.log2(amax))) - 2 + 127)) & 0xff) : 0;
    const d = e8m0Half(e);
    out[b] = e;
    for (let j = 0; j < 16; j++) {
      out[b + 1 + j] = bestIndexMxfp4(src[i + j], d) | (bestIndexMxfp4(src[i + 16 + j], d) << 4);
    }
  }
}

// ---------------------------------------------------------------- dot products

/**
 * The integer core every 4-bit codebook dot shares: 16 bytes of nibbles at `qs` (low nibbles
 * pair with the int8 activations `a[q8…q8+15]`, high nibbles with `a[q8+16…q8+31]`), each nibble
 * looked up in `table`. Exact integer sum (ggml's `sumi1 + sumi2`).
 */
function codebookDot32(
  w: Uint8Array,
  qs: number,
  a: Uint8Array,
  q8: number,
  table: Int8Array,
): number {
  let s1 = 0, s2 = 0;
  for (let j = 0; j < 16; j++) {
    const q = w[qs + j];
    s1 += ((a[q8 + j] << 24) >> 24) * table[q & 0xf];
    s2 += ((a[q8 + 16 + j] << 24) >> 24) * table[q >> 4];
  }
  return s1 + s2;
}

/** `ggml_vec_dot_iq4_nl_q8_0` (generic order). */
export function vecDotIQ4_NL(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * IQ4_NL_BYTES; x < end; x += 18, y += 34) {
    const d = F(f16At(a, y) * f16At(w, x));
    sumf = F(sumf + F(d * codebookDot32(w, x + 2, a, y + 2, KVALUES_IQ4NL)));
  }
  return sumf;
}

/** `ggml_vec_dot_mxfp4_q8_0` (generic order). */
export function vecDotMXFP4(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 5) * MXFP4_BYTES; x < end; x += 17, y += 34) {
    const d = F(f16At(a, y) * e8m0Half(w[x]));
    sumf = F(sumf + F(d * codebookDot32(w, x + 1, a, y + 2, KVALUES_MXFP4)));
  }
  return sumf;
}

/** `ggml_vec_dot_iq4_xs_q8_K` (generic order). */
export function vecDotIQ4_XS(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 8) * IQ4_XS_BYTES; x < end; x += 136, y += 292) {
    const d4d8 = F(f16At(w, x) * f32At(a, y));
    for (let ib = 0; ib < 8; ib++) {
      const dl = F(d4d8 * (iq4xsScale(w, x, ib) - 32));
      const sumi = codebookDot32(w, x + 8 + 16 * ib, a, y + 4 + 32 * ib, KVALUES_IQ4NL);
      sumf = F(sumf + F(dl * sumi));
    }
  }
  return sumf;
}
