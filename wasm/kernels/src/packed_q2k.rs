//! Packed Q2_K (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `lowbit.rs` for Q2_K and does not pack it).
//!
//! A group of 4 rows, per super-block (336 B = 4 × 84, packed in place):
//!
//! * `[0, 8)`: the 4 rows' f16 `d`; `[8, 16)`: their f16 `dmin`;
//! * `[16, 80)`: row `r`'s 16 scale/min bytes at `16 + 16r` (ggml's bytes:
//!   scale in the low nibble, min in the high one; byte `u` belongs to run
//!   `u`, elements `16u..16u+16`);
//! * `[80, 336)`: quad `Q` (elements `64Q..64Q+64`) of row `r` at
//!   `80 + 64Q + 16r`: one vector whose bits `2n, 2n+1` hold `V_n`
//!   (n = 0..4), the 2-bit vectors in the run-pair order of the packed Q6_K
//!   quads (`packed_q6k.rs`): `V_n` carries runs `(2m, 2m+1)`,
//!   `m = 2Q + n/2`, half `v = n % 2`, byte `4j + i` = element
//!   `8v + 2j + i%2` of run `2m + i/2`.
//!
//! The kernel (`c/relaxed_kquants.c`) takes
//! `i16x8.relaxed_dot_i8x16_i7x16_s(a, V_n)` (2-bit second operand: exact),
//! adds the two vectors of a run pair in i16 and scales them with one
//! `i32x4.dot_i16x8_s` against `(s_2m, s_2m+1)`: i32 lane `j` sums, for every
//! run, the elements `{2j, 2j+1, 8+2j, 9+2j}` that lane `j` of
//! `lowbit::tile_q23k` sums, times that run's scale. The mins are the
//! exact integer `Σ min_u · bsum_u` per row, scaled by `dmin·yd` as there:
//! results are bit-identical to the standard layout.

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 84;

/// Group super-block bytes.
const GB: usize = 336;

/// Offset of the quads in a group super-block.
const QOFF: usize = 80;

/// Element (0..256) of byte `p` of vector `n` of quad `q`.
#[inline(always)]
fn elem(q: usize, n: usize, p: usize) -> usize {
    let m = 2 * q + n / 2;
    let run = 2 * m + (p % 4) / 2;
    16 * run + 8 * (n % 2) + 2 * (p / 4) + p % 2
}

/// Byte and shift of element `e` in a standard block's `qs`
/// (`e = 128k + 32j + 16h + l` at `qs[32k + 16h + l] >> 2j`).
#[inline(always)]
fn std_pos(e: usize) -> (usize, usize) {
    let (k, j, h, l) = (e / 128, (e / 32) % 4, (e / 16) % 2, e % 16);
    (16 + 32 * k + 16 * h + l, 2 * j)
}

impl PackedType for Packed<Q2_K> {
    const TY: u32 = Q2_K;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let s = g.add(GB * i);
        core::ptr::copy_nonoverlapping(s.add(16 + 16 * r), dst, 16);
        core::ptr::write_bytes(dst.add(16), 0, 64);
        for k in 0..2 {
            *dst.add(80 + k) = *s.add(2 * r + k);
            *dst.add(82 + k) = *s.add(8 + 2 * r + k);
        }
        for q in 0..4 {
            let pv = s.add(QOFF + 64 * q + 16 * r);
            for p in 0..16 {
                let b = *pv.add(p);
                for n in 0..4 {
                    let (o, sh) = std_pos(elem(q, n, p));
                    *dst.add(o) |= ((b >> (2 * n)) & 3) << sh;
                }
            }
        }
    }
    /// Inverse of [`read_block`].
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let d = g.add(GB * i);
        core::ptr::copy_nonoverlapping(src, d.add(16 + 16 * r), 16);
        for k in 0..2 {
            *d.add(2 * r + k) = *src.add(80 + k);
            *d.add(8 + 2 * r + k) = *src.add(82 + k);
        }
        // The 256 2-bit values in element order.
        let mut q = [0u8; 256];
        let m3 = u8x16_splat(3);
        for k in 0..2 {
            for h in 0..2 {
                let v = ld(src.add(16 + 32 * k + 16 * h));
                st(q.as_mut_ptr().add(128 * k + 16 * h), v128_and(v, m3));
                st(q.as_mut_ptr().add(128 * k + 32 + 16 * h), v128_and(u16x8_shr(v, 2), m3));
                st(q.as_mut_ptr().add(128 * k + 64 + 16 * h), v128_and(u16x8_shr(v, 4), m3));
                st(q.as_mut_ptr().add(128 * k + 96 + 16 * h), v128_and(u16x8_shr(v, 6), m3));
            }
        }
        for qd in 0..4 {
            let mut v = [u8x16_splat(0); 4];
            for pm in 0..2 {
                let run = q.as_ptr().add(32 * (2 * qd + pm));
                let (ra, rb) = (ld(run), ld(run.add(16)));
                v[2 * pm] = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ra, rb);
                v[2 * pm + 1] = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ra, rb);
            }
            // Values ≤ 3: the 16-bit shifts move no bit across a byte.
            let p = v128_or(v128_or(v[0], i16x8_shl(v[1], 2)), v128_or(i16x8_shl(v[2], 4), i16x8_shl(v[3], 6)));
            st(d.add(QOFF + 64 * qd + 16 * r), p);
        }
    }
    /// Every `d` and `dmin` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        let fin = |o: usize| rd_u16(w.add(o)) & 0x7c00 != 0x7c00;
        (0..n / BB).all(|b| fin(BB * b + 80) && fin(BB * b + 82))
    }
}

impl GroupKernel for Packed<Q2_K> {
    /// Expanded activation row: `d: f32[nb]`, then per super-block the 16
    /// i16 `bsums` (32 B) and the 16 vectors `X_n` (i8x16) in quad order.
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 288 * (cols / 256)
    }
    /// Expand one Q8_K activation row into the vector order of the packed quads.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(292 * i);
            *d.add(i) = rd_f32(b);
            let o = y.add(288 * i);
            st(o, ld(b.add(260)));
            st(o.add(16), ld(b.add(276)));
            for m in 0..8 {
                let (ra, rb) = (ld(b.add(4 + 32 * m)), ld(b.add(20 + 32 * m)));
                st(o.add(32 + 32 * m), i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ra, rb));
                st(o.add(48 + 32 * m), i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ra, rb));
            }
        }
    }
    c_group_kernels!(rx_group_q2_k, rx_tile_q2_k);
}
