//! Packed IQ4_XS (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `lowbit.rs` for IQ4_XS and does not pack it).
//!
//! A group of 4 rows is, per super-block `i`, 544 bytes at `544i`: the rows'
//! `d: f16[4]` (`+0`), their 32 six-bit scales `v = 8r + ib` as a nibble
//! plane `L` (`+8`, 16 B: byte `v % 16`, nibble `v / 16`) and a 2-bit plane
//! `H` (`+24`, 8 B: byte `v % 8`, bits `2·(v / 8)`), then per sub-block `ib`
//! the 4 rows' 16 quant bytes (`+32 + 64ib + 16r`) in the byte order `f` of
//! `packed.rs`, so dot lane `j` reads exactly the elements lane `j` of
//! `lowbit::tile_iq4_xs` sums. The kernel (`c/relaxed_kquants.c`) looks the
//! nibbles up in `kvalues_iq4nl`, moves each activation's sign onto its
//! weight and dots with `|a|` (≤ 127: Q8_K quants are in −127..127) by
//! `i16x8.relaxed_dot_i8x16_i7x16_s`, then scales each half's pair sums by
//! one `i32x4.dot_i16x8_s` against `ls − 32`: the same exact i32 sums,
//! scaled by the same f32 `d·d_a` — bit-identical to the standard layout.

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 136;
/// Bytes of one 4-row super-block group.
const GB: usize = 544;

#[inline(always)]
fn perm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
}

#[inline(always)]
fn unperm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v)
}

/// Scale `v` (6 bits) of the planes of the group super-block at `gb`.
#[inline(always)]
unsafe fn scale_get(gb: *const u8, v: usize) -> u8 {
    let lo = (*gb.add(8 + v % 16) >> (4 * (v / 16))) & 15;
    let hi = (*gb.add(24 + v % 8) >> (2 * (v / 8))) & 3;
    lo | hi << 4
}

/// Store scale `v` (6 bits) in the planes at `gb`, other scales kept.
#[inline(always)]
unsafe fn scale_set(gb: *mut u8, v: usize, ls: u8) {
    let l = gb.add(8 + v % 16);
    let ls_shift = 4 * (v / 16);
    *l = (*l & !(15 << ls_shift)) | (ls & 15) << ls_shift;
    let h = gb.add(24 + v % 8);
    let hs = 2 * (v / 8);
    *h = (*h & !(3 << hs)) | ((ls >> 4) & 3) << hs;
}

impl PackedType for Packed<IQ4_XS> {
    const TY: u32 = IQ4_XS;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let gb = g.add(GB * i);
        *dst = *gb.add(2 * r);
        *dst.add(1) = *gb.add(2 * r + 1);
        let mut h = 0u16;
        let mut l = [0u8; 4];
        for ib in 0..8 {
            let ls = scale_get(gb, 8 * r + ib);
            h |= ((ls >> 4) as u16) << (2 * ib);
            l[ib / 2] |= (ls & 15) << (4 * (ib % 2));
        }
        *dst.add(2) = h as u8;
        *dst.add(3) = (h >> 8) as u8;
        for k in 0..4 {
            *dst.add(4 + k) = l[k];
        }
        for ib in 0..8 {
            st(dst.add(8 + 16 * ib), unperm(ld(gb.add(32 + 64 * ib + 16 * r))));
        }
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let gb = g.add(GB * i);
        *gb.add(2 * r) = *src;
        *gb.add(2 * r + 1) = *src.add(1);
        let h = rd_u16(src.add(2)) as u32;
        for ib in 0..8 {
            let lo = (*src.add(4 + ib / 2) >> (4 * (ib % 2))) & 15;
            let ls = lo | (((h >> (2 * ib)) & 3) << 4) as u8;
            scale_set(gb, 8 * r + ib, ls);
        }
        for ib in 0..8 {
            st(gb.add(32 + 64 * ib + 16 * r), perm(ld(src.add(8 + 16 * ib))));
        }
    }
    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b)) & 0x7c00 != 0x7c00)
    }
}

impl GroupKernel for Packed<IQ4_XS> {
    /// Expanded activation row: `d: f32[nb]`, then per super-block and
    /// sub-block `|a|` of the two 16-byte halves in the order `f` and their
    /// sign masks (64 B).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 512 * (cols / 256)
    }
    /// Expand one Q8_K activation row (quants in −127..127, as `quantize_q8_k` writes them).
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(292 * i);
            *d.add(i) = rd_f32(b);
            for ib in 0..8 {
                let (lo, hi) = (perm(ld(b.add(4 + 32 * ib))), perm(ld(b.add(20 + 32 * ib))));
                let o = y.add(512 * i + 64 * ib);
                st(o, i8x16_abs(lo));
                st(o.add(16), i8x16_abs(hi));
                st(o.add(32), i8x16_lt(lo, i8x16_splat(0)));
                st(o.add(48), i8x16_lt(hi, i8x16_splat(0)));
            }
        }
    }
    c_group_kernels!(rx_group2_iq4_xs, rx_tile_iq4_xs);
}
