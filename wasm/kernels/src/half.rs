//! IEEE binary16 and bfloat16 conversions (ggml `ggml-impl.h` semantics):
//! f32→f16 rounds to nearest even, overflow → ±inf, NaN → 0x7E00 (sign kept);
//! f32→bf16 rounds to nearest even, NaN → `(u >> 16) | 64`.

use crate::simd::*;

/// f16 bits → f32 (exact). Branch-free (a select), since block scales are
/// converted once per block in the hot loops.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7fff) as u32;
    // Rebias by 2^112: exact for normal and subnormal f16 alike.
    let v = (f32::from_bits(em << 13) * f32::from_bits(239 << 23)).to_bits();
    // inf/NaN: the product kept the payload; force the exponent to all ones.
    let inf = if em >= 0x7c00 { 0x7f80_0000 } else { 0 };
    f32::from_bits(v | inf | sign)
}

/// f32 → f16 bits, round to nearest even (integer formulation).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let u = x.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let a = u & 0x7fff_ffff;
    if a > 0x7f80_0000 {
        return sign | 0x7e00;
    }
    if a >= 0x477f_f000 {
        // >= 65520 rounds to infinity.
        return sign | 0x7c00;
    }
    if a >= 0x3880_0000 {
        // Normal f16: rebias the exponent, round away 13 mantissa bits.
        let v = a - (112 << 23);
        let r = v + 0xfff + ((v >> 13) & 1);
        return sign | (r >> 13) as u16;
    }
    if a <= 0x3300_0000 {
        // <= 2^-25 rounds to zero (2^-25 itself is a tie → even 0).
        return sign;
    }
    // Subnormal f16: shift the full significand right with RNE.
    let e = a >> 23;
    let m = (a & 0x7f_ffff) | 0x80_0000;
    let shift = 126 - e;
    let q = m >> shift;
    let rem = m & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let q = if rem > half || (rem == half && (q & 1) == 1) { q + 1 } else { q };
    sign | q as u16
}

/// f32 → bf16 bits (RNE; NaN quieted).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// bf16 bits → f32.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32x4 → four f16 values in the low 16 bits of u32 lanes. This is the
/// float-arithmetic formulation (FP16 library / ggml `fp32_to_fp16`), a
/// different algorithm from the scalar one above; tests pin them together.
#[inline(always)]
pub fn f32x4_to_f16(x: v128) -> v128 {
    let base = f32x4_mul(
        f32x4_mul(f32x4_abs(x), f32x4_splat(f32::from_bits(0x7780_0000))), // 2^112
        f32x4_splat(f32::from_bits(0x0880_0000)),                           // 2^-110
    );
    let shl1 = i32x4_add(x, x);
    let sign = v128_and(x, u32x4_splat(0x8000_0000));
    let bias = u32x4_max(v128_and(shl1, u32x4_splat(0xff00_0000)), u32x4_splat(0x7100_0000));
    let base = f32x4_add(i32x4_add(u32x4_shr(bias, 1), u32x4_splat(0x0780_0000)), base);
    let exp_bits = v128_and(u32x4_shr(base, 13), u32x4_splat(0x7c00));
    let mant = v128_and(base, u32x4_splat(0xfff));
    let nonsign = i32x4_add(exp_bits, mant);
    let is_nan = u32x4_gt(shl1, u32x4_splat(0xff00_0000));
    v128_or(u32x4_shr(sign, 16), v128_bitselect(u32x4_splat(0x7e00), nonsign, is_nan))
}

/// f32x4 → four bf16 values in the low 16 bits of u32 lanes.
#[inline(always)]
pub fn f32x4_to_bf16(x: v128) -> v128 {
    let lsb = v128_and(u32x4_shr(x, 16), u32x4_splat(1));
    let r = u32x4_shr(i32x4_add(x, i32x4_add(u32x4_splat(0x7fff), lsb)), 16);
    let nan = v128_or(u32x4_shr(x, 16), u32x4_splat(64));
    let is_nan = u32x4_gt(v128_and(x, u32x4_splat(0x7fff_ffff)), u32x4_splat(0x7f80_0000));
    v128_bitselect(nan, r, is_nan)
}

/// Round `n` f32 to f16 bits (SIMD).
pub unsafe fn round_f16(x: *const f32, y: *mut u16, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        let a = f32x4_to_f16(ldf(x.add(i)));
        let b = f32x4_to_f16(ldf(x.add(i + 4)));
        v128_store(y.add(i) as *mut v128, u16x8_narrow_i32x4(a, b));
        i += 8;
    }
    while i < n {
        *y.add(i) = f32_to_f16(*x.add(i));
        i += 1;
    }
}

/// Scalar twin of [`round_f16`].
pub unsafe fn round_f16_scalar(x: *const f32, y: *mut u16, n: usize) {
    for i in 0..n {
        *y.add(i) = f32_to_f16(*x.add(i));
    }
}

/// Round `n` f32 to bf16 bits (SIMD).
pub unsafe fn round_bf16(x: *const f32, y: *mut u16, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        let a = f32x4_to_bf16(ldf(x.add(i)));
        let b = f32x4_to_bf16(ldf(x.add(i + 4)));
        v128_store(y.add(i) as *mut v128, u16x8_narrow_i32x4(a, b));
        i += 8;
    }
    while i < n {
        *y.add(i) = f32_to_bf16(*x.add(i));
        i += 1;
    }
}

/// Scalar twin of [`round_bf16`].
pub unsafe fn round_bf16_scalar(x: *const f32, y: *mut u16, n: usize) {
    for i in 0..n {
        *y.add(i) = f32_to_bf16(*x.add(i));
    }
}

/// `y = f32(f16(x))`: the value an f16 `vec_dot_type` sees, kept as f32 so
/// the dot loop does not convert the activation for every weight row.
pub unsafe fn round_f16_f32(x: *const f32, y: *mut f32, n: usize, simd: bool) {
    let mut i = 0;
    if simd {
        while i + 4 <= n {
            stf(y.add(i), f16x4_to_f32(f32x4_to_f16(ldf(x.add(i)))));
            i += 4;
        }
    }
    while i < n {
        *y.add(i) = f16_to_f32(f32_to_f16(*x.add(i)));
        i += 1;
    }
}

/// `y = f32(bf16(x))` (see [`round_f16_f32`]).
pub unsafe fn round_bf16_f32(x: *const f32, y: *mut f32, n: usize, simd: bool) {
    let mut i = 0;
    if simd {
        while i + 4 <= n {
            stf(y.add(i), i32x4_shl(f32x4_to_bf16(ldf(x.add(i))), 16));
            i += 4;
        }
    }
    while i < n {
        *y.add(i) = bf16_to_f32(f32_to_bf16(*x.add(i)));
        i += 1;
    }
}

/// f16 bits → f32 (SIMD), e.g. to read a KV cache back.
pub unsafe fn f16_to_f32_row(h: *const u16, y: *mut f32, n: usize) {
    let mut i = 0;
    while i + 4 <= n {
        stf(y.add(i), ld_f16x4(h.add(i)));
        i += 4;
    }
    while i < n {
        *y.add(i) = f16_to_f32(*h.add(i));
        i += 1;
    }
}
