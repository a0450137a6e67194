//! Activation quantization to each `vec_dot_type` (llama.cpp x86 AVX2 rules,
//! docs/specs-llamacpp.md §2.4).
//!
//! * Q8_0 / Q8_1 mirror `quantize_row_q8_0/1` in `ggml-cpu/arch/x86/quants.c`:
//!   `d = amax/127`, `id = 127/amax` (0 when amax = 0), `q = RNE(x·id)` in f32,
//!   `d` stored as f16 (RNE); Q8_1 adds `s = f16(d·Σq)` with the unrounded d.
//! * Q8_K mirrors `quantize_row_q8_K_ref` (`ggml-quants.c`): signed max of the
//!   first largest |x|, `iscale = -127/max`, `q = min(127, nearest_int(iscale·x))`,
//!   `d = 1/iscale` (f32), `bsums` per 16. When amax = 0 we also zero `bsums`
//!   (ggml leaves them unwritten; they are multiplied by d = 0 anyway).

use crate::half::f32_to_f16;
use crate::simd::*;

/// Bytes of one Q8_0 block (32 values).
pub const Q8_0_BYTES: usize = 34;
/// Bytes of one Q8_1 block (32 values).
pub const Q8_1_BYTES: usize = 36;
/// Bytes of one Q8_K block (256 values).
pub const Q8_K_BYTES: usize = 292;

#[inline(always)]
unsafe fn wr_u16(p: *mut u8, v: u16) {
    (p as *mut u16).write_unaligned(v)
}

/// Returns (d, id) for a Q8_0/Q8_1 block with absolute max `amax`.
#[inline(always)]
fn q8_scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// Scalar Q8_0/Q8_1 body; `with_sum` selects Q8_1.
unsafe fn q8_x_scalar(x: *const f32, y: *mut u8, n: usize, with_sum: bool) {
    let (bb, qo) = if with_sum { (Q8_1_BYTES, 4) } else { (Q8_0_BYTES, 2) };
    for b in 0..n / 32 {
        let xb = x.add(b * 32);
        let yb = y.add(b * bb);
        let mut amax = 0.0f32;
        for j in 0..32 {
            let a = fabs(*xb.add(j));
            if a > amax {
                amax = a;
            }
        }
        let (d, id) = q8_scales(amax);
        wr_u16(yb, f32_to_f16(d));
        let mut sum = 0i32;
        for j in 0..32 {
            let q = nearest_int(*xb.add(j) * id);
            sum += q;
            *yb.add(qo + j) = q as i8 as u8;
        }
        if with_sum {
            wr_u16(yb.add(2), f32_to_f16(d * sum as f32));
        }
    }
}

/// SIMD Q8_0/Q8_1 body.
unsafe fn q8_x_simd(x: *const f32, y: *mut u8, n: usize, with_sum: bool) {
    let (bb, qo) = if with_sum { (Q8_1_BYTES, 4) } else { (Q8_0_BYTES, 2) };
    for b in 0..n / 32 {
        let xb = x.add(b * 32);
        let yb = y.add(b * bb);
        let mut v = [f32x4_splat(0.0); 8];
        let mut m = f32x4_splat(0.0);
        for k in 0..8 {
            v[k] = ldf(xb.add(4 * k));
            m = f32x4_max(m, f32x4_abs(v[k]));
        }
        let amax = hmax_f32(m);
        let (d, id) = q8_scales(amax);
        wr_u16(yb, f32_to_f16(d));
        let idv = f32x4_splat(id);
        let mut isum = i32x4_splat(0);
        for h in 0..2 {
            let mut q = [i32x4_splat(0); 4];
            for k in 0..4 {
                q[k] = i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(v[4 * h + k], idv)));
                isum = i32x4_add(isum, q[k]);
            }
            let a = i16x8_narrow_i32x4(q[0], q[1]);
            let c = i16x8_narrow_i32x4(q[2], q[3]);
            st(yb.add(qo + 16 * h), i8x16_narrow_i16x8(a, c));
        }
        if with_sum {
            wr_u16(yb.add(2), f32_to_f16(d * hsum_i32(isum) as f32));
        }
    }
}

/// Quantize `n` (multiple of 32) floats to Q8_0 blocks (SIMD).
pub unsafe fn quantize_q8_0(x: *const f32, y: *mut u8, n: usize) {
    q8_x_simd(x, y, n, false)
}
/// Scalar twin of [`quantize_q8_0`].
pub unsafe fn quantize_q8_0_scalar(x: *const f32, y: *mut u8, n: usize) {
    q8_x_scalar(x, y, n, false)
}
/// Quantize `n` (multiple of 32) floats to Q8_1 blocks (SIMD).
pub unsafe fn quantize_q8_1(x: *const f32, y: *mut u8, n: usize) {
    q8_x_simd(x, y, n, true)
}
/// Scalar twin of [`quantize_q8_1`].
pub unsafe fn quantize_q8_1_scalar(x: *const f32, y: *mut u8, n: usize) {
    q8_x_scalar(x, y, n, true)
}

/// Quantize `n` (multiple of 256) floats to Q8_K blocks (scalar, ggml ref).
pub unsafe fn quantize_q8_k_scalar(x: *const f32, y: *mut u8, n: usize) {
    for b in 0..n / 256 {
        let xb = x.add(b * 256);
        let yb = y.add(b * Q8_K_BYTES);
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for j in 0..256 {
            let ax = fabs(*xb.add(j));
            if ax > amax {
                amax = ax;
                max = *xb.add(j);
            }
        }
        q8_k_fill(xb, yb, amax, max, false);
    }
}

/// Quantize `n` (multiple of 256) floats to Q8_K blocks (SIMD).
pub unsafe fn quantize_q8_k(x: *const f32, y: *mut u8, n: usize) {
    for b in 0..n / 256 {
        let xb = x.add(b * 256);
        let yb = y.add(b * Q8_K_BYTES);
        let mut m = f32x4_splat(0.0);
        for k in 0..64 {
            m = f32x4_max(m, f32x4_abs(ldf(xb.add(4 * k))));
        }
        let amax = hmax_f32(m);
        // First element attaining amax = ggml's strict-`>` running max.
        let mut max = 0.0f32;
        if amax > 0.0 {
            for j in 0..256 {
                if fabs(*xb.add(j)) == amax {
                    max = *xb.add(j);
                    break;
                }
            }
        }
        q8_k_fill(xb, yb, amax, max, true);
    }
}

unsafe fn q8_k_fill(xb: *const f32, yb: *mut u8, amax: f32, max: f32, simd: bool) {
    let qs = yb.add(4);
    let bsums = yb.add(260) as *mut i16;
    if !(amax > 0.0) {
        (yb as *mut f32).write_unaligned(0.0);
        for j in 0..256 {
            *qs.add(j) = 0;
        }
        for g in 0..16 {
            bsums.add(g).write_unaligned(0);
        }
        return;
    }
    let iscale = -127.0f32 / max;
    if simd {
        let isv = f32x4_splat(iscale);
        let lim = i32x4_splat(127);
        for g in 0..16 {
            let mut q = [i32x4_splat(0); 4];
            let mut s = i32x4_splat(0);
            for k in 0..4 {
                let v = ldf(xb.add(16 * g + 4 * k));
                q[k] = i32x4_min(i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(isv, v))), lim);
                s = i32x4_add(s, q[k]);
            }
            let a = i16x8_narrow_i32x4(q[0], q[1]);
            let c = i16x8_narrow_i32x4(q[2], q[3]);
            st(qs.add(16 * g), i8x16_narrow_i16x8(a, c));
            bsums.add(g).write_unaligned(hsum_i32(s) as i16);
        }
    } else {
        for g in 0..16 {
            let mut s = 0i32;
            for j in 0..16 {
                let v = nearest_int(iscale * *xb.add(16 * g + j));
                let q = if v < 127 { v } else { 127 };
                s += q;
                *qs.add(16 * g + j) = q as i8 as u8;
            }
            bsums.add(g).write_unaligned(s as i16);
        }
    }
    (yb as *mut f32).write_unaligned(1.0 / iscale);
}
