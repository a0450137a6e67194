//! SIMD matmul micro-kernels: one weight row × up to 4 tokens.
//!
//! Each weight block is unpacked to i16x8 vectors once and reused for every
//! token of the tile (prefill is matrix·matrix). Quantized activations are
//! first *expanded* from their ggml bytes (Q8_0/Q8_1/Q8_K) into an internal
//! layout with f32 scales and i16 values, so the inner loop is
//! `i32x4.dot_i16x8_s` on the weight side's sign-extension only:
//!
//! * Q8_0/Q8_1 row (nb blocks of 32): `d: f32[nb]`, `s: f32[nb]` (Q8_1's
//!   f16 `s` as f32; 0 for Q8_0), then at `align16(8·nb)`: `q: i16[32·nb]`.
//! * Q8_K row (nb blocks of 256): `d: f32[nb]`, at `align16(4·nb)`:
//!   `bsums: i16[16·nb]`, then `q: i16[256·nb]`.
//!
//! Per block the integer partials stay in i32x4 lanes, are converted to f32
//! and scaled by `dw·da` like ggml's AVX2 kernels; the scalar twins are the
//! per-row functions in `dot.rs` / `kquants.rs`.

use crate::half::f16_to_f32;
use crate::kquants::scale_min_k4;
use crate::simd::*;
use crate::types::*;

#[inline(always)]
pub const fn align16(n: usize) -> usize {
    (n + 15) & !15
}

#[inline(always)]
unsafe fn fp16(p: *const u8) -> f32 {
    f16_to_f32(rd_u16(p))
}

/// Bytes of one expanded activation row (0 when the type needs none).
pub fn ext_row_bytes(ty: u32, cols: usize) -> usize {
    use crate::formats::{kernels, Act};
    match kernels(ty).map(|k| k.act) {
        Some(Act::Q8_0 | Act::Q8_1) => {
            let nb = cols / 32;
            align16(8 * nb) + 64 * nb
        }
        Some(Act::Q8_K) => {
            let nb = cols / 256;
            align16(4 * nb) + 32 * nb + 512 * nb
        }
        _ => 0,
    }
}

/// Expand one Q8_0 (`q81 = false`) or Q8_1 activation row.
pub unsafe fn expand_q8(act: *const u8, nb: usize, q81: bool, dst: *mut u8) {
    let d = dst as *mut f32;
    let s = d.add(nb);
    let q = dst.add(align16(8 * nb));
    let (bb, qo) = if q81 { (36, 4) } else { (34, 2) };
    for i in 0..nb {
        let b = act.add(i * bb);
        *d.add(i) = fp16(b);
        *s.add(i) = if q81 { fp16(b.add(2)) } else { 0.0 };
        let v0 = ld(b.add(qo));
        let v1 = ld(b.add(qo + 16));
        let o = q.add(64 * i);
        st(o, i16x8_extend_low_i8x16(v0));
        st(o.add(16), i16x8_extend_high_i8x16(v0));
        st(o.add(32), i16x8_extend_low_i8x16(v1));
        st(o.add(48), i16x8_extend_high_i8x16(v1));
    }
}

/// Expand one Q8_K activation row.
pub unsafe fn expand_q8k(act: *const u8, nb: usize, dst: *mut u8) {
    let d = dst as *mut f32;
    let bs = dst.add(align16(4 * nb));
    let q = bs.add(32 * nb);
    for i in 0..nb {
        let b = act.add(i * 292);
        *d.add(i) = rd_f32(b);
        st(bs.add(32 * i), ld(b.add(260)));
        st(bs.add(32 * i + 16), ld(b.add(276)));
        for k in 0..16 {
            let v = ld(b.add(4 + 16 * k));
            let o = q.add(512 * i + 32 * k);
            st(o, i16x8_extend_low_i8x16(v));
            st(o.add(16), i16x8_extend_high_i8x16(v));
        }
    }
}

// ---------------------------------------------------------------- float formats

/// F32/F16/BF16 weight row × T tokens of f32 activations (T ≥ 2; single
/// tokens use the 4-accumulator row dots in `dot.rs`).
#[inline(always)]
pub unsafe fn tile_float<const K: u32, const T: usize>(w: *const u8, n: usize, a: *const f32, arow: usize, out: *mut f32, ostride: usize) {
    let mut acc = [[f32x4_splat(0.0); 2]; T];
    let mut i = 0;
    let load = |i: usize| -> v128 {
        match K {
            F32 => ldf((w as *const f32).add(i)),
            F16 => ld_f16x4((w as *const u16).add(i)),
            _ => ld_bf16x4((w as *const u16).add(i)),
        }
    };
    while i + 8 <= n {
        let w0 = load(i);
        let w1 = load(i + 4);
        for t in 0..T {
            let at = a.add(t * arow + i);
            acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(w0, ldf(at)));
            acc[t][1] = f32x4_add(acc[t][1], f32x4_mul(w1, ldf(at.add(4))));
        }
        i += 8;
    }
    while i + 4 <= n {
        let w0 = load(i);
        for t in 0..T {
            acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(w0, ldf(a.add(t * arow + i))));
        }
        i += 4;
    }
    let mut s = [0.0f32; T];
    for t in 0..T {
        s[t] = hsum_f32(f32x4_add(acc[t][0], acc[t][1]));
    }
    while i < n {
        let wv = match K {
            F32 => *(w as *const f32).add(i),
            F16 => f16_to_f32(*(w as *const u16).add(i)),
            _ => crate::half::bf16_to_f32(*(w as *const u16).add(i)),
        };
        for t in 0..T {
            s[t] += wv * *a.add(t * arow + i);
        }
        i += 1;
    }
    for t in 0..T {
        *out.add(t * ostride) = s[t];
    }
}

// ---------------------------------------------------------------- legacy 32-blocks

/// Bytes per block of a legacy weight type.
#[inline(always)]
const fn legacy_bytes(k: u32) -> usize {
    match k {
        Q8_0 => 34,
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        IQ4_NL => 18,
        MXFP4 => 17,
        _ => 24, // Q5_1
    }
}

/// Fifth bits of a Q5 block as bytes 0x10/0 (element j uses bit j of `qh`).
#[inline(always)]
fn q5_high_bits(qh: u32) -> (v128, v128) {
    let v = u32x4_splat(qh);
    let sel_lo = i8x16_swizzle(v, i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    let sel_hi = i8x16_swizzle(v, i8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    let bits = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    let h = u8x16_splat(0x10);
    (
        v128_and(i8x16_eq(v128_and(sel_lo, bits), bits), h),
        v128_and(i8x16_eq(v128_and(sel_hi, bits), bits), h),
    )
}

/// The 32 weights of a legacy block as signed bytes (elements 0..15, 16..31).
#[inline(always)]
unsafe fn legacy_unpack<const K: u32>(b: *const u8) -> (v128, v128) {
    let m4 = u8x16_splat(0x0f);
    match K {
        Q8_0 => (ld(b.add(2)), ld(b.add(18))),
        Q4_0 => {
            let q = ld(b.add(2));
            let s8 = i8x16_splat(8);
            (i8x16_sub(v128_and(q, m4), s8), i8x16_sub(u8x16_shr(q, 4), s8))
        }
        Q4_1 => {
            let q = ld(b.add(4));
            (v128_and(q, m4), u8x16_shr(q, 4))
        }
        IQ4_NL => crate::lowbit::nl_unpack(ld(b.add(2)), ld(crate::lowbit::KVALUES_IQ4NL.as_ptr() as *const u8)),
        MXFP4 => crate::lowbit::nl_unpack(ld(b.add(1)), ld(crate::lowbit::KVALUES_MXFP4.as_ptr() as *const u8)),
        Q5_0 => {
            let (h0, h1) = q5_high_bits(rd_u32(b.add(2)));
            let q = ld(b.add(6));
            let s16 = i8x16_splat(16);
            (i8x16_sub(v128_or(v128_and(q, m4), h0), s16), i8x16_sub(v128_or(u8x16_shr(q, 4), h1), s16))
        }
        _ => {
            let (h0, h1) = q5_high_bits(rd_u32(b.add(4)));
            let q = ld(b.add(8));
            (v128_or(v128_and(q, m4), h0), v128_or(u8x16_shr(q, 4), h1))
        }
    }
}

/// A legacy block's 32 weights as four i16x8 vectors (elements 0–7, 8–15,
/// 16–23, 24–31 of the block's standard order).
#[inline(always)]
unsafe fn legacy_widened<const K: u32>(b: *const u8) -> [v128; 4] {
    let (lo, hi) = legacy_unpack::<K>(b);
    [i16x8_extend_low_i8x16(lo), i16x8_extend_high_i8x16(lo), i16x8_extend_low_i8x16(hi), i16x8_extend_high_i8x16(hi)]
}

/// The block's i32x4 lane partials against one expanded activation block at
/// `q` (64 bytes of i16): `(w0·q0 + w1·q1) + (w2·q2 + w3·q3)`.
#[inline(always)]
unsafe fn dot_widened(w: &[v128; 4], q: *const u8) -> v128 {
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(w[0], ld(q)), i32x4_dot_i16x8(w[1], ld(q.add(16)))),
        i32x4_add(i32x4_dot_i16x8(w[2], ld(q.add(32))), i32x4_dot_i16x8(w[3], ld(q.add(48)))),
    )
}

/// Legacy weight row (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4 · Q8_0; Q4_1, Q5_1 · Q8_1) × T tokens
/// of expanded activations. (Batching the scale work of 4 blocks through a
/// 4×4 transpose was measured: no gain at T = 1, a loss at T = 4 from
/// register pressure, so blocks go one at a time.)
#[inline(always)]
pub unsafe fn tile_legacy<const K: u32, const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    if generic_order(K) {
        return tile_gg::<K, T>(w, nb, a, arow, out, ostride);
    }
    let has_min = K == Q4_1 || K == Q5_1;
    let qoff = align16(8 * nb);
    let mut acc = [f32x4_splat(0.0); T];
    let mut accm = [0.0f32; T];
    for i in 0..nb {
        let b = w.add(i * legacy_bytes(K));
        let wv = legacy_widened::<K>(b);
        let dw = if K == MXFP4 { crate::lowbit::e8m0_half(*b) } else { fp16(b) };
        let mw = if has_min { fp16(b.add(2)) } else { 0.0 };
        for t in 0..T {
            let at = a.add(t * arow);
            let q = at.add(qoff + 64 * i);
            let s = dot_widened(&wv, q);
            let da = *(at as *const f32).add(i);
            acc[t] = f32x4_add(acc[t], f32x4_mul(f32x4_convert_i32x4(s), f32x4_splat(dw * da)));
            if has_min {
                accm[t] += mw * *(at as *const f32).add(nb + i);
            }
        }
    }
    for t in 0..T {
        *out.add(t * ostride) = hsum_f32(acc[t]) + accm[t];
    }
}

/// Whether legacy type `K` sums in ggml's generic order here (per block the
/// exact i32 sum, then `sumf += f32(sumi)·(d_w·d_a)`) rather than per dot
/// lane: IQ4_NL always; Q4_0 in the relaxed-SIMD build, whose packed Q4_0
/// kernels keep rows in lanes (`c/relaxed.c` `q4r_block`).
#[inline(always)]
pub const fn generic_order(k: u32) -> bool {
    k == IQ4_NL || (cfg!(moe_relaxed) && k == Q4_0)
}

/// IQ4_NL (and relaxed-build Q4_0) weight row × T tokens in ggml's generic
/// order (per block the exact i32 sum `S_t`, then `sumf_t += f32(S_t)·(d_w·d_a)`):
/// the order of the packed relaxed kernels (packed_iq4nl.rs, c/relaxed.c;
/// rows in lanes) and, for IQ4_NL, of the scalar twin. The tokens' four lane
/// sums are reduced together (lane `t` = token `t`), so one convert, multiply
/// and add per block serve every token.
#[inline(always)]
unsafe fn tile_gg<const K: u32, const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    let qoff = align16(8 * nb);
    let mut acc = f32x4_splat(0.0);
    for i in 0..nb {
        let b = w.add(i * legacy_bytes(K));
        let wv = legacy_widened::<K>(b);
        let dw = fp16(b);
        let mut ss = [i32x4_splat(0); 4];
        let mut dd = [0.0f32; 4];
        for t in 0..T {
            let at = a.add(t * arow);
            let q = at.add(qoff + 64 * i);
            ss[t] = dot_widened(&wv, q);
            dd[t] = dw * *(at as *const f32).add(i);
        }
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(lane_sums4(&ss)), f32x4(dd[0], dd[1], dd[2], dd[3])));
    }
    let mut o = [0.0f32; 4];
    stf(o.as_mut_ptr(), acc);
    for t in 0..T {
        *out.add(t * ostride) = o[t];
    }
}

/// R rows of a legacy-family format without a min (IQ4_NL, MXFP4; also
/// valid for Q8_0, Q4_0, Q5_0) × 1 token (decode), sharing the activation
/// loads; per row the operations of [`tile_legacy`]`::<K, 1>` (bit-identical).
#[inline(always)]
pub unsafe fn rows_legacy<const K: u32, const R: usize>(w: [*const u8; R], nb: usize, a: *const u8, out: [*mut f32; R]) {
    if K == IQ4_NL && R == 2 {
        return rows2_iq4nl(w[0], w[1], nb, a, out[0], out[R - 1]);
    }
    let gg = generic_order(K); // ggml's generic order, in lane 0 (as tile_gg)
    let qoff = align16(8 * nb);
    let mut acc = [f32x4_splat(0.0); R];
    for i in 0..nb {
        let q = a.add(qoff + 64 * i);
        let (y0, y1, y2, y3) = (ld(q), ld(q.add(16)), ld(q.add(32)), ld(q.add(48)));
        let da = *(a as *const f32).add(i);
        for r in 0..R {
            let b = w[r].add(i * legacy_bytes(K));
            let (lo, hi) = legacy_unpack::<K>(b);
            let s = i32x4_add(
                i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(lo), y0),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(lo), y1),
                ),
                i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(hi), y2),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(hi), y3),
                ),
            );
            let dw = if K == MXFP4 { crate::lowbit::e8m0_half(*b) } else { fp16(b) };
            let s = if gg { bcast_sum_i32(s) } else { s };
            acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_convert_i32x4(s), f32x4_splat(dw * da)));
        }
    }
    for r in 0..R {
        *out[r] = if gg { f32x4_extract_lane::<0>(acc[r]) } else { hsum_f32(acc[r]) };
    }
}

/// Two IQ4_NL rows × 1 token in ggml's generic order: both rows' lane sums
/// reduced together (lanes 0 and 1), one convert / multiply / add per block.
#[inline(always)]
unsafe fn rows2_iq4nl(w0: *const u8, w1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
    let qoff = align16(8 * nb);
    let mut acc = f32x4_splat(0.0);
    for i in 0..nb {
        let q = a.add(qoff + 64 * i);
        let (y0, y1, y2, y3) = (ld(q), ld(q.add(16)), ld(q.add(32)), ld(q.add(48)));
        let da = *(a as *const f32).add(i);
        let dot = |b: *const u8| {
            let (lo, hi) = legacy_unpack::<IQ4_NL>(b);
            i32x4_add(
                i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(lo), y0),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(lo), y1),
                ),
                i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(hi), y2),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(hi), y3),
                ),
            )
        };
        let (b0, b1) = (w0.add(18 * i), w1.add(18 * i));
        let (s0, s1) = (dot(b0), dot(b1));
        let t = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(s0, s1), i32x4_shuffle::<2, 6, 3, 7>(s0, s1));
        let t = i32x4_add(t, i32x4_shuffle::<2, 3, 0, 1>(t, t));
        let dd = f32x4_replace_lane::<1>(f32x4_splat(fp16(b0) * da), fp16(b1) * da);
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(t), dd));
    }
    *o0 = f32x4_extract_lane::<0>(acc);
    *o1 = f32x4_extract_lane::<1>(acc);
}

/// The exact (wrapping) sum of the four i32 lanes of `v`, in every lane.
#[inline(always)]
fn bcast_sum_i32(v: v128) -> v128 {
    let t = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    i32x4_add(t, i32x4_shuffle::<1, 0, 3, 2>(t, t))
}

/// Lane `t` = the (wrapping, exact) sum of the lanes of `s[t]`.
#[inline(always)]
fn lane_sums4(s: &[v128; 4]) -> v128 {
    let a01 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(s[0], s[1]), i32x4_shuffle::<2, 6, 3, 7>(s[0], s[1]));
    let a23 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(s[2], s[3]), i32x4_shuffle::<2, 6, 3, 7>(s[2], s[3]));
    i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(a01, a23), i32x4_shuffle::<2, 3, 6, 7>(a01, a23))
}

// ---------------------------------------------------------------- K-quants

#[inline(always)]
unsafe fn k_mins_dot(m: &[u8; 8], bs: *const u8) -> i32 {
    let mv0 = i16x8(m[0] as i16, m[0] as i16, m[1] as i16, m[1] as i16, m[2] as i16, m[2] as i16, m[3] as i16, m[3] as i16);
    let mv1 = i16x8(m[4] as i16, m[4] as i16, m[5] as i16, m[5] as i16, m[6] as i16, m[6] as i16, m[7] as i16, m[7] as i16);
    hsum_i32(i32x4_add(i32x4_dot_i16x8(mv0, ld(bs)), i32x4_dot_i16x8(mv1, ld(bs.add(16)))))
}

/// Σ over 4 i16x8 weight vectors × 32 expanded activations.
#[inline(always)]
unsafe fn dot32(w: &[v128; 4], y: *const u8) -> v128 {
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(w[0], ld(y)), i32x4_dot_i16x8(w[1], ld(y.add(16)))),
        i32x4_add(i32x4_dot_i16x8(w[2], ld(y.add(32))), i32x4_dot_i16x8(w[3], ld(y.add(48)))),
    )
}

#[inline(always)]
fn ext4(a: v128, b: v128) -> [v128; 4] {
    [i16x8_extend_low_i8x16(a), i16x8_extend_high_i8x16(a), i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)]
}

/// Q4_K / Q5_K weight row × T tokens of expanded Q8_K activations.
#[inline(always)]
pub unsafe fn tile_q45k<const K: u32, const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    let five = K == Q5_K;
    let bsoff = align16(4 * nb);
    let qoff = bsoff + 32 * nb;
    let m4 = u8x16_splat(0x0f);
    let h10 = u8x16_splat(0x10);
    let mut acc = [f32x4_splat(0.0); T];
    let mut accm = [0.0f32; T];
    for i in 0..nb {
        let xb = w.add(i * if five { 176 } else { 144 });
        let d = fp16(xb);
        let dmin = fp16(xb.add(2));
        let scales = xb.add(4);
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, scales);
            sc[j] = s;
            mn[j] = m;
        }
        let qs = xb.add(if five { 48 } else { 16 });
        let (qh0, qh1) = if five { (ld(xb.add(16)), ld(xb.add(32))) } else { (m4, m4) };
        let mut isum = [i32x4_splat(0); T];
        for c in 0..4 {
            let q0 = ld(qs.add(32 * c));
            let q1 = ld(qs.add(32 * c + 16));
            let (mut l0, mut l1) = (v128_and(q0, m4), v128_and(q1, m4));
            let (mut u0, mut u1) = (u8x16_shr(q0, 4), u8x16_shr(q1, 4));
            if five {
                let b0 = u8x16_splat(1 << (2 * c));
                let b1 = u8x16_splat(2 << (2 * c));
                let hb = |qh: v128, b: v128| v128_and(i8x16_eq(v128_and(qh, b), b), h10);
                l0 = v128_or(l0, hb(qh0, b0));
                l1 = v128_or(l1, hb(qh1, b0));
                u0 = v128_or(u0, hb(qh0, b1));
                u1 = v128_or(u1, hb(qh1, b1));
            }
            let wl = ext4(l0, l1);
            let wu = ext4(u0, u1);
            let (s0, s1) = (i32x4_splat(sc[2 * c] as i32), i32x4_splat(sc[2 * c + 1] as i32));
            for t in 0..T {
                let y = a.add(t * arow + qoff + 512 * i + 128 * c);
                isum[t] = i32x4_add(isum[t], i32x4_mul(dot32(&wl, y), s0));
                isum[t] = i32x4_add(isum[t], i32x4_mul(dot32(&wu, y.add(64)), s1));
            }
        }
        for t in 0..T {
            let at = a.add(t * arow);
            let yd = *(at as *const f32).add(i);
            acc[t] = f32x4_add(acc[t], f32x4_mul(f32x4_convert_i32x4(isum[t]), f32x4_splat(d * yd)));
            accm[t] += (dmin * yd) * k_mins_dot(&mn, at.add(bsoff + 32 * i)) as f32;
        }
    }
    for t in 0..T {
        *out.add(t * ostride) = hsum_f32(acc[t]) - accm[t];
    }
}

/// Q6_K weight row × T tokens of expanded Q8_K activations.
#[inline(always)]
pub unsafe fn tile_q6k<const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    let qoff = align16(4 * nb) + 32 * nb;
    let m4 = u8x16_splat(0x0f);
    let m30 = u8x16_splat(0x30);
    let s32 = i8x16_splat(32);
    let mut acc = [f32x4_splat(0.0); T];
    for i in 0..nb {
        let xb = w.add(i * 210);
        let d = fp16(xb.add(208));
        let mut isum = [i32x4_splat(0); T];
        for half in 0..2 {
            let ql = xb.add(64 * half);
            let qh = xb.add(128 + 32 * half);
            let sc = xb.add(192 + 8 * half);
            for lb in 0..2 {
                let la = ld(ql.add(16 * lb));
                let lc = ld(ql.add(32 + 16 * lb));
                let h = ld(qh.add(16 * lb));
                // 16-bit lane shifts (one x86 op each; wasm's 8-bit shifts cost two or three),
                // then a per-byte mask drops the bits that crossed a byte boundary.
                let q1 = i8x16_sub(v128_or(v128_and(la, m4), v128_and(i16x8_shl(h, 4), m30)), s32);
                let q2 = i8x16_sub(v128_or(v128_and(lc, m4), v128_and(i16x8_shl(h, 2), m30)), s32);
                let q3 = i8x16_sub(v128_or(v128_and(u16x8_shr(la, 4), m4), v128_and(h, m30)), s32);
                let q4 = i8x16_sub(v128_or(v128_and(u16x8_shr(lc, 4), m4), v128_and(u16x8_shr(h, 2), m30)), s32);
                let ws = [q1, q2, q3, q4].map(|q| (i16x8_extend_low_i8x16(q), i16x8_extend_high_i8x16(q)));
                let scs = [0usize, 2, 4, 6].map(|k| i32x4_splat(*sc.add(lb + k) as i8 as i32));
                for t in 0..T {
                    // Element l + 32k of this half, l in 16·lb..16·lb+16.
                    let y = a.add(t * arow + qoff + 512 * i + 2 * (128 * half + 16 * lb));
                    for k in 0..4 {
                        let yk = y.add(64 * k);
                        let s = i32x4_add(i32x4_dot_i16x8(ws[k].0, ld(yk)), i32x4_dot_i16x8(ws[k].1, ld(yk.add(16))));
                        isum[t] = i32x4_add(isum[t], i32x4_mul(s, scs[k]));
                    }
                }
            }
        }
        for t in 0..T {
            let yd = *(a.add(t * arow) as *const f32).add(i);
            acc[t] = f32x4_add(acc[t], f32x4_mul(f32x4_convert_i32x4(isum[t]), f32x4_splat(d * yd)));
        }
    }
    for t in 0..T {
        *out.add(t * ostride) = hsum_f32(acc[t]);
    }
}

/// R Q6_K weight rows × 1 token of expanded Q8_K activations (decode): the
/// rows share every activation load and run as R memory streams. Each row's
/// integer lanes and f32 operations are those of [`tile_q6k`]`::<1>`, so the
/// results are bit-identical to it.
#[inline(always)]
pub unsafe fn rows_q6k<const R: usize>(w: [*const u8; R], nb: usize, a: *const u8, out: [*mut f32; R]) {
    let qoff = align16(4 * nb) + 32 * nb;
    let m4 = u8x16_splat(0x0f);
    let m30 = u8x16_splat(0x30);
    let s32 = i8x16_splat(32);
    let mut acc = [f32x4_splat(0.0); R];
    for i in 0..nb {
        let mut isum = [i32x4_splat(0); R];
        for half in 0..2 {
            for lb in 0..2 {
                let y = a.add(qoff + 512 * i + 2 * (128 * half + 16 * lb));
                let ys = [0usize, 1, 2, 3].map(|k| (ld(y.add(64 * k)), ld(y.add(64 * k + 16))));
                for r in 0..R {
                    let xb = w[r].add(i * 210);
                    let ql = xb.add(64 * half);
                    let la = ld(ql.add(16 * lb));
                    let lc = ld(ql.add(32 + 16 * lb));
                    let h = ld(xb.add(128 + 32 * half + 16 * lb));
                    let q1 = i8x16_sub(v128_or(v128_and(la, m4), v128_and(i16x8_shl(h, 4), m30)), s32);
                    let q2 = i8x16_sub(v128_or(v128_and(lc, m4), v128_and(i16x8_shl(h, 2), m30)), s32);
                    let q3 = i8x16_sub(v128_or(v128_and(u16x8_shr(la, 4), m4), v128_and(h, m30)), s32);
                    let q4 = i8x16_sub(v128_or(v128_and(u16x8_shr(lc, 4), m4), v128_and(u16x8_shr(h, 2), m30)), s32);
                    let sc = xb.add(192 + 8 * half + lb);
                    for (k, q) in [q1, q2, q3, q4].into_iter().enumerate() {
                        let s = i32x4_add(
                            i32x4_dot_i16x8(i16x8_extend_low_i8x16(q), ys[k].0),
                            i32x4_dot_i16x8(i16x8_extend_high_i8x16(q), ys[k].1),
                        );
                        isum[r] = i32x4_add(isum[r], i32x4_mul(s, i32x4_splat(*sc.add(2 * k) as i8 as i32)));
                    }
                }
            }
        }
        let yd = *(a as *const f32).add(i);
        for r in 0..R {
            let d = fp16(w[r].add(i * 210 + 208));
            acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_convert_i32x4(isum[r]), f32x4_splat(d * yd)));
        }
    }
    for r in 0..R {
        *out[r] = hsum_f32(acc[r]);
    }
}
