/**
 * K-quant weight quantizers (Q4_K, Q5_K, Q6_K), used by our GGUF writer for test models.
 *
 * NOT llama.cpp's `make_qkx2_quants` / `make_qx_quants` search. A simpler, correct scheme:
 * - Q4_K/Q5_K: per 32-sub-block scale = (max − min(0, min)) / levels and min = −min(0, min);
 *   super-block `d = max scale / 63`, `dmin = max min / 63` (fp16); each sub-block's 6-bit
 *   scale and min are floor or ceil of scale/d, min/dmin — whichever of the 4 pairs gives the
 *   least squared error; values `q = clamp(rne((x + dmin·m)/(d·sc)), 0, levels)`.
 * - Q6_K: per 16-sub-block signed scale `max/−32`; super-block `iscale = −128/max scale`,
 *   int8 scales `min(127, rne(iscale·scale))`, `d = f16(1/iscale)`;
 *   values `q = clamp(rne(x/(d·sc)), −32, 31)`.
 * Blocks are valid and dequantize to within about one quantization step of the input (see the
 * per-type bounds in traits_test.ts); they are not byte-identical to llama-quantize output.
 *
 * @module
 */

import { clamp, f16At, putF16, roundHalfEven } from "./block_util.ts";

const F = Math.fround;

// ---------------------------------------------------------------- weight quantizers (simple)

const L = new Uint8Array(256);
const SCALES = new Float32Array(16);
const MINS = new Float32Array(16);

/**
 * Quantize `x[o..o+n)` as `q = clamp(rne((x+ml)/dl), 0, levels)` (value `dl*q - ml`); returns the
 * squared error and, when `dst` is given, stores the levels at `dst[dOff..]`.
 */
function subBlockError(
  x: Float32Array,
  o: number,
  n: number,
  dl: number,
  ml: number,
  levels: number,
  dst: Uint8Array | null,
  dOff: number,
): number {
  let err = 0;
  for (let k = 0; k < n; k++) {
    const v = x[o + k];
    const q = dl > 0 ? clamp(roundHalfEven(F(F(v + ml) / dl)), 0, levels) : 0;
    const e = F(F(dl * q) - ml) - v;
    err += e * e;
    if (dst !== null) dst[dOff + k] = q;
  }
  return err;
}

function quantK45(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
  five: boolean,
): void {
  const bs = five ? 176 : 144;
  const levels = five ? 31 : 15;
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += bs) {
    out.fill(0, b, b + bs);
    let maxScale = 0;
    let maxMin = 0;
    for (let s = 0; s < 8; s++) {
      let mn = 0; // ggml clamps the sub-block min to <= 0
      let mx = -Infinity;
      for (let k = 0; k < 32; k++) {
        const v = src[i + 32 * s + k];
        if (v < mn) mn = v;
        if (v > mx) mx = v;
      }
      SCALES[s] = F(F(mx - mn) / levels);
      MINS[s] = -mn;
      if (SCALES[s] > maxScale) maxScale = SCALES[s];
      if (MINS[s] > maxMin) maxMin = MINS[s];
    }
    putF16(out, b, F(maxScale / 63));
    putF16(out, b + 2, F(maxMin / 63));
    const d = f16At(out, b);
    const dmin = f16At(out, b + 2);
    const sc = b + 4;
    for (let j = 0; j < 8; j++) {
      // try floor/ceil of the 6-bit scale and min; keep the pair with the least squared error
      const sF = d > 0 ? SCALES[j] / d : 0;
      const mF = dmin > 0 ? MINS[j] / dmin : 0;
      let best = Infinity;
      let bls = 0;
      let blm = 0;
      for (let t = 0; t < 4; t++) {
        const ls = clamp(t & 1 ? Math.ceil(sF) : Math.floor(sF), 0, 63);
        const lm = clamp(t & 2 ? Math.ceil(mF) : Math.floor(mF), 0, 63);
        const err = subBlockError(src, i + 32 * j, 32, F(d * ls), F(dmin * lm), levels, null, 0);
        if (err < best) {
          best = err;
          bls = ls;
          blm = lm;
        }
      }
      subBlockError(src, i + 32 * j, 32, F(d * bls), F(dmin * blm), levels, L, 32 * j);
      if (j < 4) {
        out[sc + j] = bls;
        out[sc + j + 4] = blm;
      } else {
        out[sc + j + 4] = (bls & 0xf) | ((blm & 0xf) << 4);
        out[sc + j - 4] |= (bls >> 4) << 6;
        out[sc + j] |= (blm >> 4) << 6;
      }
    }
    const qso = five ? 48 : 16;
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        let l1 = L[64 * c + l];
        let l2 = L[64 * c + 32 + l];
        if (five) {
          if (l1 > 15) {
            l1 -= 16;
            out[b + 16 + l] |= 1 << (2 * c);
          }
          if (l2 > 15) {
            l2 -= 16;
            out[b + 16 + l] |= 2 << (2 * c);
          }
        }
        out[b + qso + 32 * c + l] = l1 | (l2 << 4);
      }
    }
  }
}

/** Q4_K weight quantizer (simple scale scheme, see module doc). */
export function quantizeQ4_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  quantK45(src, so, n, out, oo, false);
}

/** Q5_K weight quantizer (simple scale scheme, see module doc). */
export function quantizeQ5_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  quantK45(src, so, n, out, oo, true);
}

/** Q6_K weight quantizer (simple scale scheme, see module doc). */
export function quantizeQ6_K(
  src: Float32Array,
  so: number,
  n: number,
  out: Uint8Array,
  oo: number,
): void {
  for (let i = so, b = oo, end = so + n; i < end; i += 256, b += 210) {
    out.fill(0, b, b + 210);
    let maxAbsScale = 0;
    let maxScale = 0;
    for (let s = 0; s < 16; s++) {
      let amax = 0;
      let max = 0;
      for (let k = 0; k < 16; k++) {
        const v = src[i + 16 * s + k];
        if (Math.abs(v) > amax) {
          amax = Math.abs(v);
          max = v;
        }
      }
      SCALES[s] = F(max / -32);
      if (Math.abs(SCALES[s]) > maxAbsScale) {
        maxAbsScale = Math.abs(SCALES[s]);
        maxScale = SCALES[s];
      }
    }
    const iscale = maxAbsScale > 0 ? F(-128 / maxScale) : 0;
    putF16(out, b + 208, iscale !== 0 ? F(1 / iscale) : 0);
    for (let s = 0; s < 16; s++) {
      out[b + 192 + s] = Math.min(127, roundHalfEven(F(iscale * SCALES[s]))) & 0xff;
    }
    const d = f16At(out, b + 208);
    for (let s = 0; s < 16; s++) {
      const ds = F(d * ((out[b + 192 + s] << 24) >> 24));
      for (let k = 0; k < 16; k++) {
        const v = src[i + 16 * s + k];
        L[16 * s + k] = ds !== 0 ? clamp(roundHalfEven(F(v / ds)), -32, 31) + 32 : 32;
      }
    }
    for (let h = 0; h < 2; h++) {
      const ql = b + 64 * h;
      const qh = b + 128 + 32 * h;
      const j = 128 * h;
      for (let l = 0; l < 32; l++) {
        out[ql + l] = (L[j + l] & 0xf) | ((L[j + l + 64] & 0xf) << 4);
        out[ql + l + 32] = (L[j + l + 32] & 0xf) | ((L[j + l + 96] & 0xf) << 4);
        out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
          ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
      }
    }
  }
}
