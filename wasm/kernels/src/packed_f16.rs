//! Dot products over packed F16 rows (`packed.rs`): each 8-element group
//! is stored as u32 lanes `e[m] | e[4+m] << 16`, so [`f16x8`] converts 8
//! finite values with two shifts, a mask and a multiply by 2^112 (the
//! generic f16 → f32 needs ~10 ops per 4). Every function keeps the
//! accumulators and order of its standard twin (`dot::dot_f16`,
//! `tiles::tile_float`), so results are bit-identical.

use crate::group::pin;
use crate::simd::*;

/// 8 packed f16 (one 16-byte group, lanes `e[m] | e[4+m] << 16`) → the f32
/// of `e[0..4]` and of `e[4..8]`; finite values only.
#[inline(always)]
pub unsafe fn f16x8(p: *const u8, m: v128, k: v128) -> (v128, v128) {
    let v = ld(p);
    let lo = f32x4_mul(v128_and(i32x4_shr(i32x4_shl(v, 16), 3), m), k);
    let hi = f32x4_mul(v128_and(i32x4_shr(v, 3), m), k);
    (lo, hi)
}

/// Packed F16 row · f16-rounded activations; same accumulators and order as
/// `dot::dot_f16`.
pub unsafe fn dot_f16p(w: *const u8, a: *const u8, n: usize) -> f32 {
    let a = a as *const f32;
    let m = pin(u32x4_splat(0x8fff_e000));
    let k = pin(f32x4_splat(f32::from_bits(239 << 23)));
    let mut acc = [f32x4_splat(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (w0, w1) = f16x8(w.add(2 * i), m, k);
        let (w2, w3) = f16x8(w.add(2 * i + 16), m, k);
        acc[0] = f32x4_add(acc[0], f32x4_mul(w0, ldf(a.add(i))));
        acc[1] = f32x4_add(acc[1], f32x4_mul(w1, ldf(a.add(i + 4))));
        acc[2] = f32x4_add(acc[2], f32x4_mul(w2, ldf(a.add(i + 8))));
        acc[3] = f32x4_add(acc[3], f32x4_mul(w3, ldf(a.add(i + 12))));
        i += 16;
    }
    if i + 8 <= n {
        let (w0, w1) = f16x8(w.add(2 * i), m, k);
        acc[0] = f32x4_add(acc[0], f32x4_mul(w0, ldf(a.add(i))));
        acc[0] = f32x4_add(acc[0], f32x4_mul(w1, ldf(a.add(i + 4))));
        i += 8;
    }
    if i + 4 <= n {
        let wv = ld_f16x4((w as *const u16).add(i));
        acc[0] = f32x4_add(acc[0], f32x4_mul(wv, ldf(a.add(i))));
        i += 4;
    }
    let mut s = hsum_f32(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
    while i < n {
        s += crate::half::f16_to_f32(*(w as *const u16).add(i)) * *a.add(i);
        i += 1;
    }
    s
}

/// [`dot_f16p`] of four rows at once (each row's order unchanged; four
/// memory streams), with the conversion's 2^112 moved onto the activation
/// (one multiply per 4 activations shared by the rows instead of one per 4
/// weights; 0.81x time on DRAM-sized matrices): a weight lane after shift and
/// mask reads as `w·2^-112` exactly (normals, subnormals and zeros; wasm has
/// no flush-to-zero), the activation (f16-rounded, |a| ≤ 65504, or ±inf/NaN)
/// times 2^112 is exact and finite where `a` is, so each product is the same
/// real number as `w·a` and rounds to the same f32.
pub unsafe fn dot_f16p_x4(w: [*const u8; 4], a: *const u8, n: usize, out: *mut f32, ostride: usize) {
    const R: usize = 4;
    let a = a as *const f32;
    let m = pin(u32x4_splat(0x8fff_e000));
    let k = pin(f32x4_splat(f32::from_bits(239 << 23)));
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    let mut i = 0;
    while i + 16 <= n {
        for h in 0..2 {
            let a0 = f32x4_mul(ldf(a.add(i + 8 * h)), k);
            let a1 = f32x4_mul(ldf(a.add(i + 8 * h + 4)), k);
            for r in 0..R {
                let v = ld(w[r].add(2 * i + 16 * h));
                let lo = v128_and(i32x4_shr(i32x4_shl(v, 16), 3), m);
                let hi = v128_and(i32x4_shr(v, 3), m);
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
            let (w0, w1) = f16x8(wr.add(2 * j), m, k);
            acc0 = f32x4_add(acc0, f32x4_mul(w0, ldf(a.add(j))));
            acc0 = f32x4_add(acc0, f32x4_mul(w1, ldf(a.add(j + 4))));
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

/// Packed F16 row × T tokens (T ≥ 2); same order as `tiles::tile_float`.
#[inline(always)]
pub unsafe fn tile_f16p<const T: usize>(w: *const u8, n: usize, a: *const f32, arow: usize, out: *mut f32, ostride: usize) {
    let m = pin(u32x4_splat(0x8fff_e000));
    let k = pin(f32x4_splat(f32::from_bits(239 << 23)));
    let mut acc = [[f32x4_splat(0.0); 2]; T];
    let mut i = 0;
    while i + 8 <= n {
        let (w0, w1) = f16x8(w.add(2 * i), m, k);
        for t in 0..T {
            let at = a.add(t * arow + i);
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
