//! Causal grouped-query attention over an f16 KV cache, matching llama.cpp's
//! non-flash-attention CPU path (docs/specs-llamacpp.md §3, `build_attn_mha`):
//! Q rounded to f16; `s = dot_f16(K, Q)·scale`; causal mask (masked
//! positions are skipped, they would contribute exp(-inf) = 0); softmax with
//! max, `expf`, sum in f64 and `p = e·f32(1/sum)`; `p` rounded to f16;
//! `out = Σ p·V` accumulated in f32. Query head h reads KV head
//! `h / (n_heads / n_kv_heads)`.
//!
//! Cache layout per layer: K `[n_ctx][n_kv][hd_k]`, V `[n_ctx][n_kv][hd_v]`,
//! f16. The SIMD kernel walks KV heads outermost so each cached K/V row is
//! converted to f32 once and reused by every query head of its group.

use crate::half::*;
use crate::mathf::{expf, expf_x4};
use crate::simd::*;

/// Shape of one attention call.
#[derive(Clone, Copy)]
pub struct AttnShape {
    pub n_ctx: usize,
    pub start: usize,
    pub ntok: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hdk: usize,
    pub hdv: usize,
    pub scale: f32,
}

impl AttnShape {
    fn valid(&self) -> bool {
        self.nkv > 0 && self.nh % self.nkv == 0 && self.start + self.ntok <= self.n_ctx && self.hdk > 0 && self.hdv > 0
    }
}

/// Scratch bytes [`attention`] needs.
pub fn scratch_bytes(n_ctx: usize, nh: usize, nkv: usize, hdk: usize, hdv: usize) -> usize {
    if nkv == 0 {
        return 0;
    }
    let g = nh / nkv;
    4 * (g * hdk + g * n_ctx + if hdk > hdv { hdk } else { hdv }) + 64
}

unsafe fn store_kv(kc: *mut u16, vc: *mut u16, k: *const f32, v: *const f32, s: &AttnShape, simd: bool) {
    let kr = s.nkv * s.hdk;
    let vr = s.nkv * s.hdv;
    let (kd, vd) = (kc.add(s.start * kr), vc.add(s.start * vr));
    if simd {
        round_f16(k, kd, s.ntok * kr);
        round_f16(v, vd, s.ntok * vr);
    } else {
        round_f16_scalar(k, kd, s.ntok * kr);
        round_f16_scalar(v, vd, s.ntok * vr);
    }
}

#[inline(always)]
unsafe fn dot_f32x(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut acc0 = f32x4_splat(0.0);
    let mut acc1 = f32x4_splat(0.0);
    let mut i = 0;
    while i + 8 <= n {
        acc0 = f32x4_add(acc0, f32x4_mul(ldf(a.add(i)), ldf(b.add(i))));
        acc1 = f32x4_add(acc1, f32x4_mul(ldf(a.add(i + 4)), ldf(b.add(i + 4))));
        i += 8;
    }
    let mut s = hsum_f32(f32x4_add(acc0, acc1));
    while i < n {
        s += *a.add(i) * *b.add(i);
        i += 1;
    }
    s
}

/// Whether any of `n` halves at `h` is an inf or NaN (exponent 31).
#[inline(always)]
unsafe fn f16_row_special(h: *const u16, n: usize) -> bool {
    let e = i16x8_splat(0x7c00);
    let mut acc = i16x8_splat(0);
    let mut i = 0;
    while i + 8 <= n {
        acc = v128_or(acc, i16x8_eq(v128_and(ld(h.add(i) as *const u8), e), e));
        i += 8;
    }
    while i < n {
        if *h.add(i) & 0x7c00 == 0x7c00 {
            return true;
        }
        i += 1;
    }
    v128_any_true(acc)
}

/// 8 finite halves → two f32x4, exact: sign-extend each half, move its
/// exponent and mantissa to f32's low exponent bits and mantissa (the sign
/// stays at bit 31), then rebias by multiplying with 2^112 (normal and
/// subnormal halves both land exactly). Four operations per 4 values
/// instead of [`f16x4_to_f32`]'s nine; inf and NaN (exponent 31) would come
/// out finite, so callers check [`f16_row_special`] first.
#[inline(always)]
fn f16x8_finite_to_f32(v: v128) -> (v128, v128) {
    let keep = u32x4_splat(0x8fff_e000);
    let rebias = f32x4_splat(f32::from_bits(239 << 23));
    let lo = f32x4_mul(v128_and(i32x4_shl(i32x4_extend_low_i16x8(v), 13), keep), rebias);
    let hi = f32x4_mul(v128_and(i32x4_shl(i32x4_extend_high_i16x8(v), 13), keep), rebias);
    (lo, hi)
}

/// `y = f32(h)` for a row of `n` halves: the fast conversion when the row
/// holds no inf/NaN, else [`f16_to_f32_row`]. Same values either way.
#[inline(always)]
unsafe fn f16_row_to_f32(h: *const u16, y: *mut f32, n: usize) {
    if f16_row_special(h, n) {
        f16_to_f32_row(h, y, n);
        return;
    }
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = f16x8_finite_to_f32(ld(h.add(i) as *const u8));
        stf(y.add(i), lo);
        stf(y.add(i + 4), hi);
        i += 8;
    }
    while i < n {
        *y.add(i) = f16_to_f32(*h.add(i));
        i += 1;
    }
}

/// `out[i] = Σ_j p[i][j]·V_j` for the `gn ≤ 4` query heads `i` of one KV
/// head, 16 output columns at a time held in registers while the positions
/// stream by (the V rows are converted once per column block for all the
/// heads). Per column the sum runs over positions in order, starting at 0,
/// multiply then add, skipping `p = 0` — the same operations in the same
/// order as the row-at-a-time loop, so the same bits. Needs `hdv % 16 == 0`
/// and no inf/NaN in the V rows.
#[inline(always)]
unsafe fn pv_block(
    vc: *const u16,
    row_stride: usize,
    npos: usize,
    sc: *const f32,
    sc_stride: usize,
    gn: usize,
    out: *mut f32,
    out_stride: usize,
    hdv: usize,
) {
    let z = f32x4_splat(0.0);
    let mut d = 0;
    while d < hdv {
        let mut acc = [[z; 4]; 4];
        for j in 0..npos {
            let vp = vc.add(j * row_stride + d);
            let (v0, v1) = f16x8_finite_to_f32(ld(vp as *const u8));
            let (v2, v3) = f16x8_finite_to_f32(ld(vp.add(8) as *const u8));
            for i in 0..gn {
                let pv = f32x4_splat(*sc.add(i * sc_stride + j));
                let a = &mut acc[i];
                a[0] = f32x4_add(a[0], f32x4_mul(pv, v0));
                a[1] = f32x4_add(a[1], f32x4_mul(pv, v1));
                a[2] = f32x4_add(a[2], f32x4_mul(pv, v2));
                a[3] = f32x4_add(a[3], f32x4_mul(pv, v3));
            }
        }
        for i in 0..gn {
            let o = out.add(i * out_stride + d);
            stf(o, acc[i][0]);
            stf(o.add(4), acc[i][1]);
            stf(o.add(8), acc[i][2]);
            stf(o.add(12), acc[i][3]);
        }
        d += 16;
    }
}

/// Softmax of `n` scores in place, then round each probability to f16
/// (kept as f32). SIMD flavour.
unsafe fn softmax_f16(sc: *mut f32, n: usize) {
    let mut m = f32x4_splat(f32::NEG_INFINITY);
    let mut j = 0;
    while j + 4 <= n {
        m = f32x4_max(m, ldf(sc.add(j)));
        j += 4;
    }
    let mut max = hmax_f32(m);
    while j < n {
        if *sc.add(j) > max {
            max = *sc.add(j);
        }
        j += 1;
    }
    let mv = f32x4_splat(max);
    let mut s0 = f64x2_splat(0.0);
    let mut s1 = f64x2_splat(0.0);
    j = 0;
    while j + 4 <= n {
        let e = expf_x4(f32x4_sub(ldf(sc.add(j)), mv));
        stf(sc.add(j), e);
        s0 = f64x2_add(s0, f64x2_promote_low_f32x4(e));
        s1 = f64x2_add(s1, f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(e, e)));
        j += 4;
    }
    let s = f64x2_add(s0, s1);
    let mut sum = f64x2_extract_lane::<0>(s) + f64x2_extract_lane::<1>(s);
    while j < n {
        let e = expf(*sc.add(j) - max);
        *sc.add(j) = e;
        sum += e as f64;
        j += 1;
    }
    let inv = (1.0 / sum) as f32;
    let iv = f32x4_splat(inv);
    j = 0;
    while j + 4 <= n {
        stf(sc.add(j), f16x4_to_f32(f32x4_to_f16(f32x4_mul(ldf(sc.add(j)), iv))));
        j += 4;
    }
    while j < n {
        *sc.add(j) = f16_to_f32(f32_to_f16(*sc.add(j) * inv));
        j += 1;
    }
}

/// Attention (SIMD). Returns 0, or -1 on a bad shape.
pub unsafe fn attention(
    kc: *mut u16,
    vc: *mut u16,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    scratch: *mut u8,
    s: AttnShape,
) -> i32 {
    attention_heads(kc, vc, q, k, v, out, scratch, s, 0, usize::MAX, true)
}

/// [`attention`] for the KV heads `[kv0, min(kv1, nkv))` only (their query
/// heads' outputs), storing the new K/V rows first when `store`: one
/// thread's share (heads are independent, so results are bit-identical).
/// Inlined so the whole-layer call compiles as before.
#[inline(always)]
pub unsafe fn attention_heads(
    kc: *mut u16,
    vc: *mut u16,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    scratch: *mut u8,
    s: AttnShape,
    kv0: usize,
    kv1: usize,
    store: bool,
) -> i32 {
    if !s.valid() {
        return -1;
    }
    if store {
        store_kv(kc, vc, k, v, &s, true);
    }
    let kv1 = if kv1 < s.nkv { kv1 } else { s.nkv };
    let g = s.nh / s.nkv;
    let qr = scratch as *mut f32; // [g][hdk]
    let sc = qr.add(g * s.hdk); // [g][n_ctx]
    let row = sc.add(g * s.n_ctx); // [max(hdk, hdv)]
    for t in 0..s.ntok {
        let nkv_pos = s.start + t + 1;
        for kvh in kv0..kv1 {
            let h0 = kvh * g;
            for i in 0..g {
                round_f16_f32(q.add((t * s.nh + h0 + i) * s.hdk), qr.add(i * s.hdk), s.hdk, true);
            }
            for j in 0..nkv_pos {
                f16_row_to_f32(kc.add((j * s.nkv + kvh) * s.hdk), row, s.hdk);
                for i in 0..g {
                    *sc.add(i * s.n_ctx + j) = dot_f32x(row, qr.add(i * s.hdk), s.hdk) * s.scale;
                }
            }
            for i in 0..g {
                softmax_f16(sc.add(i * s.n_ctx), nkv_pos);
            }
            let vrows = vc.add(kvh * s.hdv);
            let vstride = s.nkv * s.hdv;
            if s.hdv % 16 == 0 && !(0..nkv_pos).any(|j| f16_row_special(vrows.add(j * vstride), s.hdv)) {
                let mut i = 0;
                while i < g {
                    let gn = if g - i < 4 { g - i } else { 4 };
                    let o = out.add((t * s.nh + h0 + i) * s.hdv);
                    pv_block(vrows, vstride, nkv_pos, sc.add(i * s.n_ctx), s.n_ctx, gn, o, s.hdv, s.hdv);
                    i += gn;
                }
                continue;
            }
            for i in 0..g {
                let o = out.add((t * s.nh + h0 + i) * s.hdv);
                for d in 0..s.hdv {
                    *o.add(d) = 0.0;
                }
            }
            for j in 0..nkv_pos {
                f16_row_to_f32(vc.add((j * s.nkv + kvh) * s.hdv), row, s.hdv);
                for i in 0..g {
                    let p = *sc.add(i * s.n_ctx + j);
                    let o = out.add((t * s.nh + h0 + i) * s.hdv);
                    let pv = f32x4_splat(p);
                    let mut d = 0;
                    while d + 4 <= s.hdv {
                        stf(o.add(d), f32x4_add(ldf(o.add(d)), f32x4_mul(pv, ldf(row.add(d)))));
                        d += 4;
                    }
                    while d < s.hdv {
                        *o.add(d) += p * *row.add(d);
                        d += 1;
                    }
                }
            }
        }
    }
    0
}

/// Scalar twin of [`attention`]: one query head at a time, straight loops.
pub unsafe fn attention_scalar(
    kc: *mut u16,
    vc: *mut u16,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    scratch: *mut u8,
    s: AttnShape,
) -> i32 {
    if !s.valid() {
        return -1;
    }
    store_kv(kc, vc, k, v, &s, false);
    let g = s.nh / s.nkv;
    let qr = scratch as *mut f32;
    let sc = qr.add(s.hdk);
    for t in 0..s.ntok {
        let n = s.start + t + 1;
        for h in 0..s.nh {
            let kvh = h / g;
            round_f16_f32(q.add((t * s.nh + h) * s.hdk), qr, s.hdk, false);
            let mut max = f32::NEG_INFINITY;
            for j in 0..n {
                let kr = kc.add((j * s.nkv + kvh) * s.hdk);
                let mut dot = 0.0f32;
                for d in 0..s.hdk {
                    dot += f16_to_f32(*kr.add(d)) * *qr.add(d);
                }
                let x = dot * s.scale;
                *sc.add(j) = x;
                if x > max {
                    max = x;
                }
            }
            let mut sum = 0.0f64;
            for j in 0..n {
                let e = expf(*sc.add(j) - max);
                *sc.add(j) = e;
                sum += e as f64;
            }
            let inv = (1.0 / sum) as f32;
            for j in 0..n {
                *sc.add(j) = f16_to_f32(f32_to_f16(*sc.add(j) * inv));
            }
            let o = out.add((t * s.nh + h) * s.hdv);
            for d in 0..s.hdv {
                let mut acc = 0.0f32;
                for j in 0..n {
                    acc += *sc.add(j) * f16_to_f32(*vc.add((j * s.nkv + kvh) * s.hdv + d));
                }
                *o.add(d) = acc;
            }
        }
    }
    0
}
