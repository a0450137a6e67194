//! Packed IQ4_NL (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for IQ4_NL and does not pack it).
//!
//! A group of 4 rows is, per block `i`, one contiguous 72-byte chunk at `72i`
//! (one memory stream per group, as `packed_legacy.rs`): `d: f16[4]` (row `r`
//! at `2r`), then the 4 rows' 16 quant bytes at `8 + 16r` in the byte order
//! `f` of `packed.rs`, so dot lane `j` reads exactly the elements lane `j` of
//! `tiles::tile_legacy` sums. The kernel (`c/relaxed_kquants.c`) looks the
//! nibbles up in `kvalues_iq4nl` (−127..113) with `i8x16.relaxed_swizzle`,
//! moves each activation's sign onto its weight as `x = w ^ m` (`m = a < 0`)
//! and dots with `|a|` (≤ 127: a 7-bit operand, so
//! `i16x8.relaxed_dot_i8x16_i7x16_s` is exact), adding
//! `c8 = Σ |a|` over the lane's negative elements (`Σ x·|a| + c8 = Σ w·a`,
//! as in the relaxed Q8_0 kernel): the same exact integers, scaled by the
//! same f32 `d·d_a` — bit-identical to the standard layout. Decode runs the
//! pass's two groups block by block (two memory streams).

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 18;

/// Σ of each group of 4 bytes (i8) → i32x4.
#[inline(always)]
fn sum4(v: v128) -> v128 {
    i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(v))
}

#[inline(always)]
fn perm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
}

#[inline(always)]
fn unperm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v)
}


impl PackedType for Packed<IQ4_NL> {
    const TY: u32 = IQ4_NL;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let c = g.add(72 * i);
        *dst = *c.add(2 * r);
        *dst.add(1) = *c.add(2 * r + 1);
        st(dst.add(2), unperm(ld(c.add(8 + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let c = g.add(72 * i);
        *c.add(2 * r) = *src;
        *c.add(2 * r + 1) = *src.add(1);
        st(c.add(8 + 16 * r), perm(ld(src.add(2))));
    }
    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b)) & 0x7c00 != 0x7c00)
    }
}

impl GroupKernel for Packed<IQ4_NL> {
    /// Expanded activation row: `d: f32[nb]`, then per block `|a|` of the
    /// two 16-byte halves in the order `f`, their sign masks `m` and
    /// `c8 = Σ |a|` over each dot lane's negative elements (i32x4): 80 B.
    /// With `x = w ^ m` (`−w − 1` where `a < 0`), `Σ x·|a| + c8 = Σ w·a`
    /// exactly (as the relaxed Q8_0 kernel; `|x| ≤ 127`).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 80 * (cols / 32)
    }
    /// Expand one Q8_0 activation row (quants ≥ −127, as `quantize_q8_0` writes them).
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 32;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(34 * i);
            *d.add(i) = crate::half::f16_to_f32(rd_u16(b));
            let (lo, hi) = (perm(ld(b.add(2))), perm(ld(b.add(18))));
            let o = y.add(80 * i);
            let (al, ah) = (i8x16_abs(lo), i8x16_abs(hi));
            let (ml, mh) = (i8x16_lt(lo, i8x16_splat(0)), i8x16_lt(hi, i8x16_splat(0)));
            st(o, al);
            st(o.add(16), ah);
            st(o.add(32), ml);
            st(o.add(48), mh);
            st(o.add(64), i32x4_add(sum4(v128_and(al, ml)), sum4(v128_and(ah, mh))));
        }
    }
    c_group_kernels!(rx_group2_iq4_nl, rx_tile_iq4_nl);
}
