//! Packed MXFP4 (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for MXFP4 and does not pack it).
//!
//! A group of 4 rows is, per block `i`, one contiguous 68-byte chunk at `68i`
//! (one memory stream per group, as `packed_legacy.rs`): the 4 rows' E8M0
//! bytes `e: u8[4]`, then the 4 rows' 16 quant bytes at `4 + 16r` in the byte
//! order `f` of `packed.rs`, so dot lane `j` reads exactly the elements lane
//! `j` of `tiles::tile_legacy` sums. The kernel (`c/relaxed_kquants.c`) looks
//! the nibbles up in `kvalues_mxfp4 + 12` (0..24: a 7-bit operand, so
//! `i16x8.relaxed_dot_i8x16_i7x16_s` is exact) and starts each block's dot
//! from `c = −12·Σa` per lane: the same exact integers, scaled by the same
//! f32 `e8m0_half(e)·d_a` — bit-identical to the standard layout. Decode runs
//! the pass's two groups block by block (two memory streams).

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 17;

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

impl PackedType for Packed<MXFP4> {
    const TY: u32 = MXFP4;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let c = g.add(68 * i);
        *dst = *c.add(r);
        st(dst.add(1), unperm(ld(c.add(4 + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let c = g.add(68 * i);
        *c.add(r) = *src;
        st(c.add(4 + 16 * r), perm(ld(src.add(1))));
    }
    /// Every matrix qualifies (any E8M0 byte has a finite scale).
    unsafe fn eligible(_w: *const u8, _n: usize) -> bool {
        true
    }
}

impl GroupKernel for Packed<MXFP4> {
    /// Expanded activation row: `d: f32[nb]`, then per block the two 16-byte
    /// halves in the order `f` and `c = −12·Σa` per dot lane (i32x4).
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
            st(o.add(32), i32x4_mul(i32x4_add(sum4(lo), sum4(hi)), i32x4_splat(-12)));
        }
    }
    c_group_kernels!(rx_group2_mxfp4, rx_tile_mxfp4);
}
