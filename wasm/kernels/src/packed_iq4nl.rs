//! Packed IQ4_NL (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for IQ4_NL and does not pack it).
//!
//! A group of 4 rows is, per block `i`, one contiguous 72-byte chunk at `72i`
//! (one memory stream per group, as `packed_legacy.rs`), rows in lanes:
//! `d: f16[4]` (row `r` at `2r`), then four quant vectors `V_j` at `8 + 16j`
//! whose bytes `4r..4r+3` are row `r`'s standard quant bytes `4j..4j+3` (low
//! nibbles: elements `4j..4j+3`, high nibbles: `16+4j..16+4j+3`). The kernel
//! (`c/relaxed_kquants.c`) looks the nibbles up in `kvalues_iq4nl` (−127..113)
//! with `i8x16.relaxed_swizzle`, moves each activation's sign onto its weight
//! as `x = w ^ m` (`m = a < 0`) and dots with `|a|` (≤ 127: a 7-bit operand, so
//! `i16x8.relaxed_dot_i8x16_i7x16_s` is exact), each 4-element group of `|a|`
//! and `m` brought to all four lanes by `v128.load32_splat`, so
//! i32 lane `r` sums row `r` only; starting from `c8 = Σ |a|` over the
//! block's negative elements (`Σ x·|a| + c8 = Σ w·a`), lane `r` ends as row
//! `r`'s exact block sum, and one convert, one multiply by `d_w·d_a` and one
//! add per block serve the 4 rows: ggml's generic order (`sumf += d·sumi`),
//! as `tiles.rs` computes IQ4_NL and as the scalar twin — bit-identical to
//! both. Decode runs the pass's two groups block by block (two memory streams).

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
        for j in 0..4 {
            core::ptr::copy_nonoverlapping(c.add(8 + 16 * j + 4 * r), dst.add(2 + 4 * j), 4);
        }
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let c = g.add(72 * i);
        *c.add(2 * r) = *src;
        *c.add(2 * r + 1) = *src.add(1);
        for j in 0..4 {
            core::ptr::copy_nonoverlapping(src.add(2 + 4 * j), c.add(8 + 16 * j + 4 * r), 4);
        }
    }
    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b)) & 0x7c00 != 0x7c00)
    }
}

impl GroupKernel for Packed<IQ4_NL> {
    /// Expanded activation row: `d: f32[nb]`, then per block `|a|` of
    /// elements 0..15 and their sign masks `m` (`a < 0`), the same of
    /// elements 16..31, and `c8 = Σ |a|` over the block's negative elements
    /// (i32x4 splat): 80 B. The kernels bring each 4-element group to all
    /// four lanes with `v128.load32_splat`. With `x = w ^ m` (`−w − 1` where
    /// `a < 0`), `Σ x·|a| + c8 = Σ w·a` exactly (as the relaxed Q8_0 kernel;
    /// `|x| ≤ 127`).
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
            let (lo, hi) = (ld(b.add(2)), ld(b.add(18)));
            let o = y.add(80 * i);
            let (al, ah) = (i8x16_abs(lo), i8x16_abs(hi));
            let (ml, mh) = (i8x16_lt(lo, i8x16_splat(0)), i8x16_lt(hi, i8x16_splat(0)));
            st(o, al);
            st(o.add(16), ml);
            st(o.add(32), ah);
            st(o.add(48), mh);
            st(o.add(64), i32x4_splat(hsum_i32(i32x4_add(sum4(v128_and(al, ml)), sum4(v128_and(ah, mh))))));
        }
    }
    c_group_kernels!(rx_group2_iq4_nl, rx_tile_iq4_nl);
}
