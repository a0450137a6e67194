//! Packed IQ4_NL (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for IQ4_NL and does not pack it).
//!
//! The packed Q4_0 layout: a group of 4 rows is `d: f16[4·nb]` (block `i`,
//! row `r` at `8i + 2r`), then per block the 4 rows' 16 quant bytes
//! (`8nb + 64i + 16r`) in the byte order `f` of `packed.rs`, so dot lane `j`
//! reads exactly the elements lane `j` of `tiles::tile_legacy` sums. The
//! kernel (`c/relaxed_kquants.c`) looks the nibbles up in `kvalues_iq4nl`
//! (−127..113) with `i8x16.relaxed_swizzle`, moves each activation's sign
//! onto its weight (`(w ^ m) − m`, `m = a < 0`) and dots with `|a|` (≤ 127:
//! a 7-bit operand, so `i32x4.relaxed_dot_i8x16_i7x16_add_s` is exact, as in
//! the relaxed Q8_0 kernel): the same exact integers, scaled by the same f32
//! `d·d_a` — bit-identical to the standard layout.

#[cfg(moe_relaxed)]
pub use relaxed::layout;

/// No packed IQ4_NL in the simd128 build.
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
        fn rx_group_iq4_nl(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32);
        fn rx_tile_iq4_nl(g: *const u8, nb: u32, a: *const u8, astride: u32, t: u32, o: *mut f32, ostride: u32);
    }

    /// Standard block bytes.
    const BB: usize = 18;

    /// The packed IQ4_NL layout.
    static LAYOUT: Layout = Layout {
        ty: IQ4_NL,
        group_rows: 4,
        block_elems: 32,
        block_bytes: BB,
        read_block,
        group,
        eligible,
        kernels: Some(&GK_IQ4_NL),
    };

    /// The packed layout of `ty` defined here, or None.
    #[inline(always)]
    pub fn layout(ty: u32) -> Option<&'static Layout> {
        if ty == IQ4_NL {
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
        *dst = *g.add(8 * i + 2 * r);
        *dst.add(1) = *g.add(8 * i + 2 * r + 1);
        st(dst.add(2), unperm(ld(g.add(8 * nb + 64 * i + 16 * r))));
    }

    /// Group `g` from (`inverse`: back to) the standard rows in `tmp`.
    unsafe fn group(g: *mut u8, tmp: *const u8, nb: usize, rb: usize, inverse: bool) {
        for r in 0..4 {
            for i in 0..nb {
                if inverse {
                    read_block(tmp, nb, r, i, g.add(r * rb + i * BB));
                } else {
                    let src = tmp.add(r * rb + i * BB);
                    *g.add(8 * i + 2 * r) = *src;
                    *g.add(8 * i + 2 * r + 1) = *src.add(1);
                    st(g.add(8 * nb + 64 * i + 16 * r), perm(ld(src.add(2))));
                }
            }
        }
    }

    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b)) & 0x7c00 != 0x7c00)
    }

    /// Expanded activation row: `d: f32[nb]`, then per block `|a|` of the
    /// two 16-byte halves in the order `f` and their sign masks (64 B).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 64 * (cols / 32)
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
            let o = y.add(64 * i);
            st(o, i8x16_abs(lo));
            st(o.add(16), i8x16_abs(hi));
            st(o.add(32), i8x16_lt(lo, i8x16_splat(0)));
            st(o.add(48), i8x16_lt(hi, i8x16_splat(0)));
        }
    }

    unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
        rx_group_iq4_nl(g0, g1, nb as u32, a, o0, o1)
    }
    unsafe fn tile(g: *const u8, nb: usize, a: *const u8, astride: usize, n: usize, o: *mut f32, ostride: usize) {
        rx_tile_iq4_nl(g, nb as u32, a, astride as u32, n as u32, o, ostride as u32)
    }

    /// Relaxed-build kernels of the packed IQ4_NL layout (`c/relaxed_kquants.c`).
    pub static GK_IQ4_NL: GroupKernels = GroupKernels { ext_row_bytes, expand, groups, tile: Some(tile) };
}
