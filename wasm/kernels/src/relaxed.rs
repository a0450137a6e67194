//! The relaxed-SIMD build (`--cfg moe_relaxed`): activation expansions for
//! the group kernels of `c/relaxed.c` (clang-19, `-mrelaxed-simd`), which use
//! `i16x8.relaxed_dot_i8x16_i7x16_s` (x86: one `pmaddubsw`) widened by
//! `i32x4.dot_i16x8_s` against ones (the fused i32x4 form costs V8 five
//! instructions without AVX-VNNI). That instruction is deterministic — and
//! exact — when its second operand is 7-bit, so every call passes one:
//! Q4_0/Q4_K nibbles (0..15), or |a| of Q8_0 activations (≤ 127, with a's
//! sign moved onto the weights as `w ^ m` and a per-lane correction `c8`). Dot lane `j` reads bytes `4j..4j+4`; for
//! Q8_0 and Q4_K the packed byte order (`f` in `packed.rs`) puts the standard lane-`j` elements
//! there, so results are bit-identical to the simd128 kernels. Q4_0 keeps rows in
//! lanes (lane `r` = row `r`, the packed IQ4_NL byte order) and sums each row in
//! ggml's generic order, as `tiles.rs` does for Q4_0 in this build
//! (`tiles::generic_order`): bit-identical across the relaxed build's paths,
//! not to the simd128 build.

use crate::group::{c_group_kernels, GroupKernel};
use crate::packed::Packed;
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

extern "C" {
    fn rx_set_fused(f: u32);
    fn rx_get_fused() -> u32;
    fn rx_group_q8_0(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32);
    fn rx_std_q4_0(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32, rs: u32, os: u32);
    fn rx_std_q4_k(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32, rs: u32, os: u32);
    fn rx_std_q8_0(g0: *const u8, g1: *const u8, nb: u32, a: *const u8, o0: *mut f32, o1: *mut f32, rs: u32, os: u32);
}

/// Set (`mode` 0 or 1) and return the dot form of the C kernels: 0 = split
/// (`i16x8.relaxed_dot` + `i32x4.dot_i16x8_s`), 1 = fused
/// (`i32x4.relaxed_dot_i8x16_i7x16_add_s`). Same results; speed depends on
/// the engine's lowering (AVX-VNNI or not). Other `mode` values only read it.
pub fn dot_mode(mode: u32) -> u32 {
    unsafe {
        if mode <= 1 {
            rx_set_fused(mode);
        }
        rx_get_fused()
    }
}

/// Byte shuffle of a 16-element run into the packed order `f`.
#[inline(always)]
fn perm(v: v128) -> v128 {
    i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
}

/// Σ of each group of 4 bytes (i8) → i32x4.
#[inline(always)]
fn sum4(v: v128) -> v128 {
    i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(v))
}

/// d: f32[nb] of a Q8_0 activation row; per block the two 16-byte quant
/// halves in the order `f` to `f(d_offset, lo, hi)`.
#[inline(always)]
unsafe fn expand_q8_0_blocks(act: *const u8, cols: usize, dst: *mut u8, mut f: impl FnMut(*mut u8, usize, v128, v128)) {
    let nb = cols / 32;
    let d = dst as *mut f32;
    let y = dst.add(align16(4 * nb));
    for i in 0..nb {
        let b = act.add(34 * i);
        *d.add(i) = crate::half::f16_to_f32(rd_u16(b));
        f(y, i, perm(ld(b.add(2))), perm(ld(b.add(18))));
    }
}

/// Relaxed kernels of the packed Q8_0 layout (`c/relaxed.c`; no token tiles).
impl GroupKernel for Packed<Q8_0> {
    /// d: f32[nb]; per block |a| (2 × i8x16), sign masks (2 × i8x16), c8 (i32x4).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 80 * (cols / 32)
    }
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        expand_q8_0_blocks(act, cols, dst, |y, i, lo, hi| {
            // c8 lane j = Σ |a| over lane j's negative elements: with x = w ^ m
            // (m = a < 0: x = -w-1 there), Σ x·|a| + c8 = Σ w·a exactly.
            let o = y.add(80 * i);
            let (al, ah) = (i8x16_abs(lo), i8x16_abs(hi));
            let (ml, mh) = (i8x16_lt(lo, i8x16_splat(0)), i8x16_lt(hi, i8x16_splat(0)));
            st(o, al);
            st(o.add(16), ah);
            st(o.add(32), ml);
            st(o.add(48), mh);
            st(o.add(64), i32x4_add(sum4(v128_and(al, ml)), sum4(v128_and(ah, mh))));
        })
    }
    unsafe fn groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
        rx_group_q8_0(g0, g1, nb as u32, a, o0, o1)
    }
}

/// Relaxed kernels of the packed Q4_0 layout, rows in lanes (token tiles too).
impl GroupKernel for Packed<Q4_0> {
    /// d: f32[nb]; per block the quants of elements 0..15 and 16..31 in the
    /// standard order (2 × i8x16: the kernels bring each 4-element group to
    /// all four lanes with `v128.load32_splat`), then `c = −8·Σa` (i32x4 splat).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 32)) + 48 * (cols / 32)
    }
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 32;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(34 * i);
            *d.add(i) = crate::half::f16_to_f32(rd_u16(b));
            let (lo, hi) = (ld(b.add(2)), ld(b.add(18)));
            let o = y.add(48 * i);
            st(o, lo);
            st(o.add(16), hi);
            st(o.add(32), i32x4_splat(-8 * hsum_i32(i32x4_add(sum4(lo), sum4(hi)))));
        }
    }
    c_group_kernels!(rx_group_q4_0, rx_tile_q4_0);
}

/// Relaxed kernels of the packed Q4_K layout (token tiles too).
impl GroupKernel for Packed<Q4_K> {
    /// d: f32[nb]; per super-block Y_0..3, then 8 × 2 planes (i8x16).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 320 * (cols / 256)
    }
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(292 * i);
            *d.add(i) = rd_f32(b);
            let o = y.add(320 * i);
            for k in 0..4 {
                st(o.add(16 * k), crate::group::q8k_pair_sums(b.add(260), k));
            }
            for sb in 0..8 {
                st(o.add(64 + 32 * sb), perm(ld(b.add(4 + 32 * sb))));
                st(o.add(80 + 32 * sb), perm(ld(b.add(20 + 32 * sb))));
            }
        }
    }
    c_group_kernels!(rx_group_q4_k, rx_tile_q4_k);
}

/// Decode kernels of a standard (unpacked) layout in the relaxed build.
pub struct StdKernels {
    pub ty: u32,
    /// Bytes of one expanded activation row of `cols` values.
    pub ext_row_bytes: fn(usize) -> usize,
    /// Expand one converted activation row (`prepare_act` bytes): (act, cols, dst).
    pub expand: unsafe fn(*const u8, usize, *mut u8),
    /// Two sets (`g1` may be null) of 4 standard rows × one token:
    /// (g0, g1, nb, a, o0, o1, rs, os): row `k` of a set at `g + k·rs`
    /// (bytes), its output at `o[k·os]`.
    pub groups: unsafe fn(*const u8, *const u8, usize, *const u8, *mut f32, *mut f32, usize, usize),
}

/// Standard-row decode kernels of a type: the activations of its packed
/// [`GroupKernel`] expansion, one `impl` per type.
pub trait StdKernel: GroupKernel {
    /// ggml type id.
    const TY: u32;
    /// See [`StdKernels::groups`].
    unsafe fn std_groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32, rs: usize, os: usize);
}

impl StdKernels {
    /// The table row of `K`.
    pub const fn of<K: StdKernel>() -> StdKernels {
        StdKernels { ty: K::TY, ext_row_bytes: K::ext_row_bytes, expand: K::expand, groups: K::std_groups }
    }
}

/// Q4_0: per row bit-identical to `tiles::tile_legacy::<Q4_0, 1>` (ggml's
/// generic order in this build, as the packed rows-in-lanes kernels).
impl StdKernel for Packed<Q4_0> {
    const TY: u32 = Q4_0;
    unsafe fn std_groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32, rs: usize, os: usize) {
        rx_std_q4_0(g0, g1, nb as u32, a, o0, o1, rs as u32, os as u32)
    }
}

/// Q4_K: per row bit-identical to `tiles::tile_q45k::<Q4_K, 1>`.
impl StdKernel for Packed<Q4_K> {
    const TY: u32 = Q4_K;
    unsafe fn std_groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32, rs: usize, os: usize) {
        rx_std_q4_k(g0, g1, nb as u32, a, o0, o1, rs as u32, os as u32)
    }
}

/// Q8_0: the packed expansion has more bytes than the standard one
/// (`matmul::scratch_bytes` counts them); per row bit-identical to
/// `tiles::tile_legacy::<Q8_0, 1>`, quants of -128 included.
impl StdKernel for Packed<Q8_0> {
    const TY: u32 = Q8_0;
    unsafe fn std_groups(g0: *const u8, g1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32, rs: usize, os: usize) {
        rx_std_q8_0(g0, g1, nb as u32, a, o0, o1, rs as u32, os as u32)
    }
}

/// Every type with standard-row decode kernels in this build, one line each.
pub static STD_KERNELS: [StdKernels; 3] =
    [StdKernels::of::<Packed<Q4_0>>(), StdKernels::of::<Packed<Q4_K>>(), StdKernels::of::<Packed<Q8_0>>()];

/// The standard-layout decode kernels of weight type `ty` in this build
/// (None: decode runs the generic `tiles.rs` path).
pub fn std_kernels(ty: u32) -> Option<&'static StdKernels> {
    STD_KERNELS.iter().find(|k| k.ty == ty)
}
