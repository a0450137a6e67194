//! Packed Q4_1, Q5_0 and Q5_1 (relaxed-SIMD build only; the simd128 build
//! keeps the standard-layout kernels of `tiles.rs` for them and does not pack
//! them).
//!
//! A group of 4 rows is, per block `i`, one contiguous chunk (one memory
//! stream per group): the 4 rows' scales, then the 4 rows' 16 quant bytes in
//! the byte order `f` of `packed.rs` (so dot lane `j` reads exactly the
//! elements lane `j` of `tiles::tile_legacy` sums):
//!
//! * Q4_1 (80 B at `80i`): `d: f16[4]`, `m: f16[4]`, runs at `+16 + 16r`.
//! * Q5_0 (88 B at `88i`): `d: f16[4]`, the high-bit plane `P` (16 B) at
//!   `+8`, runs at `+24 + 16r`.
//! * Q5_1 (96 B at `96i`): `d`, `m`, `P` at `+16`, runs at `+32 + 16r`.
//!
//! `P` byte `n`, bit `2r` (`2r + 1`): the fifth bit of row `r`'s element in
//! the low (high) nibble of its quant byte `n`, i.e. bit `f(n)` (`f(n) + 16`)
//! of the standard `qh`. The kernels (`c/relaxed_kquants.c`) build the 4- or
//! 5-bit unsigned weights (7-bit operands, so
//! `i16x8.relaxed_dot_i8x16_i7x16_s` is exact), take Q5_0's `q − 16` as
//! `c = −16·Σa` per lane and Q4_1/Q5_1's `m·s` per block as the standard
//! kernels do: the same exact integers and the same f32 operations —
//! bit-identical to the standard layout.

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

#[inline(always)]
fn perm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
}

#[inline(always)]
fn unperm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v)
}

/// Σ of each group of 4 bytes (i8) → i32x4.
#[inline(always)]
fn sum4(v: v128) -> v128 {
    i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(v))
}

#[inline(always)]
unsafe fn finite(p: *const u8) -> bool {
    rd_u16(p) & 0x7c00 != 0x7c00
}

/// Standard `qh` of row `r` from the plane `P` at `p`: row `r`'s bits moved
/// to bit 7 of each byte, put back in element order, gathered by `bitmask`.
#[inline(always)]
unsafe fn qh_get(p: *const u8, r: usize) -> u32 {
    let v = ld(p);
    let lo = i8x16_bitmask(unperm(i16x8_shl(v, (7 - 2 * r) as u32))) as u32;
    let hi = i8x16_bitmask(unperm(i16x8_shl(v, (6 - 2 * r) as u32))) as u32;
    lo | hi << 16
}

/// Store row `r`'s standard `qh` in the plane `P` at `p` (other rows' bits kept).
#[inline(always)]
unsafe fn qh_set(p: *mut u8, r: usize, qh: u32) {
    // Byte n needs bit f(n) (low nibble) and f(n) + 16 (high nibble) of qh.
    let q = u32x4_splat(qh);
    let bits = u8x16(1, 2, 1, 2, 4, 8, 4, 8, 16, 32, 16, 32, 64, 128, 64, 128);
    let lo = i8x16_swizzle(q, u8x16(0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1));
    let hi = i8x16_swizzle(q, u8x16(2, 2, 3, 3, 2, 2, 3, 3, 2, 2, 3, 3, 2, 2, 3, 3));
    let lo = i8x16_eq(v128_and(lo, bits), bits);
    let hi = i8x16_eq(v128_and(hi, bits), bits);
    let (bl, bh) = (u8x16_splat(1 << (2 * r)), u8x16_splat(2 << (2 * r)));
    let keep = v128_not(v128_or(bl, bh));
    st(p, v128_or(v128_and(ld(p), keep), v128_or(v128_and(lo, bl), v128_and(hi, bh))));
}

/// Copy the two f16 at `s` to `d`.
#[inline(always)]
unsafe fn cp2(s: *const u8, d: *mut u8) {
    *d = *s;
    *d.add(1) = *s.add(1);
}

impl PackedType for Packed<Q4_1> {
    const TY: u32 = Q4_1;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 20;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let b = g.add(80 * i);
        cp2(b.add(2 * r), dst);
        cp2(b.add(8 + 2 * r), dst.add(2));
        st(dst.add(4), unperm(ld(b.add(16 + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let b = g.add(80 * i);
        cp2(src, b.add(2 * r));
        cp2(src.add(2), b.add(8 + 2 * r));
        st(b.add(16 + 16 * r), perm(ld(src.add(4))));
    }
    /// Every `d` and `m` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 20).all(|b| finite(w.add(20 * b)) && finite(w.add(20 * b + 2)))
    }
}

impl PackedType for Packed<Q5_0> {
    const TY: u32 = Q5_0;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 22;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let b = g.add(88 * i);
        cp2(b.add(2 * r), dst);
        let qh = qh_get(b.add(8), r).to_le_bytes();
        for k in 0..4 {
            *dst.add(2 + k) = qh[k];
        }
        st(dst.add(6), unperm(ld(b.add(24 + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let b = g.add(88 * i);
        cp2(src, b.add(2 * r));
        qh_set(b.add(8), r, rd_u32(src.add(2)));
        st(b.add(24 + 16 * r), perm(ld(src.add(6))));
    }
    /// Every `d` finite.
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 22).all(|b| finite(w.add(22 * b)))
    }
}

impl PackedType for Packed<Q5_1> {
    const TY: u32 = Q5_1;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 24;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let b = g.add(96 * i);
        cp2(b.add(2 * r), dst);
        cp2(b.add(8 + 2 * r), dst.add(2));
        let qh = qh_get(b.add(16), r).to_le_bytes();
        for k in 0..4 {
            *dst.add(4 + k) = qh[k];
        }
        st(dst.add(8), unperm(ld(b.add(32 + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let b = g.add(96 * i);
        cp2(src, b.add(2 * r));
        cp2(src.add(2), b.add(8 + 2 * r));
        qh_set(b.add(16), r, rd_u32(src.add(4)));
        st(b.add(32 + 16 * r), perm(ld(src.add(8))));
    }
    /// Every `d` and `m` finite.
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 24).all(|b| finite(w.add(24 * b)) && finite(w.add(24 * b + 2)))
    }
}

/// Expanded Q8_1 activation row (Q4_1, Q5_1): `d: f32[nb]`, then per block
/// the two 16-byte halves in the order `f` and `s` (Q8_1's f16 `s` as f32)
/// in all 4 lanes: 48 B.
unsafe fn expand_q8_1(act: *const u8, cols: usize, dst: *mut u8) {
    let nb = cols / 32;
    let d = dst as *mut f32;
    let y = dst.add(align16(4 * nb));
    for i in 0..nb {
        let b = act.add(36 * i);
        *d.add(i) = crate::half::f16_to_f32(rd_u16(b));
        let o = y.add(48 * i);
        st(o, perm(ld(b.add(4))));
        st(o.add(16), perm(ld(b.add(20))));
        st(o.add(32), f32x4_splat(crate::half::f16_to_f32(rd_u16(b.add(2)))));
    }
}

impl GroupKernel for Packed<Q4_1> {
    /// `d: f32[nb]`, then per block the halves in the order `f` and `s` (f32x4).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 48 * (cols / 32)
    }
    /// Expand one Q8_1 activation row.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        expand_q8_1(act, cols, dst)
    }
    c_group_kernels!(rx_group2_q4_1, rx_tile_q4_1);
}

impl GroupKernel for Packed<Q5_1> {
    /// `d: f32[nb]`, then per block the halves in the order `f` and `s` (f32x4).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 48 * (cols / 32)
    }
    /// Expand one Q8_1 activation row.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        expand_q8_1(act, cols, dst)
    }
    c_group_kernels!(rx_group2_q5_1, rx_tile_q5_1);
}

impl GroupKernel for Packed<Q5_0> {
    /// `d: f32[nb]`, then per block the halves in the order `f` and
    /// `c = −16·Σa` per dot lane (i32x4).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 48 * (cols / 32)
    }
    /// Expand one Q8_0 activation row.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 32;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(34 * i);
            *d.add(i) = crate::half::f16_to_f32(rd_u16(b));
            let (lo, hi) = (perm(ld(b.add(2))), perm(ld(b.add(18))));
            let o = y.add(48 * i);
            st(o, lo);
            st(o.add(16), hi);
            st(o.add(32), i32x4_mul(i32x4_add(sum4(lo), sum4(hi)), i32x4_splat(-16)));
        }
    }
    c_group_kernels!(rx_group2_q5_0, rx_tile_q5_0);
}
