//! `expf` without libm.
//!
//! Method: evaluate in f64, then round once to f32. Range reduction
//! `x = k·ln2 + r` (k = nearest(x·log2 e), ln2 split hi/lo as in fdlibm so
//! `k·ln2_hi` is exact), `|r| ≤ 0.347`; `e^r` by its degree-11 Taylor
//! polynomial (truncation < 3e-15 relative); scale by `2^k` built from bits.
//! The f64 result is within ~1e-15 relative of e^x, so the final f32 is the
//! correctly rounded `expf` except for rare double-rounding ties (≤ 1 ulp).
//! The SIMD (f64x2) and scalar versions perform the identical f64 operation
//! sequence, so they agree bit-for-bit.
//!
//! RoPE's `cosf`/`sinf`/`powf` are not here: the backend computes the
//! cos/sin table in TypeScript (`Math.cos` in f64 → `Math.fround`, i.e. also
//! correctly rounded to f32 in practice, like glibc) once per position and
//! shares it across layers, which is cheaper and more accurate than a
//! hand-rolled f32 polynomial.

use crate::simd::*;

const LOG2E: f64 = 1.442_695_040_888_963_4;
const LN2_HI: f64 = 6.931_471_803_691_238_164_9e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
/// 1.5·2^52: adding it rounds an f64 to an integer (ties to even).
const MAGIC: f64 = 6_755_399_441_055_744.0;
const C: [f64; 12] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
];

/// e^x for f32 x, computed in f64 and rounded once.
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let mut xd = x as f64;
    // Clamp keeps 2^k inside f64's normal range; the f32 result saturates anyway.
    // (NaN fails both comparisons and flows through.)
    if xd > 200.0 {
        xd = 200.0;
    }
    if xd < -200.0 {
        xd = -200.0;
    }
    let t = xd * LOG2E + MAGIC;
    let kf = t - MAGIC;
    let r = (xd - kf * LN2_HI) - kf * LN2_LO;
    let mut p = C[11];
    let mut i = 11;
    while i > 0 {
        i -= 1;
        p = p * r + C[i];
    }
    let k = (t.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    let scale = f64::from_bits((k.wrapping_add(1023) as u64) << 52);
    (p * scale) as f32
}

/// The constants of [`exp_f64x2`], each read once through a volatile slot
/// ([`ExpK::pinned`]) by loops that call it many times: V8 rebuilds a
/// `v128.const` from immediates wherever it appears, every iteration.
pub struct ExpK {
    lo: v128,
    hi: v128,
    magic: v128,
    log2e: v128,
    ln2_hi: v128,
    ln2_lo: v128,
    c: [v128; 12],
    magic_bits: v128,
    bias: v128,
}

impl ExpK {
    /// The constants as plain values (what [`exp_f64x2`] uses).
    #[inline(always)]
    pub fn new() -> ExpK {
        let mut c = [f64x2_splat(0.0); 12];
        let mut i = 0;
        while i < 12 {
            c[i] = f64x2_splat(C[i]);
            i += 1;
        }
        ExpK {
            lo: f64x2_splat(-200.0),
            hi: f64x2_splat(200.0),
            magic: f64x2_splat(MAGIC),
            log2e: f64x2_splat(LOG2E),
            ln2_hi: f64x2_splat(LN2_HI),
            ln2_lo: f64x2_splat(LN2_LO),
            c,
            magic_bits: i64x2_splat(MAGIC.to_bits() as i64),
            bias: i64x2_splat(1023),
        }
    }

    /// The same constants, each read once through a volatile slot.
    #[inline(always)]
    pub fn pinned() -> ExpK {
        unsafe { core::ptr::read_volatile(&ExpK::new()) }
    }
}

/// e^x for two f32 held as f64x2 lanes; same operation order as [`expf`].
#[inline(always)]
pub fn exp_f64x2(x: v128) -> v128 {
    exp_f64x2_k(x, &ExpK::new())
}

/// [`exp_f64x2`] with its constants given (pinned by the caller's loop).
#[inline(always)]
pub fn exp_f64x2_k(x: v128, k: &ExpK) -> v128 {
    // Clamp with compare+select so NaN flows through like the scalar path.
    let x = v128_bitselect(k.hi, x, f64x2_gt(x, k.hi));
    let x = v128_bitselect(k.lo, x, f64x2_lt(x, k.lo));
    let t = f64x2_add(f64x2_mul(x, k.log2e), k.magic);
    let kf = f64x2_sub(t, k.magic);
    let r = f64x2_sub(f64x2_sub(x, f64x2_mul(kf, k.ln2_hi)), f64x2_mul(kf, k.ln2_lo));
    let mut p = k.c[11];
    let mut i = 11;
    while i > 0 {
        i -= 1;
        p = f64x2_add(f64x2_mul(p, r), k.c[i]);
    }
    let e = i64x2_sub(t, k.magic_bits);
    let scale = i64x2_shl(i64x2_add(e, k.bias), 52);
    f64x2_mul(p, scale)
}

/// [`expf_x4`] with its constants given (pinned by the caller's loop).
#[inline(always)]
pub fn expf_x4_k(x: v128, k: &ExpK) -> v128 {
    let a = exp_f64x2_k(f64x2_promote_low_f32x4(x), k);
    let b = exp_f64x2_k(f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(x, x)), k);
    let a = f32x4_demote_f64x2_zero(a);
    let b = f32x4_demote_f64x2_zero(b);
    i32x4_shuffle::<0, 1, 4, 5>(a, b)
}

/// e^x for f32x4 (SIMD twin of [`expf`], bit-identical).
#[inline(always)]
pub fn expf_x4(x: v128) -> v128 {
    let a = exp_f64x2(f64x2_promote_low_f32x4(x));
    let b = exp_f64x2(f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(x, x)));
    let a = f32x4_demote_f64x2_zero(a);
    let b = f32x4_demote_f64x2_zero(b);
    i32x4_shuffle::<0, 1, 4, 5>(a, b)
}
