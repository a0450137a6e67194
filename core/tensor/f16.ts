/**
 * IEEE binary16 (fp16) and bfloat16 conversions with ggml's exact semantics
 * (llama.cpp `ggml/src/ggml-impl.h`, docs/specs-llamacpp.md §2.1):
 *
 * - fp16 → f32 is exact (subnormals included); served from a 65536-entry table.
 * - f32 → fp16 rounds to nearest, ties to even; overflow gives ±inf; NaN gives
 *   `0x7E00` with the sign kept (what `ggml_compute_fp32_to_fp16` returns).
 * - bf16 → f32 is `bits << 16`.
 * - f32 → bf16 is `(u + 0x7fff + ((u >> 16) & 1)) >> 16` (RNE); NaN gives `(u >> 16) | 64`.
 *
 * All f32 → 16-bit conversions treat their argument as an f32: a JS number is
 * first rounded to f32 (`Math.fround`), as the C code receives a `float`.
 *
 * @module
 */

const SCRATCH = new ArrayBuffer(8);
const SCRATCH_F32 = new Float32Array(SCRATCH, 0, 1);
const SCRATCH_U32 = new Uint32Array(SCRATCH, 0, 1);
const SCRATCH_F16 = new Float16Array(SCRATCH, 4, 1);
const SCRATCH_U16 = new Uint16Array(SCRATCH, 4, 1);

/** The f32 bit pattern (as an unsigned 32-bit integer) of `x` rounded to f32. */
export function f32ToBits(x: number): number {
  SCRATCH_F32[0] = x;
  return SCRATCH_U32[0];
}

/** The f32 value whose bit pattern is the unsigned 32-bit integer `bits`. */
export function bitsToF32(bits: number): number {
  SCRATCH_U32[0] = bits >>> 0;
  return SCRATCH_F32[0];
}

/** Decode fp16 bits to their exact value with integer arithmetic (slow path; builds the table). */
export function f16BitsToF32Slow(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * 2 ** (e - 25);
}

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  const u = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const e = (h >>> 10) & 0x1f;
    if (e === 31) {
      // inf / NaN: widen bit-exactly (payload shifted, sign kept), as F16C does.
      u[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
    } else {
      t[h] = f16BitsToF32Slow(h);
    }
  }
  return t;
}

/**
 * fp16 → f32 lookup table: `F16_TO_F32[bits]` is the exact value of the fp16 `bits`
 * (ggml's `ggml_table_f32_f16`).
 */
export const F16_TO_F32: Float32Array = buildF16Table();

/** The value of fp16 bits `h` (0..65535), via {@link F16_TO_F32}. */
export function f16ToF32(h: number): number {
  return F16_TO_F32[h & 0xffff];
}

/**
 * Bit-exact integer f32 → fp16 conversion from f32 bits (RNE, overflow → ±inf,
 * NaN → `sign | 0x7E00`, subnormal results exact). The reference the fast path is tested against.
 */
export function f32BitsToF16(bits: number): number {
  const u = bits >>> 0;
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x7f800000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds (ties-to-even) to inf
  if (a >= 0x38800000) {
    // normal fp16: rebias exponent (127 → 15) and round away 13 mantissa bits, ties to even
    const m = a - 0x38000000;
    return sign | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
  }
  if (a <= 0x33000000) return sign; // <= 2^-25: rounds to zero (2^-25 is a tie → even = 0)
  // subnormal fp16: value = mant * 2^(e-150); unit 2^-24 → shift right by 126 - e
  const e = a >>> 23;
  const mant = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let q = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) !== 0)) q++;
  return sign | q;
}

/**
 * f32 → fp16 bits (ggml `GGML_FP32_TO_FP16`, RNE). `x` is rounded to f32 first.
 * Uses V8's native `Float16Array` store (IEEE RNE) with NaN handled explicitly.
 */
export function f32ToF16(x: number): number {
  if (x !== x) {
    SCRATCH_F32[0] = x;
    return ((SCRATCH_U32[0] >>> 16) & 0x8000) | 0x7e00;
  }
  SCRATCH_F16[0] = Math.fround(x);
  return SCRATCH_U16[0];
}

/** Round `x` (as f32) to the nearest fp16 value and return it as a number. */
export function roundToF16(x: number): number {
  return F16_TO_F32[f32ToF16(x)];
}

/** bf16 bits → f32 value (`bits << 16`). */
export function bf16ToF32(h: number): number {
  SCRATCH_U32[0] = (h & 0xffff) << 16;
  return SCRATCH_F32[0];
}

/** Bit-exact f32 bits → bf16 bits (RNE; NaN → `(u >> 16) | 64`). */
export function f32BitsToBf16(bits: number): number {
  const u = bits >>> 0;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) / 65536) >>> 0;
}

/** f32 → bf16 bits (ggml `GGML_FP32_TO_BF16`, RNE). `x` is rounded to f32 first. */
export function f32ToBf16(x: number): number {
  SCRATCH_F32[0] = x;
  return f32BitsToBf16(SCRATCH_U32[0]);
}

/** Round `x` (as f32) to the nearest bf16 value and return it as a number. */
export function roundToBf16(x: number): number {
  return bf16ToF32(f32ToBf16(x));
}
