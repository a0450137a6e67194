//! Row dot products for float and legacy block formats (docs/specs-llamacpp.md §2.5), each
//! with its scalar twin. `w` is one weight row, `a` the activation row
//! already converted to the weight type's `vec_dot_type`, `n` the element
//! count. For F16/BF16 the activation is the f32 image of the rounded
//! values (see `half::round_f16_f32`).
//!
//! The quantized SIMD kernels live in `tiles.rs` (one weight row × up to 4
//! tokens); the `_scalar` functions here are their twins and follow
//! `ggml-cpu/quants.c` (generic). Only f32 summation order differs.

use crate::half::{bf16_to_f32, f16_to_f32};
use crate::simd::*;

#[inline(always)]
unsafe fn fp16(p: *const u8) -> f32 {
    f16_to_f32(rd_u16(p))
}

// ---------------------------------------------------------------- F32 / F16 / BF16

/// F32·F32.
pub unsafe fn dot_f32(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const f32;
    let a = a as *const f32;
    let mut acc = [f32x4_splat(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            acc[k] = f32x4_add(acc[k], f32x4_mul(ldf(w.add(i + 4 * k)), ldf(a.add(i + 4 * k))));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = f32x4_add(acc[0], f32x4_mul(ldf(w.add(i)), ldf(a.add(i))));
        i += 4;
    }
    let mut s = hsum_f32(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
    while i < n {
        s += *w.add(i) * *a.add(i);
        i += 1;
    }
    s
}

/// [`dot_f32`] of four rows at once (each row's order unchanged): four
/// memory streams, which is what lets one core pull near full DRAM
/// bandwidth through a decode matvec.
pub unsafe fn dot_f32_x4(w: [*const u8; 4], a: *const u8, n: usize, out: *mut f32, ostride: usize) {
    let a = a as *const f32;
    let w = w.map(|p| p as *const f32);
    let mut acc = [[f32x4_splat(0.0); 4]; 4];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            let av = ldf(a.add(i + 4 * k));
            for r in 0..4 {
                acc[r][k] = f32x4_add(acc[r][k], f32x4_mul(ldf(w[r].add(i + 4 * k)), av));
            }
        }
        i += 16;
    }
    while i + 4 <= n {
        let av = ldf(a.add(i));
        for r in 0..4 {
            acc[r][0] = f32x4_add(acc[r][0], f32x4_mul(ldf(w[r].add(i)), av));
        }
        i += 4;
    }
    for r in 0..4 {
        let mut s = hsum_f32(f32x4_add(f32x4_add(acc[r][0], acc[r][1]), f32x4_add(acc[r][2], acc[r][3])));
        for j in i..n {
            s += *w[r].add(j) * *a.add(j);
        }
        *out.add(r * ostride) = s;
    }
}

/// Scalar twin of [`dot_f32`].
pub unsafe fn dot_f32_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const f32;
    let a = a as *const f32;
    let mut s = 0.0f32;
    for i in 0..n {
        s += *w.add(i) * *a.add(i);
    }
    s
}

/// F16 weights · f16-rounded activations (held as f32).
pub unsafe fn dot_f16(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const u16;
    let a = a as *const f32;
    let mut acc = [f32x4_splat(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            let wv = ld_f16x4(w.add(i + 4 * k));
            acc[k] = f32x4_add(acc[k], f32x4_mul(wv, ldf(a.add(i + 4 * k))));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = f32x4_add(acc[0], f32x4_mul(ld_f16x4(w.add(i)), ldf(a.add(i))));
        i += 4;
    }
    let mut s = hsum_f32(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
    while i < n {
        s += f16_to_f32(*w.add(i)) * *a.add(i);
        i += 1;
    }
    s
}

/// Scalar twin of [`dot_f16`].
pub unsafe fn dot_f16_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const u16;
    let a = a as *const f32;
    let mut s = 0.0f32;
    for i in 0..n {
        s += f16_to_f32(*w.add(i)) * *a.add(i);
    }
    s
}

/// BF16 weights · bf16-rounded activations (held as f32).
pub unsafe fn dot_bf16(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const u16;
    let a = a as *const f32;
    let mut acc = [f32x4_splat(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            let wv = ld_bf16x4(w.add(i + 4 * k));
            acc[k] = f32x4_add(acc[k], f32x4_mul(wv, ldf(a.add(i + 4 * k))));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = f32x4_add(acc[0], f32x4_mul(ld_bf16x4(w.add(i)), ldf(a.add(i))));
        i += 4;
    }
    let mut s = hsum_f32(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
    while i < n {
        s += bf16_to_f32(*w.add(i)) * *a.add(i);
        i += 1;
    }
    s
}

/// Scalar twin of [`dot_bf16`].
pub unsafe fn dot_bf16_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const u16;
    let a = a as *const f32;
    let mut s = 0.0f32;
    for i in 0..n {
        s += bf16_to_f32(*w.add(i)) * *a.add(i);
    }
    s
}

// ---------------------------------------------------------------- Q8_0 · Q8_0

/// Scalar twin of [`dot_q8_0`].
pub unsafe fn dot_q8_0_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (wb, ab) = (w.add(i * 34), a.add(i * 34));
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += (*wb.add(2 + j) as i8 as i32) * (*ab.add(2 + j) as i8 as i32);
        }
        sumf += sumi as f32 * (fp16(wb) * fp16(ab));
    }
    sumf
}

// ---------------------------------------------------------------- Q4_0 / Q5_0 · Q8_0

/// Scalar twin of [`dot_q4_0`].
pub unsafe fn dot_q4_0_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (wb, ab) = (w.add(i * 18), a.add(i * 34));
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = *wb.add(2 + j);
            let v0 = (q & 0x0f) as i32 - 8;
            let v1 = (q >> 4) as i32 - 8;
            sumi += v0 * (*ab.add(2 + j) as i8 as i32) + v1 * (*ab.add(18 + j) as i8 as i32);
        }
        sumf += sumi as f32 * fp16(wb) * fp16(ab);
    }
    sumf
}

/// Scalar twin of [`dot_q5_0`].
pub unsafe fn dot_q5_0_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (wb, ab) = (w.add(i * 22), a.add(i * 34));
        let qh = rd_u32(wb.add(2));
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = *wb.add(6 + j);
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((q & 0x0f) as u32 | xh0) as i32 - 16;
            let v1 = ((q >> 4) as u32 | xh1) as i32 - 16;
            sumi += v0 * (*ab.add(2 + j) as i8 as i32) + v1 * (*ab.add(18 + j) as i8 as i32);
        }
        sumf += (fp16(wb) * fp16(ab)) * sumi as f32;
    }
    sumf
}

// ---------------------------------------------------------------- Q4_1 / Q5_1 · Q8_1

/// Scalar twin of [`dot_q4_1`].
pub unsafe fn dot_q4_1_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (wb, ab) = (w.add(i * 20), a.add(i * 36));
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = *wb.add(4 + j);
            sumi += (q & 0x0f) as i32 * (*ab.add(4 + j) as i8 as i32)
                + (q >> 4) as i32 * (*ab.add(20 + j) as i8 as i32);
        }
        sumf += (fp16(wb) * fp16(ab)) * sumi as f32 + fp16(wb.add(2)) * fp16(ab.add(2));
    }
    sumf
}

/// Scalar twin of [`dot_q5_1`].
pub unsafe fn dot_q5_1_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (wb, ab) = (w.add(i * 24), a.add(i * 36));
        let qh = rd_u32(wb.add(4));
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = *wb.add(8 + j);
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((q & 0x0f) as u32 | xh0) as i32;
            let v1 = ((q >> 4) as u32 | xh1) as i32;
            sumi += v0 * (*ab.add(4 + j) as i8 as i32) + v1 * (*ab.add(20 + j) as i8 as i32);
        }
        sumf += (fp16(wb) * fp16(ab)) * sumi as f32 + fp16(wb.add(2)) * fp16(ab.add(2));
    }
    sumf
}
