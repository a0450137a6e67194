/**
 * Small byte and rounding helpers shared by the block formats.
 *
 * @module
 */

import { bitsToF32, F16_TO_F32, f32ToF16 } from "./f16.ts";

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

/** Clamp `v` to `[lo, hi]`. */
export function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** fp16 value stored little-endian at byte `o` of `b`. */
export function f16At(b: Uint8Array, o: number): number {
  return F16_TO_F32[b[o] | (b[o + 1] << 8)];
}

/** f32 value stored little-endian at byte `o` of `b`. */
export function f32At(b: Uint8Array, o: number): number {
  return bitsToF32(b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24));
}

/** Unsigned 32-bit little-endian integer at byte `o` of `b`. */
export function u32At(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

/** Store `x` rounded to fp16 (RNE) little-endian at byte `o` of `out`. */
export function putF16(out: Uint8Array, o: number, x: number): void {
  const h = f32ToF16(x);
  out[o] = h & 0xff;
  out[o + 1] = h >>> 8;
}

/** Store the unsigned 32-bit integer `v` little-endian at byte `o` of `out`. */
export function putU32(out: Uint8Array, o: number, v: number): void {
  out[o] = v & 0xff;
  out[o + 1] = (v >>> 8) & 0xff;
  out[o + 2] = (v >>> 16) & 0xff;
  out[o + 3] = (v >>> 24) & 0xff;
}

/** max |x[o..o+32)|. */
export function absMax32(x: Float32Array, o: number): number {
  let amax = 0;
  for (let j = 0; j < 32; j++) {
    const v = Math.abs(x[o + j]);
    if (v > amax) amax = v;
  }
  return amax;
}
