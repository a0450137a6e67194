//! Packed Q6_K (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for Q6_K and does not pack it).
//!
//! A group of 4 rows, per super-block (840 B = 4 × 210, packed in place):
//!
//! * `[0, 8)`: the 4 rows' f16 `d`;
//! * `[8, 72)`: row `r`'s 16 i8 scales at `8 + 16r` (ggml's order: scale `u`
//!   belongs to elements `16u..16u+16`, "run" `u`);
//! * `[72, 840)`: quad `Q` (elements `64Q..64Q+64`, runs `4Q..4Q+4`) of row
//!   `r` at `72 + 192Q + 48r`: three vectors `A, B, C` holding the four
//!   6-bit vectors `V0..V3` of the quad: `A = V0 | (V3 & 3) << 6`,
//!   `B = V1 | (V3 >> 2 & 3) << 6`, `C = V2 | (V3 >> 4) << 6`.
//!
//! `V_n` (n = 0..4) carries the run pair `(2m, 2m+1)`, `m = 2Q + n/2`, half
//! `v = n % 2`: byte `4j + i` is element `8v + 2j + i%2` of run
//! `2m + i/2`. The kernel (`c/relaxed_kquants.c`) takes
//! `i16x8.relaxed_dot_i8x16_i7x16_s(a, V_n)` (pair sums, 7-bit second
//! operand: exact), adds the pair's two vectors and `C'_m = −32·(sums of
//! a)` (the `q − 32` offset) in i16, and scales with `i32x4.dot_i16x8_s`
//! against `(s_2m, s_2m+1)`: i32 lane `j` then sums, for every run, exactly
//! the elements `{2j, 2j+1, 8+2j, 9+2j}` that lane `j` of
//! `tiles::tile_q6k` sums, times that run's scale — the same exact
//! integers, converted and scaled in the same f32 order, so results are
//! bit-identical to the standard layout. The activations are expanded to
//! match (`expand`).

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 210;

/// Group super-block bytes.
const GB: usize = 840;

/// Offset of the quads in a group super-block.
const QOFF: usize = 72;

/// Element (0..256) of byte `p` of vector `n` of quad `q`.
#[inline(always)]
fn elem(q: usize, n: usize, p: usize) -> usize {
    let m = 2 * q + n / 2;
    let run = 2 * m + (p % 4) / 2;
    16 * run + 8 * (n % 2) + 2 * (p / 4) + p % 2
}

/// OR the 6-bit value `v` of element `e` into a zeroed standard block.
#[inline(always)]
unsafe fn q6_or(b: *mut u8, e: usize, v: u8) {
    let (h, w) = (e / 128, e % 128);
    let (k, l) = (w / 32, w % 32);
    let ql = b.add(64 * h + l + 32 * (k & 1));
    *ql |= if k >= 2 { (v & 15) << 4 } else { v & 15 };
    *b.add(128 + 32 * h + l) |= (v >> 4) << (2 * k);
}

/// The 256 6-bit values of a standard block in element order.
#[inline(always)]
unsafe fn q6_values(src: *const u8, q: *mut u8) {
    let (m4, m30) = (u8x16_splat(0x0f), u8x16_splat(0x30));
    for h in 0..2 {
        for lb in 0..2 {
            let la = ld(src.add(64 * h + 16 * lb));
            let lc = ld(src.add(64 * h + 32 + 16 * lb));
            let hb = ld(src.add(128 + 32 * h + 16 * lb));
            let o = q.add(128 * h + 16 * lb);
            st(o, v128_or(v128_and(la, m4), v128_and(i16x8_shl(hb, 4), m30)));
            st(o.add(32), v128_or(v128_and(lc, m4), v128_and(i16x8_shl(hb, 2), m30)));
            st(o.add(64), v128_or(v128_and(u16x8_shr(la, 4), m4), v128_and(hb, m30)));
            st(o.add(96), v128_or(v128_and(u16x8_shr(lc, 4), m4), v128_and(u16x8_shr(hb, 2), m30)));
        }
    }
}

impl PackedType for Packed<Q6_K> {
    const TY: u32 = Q6_K;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let s = g.add(GB * i);
        core::ptr::write_bytes(dst, 0, 192);
        *dst.add(208) = *s.add(2 * r);
        *dst.add(209) = *s.add(2 * r + 1);
        core::ptr::copy_nonoverlapping(s.add(8 + 16 * r), dst.add(192), 16);
        for q in 0..4 {
            let abc = s.add(QOFF + 192 * q + 48 * r);
            for p in 0..16 {
                let (a, b, c) = (*abc.add(p), *abc.add(16 + p), *abc.add(32 + p));
                let v3 = (a >> 6) | ((b >> 6) << 2) | ((c >> 6) << 4);
                q6_or(dst, elem(q, 0, p), a & 63);
                q6_or(dst, elem(q, 1, p), b & 63);
                q6_or(dst, elem(q, 2, p), c & 63);
                q6_or(dst, elem(q, 3, p), v3);
            }
        }
    }
    /// Inverse of [`read_block`].
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let d = g.add(GB * i);
        *d.add(2 * r) = *src.add(208);
        *d.add(2 * r + 1) = *src.add(209);
        core::ptr::copy_nonoverlapping(src.add(192), d.add(8 + 16 * r), 16);
        let mut q = [0u8; 256];
        q6_values(src, q.as_mut_ptr());
        for qd in 0..4 {
            let abc = d.add(QOFF + 192 * qd + 48 * r);
            let mut v = [u8x16_splat(0); 4];
            for pm in 0..2 {
                let run = q.as_ptr().add(32 * (2 * qd + pm));
                let (ra, rb) = (ld(run), ld(run.add(16)));
                v[2 * pm] = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ra, rb);
                v[2 * pm + 1] = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ra, rb);
            }
            // (V3 & 3) << 6, (V3 >> 2 & 3) << 6, (V3 >> 4) << 6 with 16-bit shifts: the
            // masks leave no bit that could cross into the next byte.
            let top = |mask: u8, sh: u32| i16x8_shl(v128_and(v[3], u8x16_splat(mask)), sh);
            st(abc, v128_or(v[0], top(0x03, 6)));
            st(abc.add(16), v128_or(v[1], top(0x0c, 4)));
            st(abc.add(32), v128_or(v[2], top(0x30, 2)));
        }
    }
    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b + 208)) & 0x7c00 != 0x7c00)
    }
}

impl GroupKernel for Packed<Q6_K> {
    /// Expanded activation row: `d: f32[nb]`, then per super-block and run
    /// pair `m` (= 8 per super-block): `X_2m`, `X_2m+1` (i8x16) and
    /// `C'_m = −32·(sums of the lanes' 4 elements of run 2m, 2m+1)` (i16x8).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 384 * (cols / 256)
    }
    /// Expand one Q8_K activation row into the vector order of the packed quads.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        let m32 = i16x8_splat(-32);
        for i in 0..nb {
            let b = act.add(292 * i);
            *d.add(i) = rd_f32(b);
            let o = y.add(384 * i);
            for m in 0..8 {
                let (ra, rb) = (ld(b.add(4 + 32 * m)), ld(b.add(20 + 32 * m)));
                let x0 = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ra, rb);
                let x1 = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ra, rb);
                let c = i16x8_add(i16x8_extadd_pairwise_i8x16(x0), i16x8_extadd_pairwise_i8x16(x1));
                st(o.add(48 * m), x0);
                st(o.add(48 * m + 16), x1);
                st(o.add(48 * m + 32), i16x8_mul(c, m32));
            }
        }
    }
    c_group_kernels!(rx_group2_q6_k, rx_tile_q6_k);
}
