//! The small SIMD layer every kernel is written against (simd128).
//!
//! Mirrors the habit of candle's `cpu/simd128.rs`: a handful of inline helpers
//! over `core::arch::wasm32`, so kernels read as arithmetic rather than
//! intrinsic soup. All loads/stores are unaligned (wasm permits it).

pub use core::arch::wasm32::*;

/// Load 16 bytes.
#[inline(always)]
pub unsafe fn ld(p: *const u8) -> v128 {
    v128_load(p as *const v128)
}

/// Load 4 f32.
#[inline(always)]
pub unsafe fn ldf(p: *const f32) -> v128 {
    v128_load(p as *const v128)
}

/// Store 4 f32.
#[inline(always)]
pub unsafe fn stf(p: *mut f32, v: v128) {
    v128_store(p as *mut v128, v)
}

/// Store 16 bytes.
#[inline(always)]
pub unsafe fn st(p: *mut u8, v: v128) {
    v128_store(p as *mut v128, v)
}

/// Horizontal sum of f32x4 as `(l0 + l2) + (l1 + l3)`.
#[inline(always)]
pub fn hsum_f32(v: v128) -> f32 {
    let s = f32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    f32x4_extract_lane::<0>(s) + f32x4_extract_lane::<1>(s)
}

/// Horizontal sum of i32x4 (wrapping).
#[inline(always)]
pub fn hsum_i32(v: v128) -> i32 {
    let s = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    i32x4_extract_lane::<0>(s).wrapping_add(i32x4_extract_lane::<1>(s))
}

/// Horizontal max of f32x4.
#[inline(always)]
pub fn hmax_f32(v: v128) -> f32 {
    let s = f32x4_max(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    let a = f32x4_extract_lane::<0>(s);
    let b = f32x4_extract_lane::<1>(s);
    if b > a {
        b
    } else {
        a
    }
}

/// Four f16 values held zero-extended in u32 lanes → f32x4 (exact, incl.
/// subnormals, inf, NaN).
#[inline(always)]
pub fn f16x4_to_f32(h: v128) -> v128 {
    let sign = i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16);
    let em = v128_and(h, u32x4_splat(0x7fff));
    let sh = i32x4_shl(em, 13);
    // Rebias by multiplying with 2^112: normal and subnormal f16 both land exactly.
    let norm = f32x4_mul(sh, f32x4_splat(f32::from_bits(239 << 23)));
    let infnan = v128_or(sh, u32x4_splat(0x7f80_0000));
    let is_infnan = i32x4_ge(em, i32x4_splat(0x7c00));
    v128_or(v128_bitselect(infnan, norm, is_infnan), sign)
}

/// Load 4 f16 (8 bytes) → f32x4.
#[inline(always)]
pub unsafe fn ld_f16x4(p: *const u16) -> v128 {
    f16x4_to_f32(u32x4_load_extend_u16x4(p))
}

/// Load 4 bf16 (8 bytes) → f32x4.
#[inline(always)]
pub unsafe fn ld_bf16x4(p: *const u16) -> v128 {
    i32x4_shl(u32x4_load_extend_u16x4(p), 16)
}

/// Read a little-endian u16 at an unaligned address.
#[inline(always)]
pub unsafe fn rd_u16(p: *const u8) -> u16 {
    (p as *const u16).read_unaligned()
}

/// Read a little-endian u32 at an unaligned address.
#[inline(always)]
pub unsafe fn rd_u32(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

/// Read a little-endian f32 at an unaligned address.
#[inline(always)]
pub unsafe fn rd_f32(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// `|x|` without libm.
#[inline(always)]
pub fn fabs(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7fff_ffff)
}

/// f32 square root (wasm `f32.sqrt`, correctly rounded).
#[inline(always)]
pub fn sqrtf(x: f32) -> f32 {
    f32x4_extract_lane::<0>(f32x4_sqrt(f32x4_splat(x)))
}

/// Round to nearest, ties to even, as ggml's `nearest_int` (valid for
/// |x| < 2^22): the `x + 1.5·2^23` bit trick.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}
