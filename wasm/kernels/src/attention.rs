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
                f16_to_f32_row(kc.add((j * s.nkv + kvh) * s.hdk), row, s.hdk);
                for i in 0..g {
                    *sc.add(i * s.n_ctx + j) = dot_f32x(row, qr.add(i * s.hdk), s.hdk) * s.scale;
                }
            }
            for i in 0..g {
                softmax_f16(sc.add(i * s.n_ctx), nkv_pos);
                let o = out.add((t * s.nh + h0 + i) * s.hdv);
                for d in 0..s.hdv {
                    *o.add(d) = 0.0;
                }
            }
            for j in 0..nkv_pos {
                f16_to_f32_row(vc.add((j * s.nkv + kvh) * s.hdv), row, s.hdv);
                for i in 0..g {
                    let p = *sc.add(i * s.n_ctx + j);
                    if p == 0.0 {
                        continue;
                    }
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
