//! Packed Q3_K (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `lowbit.rs` for Q3_K and does not pack it).
//!
//! Values are stored unsigned, `u = q + 4 ∈ 0..8` (`q = low2 − 4·!hbit`).
//! A group of 4 rows, per super-block (440 B = 4 × 110, packed in place):
//!
//! * `[0, 8)`: the 4 rows' f16 `d`;
//! * `[8, 56)`: the 4 rows' 16 biased 6-bit scales `S_r` (r = 0..4) as three
//!   vectors `A = S_0 | (S_3 & 3) << 6`, `B = S_1 | (S_3 >> 2 & 3) << 6`,
//!   `C = S_2 | (S_3 >> 4) << 6` (scale `u` belongs to run `u`, elements
//!   `16u..16u+16`);
//! * `[56, 440)`: quad pair `P` (elements `128P..128P+128`) of row `r` at
//!   `56 + 192P + 48r`: three vectors holding the eight 3-bit vectors `V_n`
//!   (`n = 4·(quad − 2P) + n'`, `V_n'` of a quad in the run-pair order of the
//!   packed Q6_K quads, `packed_q6k.rs`): `A = V0 | V1 << 3 | (V6 & 3) << 6`,
//!   `B = V2 | V3 << 3 | (V7 & 3) << 6`, `C = V4 | V5 << 3 | (V6 >> 2) << 6
//!   | (V7 >> 2) << 7`.
//!
//! The kernel (`c/relaxed_kquants.c`) takes
//! `i16x8.relaxed_dot_i8x16_i7x16_s(a, V_n)` (3-bit second operand: exact),
//! adds the two vectors of a run pair and `C'_m = −4·(sums of a)` in i16
//! (the `u − 4` offset), and scales with one `i32x4.dot_i16x8_s` against
//! `(s_2m − 32, s_2m+1 − 32)`: i32 lane `j` sums, for every run, the elements
//! `{2j, 2j+1, 8+2j, 9+2j}` that lane `j` of `lowbit::tile_q23k` sums, times
//! that run's scale; results are bit-identical to the standard layout.

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 110;

/// Group super-block bytes.
const GB: usize = 440;

/// Offset of the quad pairs in a group super-block.
const QOFF: usize = 56;

/// Element (0..256) of byte `p` of vector `n` (0..8) of quad pair `qp`.
#[inline(always)]
fn elem(qp: usize, n: usize, p: usize) -> usize {
    let q = 2 * qp + n / 4;
    let n = n % 4;
    let m = 2 * q + n / 2;
    let run = 2 * m + (p % 4) / 2;
    16 * run + 8 * (n % 2) + 2 * (p / 4) + p % 2
}

/// OR `u` of element `e` into a standard block whose quants are zeroed.
#[inline(always)]
unsafe fn u_or(b: *mut u8, e: usize, u: u8) {
    let (k, j, l) = (e / 128, (e / 32) % 4, e % 32);
    *b.add(32 + 32 * k + l) |= (u & 3) << (2 * j);
    *b.add(l) |= (u >> 2) << (4 * k + j);
}

/// The 3-bit value `n` (0..8) at one byte position of a quad pair.
#[inline(always)]
fn v_get(a: u8, b: u8, c: u8, n: usize) -> u8 {
    match n {
        0 => a & 7,
        1 => (a >> 3) & 7,
        2 => b & 7,
        3 => (b >> 3) & 7,
        4 => c & 7,
        5 => (c >> 3) & 7,
        6 => (a >> 6) | (((c >> 6) & 1) << 2),
        _ => (b >> 6) | ((c >> 7) << 2),
    }
}

/// Row `r`'s 6-bit scale `u` in the group's scale vectors at `s`.
#[inline(always)]
unsafe fn scale_get(s: *const u8, r: usize, u: usize) -> u8 {
    if r < 3 {
        *s.add(16 * r + u) & 63
    } else {
        (*s.add(u) >> 6) | ((*s.add(16 + u) >> 6) << 2) | ((*s.add(32 + u) >> 6) << 4)
    }
}

#[inline(always)]
unsafe fn scale_set(s: *mut u8, r: usize, u: usize, v: u8) {
    if r < 3 {
        let b = s.add(16 * r + u);
        *b = (*b & 0xc0) | v;
    } else {
        for k in 0..3 {
            let b = s.add(16 * k + u);
            *b = (*b & 63) | (((v >> (2 * k)) & 3) << 6);
        }
    }
}

impl PackedType for Packed<Q3_K> {
    const TY: u32 = Q3_K;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let s = g.add(GB * i);
        core::ptr::write_bytes(dst, 0, 108);
        *dst.add(108) = *s.add(2 * r);
        *dst.add(109) = *s.add(2 * r + 1);
        for u in 0..16 {
            let v = scale_get(s.add(8), r, u);
            *dst.add(96 + u % 8) |= (v & 15) << (4 * (u / 8));
            *dst.add(104 + u % 4) |= (v >> 4) << (2 * (u / 4));
        }
        for qp in 0..2 {
            let abc = s.add(QOFF + 192 * qp + 48 * r);
            for p in 0..16 {
                let (a, b, c) = (*abc.add(p), *abc.add(16 + p), *abc.add(32 + p));
                for n in 0..8 {
                    u_or(dst, elem(qp, n, p), v_get(a, b, c, n));
                }
            }
        }
    }
    /// Inverse of [`read_block`].
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let d = g.add(GB * i);
        *d.add(2 * r) = *src.add(108);
        *d.add(2 * r + 1) = *src.add(109);
        let sc = crate::lowbit::q3k_scales(src.add(96));
        for u in 0..16 {
            scale_set(d.add(8), r, u, sc[u] as u8);
        }
        // u = low2 | hbit << 2 of the 256 elements in element order
        // (e = 128k + 32j + l: qs[32k + l] >> 2j, hmask[l] bit 4k + j).
        let mut q = [0u8; 256];
        let (m3, m4) = (u8x16_splat(3), u8x16_splat(4));
        for k in 0..2 {
            for h in 0..2 {
                let qs = ld(src.add(32 + 32 * k + 16 * h));
                let hm = ld(src.add(16 * h));
                for j in 0..4 {
                    let low = v128_and(u16x8_shr(qs, (2 * j) as u32), m3);
                    let b = 4 * k + j; // bit b → bit 2 (the mask drops bits that crossed bytes)
                    let hb = if b <= 2 { i16x8_shl(hm, (2 - b) as u32) } else { u16x8_shr(hm, (b - 2) as u32) };
                    st(q.as_mut_ptr().add(128 * k + 32 * j + 16 * h), v128_or(low, v128_and(hb, m4)));
                }
            }
        }
        for qp in 0..2 {
            let mut v = [u8x16_splat(0); 8];
            for n in 0..4 {
                // quad 2qp + n/2, run pair m = 2·quad + n%2
                let run = q.as_ptr().add(32 * (4 * qp + n));
                let (ra, rb) = (ld(run), ld(run.add(16)));
                v[2 * n] = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ra, rb);
                v[2 * n + 1] = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ra, rb);
            }
            // Values ≤ 7, pieces masked before each 16-bit shift: no bit crosses a byte.
            let pc = |x: v128, mask: u8, sh: u32| i16x8_shl(v128_and(x, u8x16_splat(mask)), sh);
            let abc = d.add(QOFF + 192 * qp + 48 * r);
            st(abc, v128_or(v128_or(v[0], i16x8_shl(v[1], 3)), pc(v[6], 3, 6)));
            st(abc.add(16), v128_or(v128_or(v[2], i16x8_shl(v[3], 3)), pc(v[7], 3, 6)));
            st(abc.add(32), v128_or(v128_or(v[4], i16x8_shl(v[5], 3)), v128_or(pc(v[6], 4, 4), pc(v[7], 4, 5))));
        }
    }
    /// Every `d` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / BB).all(|b| rd_u16(w.add(BB * b + 108)) & 0x7c00 != 0x7c00)
    }
}

impl GroupKernel for Packed<Q3_K> {
    /// Expanded activation row: `d: f32[nb]`, then per super-block and run
    /// pair `m`: `X_2m`, `X_2m+1` (i8x16) and `C'_m = −4·(sums of the lanes'
    /// 4 elements of runs 2m, 2m+1)` (i16x8).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 384 * (cols / 256)
    }
    /// Expand one Q8_K activation row into the vector order of the packed quads.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        let m4 = i16x8_splat(-4);
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
                st(o.add(48 * m + 32), i16x8_mul(c, m4));
            }
        }
    }
    c_group_kernels!(rx_group2_q3_k, rx_tile_q3_k);
}
