//! Packed BF16 (both builds): 4-row groups of 8-element chunks, so a decode
//! pass streams 4 rows from one contiguous region and converts 8 values with
//! two ops.
//!
//! A group of 4 rows (`cols % 8 == 0`; `pack` refuses other shapes) holds
//! chunk `c` of row `r` (elements `8c..8c+8`) at `64c + 16r`, as 4 u32 lanes
//! `e[m] | e[4+m] << 16` (the F16 group order, byte order `f` of
//! `packed.rs`): `v << 16` is the f32 of `e[0..4]`, `v & 0xffff0000` that of
//! `e[4..8]` — bf16 → f32 is exact for every bit pattern, so every matrix
//! qualifies. The activations are the f32 image of the bf16-rounded values
//! (`prepare_act`), copied as they are by `expand`. Each row keeps the
//! accumulators and f32 order of its standard twin (`dot::dot_bf16` for one
//! token, `tiles::tile_float` for 2..4), so results are bit-identical.

use crate::group::{pin, GroupKernel, GroupKernels, TileFn};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::types::*;

#[inline(always)]
fn perm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
}

#[inline(always)]
fn unperm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v)
}

/// One packed chunk → the f32 of `e[0..4]` and of `e[4..8]`.
#[inline(always)]
unsafe fn bf16x8(p: *const u8, hm: v128) -> (v128, v128) {
    let v = ld(p);
    (i32x4_shl(v, 16), v128_and(v, hm))
}

impl PackedType for Packed<BF16> {
    const TY: u32 = BF16;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 8;
    const BLOCK_BYTES: usize = 16;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of chunk `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        st(dst, unperm(ld(g.add(64 * i + 16 * r))));
    }
    /// Inverse of `read_block`.
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        st(g.add(64 * i + 16 * r), perm(ld(src)));
    }
    /// Every matrix qualifies (any bf16 bit pattern converts exactly).
    unsafe fn eligible(_w: *const u8, _n: usize) -> bool {
        true
    }
}

/// Chunk pairs `c0..c1` (`c1 - c0` even) of the group's 4 rows into their
/// `dot::dot_bf16` accumulators, in order.
#[inline(always)]
unsafe fn run4(g: *const u8, c0: usize, c1: usize, a: *const f32, hm: v128, acc: &mut [[v128; 4]; 4]) {
    let mut c = c0;
    while c < c1 {
        let p = g.add(64 * c);
        let i = 8 * c;
        let av = [ldf(a.add(i)), ldf(a.add(i + 4)), ldf(a.add(i + 8)), ldf(a.add(i + 12))];
        for r in 0..4 {
            let (w0, w1) = bf16x8(p.add(16 * r), hm);
            let (w2, w3) = bf16x8(p.add(64 + 16 * r), hm);
            acc[r][0] = f32x4_add(acc[r][0], f32x4_mul(w0, av[0]));
            acc[r][1] = f32x4_add(acc[r][1], f32x4_mul(w1, av[1]));
            acc[r][2] = f32x4_add(acc[r][2], f32x4_mul(w2, av[2]));
            acc[r][3] = f32x4_add(acc[r][3], f32x4_mul(w3, av[3]));
        }
        c += 2;
    }
}

/// The last chunk of an odd `nb` into `acc[r][0]` (`dot_bf16`'s last 8), then the rows' sums.
#[inline(always)]
unsafe fn finish4(g: *const u8, nb: usize, a: *const f32, o: *mut f32, hm: v128, acc: &mut [[v128; 4]; 4]) {
    let c = nb & !1;
    if c < nb {
        let (a0, a1) = (ldf(a.add(8 * c)), ldf(a.add(8 * c + 4)));
        for r in 0..4 {
            let (w0, w1) = bf16x8(g.add(64 * c + 16 * r), hm);
            acc[r][0] = f32x4_add(acc[r][0], f32x4_mul(w0, a0));
            acc[r][0] = f32x4_add(acc[r][0], f32x4_mul(w1, a1));
        }
    }
    for r in 0..4 {
        *o.add(r) = hsum_f32(f32x4_add(f32x4_add(acc[r][0], acc[r][1]), f32x4_add(acc[r][2], acc[r][3])));
    }
}

/// Chunks per window of [`group2`] (even): 1 KiB of each group. On 16384×4096
/// (DRAM) 4, 8, 16, 32 measured 0.87–0.88, 0.88–0.95, 0.86–0.90, 0.95× the
/// time of one group after the other; in cache (2816×1024) 16 and 32 were
/// 0.94–1.0×, 4 and 8 up to 1.1×.
const WIN: usize = 16;

/// Groups `g0` and `g1` × one token, each in `dot::dot_bf16`'s order:
/// windows of `WIN` chunks of `g0` and `g1` alternately, so two memory
/// streams are in flight while each inner loop still holds only one group's
/// 16 accumulators (both groups chunk by chunk, 32 live accumulators, was
/// 1.04x slower in cache). The other group's accumulators wait in memory.
#[inline(always)]
unsafe fn group2(g0: *const u8, g1: *const u8, nb: usize, a: *const f32, o0: *mut f32, o1: *mut f32, hm: v128) {
    let mut e = [[f32x4_splat(0.0); 4]; 4];
    let mut d = e;
    let full = nb & !1;
    let mut c0 = 0;
    while c0 < full {
        let c1 = if c0 + WIN < full { c0 + WIN } else { full };
        run4(g0, c0, c1, a, hm, &mut e);
        run4(g1, c0, c1, a, hm, &mut d);
        c0 = c1;
    }
    finish4(g0, nb, a, o0, hm, &mut e);
    finish4(g1, nb, a, o1, hm, &mut d);
}

/// Rows of one group × one token, in `dot::dot_bf16`'s order (4
/// accumulators over 16-element steps, then a last 8 into the first).
#[inline(always)]
unsafe fn group1(g: *const u8, nb: usize, a: *const f32, o: *mut f32, hm: v128) {
    let mut e = [[f32x4_splat(0.0); 4]; 4];
    run4(g, 0, nb & !1, a, hm, &mut e);
    finish4(g, nb, a, o, hm, &mut e);
}

/// One row (`r` of the group at `g`) × T tokens, in `tiles::tile_float`'s order.
#[inline(always)]
unsafe fn row_tile<const T: usize>(g: *const u8, nb: usize, r: usize, a: *const f32, arow: usize, o: *mut f32, ostride: usize, hm: v128) {
    let mut acc = [[f32x4_splat(0.0); 2]; T];
    for c in 0..nb {
        let (w0, w1) = bf16x8(g.add(64 * c + 16 * r), hm);
        for t in 0..T {
            let at = a.add(t * arow + 8 * c);
            acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(w0, ldf(at)));
            acc[t][1] = f32x4_add(acc[t][1], f32x4_mul(w1, ldf(at.add(4))));
        }
    }
    for t in 0..T {
        *o.add(t * ostride) = hsum_f32(f32x4_add(acc[t][0], acc[t][1]));
    }
}

unsafe fn tile(g: *const u8, nb: usize, a: *const u8, astride: usize, n: usize, o: *mut f32, ostride: usize) {
    let hm = pin(u32x4_splat(0xffff_0000));
    let (a, arow) = (a as *const f32, astride / 4);
    for r in 0..4 {
        match n {
            2 => row_tile::<2>(g, nb, r, a, arow, o.add(r), ostride, hm),
            3 => row_tile::<3>(g, nb, r, a, arow, o.add(r), ostride, hm),
            _ => row_tile::<4>(g, nb, r, a, arow, o.add(r), ostride, hm),
        }
    }
}

impl GroupKernel for Packed<BF16> {
    /// The f32 activation row as is.
    fn ext_row_bytes(cols: usize) -> usize {
        4 * cols
    }
    /// Copy one f32 row (already rounded to bf16 by `prepare_act`).
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        core::ptr::copy_nonoverlapping(act, dst, 4 * cols)
    }
    unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
        let hm = pin(u32x4_splat(0xffff_0000));
        if g1.is_null() {
            group1(g0, nb, a as *const f32, o0, hm);
        } else {
            group2(g0, g1, nb, a as *const f32, o0, o1, hm);
        }
    }
    const TILE: Option<TileFn> = Some(tile);
}
