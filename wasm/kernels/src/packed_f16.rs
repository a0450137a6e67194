//! Dot products over packed F16 rows (`packed.rs`): each 8-element group
//! is stored as u32 lanes `e[m] | e[4+m] << 16`, so two shifts and a mask
//! turn 8 finite values into the f32 bits of `w·2^-112` (exact: normals,
//! subnormals and zeros; wasm has no flush-to-zero). The 2^112 goes onto
//! the activation instead, once per matmul ([`scale_act`]): the activation
//! is f16-rounded (|a| ≤ 65504, or ±inf/NaN), so `a·2^112` is exact and
//! finite where `a` is, and each product `(w·2^-112)·(a·2^112)` is the same
//! real number as `w·a` and rounds to the same f32. Every function keeps the
//! accumulators and order of its standard twin (`dot::dot_f16`,
//! `tiles::tile_float`), so results are bit-identical.

use crate::group::pin;
use crate::simd::*;

/// 8 packed f16 (one 16-byte group, lanes `e[m] | e[4+m] << 16`; finite
/// values) → the f32 bits of `e[0..4]·2^-112` and `e[4..8]·2^-112`
/// (`m = 0x8fffe000` keeps sign, exponent and mantissa).
#[inline(always)]
pub unsafe fn f16x8(p: *const u8, m: v128) -> (v128, v128) {
    let v = ld(p);
    (v128_and(i32x4_shr(i32x4_shl(v, 16), 3), m), v128_and(i32x4_shr(v, 3), m))
}

/// `s[i] = a[i]·2^112` for `i < n & !7` (the span the packed kernels' 8-wide
/// loops read; the 4-wide and scalar tails read `a`): the activation side of
/// the conversion, once per token and matmul instead of once per row (group).
pub unsafe fn scale_act(a: *const u8, n: usize, s: *mut f32) {
    let a = a as *const f32;
    let k = f32x4_splat(f32::from_bits(239 << 23));
    let mut i = 0;
    while i + 8 <= n {
        stf(s.add(i), f32x4_mul(ldf(a.add(i)), k));
        stf(s.add(i + 4), f32x4_mul(ldf(a.add(i + 4)), k));
        i += 8;
    }
}

/// `R` packed F16 rows (R = 1 or 2) · one f16-rounded activation row `a`,
/// [`scale_act`]ed into `sa`; row `r` to `out[r·ostride]`. Each row's four
/// accumulators and order are those of `dot::dot_f16`. Two rows per call
/// (two memory streams, shared activation loads) keep their eight
/// accumulators and the mask in registers; four rows' sixteen did not (V8
/// spilled them): 2 rows measured 1.2–1.3× the 4-row kernel on Zen 3.
#[inline(always)]
pub unsafe fn dot_f16p<const R: usize>(w: [*const u8; R], sa: *const f32, a: *const u8, n: usize, out: *mut f32, ostride: usize) {
    let a = a as *const f32;
    let m = pin(u32x4_splat(0x8fff_e000));
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    let mut i = 0;
    #[cfg(moe_relaxed)]
    if R == 2 {
        // the relaxed build's main loop (c/relaxed.c `rx_f16p_x2`: fused multiply-adds, same bits)
        extern "C" {
            fn rx_f16p_x2(w0: *const u8, w1: *const u8, sa: *const f32, n16: u32, acc: *mut f32);
        }
        i = n & !15;
        rx_f16p_x2(w[0], w[1], sa, i as u32, acc.as_mut_ptr() as *mut f32);
    }
    while i + 16 <= n {
        for h in 0..2 {
            let a0 = ldf(sa.add(i + 8 * h));
            let a1 = ldf(sa.add(i + 8 * h + 4));
            for r in 0..R {
                let (lo, hi) = f16x8(w[r].add(2 * i + 16 * h), m);
                acc[r][2 * h] = f32x4_add(acc[r][2 * h], f32x4_mul(lo, a0));
                acc[r][2 * h + 1] = f32x4_add(acc[r][2 * h + 1], f32x4_mul(hi, a1));
            }
        }
        i += 16;
    }
    for r in 0..R {
        let wr = w[r];
        let mut acc0 = acc[r][0];
        let mut j = i;
        if j + 8 <= n {
            let (w0, w1) = f16x8(wr.add(2 * j), m);
            acc0 = f32x4_add(acc0, f32x4_mul(w0, ldf(sa.add(j))));
            acc0 = f32x4_add(acc0, f32x4_mul(w1, ldf(sa.add(j + 4))));
            j += 8;
        }
        if j + 4 <= n {
            acc0 = f32x4_add(acc0, f32x4_mul(ld_f16x4((wr as *const u16).add(j)), ldf(a.add(j))));
            j += 4;
        }
        let mut s = hsum_f32(f32x4_add(f32x4_add(acc0, acc[r][1]), f32x4_add(acc[r][2], acc[r][3])));
        while j < n {
            s += crate::half::f16_to_f32(*(wr as *const u16).add(j)) * *a.add(j);
            j += 1;
        }
        *out.add(r * ostride) = s;
    }
}

/// Two packed F16 rows · one token ([`dot_f16p`]).
pub unsafe fn dot_f16p_x2(w: [*const u8; 2], sa: *const f32, a: *const u8, n: usize, out: *mut f32, ostride: usize) {
    dot_f16p::<2>(w, sa, a, n, out, ostride)
}

/// One packed F16 row · one token ([`dot_f16p`]).
pub unsafe fn dot_f16p_x1(w: *const u8, sa: *const f32, a: *const u8, n: usize) -> f32 {
    let mut s = 0.0f32;
    dot_f16p::<1>([w], sa, a, n, &mut s, 0);
    s
}

/// Packed F16 row × T tokens (T ≥ 2; activations `a` and, [`scale_act`]ed,
/// `sa`, both `arow` f32 apart); same accumulators and order as
/// `tiles::tile_float`.
#[inline(always)]
pub unsafe fn tile_f16p<const T: usize>(w: *const u8, n: usize, sa: *const f32, a: *const f32, arow: usize, out: *mut f32, ostride: usize) {
    let m = pin(u32x4_splat(0x8fff_e000));
    let mut acc = [[f32x4_splat(0.0); 2]; T];
    let mut i = 0;
    while i + 8 <= n {
        let (w0, w1) = f16x8(w.add(2 * i), m);
        for t in 0..T {
            let at = sa.add(t * arow + i);
            acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(w0, ldf(at)));
            acc[t][1] = f32x4_add(acc[t][1], f32x4_mul(w1, ldf(at.add(4))));
        }
        i += 8;
    }
    if i + 4 <= n {
        let w0 = ld_f16x4((w as *const u16).add(i));
        for t in 0..T {
            acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(w0, ldf(a.add(t * arow + i))));
        }
        i += 4;
    }
    let mut s = [0.0f32; T];
    for t in 0..T {
        s[t] = hsum_f32(f32x4_add(acc[t][0], acc[t][1]));
    }
    while i < n {
        let wv = crate::half::f16_to_f32(*(w as *const u16).add(i));
        for t in 0..T {
            s[t] += wv * *a.add(t * arow + i);
        }
        i += 1;
    }
    for t in 0..T {
        *out.add(t * ostride) = s[t];
    }
}
