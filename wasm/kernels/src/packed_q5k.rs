//! Packed Q5_K (relaxed-SIMD build only; the simd128 build keeps the
//! standard-layout kernels of `tiles.rs` for Q5_K and does not pack it).
//!
//! A group of 4 rows, per super-block (704 B = 4 × 176, packed in place):
//!
//! * `[0, 8)`: the 4 rows' f16 `d`; `[8, 16)`: their f16 `dmin`;
//! * `[16, 64)`: the 4 rows' 6-bit scales and mins in the 48-byte planes of
//!   the packed Q4_K layout (`packed.rs` `k_plane_pos`);
//! * `[64, 704)`: chunk pair `P` (elements `128P..128P+128`) of row `r` at
//!   `64 + 320P + 80r`: five vectors `A_0..A_4` holding the eight 5-bit
//!   vectors `V_n`: `A_k = V_k | …` (low 5 bits), `V5 = A0 >> 5 | (A1 >> 5
//!   & 3) << 3`, `V6 = A2 >> 5 | (A3 >> 5 & 3) << 3`, `V7 = A4 >> 5 |
//!   (A1 >> 7) << 3 | (A3 >> 7) << 4`.
//!
//! `V_{4c'+k}` (chunk `c = 2P + c'`, sub-blocks `2c`, `2c+1`, k = 0..4):
//! byte `4j + i` is element `8k + 2j + i%2` of sub-block `2c + i/2`. The
//! kernel (`c/relaxed_kquants.c`) adds the four
//! `i16x8.relaxed_dot_i8x16_i7x16_s(a, V)` of a chunk in i16 (|·| ≤ 4·2·31·128
//! < 2^15) and scales them with one `i32x4.dot_i16x8_s` against
//! `(s_2c, s_2c+1)`: i32 lane `j` sums, for every sub-block, exactly the
//! elements `{2j, 2j+1, 8+2j, …, 25+2j}` that lane `j` of `tiles::tile_q45k`
//! sums, times its scale. The mins are the exact integer `Σ m_sb·bsum_sb`
//! per row: results are bit-identical to the standard layout.

use crate::group::{c_group_kernels, GroupKernel, GroupKernels};
use crate::packed::{Packed, PackedType};
use crate::simd::*;
use crate::tiles::align16;
use crate::types::*;

/// Standard block bytes.
const BB: usize = 176;

/// Group super-block bytes.
const GB: usize = 704;

/// Offset of the chunk pairs in a group super-block.
const QOFF: usize = 64;

/// Element (0..256) of byte `p` of vector `n` (0..8) of chunk pair `cp`.
#[inline(always)]
fn elem(cp: usize, n: usize, p: usize) -> usize {
    let c = 2 * cp + n / 4;
    let k = n % 4;
    64 * c + 32 * ((p % 4) / 2) + 8 * k + 2 * (p / 4) + p % 2
}

/// OR the 5-bit value `v` of element `e` into a standard block whose quants are zeroed.
#[inline(always)]
unsafe fn v_or(b: *mut u8, e: usize, v: u8) {
    let (sb, l) = (e / 32, e % 32);
    *b.add(48 + 32 * (sb / 2) + l) |= if sb % 2 == 0 { v & 15 } else { (v & 15) << 4 };
    *b.add(16 + l) |= (v >> 4) << sb;
}

/// The 8 values at one byte position of a chunk pair's five vectors.
#[inline(always)]
fn decode8(a: [u8; 5]) -> [u8; 8] {
    [
        a[0] & 31,
        a[1] & 31,
        a[2] & 31,
        a[3] & 31,
        a[4] & 31,
        (a[0] >> 5) | (((a[1] >> 5) & 3) << 3),
        (a[2] >> 5) | (((a[3] >> 5) & 3) << 3),
        (a[4] >> 5) | ((a[1] >> 7) << 3) | ((a[3] >> 7) << 4),
    ]
}

// ---- scale planes (the packed Q4_K encoding of `packed.rs`)

#[inline(always)]
fn plane_pos(r: usize, sb: usize, min: bool) -> (usize, usize, usize, usize) {
    let n = if min { 8 * (sb / 2) + 2 * r + sb % 2 } else { 8 * r + sb };
    let lo_byte = if min { 16 } else { 0 } + n % 16;
    let lo_shift = 4 * (n / 16);
    let hi_shift = if min { 4 } else { 0 } + 2 * (n / 16);
    (lo_byte, lo_shift, 32 + n % 16, hi_shift)
}

#[inline(always)]
unsafe fn plane_get(p: *const u8, r: usize, sb: usize, min: bool) -> u8 {
    let (lb, ls, hb, hs) = plane_pos(r, sb, min);
    ((*p.add(lb) >> ls) & 15) | (((*p.add(hb) >> hs) & 3) << 4)
}

#[inline(always)]
unsafe fn plane_set(p: *mut u8, r: usize, sb: usize, min: bool, v: u8) {
    let (lb, ls, hb, hs) = plane_pos(r, sb, min);
    let b = p.add(lb);
    *b = (*b & !(15 << ls)) | ((v & 15) << ls);
    let h = p.add(hb);
    *h = (*h & !(3 << hs)) | (((v >> 4) & 3) << hs);
}

/// `Y_k` of a Q8_K block (`group::q8k_pair_sums`): i16 pairs
/// `(BS[2k], BS[2k+1])` in every i32 lane, `BS[sb]` the sum of 32.
unsafe fn pair_sums(bsums: *const u8, k: usize) -> v128 {
    let b = bsums as *const i16;
    let s0 = b.add(4 * k).read_unaligned() as i32 + b.add(4 * k + 1).read_unaligned() as i32;
    let s1 = b.add(4 * k + 2).read_unaligned() as i32 + b.add(4 * k + 3).read_unaligned() as i32;
    u32x4_splat((s0 as u32 & 0xffff) | ((s1 as u32) << 16))
}

impl PackedType for Packed<Q5_K> {
    const TY: u32 = Q5_K;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = BB;
    const KERNELS: Option<&'static GroupKernels> = Some(&GroupKernels::of::<Self>());
    /// Standard bytes of block `i` of row `r` of the group at `g`.
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let s = g.add(GB * i);
        for k in 0..2 {
            *dst.add(k) = *s.add(2 * r + k);
            *dst.add(2 + k) = *s.add(8 + 2 * r + k);
        }
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        for sb in 0..8 {
            sc[sb] = plane_get(s.add(16), r, sb, false);
            m[sb] = plane_get(s.add(16), r, sb, true);
        }
        for i in 0..4 {
            *dst.add(4 + i) = (sc[i] & 63) | ((sc[4 + i] >> 4) << 6);
            *dst.add(8 + i) = (m[i] & 63) | ((m[4 + i] >> 4) << 6);
            *dst.add(12 + i) = (sc[4 + i] & 15) | ((m[4 + i] & 15) << 4);
        }
        core::ptr::write_bytes(dst.add(16), 0, 160);
        for cp in 0..2 {
            let a = s.add(QOFF + 320 * cp + 80 * r);
            for p in 0..16 {
                let v = decode8([0usize, 1, 2, 3, 4].map(|k| *a.add(16 * k + p)));
                for n in 0..8 {
                    v_or(dst, elem(cp, n, p), v[n]);
                }
            }
        }
    }
    /// Inverse of [`read_block`].
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let d = g.add(GB * i);
        for k in 0..2 {
            *d.add(2 * r + k) = *src.add(k);
            *d.add(8 + 2 * r + k) = *src.add(2 + k);
        }
        for sb in 0..8 {
            let (s, m) = crate::kquants::scale_min_k4(sb, src.add(4));
            plane_set(d.add(16), r, sb, false, s);
            plane_set(d.add(16), r, sb, true, m);
        }
        // The 256 5-bit values in element order (sub-block sb: nibble of
        // qs[32(sb/2) + l], fifth bit = bit sb of qh[l]).
        let mut q = [0u8; 256];
        let (m4, m10) = (u8x16_splat(0x0f), u8x16_splat(0x10));
        for c in 0..4 {
            for h in 0..2 {
                let qs = ld(src.add(48 + 32 * c + 16 * h));
                let qh = ld(src.add(16 + 16 * h));
                for k in 0..2 {
                    let sb = 2 * c + k;
                    let nib = if k == 0 { v128_and(qs, m4) } else { v128_and(u16x8_shr(qs, 4), m4) };
                    // bit sb of each qh byte → bit 4 (the mask drops bits that crossed bytes)
                    let hb = if sb <= 4 { i16x8_shl(qh, (4 - sb) as u32) } else { u16x8_shr(qh, (sb - 4) as u32) };
                    st(q.as_mut_ptr().add(32 * sb + 16 * h), v128_or(nib, v128_and(hb, m10)));
                }
            }
        }
        for cp in 0..2 {
            let mut v = [u8x16_splat(0); 8];
            for cc in 0..2 {
                let x = q.as_ptr().add(64 * (2 * cp + cc));
                let (a0, a1, b0, b1) = (ld(x), ld(x.add(16)), ld(x.add(32)), ld(x.add(48)));
                v[4 * cc] = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a0, b0);
                v[4 * cc + 1] = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a0, b0);
                v[4 * cc + 2] = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a1, b1);
                v[4 * cc + 3] = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a1, b1);
            }
            // encode8 on vectors: each piece is masked before its 16-bit shift, so
            // no bit crosses into the next byte.
            let pc = |x: v128, mask: u8, sh: u32| i16x8_shl(v128_and(x, u8x16_splat(mask)), sh);
            let a = d.add(QOFF + 320 * cp + 80 * r);
            st(a, v128_or(v[0], pc(v[5], 7, 5)));
            st(a.add(16), v128_or(v128_or(v[1], pc(v[5], 0x18, 2)), pc(v[7], 0x08, 4)));
            st(a.add(32), v128_or(v[2], pc(v[6], 7, 5)));
            st(a.add(48), v128_or(v128_or(v[3], pc(v[6], 0x18, 2)), pc(v[7], 0x10, 3)));
            st(a.add(64), v128_or(v[4], pc(v[7], 7, 5)));
        }
    }
    /// Every `d` and `dmin` finite (the kernels' f16 → f32 conversion skips inf/NaN).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        let fin = |o: usize| rd_u16(w.add(o)) & 0x7c00 != 0x7c00;
        (0..n / BB).all(|b| fin(BB * b) && fin(BB * b + 2))
    }
}

impl GroupKernel for Packed<Q5_K> {
    /// Expanded activation row: `d: f32[nb]`, then per super-block `Y_0..Y_3`
    /// (64 B) and per chunk `c` the four vectors `X_{4c..4c+4}` (256 B).
    fn ext_row_bytes(cols: usize) -> usize {
        align16(4 * (cols / 256)) + 320 * (cols / 256)
    }
    /// Expand one Q8_K activation row into the vector order of the packed chunks.
    unsafe fn expand(act: *const u8, cols: usize, dst: *mut u8) {
        let nb = cols / 256;
        let d = dst as *mut f32;
        let y = dst.add(align16(4 * nb));
        for i in 0..nb {
            let b = act.add(292 * i);
            *d.add(i) = rd_f32(b);
            let o = y.add(320 * i);
            for k in 0..4 {
                st(o.add(16 * k), pair_sums(b.add(260), k));
            }
            for c in 0..4 {
                let q = b.add(4 + 64 * c);
                let (a0, a1, b0, b1) = (ld(q), ld(q.add(16)), ld(q.add(32)), ld(q.add(48)));
                let x = o.add(64 + 64 * c);
                st(x, i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a0, b0));
                st(x.add(16), i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a0, b0));
                st(x.add(32), i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a1, b1));
                st(x.add(48), i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a1, b1));
            }
        }
    }
    c_group_kernels!(rx_group_q5_k, rx_tile_q5_k);
}
