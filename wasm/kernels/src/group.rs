//! simd128 matvec kernels over packed Q8_0 / Q4_0 / Q4_K (`packed.rs`): one
//! or two 4-row groups × 1 token per call (each activation block is loaded
//! once for the rows of both groups), and the activation expansions they
//! read. Packed F16 is in `packed_f16.rs`.
//!
//! Bit-identity with `tiles.rs`: every kernel forms the same i32 lane
//! partials (lane `j` of a 32-element block = elements
//! `{2j, 2j+1, 8+2j, 9+2j, 16+2j, 17+2j, 24+2j, 25+2j}`), converts and
//! scales them per lane in the same order, and reduces with the same
//! `hsum_f32`. Q4_0 multiplies unsigned nibbles and adds `c = −8·Σa` per
//! lane (exact integer algebra).
//!
//! Constants are passed through [`pin`]: LLVM would otherwise
//! rematerialize `v128.const` inside the loops, which V8 builds from
//! immediates (~3 instructions each).

// The relaxed build replaces the group kernels.
#![cfg_attr(moe_relaxed, allow(dead_code))]

use crate::simd::*;
use crate::tiles::align16;

/// `v` through a volatile stack slot, so it is computed once and kept.
#[inline(always)]
pub fn pin(v: v128) -> v128 {
    unsafe { core::ptr::read_volatile(&v) }
}

/// Four f16 at `p` → f32x4, finite values only (packing refuses inf/NaN):
/// sign-extend, shift exponent and mantissa into place, clear the copied
/// sign bits (`m = 0x8fffffff`), rebias by `k = 2^112` (exact, subnormals
/// included).
#[inline(always)]
pub unsafe fn scales4(p: *const u8, m: v128, k: v128) -> v128 {
    let x = i32x4_load_extend_i16x4(p as *const i16);
    f32x4_mul(v128_and(i32x4_shl(x, 13), m), k)
}

#[inline(always)]
fn lane<const R: u32>(v: v128) -> v128 {
    match R {
        0 => i32x4_shuffle::<0, 0, 0, 0>(v, v),
        1 => i32x4_shuffle::<1, 1, 1, 1>(v, v),
        2 => i32x4_shuffle::<2, 2, 2, 2>(v, v),
        _ => i32x4_shuffle::<3, 3, 3, 3>(v, v),
    }
}

/// `acc[r] += f32(s[r]) · dd[r]` lane-wise, as the standard kernels do per row.
#[inline(always)]
pub fn accumulate4(acc: &mut [v128; 4], s: &[v128; 4], dd: v128) {
    acc[0] = f32x4_add(acc[0], f32x4_mul(f32x4_convert_i32x4(s[0]), lane::<0>(dd)));
    acc[1] = f32x4_add(acc[1], f32x4_mul(f32x4_convert_i32x4(s[1]), lane::<1>(dd)));
    acc[2] = f32x4_add(acc[2], f32x4_mul(f32x4_convert_i32x4(s[2]), lane::<2>(dd)));
    acc[3] = f32x4_add(acc[3], f32x4_mul(f32x4_convert_i32x4(s[3]), lane::<3>(dd)));
}

// ---------------------------------------------------------------- activations

/// (g, nb, a, astride, n, o, ostride): one group × 2..=4 tokens.
pub type TileFn = unsafe fn(*const u8, usize, *const u8, usize, usize, *mut f32, usize);

/// The kernels of one packed quantized type in one build: one `impl` per
/// type on `packed::Packed<TY>` (simd128 below, relaxed-SIMD in `relaxed.rs`
/// and `packed_*.rs`); [`GroupKernels::of`] turns it into the table row a
/// `packed::Layout` points at.
pub trait GroupKernel {
    /// Bytes of one expanded activation row of `cols` values.
    fn ext_row_bytes(cols: usize) -> usize;
    /// Expand one converted activation row (`prepare_act` bytes) into `dst`.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8);
    /// Groups `g0` and (unless null) `g1` × one token.
    unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32);
    /// One group × 2..=4 tokens, if the build has token tiles for the type.
    const TILE: Option<TileFn> = None;
}

/// The kernels of one packed quantized layout in this build (a
/// `packed::Layout` row points at its entry), from its [`GroupKernel`] impl.
pub struct GroupKernels {
    /// Bytes of one expanded activation row of `cols` values.
    pub ext_row_bytes: fn(usize) -> usize,
    /// Expand one converted activation row (`prepare_act` bytes): (act, cols, dst).
    pub expand: unsafe fn(*const u8, usize, *mut u8),
    /// Groups `g0` and (unless null) `g1` × one token: (g0, g1, nb, a, o0, o1).
    pub groups: unsafe fn(*const u8, *const u8, usize, *const u8, *mut f32, *mut f32),
    /// One group × 2..=4 tokens, if the build has token tiles:
    /// (g, nb, a, astride, n, o, ostride).
    pub tile: Option<TileFn>,
}

impl GroupKernels {
    /// The table row of kernel set `K`.
    pub const fn of<K: GroupKernel>() -> GroupKernels {
        GroupKernels { ext_row_bytes: K::ext_row_bytes, expand: K::expand, groups: K::groups, tile: K::TILE }
    }
}

/// `impl GroupKernel` items calling the C kernels `rx_group_<name>` and
/// `rx_tile_<name>` of `c/relaxed_kquants.c` (relaxed build):
/// `c_group_kernels!(rx_group_q6_k, rx_tile_q6_k);` inside the impl.
#[cfg(moe_relaxed)]
macro_rules! c_group_kernels {
    ($group:ident, $tile:ident) => {
        unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
            extern "C" {
                fn $group(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32);
            }
            $group(g0, g1, nb as u32, a, o0, o1)
        }
        const TILE: Option<crate::group::TileFn> = {
            unsafe fn tile(g: *const u8, nb: usize, a: *const u8, astride: usize, n: usize, o: *mut f32, ostride: usize) {
                extern "C" {
                    fn $tile(g: *const u8, nb: u32, a: *const u8, astride: u32, t: u32, o: *mut f32, ostride: u32);
                }
                $tile(g, nb as u32, a, astride as u32, n as u32, o, ostride as u32)
            }
            Some(tile)
        };
    };
}
#[cfg(moe_relaxed)]
pub(crate) use c_group_kernels;

/// Bytes of one expanded activation row for packed weights of type `ty`
/// (0: F16 or not packable).
pub fn ext_row_bytes(ty: u32, cols: usize) -> usize {
    match crate::packed::layout(ty).and_then(|l| l.kernels) {
        Some(k) => (k.ext_row_bytes)(cols),
        None => 0,
    }
}

#[cfg(not(moe_relaxed))]
mod simd128_rows {
    use super::*;
    use crate::packed::Packed;
    use crate::types::*;

    // One or two groups per call; the kernels are inlined into these entry points.
    macro_rules! groups_fn {
        ($k:ident) => {
            unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
                if g1.is_null() {
                    $k::<1>([g0], nb, a, [o0])
                } else {
                    $k::<2>([g0, g1], nb, a, [o0, o1])
                }
            }
        };
    }

    /// simd128 kernels of the packed Q8_0 layout: the standard Q8_0
    /// expansion (+ 16 B per block, the size Q4_0 needs).
    impl GroupKernel for Packed<Q8_0> {
        fn ext_row_bytes(cols: usize) -> usize {
            crate::tiles::ext_row_bytes(Q8_0, cols) + 16 * (cols / 32)
        }
        unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
            crate::tiles::expand_q8(act, cols / 32, false, dst)
        }
        groups_fn!(group_q8_0);
    }

    /// simd128 kernels of the packed Q4_0 layout: the standard Q8_0
    /// expansion + c: i32x4 per block.
    impl GroupKernel for Packed<Q4_0> {
        fn ext_row_bytes(cols: usize) -> usize {
            <Packed<Q8_0> as GroupKernel>::ext_row_bytes(cols)
        }
        unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
            expand_q4_0(act, cols / 32, dst)
        }
        groups_fn!(group_q4_0);
    }

    /// simd128 kernels of the packed Q4_K layout: the standard Q8_K
    /// expansion + Y: 4 i32x4 per super-block.
    impl GroupKernel for Packed<Q4_K> {
        fn ext_row_bytes(cols: usize) -> usize {
            crate::tiles::ext_row_bytes(Q4_K, cols) + 64 * (cols / 256)
        }
        unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
            expand_q4_k(act, cols / 256, dst)
        }
        groups_fn!(group_q4_k);
    }
}

/// Q4_0: the standard expansion with each block's i16 vectors reordered to
/// the nibble planes' order (see [`group_q4_0`]), then `c` after `q`.
unsafe fn expand_q4_0(act: *const u8, nb: usize, dst: *mut u8) {
    crate::tiles::expand_q8(act, nb, false, dst);
    let q = dst.add(align16(8 * nb));
    let c = q.add(64 * nb);
    let ones = i16x8_splat(1);
    for i in 0..nb {
        let y = q.add(64 * i);
        let (e0, e1, e2, e3) = (ld(y), ld(y.add(16)), ld(y.add(32)), ld(y.add(48)));
        let x = [
            i16x8_shuffle::<0, 8, 2, 10, 4, 12, 6, 14>(e0, e1),
            i16x8_shuffle::<1, 9, 3, 11, 5, 13, 7, 15>(e0, e1),
            i16x8_shuffle::<0, 8, 2, 10, 4, 12, 6, 14>(e2, e3),
            i16x8_shuffle::<1, 9, 3, 11, 5, 13, 7, 15>(e2, e3),
        ];
        let mut s = i32x4_splat(0);
        for k in 0..4 {
            st(y.add(16 * k), x[k]);
            s = i32x4_add(s, i32x4_dot_i16x8(x[k], ones));
        }
        st(c.add(16 * i), i32x4_mul(s, i32x4_splat(-8)));
    }
}

/// `Y_k` of a Q8_K block: i16 pairs `(BS[2k], BS[2k+1])` in every i32
/// lane, `BS[sb] = bsums[2sb] + bsums[2sb+1]` (sums of 32; |BS| ≤ 4064).
pub unsafe fn q8k_pair_sums(bsums: *const u8, k: usize) -> v128 {
    let b = bsums as *const i16;
    let s0 = b.add(4 * k).read_unaligned() as i32 + b.add(4 * k + 1).read_unaligned() as i32;
    let s1 = b.add(4 * k + 2).read_unaligned() as i32 + b.add(4 * k + 3).read_unaligned() as i32;
    u32x4_splat((s0 as u32 & 0xffff) | ((s1 as u32) << 16))
}

/// Q4_K: the standard Q8_K expansion, then `Y_0..Y_3` per super-block.
unsafe fn expand_q4_k(act: *const u8, nb: usize, dst: *mut u8) {
    crate::tiles::expand_q8k(act, nb, dst);
    let bs = dst.add(align16(4 * nb));
    let y = bs.add(32 * nb + 512 * nb);
    for i in 0..nb {
        for k in 0..4 {
            st(y.add(64 * i + 16 * k), q8k_pair_sums(bs.add(32 * i), k));
        }
    }
}

// ---------------------------------------------------------------- Q8_0 / Q4_0

/// `G` (1 or 2) packed Q8_0 groups (4 rows each) × one expanded activation
/// row → `o[k][0..4]`. Two groups far apart in the matrix are two memory
/// streams, which roughly doubles what one core pulls from DRAM. Quants stay
/// in element order; `load8x8_s` sign-extends them for free.
#[inline(always)]
pub unsafe fn group_q8_0<const G: usize>(g: [*const u8; G], nb: usize, a: *const u8, o: [*mut f32; G]) {
    let da = a as *const f32;
    let q = a.add(align16(8 * nb));
    let (sm, sk) = (pin(u32x4_splat(0x8fff_ffff)), pin(f32x4_splat(f32::from_bits(239 << 23))));
    let mut acc = [[f32x4_splat(0.0); 4]; G];
    for i in 0..nb {
        let y = q.add(64 * i);
        let (y0, y1, y2, y3) = (ld(y), ld(y.add(16)), ld(y.add(32)), ld(y.add(48)));
        let ds = f32x4_splat(*da.add(i));
        for k in 0..G {
            let dd = f32x4_mul(scales4(g[k].add(8 * i), sm, sk), ds);
            let qb = g[k].add(8 * nb + 128 * i);
            let mut s = [i32x4_splat(0); 4];
            for r in 0..4 {
                let w = qb.add(32 * r) as *const i8;
                s[r] = i32x4_add(
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_load_extend_i8x8(w), y0),
                        i32x4_dot_i16x8(i16x8_load_extend_i8x8(w.add(8)), y1),
                    ),
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_load_extend_i8x8(w.add(16)), y2),
                        i32x4_dot_i16x8(i16x8_load_extend_i8x8(w.add(24)), y3),
                    ),
                );
            }
            accumulate4(&mut acc[k], &s, dd);
        }
    }
    for k in 0..G {
        for r in 0..4 {
            *o[k].add(r) = hsum_f32(acc[k][r]);
        }
    }
}

/// `G` packed Q4_0 groups × one expanded row. A quant run read as i16x8
/// yields four nibble planes with one shift/mask each (low/high nibble of
/// even/odd bytes); the activations were reordered to match.
#[inline(always)]
pub unsafe fn group_q4_0<const G: usize>(g: [*const u8; G], nb: usize, a: *const u8, o: [*mut f32; G]) {
    let da = a as *const f32;
    let q = a.add(align16(8 * nb));
    let cc = q.add(64 * nb);
    let m = pin(i16x8_splat(0x000f));
    let (sm, sk) = (pin(u32x4_splat(0x8fff_ffff)), pin(f32x4_splat(f32::from_bits(239 << 23))));
    let mut acc = [[f32x4_splat(0.0); 4]; G];
    for i in 0..nb {
        let y = q.add(64 * i);
        let (y0, y1, y2, y3) = (ld(y), ld(y.add(16)), ld(y.add(32)), ld(y.add(48)));
        let ds = f32x4_splat(*da.add(i));
        let c = ld(cc.add(16 * i));
        for k in 0..G {
            let dd = f32x4_mul(scales4(g[k].add(8 * i), sm, sk), ds);
            let qb = g[k].add(8 * nb + 64 * i);
            let mut s = [i32x4_splat(0); 4];
            for r in 0..4 {
                let v = ld(qb.add(16 * r));
                let wa = v128_and(v, m);
                let wb = v128_and(u16x8_shr(v, 8), m);
                let wc = v128_and(u16x8_shr(v, 4), m);
                let wd = u16x8_shr(v, 12);
                s[r] = i32x4_add(
                    i32x4_add(i32x4_add(i32x4_dot_i16x8(wa, y0), i32x4_dot_i16x8(wb, y1)), c),
                    i32x4_add(i32x4_dot_i16x8(wc, y2), i32x4_dot_i16x8(wd, y3)),
                );
            }
            accumulate4(&mut acc[k], &s, dd);
        }
    }
    for k in 0..G {
        for r in 0..4 {
            *o[k].add(r) = hsum_f32(acc[k][r]);
        }
    }
}

// ---------------------------------------------------------------- Q4_K

/// Decode the 48 scale/min plane bytes of a packed Q4_K group super-block:
/// returns (scales `[r][sb]` as 2 × u8x16, mins `[k][r][e]` as 2 × u8x16).
#[inline(always)]
pub unsafe fn k_planes(p: *const u8, m4: v128, m30: v128) -> ([v128; 2], [v128; 2]) {
    let (v0, v1, v2) = (ld(p), ld(p.add(16)), ld(p.add(32)));
    let sc_a = v128_or(v128_and(v0, m4), v128_and(i16x8_shl(v2, 4), m30));
    let sc_b = v128_or(v128_and(u16x8_shr(v0, 4), m4), v128_and(i16x8_shl(v2, 2), m30));
    let mn_a = v128_or(v128_and(v1, m4), v128_and(v2, m30));
    let mn_b = v128_or(v128_and(u16x8_shr(v1, 4), m4), v128_and(u16x8_shr(v2, 2), m30));
    ([sc_a, sc_b], [mn_a, mn_b])
}

/// Σ_sb m[r][sb]·BS[sb] for the 4 rows (lanes), from the decoded mins and
/// the token's `Y_k` (exact i32, like `tiles::k_mins_dot`).
#[inline(always)]
pub unsafe fn k_mins4(mn: &[v128; 2], y: *const u8) -> v128 {
    let x = [
        u16x8_extend_low_u8x16(mn[0]),
        u16x8_extend_high_u8x16(mn[0]),
        u16x8_extend_low_u8x16(mn[1]),
        u16x8_extend_high_u8x16(mn[1]),
    ];
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(x[0], ld(y)), i32x4_dot_i16x8(x[1], ld(y.add(16)))),
        i32x4_add(i32x4_dot_i16x8(x[2], ld(y.add(32))), i32x4_dot_i16x8(x[3], ld(y.add(48)))),
    )
}

/// `isum += p0·s0 + p1·s1` per lane for two sub-block partials (|p| < 2^15)
/// and the scale pair `(s0, s1)` at `sc` (u8), with one `dot_i16x8`.
#[inline(always)]
pub unsafe fn k_scale2(isum: v128, p0: v128, p1: v128, sc: *const u8, lo16: v128) -> v128 {
    let pp = v128_or(v128_and(p0, lo16), i32x4_shl(p1, 16));
    let s = u16x8_extend_low_u8x16(v128_load16_splat(sc as *const u16));
    i32x4_add(isum, i32x4_dot_i16x8(pp, s))
}

/// `G` packed Q4_K groups (4 rows each) × one expanded Q8_K row → `o[k][0..4]`.
#[inline(always)]
pub unsafe fn group_q4_k<const G: usize>(g: [*const u8; G], nb: usize, a: *const u8, o: [*mut f32; G]) {
    let da = a as *const f32;
    let q = a.add(align16(4 * nb) + 32 * nb);
    let ys = q.add(512 * nb);
    let m = pin(i16x8_splat(0x000f));
    let m4 = pin(u8x16_splat(0x0f));
    let m30 = pin(u8x16_splat(0x30));
    let lo16 = pin(u32x4_splat(0xffff));
    let (sm, sk) = (pin(u32x4_splat(0x8fff_ffff)), pin(f32x4_splat(f32::from_bits(239 << 23))));
    let mut acc = [[f32x4_splat(0.0); 4]; G];
    let mut accm = [f32x4_splat(0.0); G];
    let mut scb = [[0u8; 32]; G];
    for i in 0..nb {
        let yd = f32x4_splat(*da.add(i));
        let mut dd = [yd; G];
        let mut isum = [[i32x4_splat(0); 4]; G];
        for k in 0..G {
            let gb = g[k].add(576 * i);
            dd[k] = f32x4_mul(scales4(gb, sm, sk), yd);
            let dm = f32x4_mul(scales4(gb.add(8), sm, sk), yd);
            let (sc, mn) = k_planes(gb.add(16), m4, m30);
            st(scb[k].as_mut_ptr(), sc[0]);
            st(scb[k].as_mut_ptr().add(16), sc[1]);
            let mins = k_mins4(&mn, ys.add(64 * i));
            accm[k] = f32x4_add(accm[k], f32x4_mul(dm, f32x4_convert_i32x4(mins)));
        }
        // Group by group within the super-block: fewer live registers; both
        // streams still advance every super-block.
        for k in 0..G {
            for c in 0..4 {
                let y = q.add(512 * i + 128 * c);
                let (y0, y1, y2, y3) = (ld(y), ld(y.add(16)), ld(y.add(32)), ld(y.add(48)));
                let (y4, y5, y6, y7) = (ld(y.add(64)), ld(y.add(80)), ld(y.add(96)), ld(y.add(112)));
                let run = g[k].add(576 * i + 64 + 128 * c);
                for r in 0..4 {
                    let v0 = ld(run.add(32 * r));
                    let v1 = ld(run.add(32 * r + 16));
                    let p0 = i32x4_add(
                        i32x4_add(i32x4_dot_i16x8(v128_and(v0, m), y0), i32x4_dot_i16x8(v128_and(u16x8_shr(v0, 8), m), y1)),
                        i32x4_add(i32x4_dot_i16x8(v128_and(v1, m), y2), i32x4_dot_i16x8(v128_and(u16x8_shr(v1, 8), m), y3)),
                    );
                    let p1 = i32x4_add(
                        i32x4_add(i32x4_dot_i16x8(v128_and(u16x8_shr(v0, 4), m), y4), i32x4_dot_i16x8(u16x8_shr(v0, 12), y5)),
                        i32x4_add(i32x4_dot_i16x8(v128_and(u16x8_shr(v1, 4), m), y6), i32x4_dot_i16x8(u16x8_shr(v1, 12), y7)),
                    );
                    isum[k][r] = k_scale2(isum[k][r], p0, p1, scb[k].as_ptr().add(8 * r + 2 * c), lo16);
                }
            }
        }
        for k in 0..G {
            accumulate4(&mut acc[k], &isum[k], dd[k]);
        }
    }
    for k in 0..G {
        let mut mr = [0.0f32; 4];
        stf(mr.as_mut_ptr(), accm[k]);
        for r in 0..4 {
            *o[k].add(r) = hsum_f32(acc[k][r]) - mr[r];
        }
    }
}
