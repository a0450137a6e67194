//! RMSNorm (`ggml_compute_forward_rms_norm_f32`, docs/specs-llamacpp.md §3): `Σx²` with each
//! square in f32 summed in f64, `mean = f32(sum/n)`,
//! `scale = 1/sqrtf(mean + eps)`, `y = (x·scale)·w`.

use crate::simd::*;

#[inline(always)]
unsafe fn finish(x: *const f32, n: usize, sum: f64, eps: f32, w: *const f32, y: *mut f32, simd: bool) {
    let mean = (sum / n as f64) as f32;
    let scale = 1.0f32 / sqrtf(mean + eps);
    let mut i = 0;
    if simd {
        let sv = f32x4_splat(scale);
        while i + 4 <= n {
            let mut v = f32x4_mul(ldf(x.add(i)), sv);
            if !w.is_null() {
                v = f32x4_mul(v, ldf(w.add(i)));
            }
            stf(y.add(i), v);
            i += 4;
        }
    }
    while i < n {
        let mut v = *x.add(i) * scale;
        if !w.is_null() {
            v *= *w.add(i);
        }
        *y.add(i) = v;
        i += 1;
    }
}

/// RMSNorm of `rows` rows of `n` (SIMD). `w` may be null.
pub unsafe fn rmsnorm(x: *const f32, n: usize, rows: usize, eps: f32, w: *const f32, y: *mut f32) {
    for r in 0..rows {
        let xr = x.add(r * n);
        let mut s0 = f64x2_splat(0.0);
        let mut s1 = f64x2_splat(0.0);
        let mut i = 0;
        while i + 4 <= n {
            let v = ldf(xr.add(i));
            let sq = f32x4_mul(v, v);
            s0 = f64x2_add(s0, f64x2_promote_low_f32x4(sq));
            s1 = f64x2_add(s1, f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(sq, sq)));
            i += 4;
        }
        let s = f64x2_add(s0, s1);
        let mut sum = f64x2_extract_lane::<0>(s) + f64x2_extract_lane::<1>(s);
        while i < n {
            let v = *xr.add(i);
            sum += (v * v) as f64;
            i += 1;
        }
        finish(xr, n, sum, eps, w, y.add(r * n), true);
    }
}

/// Scalar twin of [`rmsnorm`].
pub unsafe fn rmsnorm_scalar(x: *const f32, n: usize, rows: usize, eps: f32, w: *const f32, y: *mut f32) {
    for r in 0..rows {
        let xr = x.add(r * n);
        let mut sum = 0.0f64;
        for i in 0..n {
            let v = *xr.add(i);
            sum += (v * v) as f64;
        }
        finish(xr, n, sum, eps, w, y.add(r * n), false);
    }
}
