/**
 * Legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * - `dequantize*`: `ggml-quants.c` `dequantize_row_*` (docs/specs-llamacpp.md §2.2).
 * - `quantize*`: the weight quantizers `quantize_row_*_ref` (used by our GGUF writer).
 * - Activation quantization and dot kernels live in quant_legacy_dot.ts.
 *
 * Offsets are in bytes for byte arrays and in elements for float arrays; `n` is a multiple of 32.
 *
 * @module
 */

import { F16_TO_F32 } from "./f16.ts";
import { absMax32, putF16, putU32, roundHalfAway, u32At } from "./block_util.ts";

const F = Math.fround;
const H = F16_TO_F32;

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
