//! SwiGLU: `out = silu(g)·u`, `silu(x) = x / (1 + expf(-x))` in f32
//! (`ggml_silu_f32`, `ggml_vec_swiglu_f32`), with [`crate::mathf::expf`].

use crate::mathf::{expf, expf_x4};
use crate::simd::*;

/// `silu(x)` in f32.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(-x))
}

/// SwiGLU over `n` elements (SIMD).
pub unsafe fn swiglu(g: *const f32, u: *const f32, out: *mut f32, n: usize) {
    let one = f32x4_splat(1.0);
    let mut i = 0;
    while i + 4 <= n {
        let x = ldf(g.add(i));
        let e = expf_x4(f32x4_neg(x));
        stf(out.add(i), f32x4_mul(f32x4_div(x, f32x4_add(one, e)), ldf(u.add(i))));
        i += 4;
    }
    while i < n {
        *out.add(i) = silu(*g.add(i)) * *u.add(i);
        i += 1;
    }
}

/// Scalar twin of [`swiglu`].
pub unsafe fn swiglu_scalar(g: *const f32, u: *const f32, out: *mut f32, n: usize) {
    for i in 0..n {
        *out.add(i) = silu(*g.add(i)) * *u.add(i);
    }
}
