//! Packed MXFP4 (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for MXFP4 and does not pack it).
//!
//! The packed Q4_0 layout with E8M0 scales: a group of 4 rows is `e: u8[4·nb]`
//! (block `i`, row `r` at `4i + r`), then per block the 4 rows' 16 quant
//! bytes (`4nb + 64i + 16r`) in the byte order `f` of `packed.rs`, so dot
//! lane `j` reads exactly the elements lane `j` of `tiles::tile_legacy` sums.
//! The kernel (`c/relaxed_kquants.c`) looks the nibbles up in
//! `kvalues_mxfp4 + 12` (0..24: a 7-bit operand, so
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` is exact) and starts each block's
//! dot from `c = −12·Σa` per lane: the same exact integers, scaled by the
//! same f32 `e8m0_half(e)·d_a` — bit-identical to the standard layout.

#[cfg(moe_relaxed)]
pub use relaxed::layout;

/// No packed MXFP4 in the simd128 build.
#[cfg(not(moe_relaxed))]
#[inline(always)]
pub fn layout(_ty: u32) -> Option<&'static crate::packed::Layout> {
    None
}

#[cfg(moe_relaxed)]
mod relaxed {
    use crate::group::GroupKernels;
    use crate::packed::Layout;
    use crate::simd::*;
    use crate::tiles::align16;
    use crate::types::*;

    extern "C" {
        fn rx_group_mxfp4(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32);
        fn rx_tile_mxfp4(g: *const u8, nb: u32, a: *const u8, astride: u32, t: u32, o: *mut f32, ostride: u32);
    }

    /// Standard block bytes.
    const BB: usize = 17;

    /// The packed MXFP4 layout.
    static LAYOUT: Layout = Layout {
        ty: MXFP4,
        group_rows: 4,
        block_elems: 32,
        block_bytes: BB,
        read_block,
        group,
        eligible,
        kernels: Some(&GK_MXFP4),
    };

    /// The packed layout of `ty` defined here, or None.
    #[inline(always)]
    pub fn layout(ty: u32) -> Option<&'static Layout> {
        if ty == MXFP4 {
            Some(&LAYOUT)
        } else {
            None
        }
    }

    #[inline(always)]
    fn perm(v: v128) -> v128 {
        i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
    }

    #[inline(always)]
    fn unperm(v: v128) -> v128 {
        i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v)
    }

    /// Standard bytes of block `i` of row `r` of the group at `g` (`nb` blocks per row).
    unsafe fn read_block(g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8) {
        *dst = *g.add(4 * i + r);
        st(dst.add(1), unperm(ld(g.add(4 * nb + 64 * i + 16 * r))));
    }

    /// Group `g` from (`inverse`: back to) the standard rows in `tmp`.
    unsafe fn group(g: *mut u8, tmp: *const u8, nb: usize, rb: usize, inverse: bool) {
        for r in 0..4 {
            for i in 0..nb {
                if inverse {
                    read_block(tmp, nb, r, i, g.add(r * rb + i * BB));
                } else {
                    let src = tmp.add(r * rb + i * BB);
                    *g.add(4 * i + r) = *src;
                    st(g.add(4 * nb + 64 * i + 16 * r), perm(ld(src.add(1))));
                }
            }
        }
    }

    /// Every matrix qualifies (any E8M0 byte has a finite scale).
    unsafe fn eligible(_w: *const u8, _n: usize) -> bool {
        true
    }

    /// Expanded activation row: `d: f32[nb]`, then per block the two 16-byte
    /// halves in the order `f` and `c = −12·Σa` per dot lane (i32x4).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 48 * (cols / 32)
    }

    /// Σ of each group of 4 bytes (i8) → i32x4.
    #[inline(always)]
    fn sum4(v: v128) -> v128 {
        i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(v))
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

    unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
        rx_group_mxfp4(g0, g1, nb as u32, a, o0, o1)
    }
    unsafe fn tile(g: *const u8, nb: usize, a: *const u8, astride: usize, n: usize, o: *mut f32, ostride: usize) {
        rx_tile_mxfp4(g, nb as u32, a, astride as u32, n as u32, o, ostride as u32)
    }

    /// Relaxed-build kernels of the packed MXFP4 layout (`c/relaxed_kquants.c`).
    pub static GK_MXFP4: GroupKernels = GroupKernels { ext_row_bytes, expand, groups, tile: Some(tile) };
}
