/**
 * WGSL snippets shared by the kernels: exact f16 ↔ f32 conversion done with
 * integer ops (WGSL leaves the rounding of `pack2x16float` and the handling
 * of f16 subnormals to the implementation; ggml rounds to nearest even), byte
 * loads at any offset of a `u32` storage array (GGUF blocks of 18/34 bytes are
 * not word aligned), and ggml's AVX2 `expf` polynomial.
 *
 * @module
 */

/** `h2f(h)`: exact fp16 bits → f32 (subnormals, ±inf, NaN kept). */
export const WGSL_F16 = /* wgsl */ `
fn h2f(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    // m * 2^-24 is exact and normal in f32
    return select(1.0, -1.0, s != 0u) * f32(m) * 5.9604644775390625e-8;
  }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// f32 -> fp16 bits, round to nearest even (ggml GGML_FP32_TO_FP16); NaN -> sign|0x7e00.
fn f2h(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) { return sign | select(0x7c00u, 0x7e00u, a > 0x7f800000u); }
  if (a >= 0x477ff000u) { return sign | 0x7c00u; }
  if (a >= 0x38800000u) {
    let m = a - 0x38000000u;
    return sign | ((m + 0xfffu + ((m >> 13u) & 1u)) >> 13u);
  }
  if (a <= 0x33000000u) { return sign; }
  let e = a >> 23u;
  let mant = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;
  var q = mant >> shift;
  let rem = mant & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u) != 0u)) { q = q + 1u; }
  return sign | q;
}

fn round_f16(x: f32) -> f32 { return h2f(f2h(x)); }
`;

/**
 * Byte loads from the storage array named `buf` (`array<u32>`): `<fn>_u8`,
 * `<fn>_u16`, `<fn>_u32` at any byte address (little-endian).
 */
export function wgslByteLoads(buf: string, fn: string): string {
  return /* wgsl */ `
fn ${fn}_u8(b: u32) -> u32 { return (${buf}[b >> 2u] >> ((b & 3u) << 3u)) & 0xffu; }
fn ${fn}_u16(b: u32) -> u32 {
  let i = b >> 2u;
  let s = (b & 3u) << 3u;
  if (s <= 16u) { return (${buf}[i] >> s) & 0xffffu; }
  return ((${buf}[i] >> 24u) | (${buf}[i + 1u] << 8u)) & 0xffffu;
}
fn ${fn}_u32(b: u32) -> u32 {
  let i = b >> 2u;
  let s = (b & 3u) << 3u;
  if (s == 0u) { return ${buf}[i]; }
  return (${buf}[i] >> s) | (${buf}[i + 1u] << (32u - s));
}
`;
}

/**
 * ggml's AVX2 `ggml_v_expf` (one lane) and SiLU lanes, as core/tensor/ggml_math.ts
 * evaluates them. `fma` is fused where the device fuses it (llvmpipe does). WGSL
 * float math is not strict on every driver (Mesa applies inexact algebraic
 * rewrites), so the range reduction takes `n` from the integer bits of `z`.
 */
export const WGSL_EXPF = /* wgsl */ `
fn expf_v(x: f32) -> f32 {
  // z - 0x1.8p23 recovered from z's bits: Mesa folds the float form (fma(x,c,r) - r) into x*c
  let z = fma(x, 0x1.715476p+0f, 0x1.8p23f);
  let ni = bitcast<i32>(bitcast<u32>(z) - 0x4b400000u);
  let n = f32(ni);
  // written with two different-looking factors so the optimizer cannot merge
  // the two fmas into fma(-n, ln2_hi + ln2_lo, x) (Mesa does, losing the split)
  let b = fma(n, -0x1.7f7d1cp-20f, fma(f32(0i - ni), 0x1.62e4p-1f, x));
  let e = bitcast<u32>(z) << 23u;
  let k = bitcast<f32>(e + 0x3f800000u);
  let u = b * b;
  let j = fma(fma(fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
              u, 0x1.ffffecp-1f * b);
  let an = abs(n);
  if (!(an > 126.0)) { return fma(k, j, k); }
  let g = select(0u, 0x82000000u, n <= 0.0);
  let s1 = bitcast<f32>(g + 0x7f000000u);
  if (an > 192.0) { return s1 * s1; }
  let s2 = bitcast<f32>(e - g);
  return fma(s2, j, s2) * s1;
}

fn silu_v(x: f32) -> f32 { return x / (1.0 + expf_v(0.0 - x)); }
`;

/**
 * `reduce_v4(a0..a7)`: ggml's 4 AVX2 accumulators × 8 lanes held as eight
 * vec4 (`a{v}` = lanes 4v..4v+3, i.e. elements i+4v..i+4v+3 of each 32-element
 * step), reduced as `GGML_F32x8_REDUCE` then the 128-bit horizontal adds.
 */
export const WGSL_REDUCE_V4 = /* wgsl */ `
fn reduce_v4(a0: vec4f, a1: vec4f, a2: vec4f, a3: vec4f, a4: vec4f, a5: vec4f, a6: vec4f, a7: vec4f) -> f32 {
  let b0 = (a0 + a4) + (a2 + a6);
  let b1 = (a1 + a5) + (a3 + a7);
  let t = b0 + b1;
  return (t.x + t.y) + (t.z + t.w);
}
`;
