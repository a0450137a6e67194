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
use crate::mathf::{expf, expf_x4_k, ExpK};
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
    4 * (g * hdk + g * n_ctx + 4 * if hdk > hdv { hdk } else { hdv }) + 64
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
/// head, 8 output columns at a time held in registers (8 accumulators: no
/// spills with x86's 16 vector registers) while the positions stream by.
/// The V halves are moved into f32 bits without the rebias (a lane reads as
/// `v·2^-112`, exactly, subnormals included) and the probabilities come
/// multiplied by 2^112, so each product is the same real number as `p·v`
/// and rounds to the same f32. Per column the sum runs over positions in
/// order, starting at 0, multiply then add — the same operations in the
/// same order as the row-at-a-time loop, so the same bits. Needs
/// `hdv % 8 == 0` and no inf/NaN in the V rows.
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
    let keep = pin(u32x4_splat(0x8fff_e000));
    let z = f32x4_splat(0.0);
    let mut d = 0;
    while d < hdv {
        let mut acc = [[z; 2]; 4];
        let mut vp = vc.add(d);
        let mut sp = sc;
        for _ in 0..npos {
            let h = ld(vp as *const u8);
            let v0 = v128_and(i32x4_shl(i32x4_extend_low_i16x8(h), 13), keep);
            let v1 = v128_and(i32x4_shl(i32x4_extend_high_i16x8(h), 13), keep);
            for i in 0..gn {
                let pv = f32x4_splat(*sp.add(i * sc_stride));
                let a = &mut acc[i];
                a[0] = f32x4_add(a[0], f32x4_mul(pv, v0));
                a[1] = f32x4_add(a[1], f32x4_mul(pv, v1));
            }
            vp = vp.add(row_stride);
            sp = sp.add(1);
        }
        for i in 0..gn {
            let o = out.add(i * out_stride + d);
            stf(o, acc[i][0]);
            stf(o.add(4), acc[i][1]);
        }
        d += 8;
    }
}

/// `v` through a volatile stack slot, so it is computed once and kept (V8
/// rebuilds a `v128.const` wherever it appears, every loop iteration).
#[inline(always)]
fn pin(v: v128) -> v128 {
    unsafe { core::ptr::read_volatile(&v) }
}

/// Scores of 4 consecutive positions for each of `g` query heads: the 4 K
/// rows (f32, `hdk` apart at `kb`) are dotted with every head's rounded
/// query, one accumulator per position (lane `l` sums dims `l mod 4`), then
/// the 4 accumulators are reduced together into one vector and scaled.
/// Needs `hdk % 4 == 0`.
#[inline(always)]
unsafe fn qk_block4(kb: *const f32, qr: *const f32, g: usize, hdk: usize, scale: v128, sc: *mut f32, sc_stride: usize) {
    for i in 0..g {
        let q = qr.add(i * hdk);
        let mut a0 = f32x4_splat(0.0);
        let mut a1 = a0;
        let mut a2 = a0;
        let mut a3 = a0;
        let mut d = 0;
        while d < hdk {
            let qv = ldf(q.add(d));
            a0 = f32x4_add(a0, f32x4_mul(qv, ldf(kb.add(d))));
            a1 = f32x4_add(a1, f32x4_mul(qv, ldf(kb.add(hdk + d))));
            a2 = f32x4_add(a2, f32x4_mul(qv, ldf(kb.add(2 * hdk + d))));
            a3 = f32x4_add(a3, f32x4_mul(qv, ldf(kb.add(3 * hdk + d))));
            d += 4;
        }
        let u = f32x4_add(i32x4_shuffle::<0, 1, 4, 5>(a0, a1), i32x4_shuffle::<2, 3, 6, 7>(a0, a1));
        let w = f32x4_add(i32x4_shuffle::<0, 1, 4, 5>(a2, a3), i32x4_shuffle::<2, 3, 6, 7>(a2, a3));
        let s = f32x4_add(i32x4_shuffle::<0, 2, 4, 6>(u, w), i32x4_shuffle::<1, 3, 5, 7>(u, w));
        stf(sc.add(i * sc_stride), f32x4_mul(s, scale));
    }
}

/// `f32(f16(p))` for 4 probabilities (finite and ≥ 0, or NaN), exactly as
/// `f16x4_to_f32(f32x4_to_f16(p))`: below 2^-14 (f16 subnormals, a fixed
/// quantum of 2^-24) `(p + 0.5) − 0.5` rounds to the quantum (f32 adds are
/// round-to-nearest-even); above, the f32 bits are rounded to 10 mantissa
/// bits, nearest-even, carrying into the exponent (a NaN stays a quiet NaN).
#[inline(always)]
fn round_p_f16(p: v128, half: v128, tiny: v128, odd: v128, lsb: v128, mask: v128) -> v128 {
    let sub = f32x4_sub(f32x4_add(p, half), half);
    let r = v128_and(i32x4_add(i32x4_add(p, odd), v128_and(u32x4_shr(p, 13), lsb)), mask);
    v128_bitselect(sub, r, f32x4_lt(p, tiny))
}

/// The `e^x` a softmax uses: SIMD and scalar forms with the same results per
/// lane, and whether the probabilities leave multiplied by 2^112.
trait SoftmaxExp {
    /// Probabilities leave multiplied by 2^112 (for [`pv_block`]'s raw V lanes).
    const SCALED: bool;
    fn x4(&self, x: v128) -> v128;
    fn one(&self, x: f32) -> f32;
}

/// The correctly rounded f64 `expf` (the general path).
struct PreciseExp(ExpK);

impl SoftmaxExp for PreciseExp {
    const SCALED: bool = false;
    #[inline(always)]
    fn x4(&self, x: v128) -> v128 {
        expf_x4_k(x, &self.0)
    }
    #[inline(always)]
    fn one(&self, x: f32) -> f32 {
        expf(x)
    }
}

/// [`exp_fast_x4`] (the fast path).
struct FastExp(ExpFastK);

impl SoftmaxExp for FastExp {
    const SCALED: bool = true;
    #[inline(always)]
    fn x4(&self, x: v128) -> v128 {
        exp_fast_x4(x, &self.0)
    }
    #[inline(always)]
    fn one(&self, x: f32) -> f32 {
        exp_fast(x)
    }
}

/// Softmax of `n` scores in place with the head's sink logit (`-inf` for
/// none: it joins the max and the sum, ggml `soft_max_ext`): max, `e^x`,
/// sum in f64, `p = e·f32(1/sum)` rounded to f16 ([`round_p_f16`], kept as
/// f32) and, for [`FastExp`], multiplied by 2^112.
#[inline(always)]
unsafe fn softmax_f16<E: SoftmaxExp>(sc: *mut f32, n: usize, sink: f32, ex: &E) {
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
    if sink > max {
        max = sink;
    }
    let mv = f32x4_splat(max);
    let mut s0 = f64x2_splat(0.0);
    let mut s1 = f64x2_splat(0.0);
    j = 0;
    while j + 4 <= n {
        let e = ex.x4(f32x4_sub(ldf(sc.add(j)), mv));
        stf(sc.add(j), e);
        s0 = f64x2_add(s0, f64x2_promote_low_f32x4(e));
        s1 = f64x2_add(s1, f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(e, e)));
        j += 4;
    }
    let s = f64x2_add(s0, s1);
    let mut sum = f64x2_extract_lane::<0>(s) + f64x2_extract_lane::<1>(s);
    while j < n {
        let e = ex.one(*sc.add(j) - max);
        *sc.add(j) = e;
        sum += e as f64;
        j += 1;
    }
    if sink != f32::NEG_INFINITY {
        sum += ex.one(sink - max) as f64;
    }
    let inv = (1.0 / sum) as f32;
    let iv = f32x4_splat(inv);
    let up = pin(f32x4_splat(f32::from_bits(239 << 23))); // 2^112
    let (half, tiny) = (pin(f32x4_splat(0.5)), pin(f32x4_splat(f32::from_bits(113 << 23))));
    let (odd, lsb, mask) = (pin(u32x4_splat(0xfff)), pin(u32x4_splat(1)), pin(u32x4_splat(0xffff_e000)));
    j = 0;
    while j + 4 <= n {
        let p = round_p_f16(f32x4_mul(ldf(sc.add(j)), iv), half, tiny, odd, lsb, mask);
        stf(sc.add(j), if E::SCALED { f32x4_mul(p, up) } else { p });
        j += 4;
    }
    while j < n {
        let p = f16_to_f32(f32_to_f16(*sc.add(j) * inv));
        *sc.add(j) = if E::SCALED { p * f32::from_bits(239 << 23) } else { p };
        j += 1;
    }
}

/// Whether any of `nrows` rows of `n` halves (`stride` halves apart) holds
/// an inf or NaN (exponent 31): the largest `h & 0x7fff` over them, 3
/// operations per 8 halves. Needs `n % 8 == 0`.
#[inline(always)]
unsafe fn rows_special(h: *const u16, stride: usize, nrows: usize, n: usize) -> bool {
    let m = pin(i16x8_splat(0x7fff));
    let mut acc = i16x8_splat(0);
    let mut p = h;
    for _ in 0..nrows {
        let mut i = 0;
        while i < n {
            acc = i16x8_max(acc, v128_and(ld(p.add(i) as *const u8), m));
            i += 8;
        }
        p = p.add(stride);
    }
    v128_any_true(i16x8_gt(acc, i16x8_splat(0x7bff)))
}

/// A row of `n` finite halves as f32 bits without the rebias: lane `i`
/// reads as `h_i·2^-112` exactly (three operations per 4 values). Needs
/// `n % 8 == 0`.
#[inline(always)]
unsafe fn f16_row_raw(h: *const u16, y: *mut f32, n: usize, keep: v128) {
    let mut i = 0;
    while i < n {
        let v = ld(h.add(i) as *const u8);
        stf(y.add(i), v128_and(i32x4_shl(i32x4_extend_low_i16x8(v), 13), keep));
        stf(y.add(i + 4), v128_and(i32x4_shl(i32x4_extend_high_i16x8(v), 13), keep));
        i += 8;
    }
}

const EXP_LOG2E: f32 = 1.442_695;
const EXP_MAGIC: f32 = 12_582_912.0; // 1.5·2^23
const EXP_LN2_HI: f32 = 0.693_359_4; // 355/512: k·LN2_HI is exact for |k| < 2^15
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
const EXP_P: [f32; 8] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];

/// e^x in f32 for the softmax of attention scores (x ≤ 0, or NaN): x is
/// clamped at -88 (e^-88 < 2^-126 comes out 0), `k = round(x·log2 e)` by the
/// 1.5·2^23 trick, `r = x − k·ln2` (Cody–Waite), degree-7 Taylor polynomial
/// (error < 2^-27 on |r| ≤ ln2/2), times 2^k from the bits. Within a few
/// ulp of e^x — the probabilities are rounded to f16 right after (llama.cpp's
/// SIMD softmax uses an approximate `expf` too). 26 operations per 4 values
/// where the correctly rounded f64 `expf_x4` takes ~100.
#[inline(always)]
fn exp_fast_x4(x: v128, k: &ExpFastK) -> v128 {
    let x = f32x4_max(x, k.lo);
    let t = f32x4_add(f32x4_mul(x, k.log2e), k.magic);
    let kf = f32x4_sub(t, k.magic);
    let r = f32x4_sub(f32x4_sub(x, f32x4_mul(kf, k.ln2_hi)), f32x4_mul(kf, k.ln2_lo));
    let mut p = k.c[7];
    let mut i = 7;
    while i > 0 {
        i -= 1;
        p = f32x4_add(f32x4_mul(p, r), k.c[i]);
    }
    let scale = i32x4_shl(i32x4_add(i32x4_sub(t, k.magic), k.bias), 23);
    f32x4_mul(p, scale)
}

/// Scalar twin of [`exp_fast_x4`] (the same operations: the same bits as a lane).
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    let x = if x < -88.0 { -88.0 } else { x };
    let t = x * EXP_LOG2E + EXP_MAGIC;
    let kf = t - EXP_MAGIC;
    let r = (x - kf * EXP_LN2_HI) - kf * EXP_LN2_LO;
    let mut p = EXP_P[7];
    let mut i = 7;
    while i > 0 {
        i -= 1;
        p = p * r + EXP_P[i];
    }
    let e = (t.to_bits() as i32).wrapping_sub(EXP_MAGIC.to_bits() as i32);
    p * f32::from_bits((e.wrapping_add(127) as u32) << 23)
}

/// The pinned constants of [`exp_fast_x4`].
struct ExpFastK {
    lo: v128,
    log2e: v128,
    magic: v128,
    ln2_hi: v128,
    ln2_lo: v128,
    c: [v128; 8],
    bias: v128,
}

impl ExpFastK {
    #[inline(always)]
    fn pinned() -> ExpFastK {
        let mut c = [f32x4_splat(0.0); 8];
        let mut i = 0;
        while i < 8 {
            c[i] = f32x4_splat(EXP_P[i]);
            i += 1;
        }
        let k = ExpFastK {
            lo: f32x4_splat(-88.0),
            log2e: f32x4_splat(EXP_LOG2E),
            magic: f32x4_splat(EXP_MAGIC),
            ln2_hi: f32x4_splat(EXP_LN2_HI),
            ln2_lo: f32x4_splat(EXP_LN2_LO),
            c,
            bias: i32x4_splat(127 - EXP_MAGIC.to_bits() as i32),
        };
        unsafe { core::ptr::read_volatile(&k) }
    }
}


/// One token's attention for KV head `kvh` when its K and V rows hold no
/// inf/NaN and the head dims are multiples of 8: the queries rounded to f16
/// and multiplied by 2^112, K rows moved raw into f32 bits (`k·2^-112`) 4
/// positions at a time and dotted with every query head ([`qk_block4`]:
/// each product `q'·k'` is the real number `q·k`, so the same scores as the
/// per-position loop up to the f32 summation order), the fast softmax, then
/// [`pv_block`] over raw V lanes.
#[inline(always)]
unsafe fn heads_fast(
    kc: *const u16,
    vc: *const u16,
    q: *const f32,
    out: *mut f32,
    qr: *mut f32,
    sc: *mut f32,
    row: *mut f32,
    s: &AttnShape,
    t: usize,
    kvh: usize,
    first: usize,
    n: usize,
    sinks: *const f32,
) {
    let g = s.nh / s.nkv;
    let h0 = kvh * g;
    let up = pin(f32x4_splat(f32::from_bits(239 << 23))); // 2^112
    let keep = pin(u32x4_splat(0x8fff_e000));
    for i in 0..g {
        let qi = qr.add(i * s.hdk);
        round_f16_f32(q.add((t * s.nh + h0 + i) * s.hdk), qi, s.hdk, true);
        let mut d = 0;
        while d < s.hdk {
            stf(qi.add(d), f32x4_mul(ldf(qi.add(d)), up));
            d += 4;
        }
    }
    let (kstride, vstride) = (s.nkv * s.hdk, s.nkv * s.hdv);
    let kb = kc.add((first * s.nkv + kvh) * s.hdk);
    let scale = f32x4_splat(s.scale);
    let mut j = 0;
    while j + 4 <= n {
        for r in 0..4 {
            f16_row_raw(kb.add((j + r) * kstride), row.add(r * s.hdk), s.hdk, keep);
        }
        qk_block4(row, qr, g, s.hdk, scale, sc.add(j), s.n_ctx);
        j += 4;
    }
    while j < n {
        f16_row_raw(kb.add(j * kstride), row, s.hdk, keep);
        for i in 0..g {
            *sc.add(i * s.n_ctx + j) = dot_f32x(row, qr.add(i * s.hdk), s.hdk) * s.scale;
        }
        j += 1;
    }
    let fx = FastExp(ExpFastK::pinned());
    for i in 0..g {
        softmax_f16(sc.add(i * s.n_ctx), n, sink(sinks, h0 + i), &fx);
    }
    let vrows = vc.add((first * s.nkv + kvh) * s.hdv);
    let mut i = 0;
    while i < g {
        let gn = if g - i < 4 { g - i } else { 4 };
        let o = out.add((t * s.nh + h0 + i) * s.hdv);
        pv_block(vrows, vstride, n, sc.add(i * s.n_ctx), s.n_ctx, gn, o, s.hdv, s.hdv);
        i += gn;
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
    attention_heads_ext(kc, vc, q, k, v, out, scratch, s, kv0, kv1, store, core::ptr::null(), 0)
}

/// The sink logit of query head `h` (`-inf`: none, it changes nothing).
#[inline(always)]
unsafe fn sink(sinks: *const f32, h: usize) -> f32 {
    if sinks.is_null() {
        f32::NEG_INFINITY
    } else {
        *sinks.add(h)
    }
}

/// [`attention_heads`] with per-head sink logits (`sinks[h]`, null for
/// none: they join the softmax's max and sum but have no value row, ggml
/// `soft_max_ext` with sinks) and a sliding window (`window > 0`: a row at
/// position p sees keys at positions > p − window; gpt-oss). With null
/// sinks and window 0 it is [`attention_heads`], the same operations.
#[inline(always)]
pub unsafe fn attention_heads_ext(
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
    sinks: *const f32,
    window: usize,
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
    let row = sc.add(g * s.n_ctx); // [4][max(hdk, hdv)]
    // KV heads outermost: one inf/NaN check per head covers every token of the call
    // (rows up to start + ntok, stored above), and its rows stay in cache across tokens
    let (kstride, vstride) = (s.nkv * s.hdk, s.nkv * s.hdv);
    let all = s.start + s.ntok;
    for kvh in kv0..kv1 {
        let h0 = kvh * g;
        let fast = s.hdk % 8 == 0
            && s.hdv % 8 == 0
            && !rows_special(kc.add(kvh * s.hdk), kstride, all, s.hdk)
            && !rows_special(vc.add(kvh * s.hdv), vstride, all, s.hdv);
        for t in 0..s.ntok {
            let pos = s.start + t;
            // llama.cpp masks key p0 when p1 − p0 ≥ n_swa (LLAMA_SWA_TYPE_STANDARD)
            let first = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
            let nkv_pos = pos + 1 - first;
            if fast {
                heads_fast(kc, vc, q, out, qr, sc, row, &s, t, kvh, first, nkv_pos, sinks);
                continue;
            }
            for i in 0..g {
                round_f16_f32(q.add((t * s.nh + h0 + i) * s.hdk), qr.add(i * s.hdk), s.hdk, true);
            }
            for j in 0..nkv_pos {
                f16_row_to_f32(kc.add(((first + j) * s.nkv + kvh) * s.hdk), row, s.hdk);
                for i in 0..g {
                    *sc.add(i * s.n_ctx + j) = dot_f32x(row, qr.add(i * s.hdk), s.hdk) * s.scale;
                }
            }
            let px = PreciseExp(ExpK::pinned());
            for i in 0..g {
                softmax_f16(sc.add(i * s.n_ctx), nkv_pos, sink(sinks, h0 + i), &px);
            }
            for i in 0..g {
                let o = out.add((t * s.nh + h0 + i) * s.hdv);
                for d in 0..s.hdv {
                    *o.add(d) = 0.0;
                }
            }
            for j in 0..nkv_pos {
                f16_row_to_f32(vc.add(((first + j) * s.nkv + kvh) * s.hdv), row, s.hdv);
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
    attention_scalar_ext(kc, vc, q, k, v, out, scratch, s, core::ptr::null(), 0)
}

/// Scalar twin of [`attention_heads_ext`] over all heads (sinks, window).
pub unsafe fn attention_scalar_ext(
    kc: *mut u16,
    vc: *mut u16,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    scratch: *mut u8,
    s: AttnShape,
    sinks: *const f32,
    window: usize,
) -> i32 {
    if !s.valid() {
        return -1;
    }
    store_kv(kc, vc, k, v, &s, false);
    let g = s.nh / s.nkv;
    let qr = scratch as *mut f32;
    let sc = qr.add(s.hdk);
    for t in 0..s.ntok {
        let pos = s.start + t;
        let first = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
        let n = pos + 1 - first;
        for h in 0..s.nh {
            let kvh = h / g;
            round_f16_f32(q.add((t * s.nh + h) * s.hdk), qr, s.hdk, false);
            let mut max = f32::NEG_INFINITY;
            for j in 0..n {
                let kr = kc.add(((first + j) * s.nkv + kvh) * s.hdk);
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
            let sk = sink(sinks, h);
            if sk > max {
                max = sk;
            }
            let mut sum = 0.0f64;
            for j in 0..n {
                let e = expf(*sc.add(j) - max);
                *sc.add(j) = e;
                sum += e as f64;
            }
            if sk != f32::NEG_INFINITY {
                sum += expf(sk - max) as f64;
            }
            let inv = (1.0 / sum) as f32;
            for j in 0..n {
                *sc.add(j) = f16_to_f32(f32_to_f16(*sc.add(j) * inv));
            }
            let o = out.add((t * s.nh + h) * s.hdv);
            for d in 0..s.hdv {
                let mut acc = 0.0f32;
                for j in 0..n {
                    acc += *sc.add(j) * f16_to_f32(*vc.add(((first + j) * s.nkv + kvh) * s.hdv + d));
                }
                *o.add(d) = acc;
            }
        }
    }
    0
}
