/**
 * Low-bit K-quants: Q2_K and Q3_K (256-element super-blocks, Q8_K activations).
 *
 * - `dequantize*`: `ggml-quants.c` `dequantize_row_q{2,3}_K`.
 * - `quantize*`: `quantize_row_q{2,3}_K_ref` (the deterministic reference llama-quantize uses
 *   without an importance matrix) with every float operation rounded to f32 in C order and
 *   `nearest_int` reproduced from its bit trick, so the bytes equal llama.cpp's reference compiled
 *   without FP contraction (checked against vectors generated from ggml-quants.c in
 *   quant_known_test.ts).
 * - `vecDot*`: `ggml-cpu/quants.c` generic `ggml_vec_dot_q{2,3}_K_q8_K` in C order.
 *
 * Layouts (docs/quant-types.md):
 * - Q2_K (84 B): `scales[16]` (low nibble scale, high nibble min), `qs[64]` (2-bit, element
 *   `128k + 32j + l` at bits `2j` of `qs[32k + l]`), `d: f16`, `dmin: f16`;
 *   `x = d·sc·q − dmin·m`.
 * - Q3_K (110 B): `hmask[32]` (high bit of element `128k + 32j + l` = bit `4k + j` of `hmask[l]`,
 *   set means +0, clear means −4), `qs[64]` (low 2 bits as Q2_K), `scales[12]` (sixteen 6-bit
 *   scales, biased by 32), `d: f16`; `x = d·(sc − 32)·q`.
 *
 * @module
 */

import { f32ToBits } from "./f16.ts";
import { f16At, f32At, putF16 } from "./block_util.ts";

const F = Math.fround;

/** llama.cpp `nearest_int`: `bits(f32(x + 12582912)) & 0x7fffff) − 0x400000` (RNE for |x| < 2^22). */
export function nearestInt(x: number): number {
  return (f32ToBits(F(x + 12582912)) & 0x7fffff) - 0x400000;
}

const GROUP_MAX_EPS = F(1e-15);

// ---------------------------------------------------------------- Q2_K

/** Bytes of one Q2_K block. */
export const Q2_K_BYTES = 84;
/** Bytes of one Q3_K block. */
export const Q3_K_BYTES = 110;

/** `dequantize_row_q2_K`. */
export function dequantizeQ2_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += Q2_K_BYTES, o += 256) {
    const d = f16At(src, b + 80);
    const min = f16At(src, b + 82);
    for (let k = 0; k < 2; k++) {
      for (let j = 0; j < 4; j++) {
        for (let h = 0; h < 2; h++) {
          const sc = src[b + 8 * k + 2 * j + h];
          const dl = F(d * (sc & 0xf));
          const ml = F(min * (sc >> 4));
          const y = o + 128 * k + 32 * j + 16 * h;
          const q = b + 16 + 32 * k + 16 * h;
          for (let l = 0; l < 16; l++) out[y + l] = F(F(dl * ((src[q + l] >> (2 * j)) & 3)) - ml);
        }
      }
    }
  }
}

const WEIGHTS16 = new Float32Array(16);
const LAUX = new Uint8Array(16);
const LQ = new Uint8Array(256);
const LS = new Int8Array(256);
const SCALES16 = new Float32Array(16);
const MINS16 = new Float32Array(16);

/**
 * `make_qkx2_quants(16, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`:
 * returns `[scale, theMin]` and writes the levels to `LQ[lo..lo+n)`.
 */
function makeQkx2(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  w: Float32Array,
  lo: number,
  rmin: number,
  rdelta: number,
  nstep: number,
  useMad: boolean,
): [number, number] {
  let min = x[xo];
  let max = x[xo];
  let sumW = w[0];
  let sumX = F(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = F(sumW + w[i]);
    sumX = F(sumX + F(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    LQ.fill(0, lo, lo + n);
    return [0, -min];
  }
  let iscale = F(nmax / F(max - min));
  let scale = F(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(F(iscale * F(x[xo + i] - min)));
    const q = Math.max(0, Math.min(nmax, l));
    LQ[lo + i] = q;
    let diff = F(F(F(scale * q) + min) - x[xo + i]);
    diff = useMad ? Math.abs(diff) : F(diff * diff);
    bestError = F(bestError + F(w[i] * diff));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    // `min` is the best offset so far (llama.cpp updates it inside this loop)
    iscale = F(F(F(rmin + F(rdelta * is)) + nmax) / F(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(F(iscale * F(x[xo + i] - min)))));
      LAUX[i] = l;
      const wl = F(w[i] * l);
      sumL = F(sumL + wl);
      sumL2 = F(sumL2 + F(wl * l));
      sumXL = F(sumXL + F(wl * x[xo + i]));
    }
    const D = F(F(sumW * sumL2) - F(sumL * sumL));
    if (D > 0) {
      let thisScale = F(F(F(sumW * sumXL) - F(sumX * sumL)) / D);
      let thisMin = F(F(F(sumL2 * sumX) - F(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = F(sumXL / sumL2);
      }
      let cur = 0;
      for (let i = 0; i < n; i++) {
        let diff = F(F(F(thisScale * LAUX[i]) + thisMin) - x[xo + i]);
        diff = useMad ? Math.abs(diff) : F(diff * diff);
        cur = F(cur + F(w[i] * diff));
      }
      if (cur < bestError) {
        for (let i = 0; i < n; i++) LQ[lo + i] = LAUX[i];
        bestError = cur;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** `quantize_row_q2_K_ref`. */
export function quantizeQ2_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  const q4scale = 15;
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += Q2_K_BYTES) {
    out.fill(0, b, b + Q2_K_BYTES);
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) WEIGHTS16[l] = Math.abs(src[i + 16 * j + l]);
      const [s, m] = makeQkx2(16, 3, src, i + 16 * j, WEIGHTS16, 16 * j, -0.5, F(0.1), 15, true);
      SCALES16[j] = s;
      MINS16[j] = m;
      if (SCALES16[j] > maxScale) maxScale = SCALES16[j];
      if (MINS16[j] > maxMin) maxMin = MINS16[j];
    }
    if (maxScale > 0) {
      const iscale = F(q4scale / maxScale);
      for (let j = 0; j < 16; j++) out[b + j] = nearestInt(F(iscale * SCALES16[j])) & 0xff;
      putF16(out, b + 80, F(maxScale / q4scale));
    }
    if (maxMin > 0) {
      const iscale = F(q4scale / maxMin);
      for (let j = 0; j < 16; j++) out[b + j] |= (nearestInt(F(iscale * MINS16[j])) << 4) & 0xff;
      putF16(out, b + 82, F(maxMin / q4scale));
    }
    const dAll = f16At(out, b + 80);
    const mAll = f16At(out, b + 82);
    for (let j = 0; j < 16; j++) {
      const d = F(dAll * (out[b + j] & 0xf));
      if (d === 0) continue;
      const dm = F(mAll * (out[b + j] >> 4));
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(F(F(src[i + 16 * j + ii] + dm) / d));
        LQ[16 * j + ii] = Math.max(0, Math.min(3, l));
      }
    }
    for (let j = 0; j < 256; j += 128) {
      for (let l = 0; l < 32; l++) {
        out[b + 16 + j / 4 + l] = LQ[j + l] | (LQ[j + l + 32] << 2) | (LQ[j + l + 64] << 4) |
          (LQ[j + l + 96] << 6);
      }
    }
  }
}

/** `ggml_vec_dot_q2_K_q8_K` (generic order). */
export function vecDotQ2_K(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  let sumf = 0;
  for (let x = wo, y = ao, end = wo + (n >>> 8) * Q2_K_BYTES; x < end; x += Q2_K_BYTES, y += 292) {
    let summs = 0;
    for (let j = 0; j < 16; j++) {
      const bsum = ((a[y + 260 + 2 * j] | (a[y + 261 + 2 * j] << 8)) << 16) >> 16;
      summs += bsum * (w[x + j] >> 4);
    }
    const yd = f32At(a, y);
    const dall = F(yd * f16At(w, x + 80));
    const dmin = F(yd * f16At(w, x + 82));
    let isum = 0;
    for (let k = 0; k < 2; k++) {
      for (let j = 0; j < 4; j++) {
        for (let h = 0; h < 2; h++) {
          const d = w[x + 8 * k + 2 * j + h] & 0xf;
          const q2 = x + 16 + 32 * k + 16 * h;
          const q8 = y + 4 + 128 * k + 32 * j + 16 * h;
          let isuml = 0;
          for (let l = 0; l < 16; l++) {
            isuml += ((a[q8 + l] << 24) >> 24) * ((w[q2 + l] >> (2 * j)) & 3);
          }
          isum += d * isuml;
        }
      }
    }
    sumf = F(sumf + F(F(dall * isum) - F(dmin * summs)));
  }
  return sumf;
}

// ---------------------------------------------------------------- Q3_K

/** The sixteen 6-bit Q3_K scales (still biased by 32) of the 12 bytes at `o`, into `dst`. */
export function q3kScales(b: Uint8Array, o: number, dst: Int32Array | number[]): void {
  for (let j = 0; j < 16; j++) {
    const lo = j < 8 ? b[o + j] & 0xf : b[o + j - 8] >> 4;
    dst[j] = lo | (((b[o + 8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4);
  }
}

const SC16 = new Int32Array(16);

/** `dequantize_row_q3_K`. */
export function dequantizeQ3_K(
  src: Uint8Array,
  so: number,
  n: number,
  out: Float32Array,
  oo: number,
): void {
  for (let b = so, o = oo, end = oo + n; o < end; b += Q3_K_BYTES, o += 256) {
    const dAll = f16At(src, b + 108);
    q3kScales(src, b + 96, SC16);
    for (let k = 0; k < 2; k++) {
      for (let j = 0; j < 4; j++) {
        const m = 1 << (4 * k + j);
        for (let h = 0; h < 2; h++) {
          const dl = F(dAll * (SC16[8 * k + 2 * j + h] - 32));
          const y = o + 128 * k + 32 * j + 16 * h;
          for (let l = 0; l < 16; l++) {
            const e = 16 * h + l;
            const q = ((src[b + 32 + 32 * k + e] >> (2 * j)) & 3) - (src[b + e] & m ? 0 : 4);
            out[y + l] = F(dl * q);
          }
        }
      }
    }
  }
}

/** `make_q3_quants(n, nmax, x, L, do_rmse = true)`: levels (+nmax) into `LS[lo..]`, returns the scale. */
function makeQ3(n: number, nmax: number, x: Float32Array, xo: number, lo: number): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    LS.fill(0, lo, lo + n);
    return 0;
  }
  const iscale = F(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(F(iscale * v))));
    LS[lo + i] = l;
    const w = F(v * v);
    sumlx = F(sumlx + F(F(w * v) * l));
    suml2 = F(suml2 + F(F(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const w = F(v * v);
      const li = LS[lo + i];
      let slx = F(sumlx - F(F(w * v) * li));
      if (slx > 0) {
        let sl2 = F(suml2 - F(F(w * li) * li));
        const nl = Math.max(-nmax, Math.min(nmax - 1, nearestInt(F(F(v * sl2) / slx))));
        if (nl !== li) {
          slx = F(slx + F(F(w * v) * nl));
          sl2 = F(sl2 + F(F(w * nl) * nl));
          if (sl2 > 0 && F(F(slx * slx) * suml2) > F(F(sumlx * sumlx) * sl2)) {
            LS[lo + i] = nl;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (changed === 0) break;
  }
  for (let i = 0; i < n; i++) LS[lo + i] += nmax;
  return suml2 > 0 ? F(sumlx / suml2) : 0;
}

/** `quantize_row_q3_K_ref`. */
export function quantizeQ3_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += Q3_K_BYTES) {
    out.fill(0, b, b + Q3_K_BYTES);
    let maxScale = 0;
    let amax = 0;
    for (let j = 0; j < 16; j++) {
      SCALES16[j] = makeQ3(16, 4, src, i + 16 * j, 16 * j);
      const s = Math.abs(SCALES16[j]);
      if (s > amax) {
        amax = s;
        maxScale = SCALES16[j];
      }
    }
    const sc = b + 96;
    if (maxScale !== 0) {
      const iscale = F(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        let l = (nearestInt(F(iscale * SCALES16[j])) << 24) >> 24; // int8_t l = nearest_int(...)
        l = Math.max(-32, Math.min(31, l)) + 32;
        if (j < 8) out[sc + j] = l & 0xf;
        else out[sc + j - 8] |= (l & 0xf) << 4;
        l >>= 4;
        out[sc + 8 + (j % 4)] |= l << (2 * (j >> 2));
      }
      putF16(out, b + 108, F(1 / iscale));
    }
    const dAll = f16At(out, b + 108);
    q3kScales(out, sc, SC16);
    for (let j = 0; j < 16; j++) {
      const d = F(dAll * (SC16[j] - 32));
      if (d === 0) continue;
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(F(src[i + 16 * j + ii] / d));
        LS[16 * j + ii] = Math.max(-4, Math.min(3, l)) + 4;
      }
    }
    let m = 0;
    let hm = 1;
    for (let j = 0; j < 256; j++) {
      if (LS[j] > 3) {
        out[b + m] |= hm;
        LS[j] -= 4;
      }
      if (++m === 32) {
        m = 0;
        hm <<= 1;
      }
    }
    for (let j = 0; j < 256; j += 128) {
      for (let l = 0; l < 32; l++) {
        out[b + 32 + j / 4 + l] = LS[j + l] | (LS[j + l + 32] << 2) | (LS[j + l + 64] << 4) |
          (LS[j + l + 96] << 6);
      }
    }
  }
}

const AUX8 = new Int8Array(256);
const AUX32 = new Int32Array(8);
const SUMS = new Float32Array(8);

/** `ggml_vec_dot_q3_K_q8_K` (generic order: 8 integer lanes, f32 `sums[8]`, summed at the end). */
export function vecDotQ3_K(
  n: number,
  w: Uint8Array,
  wo: number,
  a: Uint8Array,
  ao: number,
): number {
  SUMS.fill(0);
  for (let x = wo, y = ao, end = wo + (n >>> 8) * Q3_K_BYTES; x < end; x += Q3_K_BYTES, y += 292) {
    for (let k = 0; k < 2; k++) {
      for (let j = 0; j < 4; j++) {
        const m = 1 << (4 * k + j);
        for (let l = 0; l < 32; l++) {
          AUX8[128 * k + 32 * j + l] = ((w[x + 32 + 32 * k + l] >> (2 * j)) & 3) -
            (w[x + l] & m ? 0 : 4);
        }
      }
    }
    q3kScales(w, x + 96, SC16);
    AUX32.fill(0);
    let p = 0;
    for (let s = 0; s < 16; s++) {
      const scale = SC16[s] - 32;
      for (let g = 0; g < 2; g++) {
        for (let l = 0; l < 8; l++) {
          AUX32[l] += scale * (((a[y + 4 + p + l] << 24) >> 24) * AUX8[p + l]);
        }
        p += 8;
      }
    }
    const d = F(f16At(w, x + 108) * f32At(a, y));
    for (let l = 0; l < 8; l++) SUMS[l] = F(SUMS[l] + F(d * AUX32[l]));
  }
  let sumf = 0;
  for (let l = 0; l < 8; l++) sumf = F(sumf + SUMS[l]);
  return sumf;
}
