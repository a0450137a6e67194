//! K-quant row dot products against Q8_K activations (docs/specs-llamacpp.md §2.5): the scalar
//! twins (following `ggml-cpu/quants.c` generic kernels) of `tiles.rs`. Super-blocks
//! are 256 values; Q8_K blocks are `d:f32, qs[256], bsums[16]:i16`.

use crate::half::f16_to_f32;
use crate::simd::*;

/// Bytes of one Q4_K super-block.
pub const Q4_K_BYTES: usize = 144;
/// Bytes of one Q5_K super-block.
pub const Q5_K_BYTES: usize = 176;
/// Bytes of one Q6_K super-block.
pub const Q6_K_BYTES: usize = 210;
const Q8K: usize = 292;

/// `get_scale_min_k4` for sub-block `j < 8` of the 12 packed scale bytes.
#[inline(always)]
pub unsafe fn scale_min_k4(j: usize, q: *const u8) -> (u8, u8) {
    if j < 4 {
        (*q.add(j) & 63, *q.add(j + 4) & 63)
    } else {
        (
            (*q.add(j + 4) & 0x0f) | ((*q.add(j - 4) >> 6) << 4),
            (*q.add(j + 4) >> 4) | ((*q.add(j) >> 6) << 4),
        )
    }
}

#[inline(always)]
unsafe fn mins_dot_bsums(scales: *const u8, bsums: *const u8) -> i32 {
    let b = bsums as *const i16;
    let mut s = 0i32;
    for g in 0..16 {
        let (_, m) = scale_min_k4(g / 2, scales);
        s += b.add(g).read_unaligned() as i32 * m as i32;
    }
    s
}

// ---------------------------------------------------------------- Q4_K

/// Scalar twin of [`dot_q4_k`].
pub unsafe fn dot_q4_k_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * Q4_K_BYTES), a.add(i * Q8K));
        let yd = rd_f32(yb);
        let scales = xb.add(4);
        let qs = xb.add(16);
        let q8 = yb.add(4);
        let mut sumi = 0i32;
        for c in 0..4 {
            let (sc0, _) = scale_min_k4(2 * c, scales);
            let (sc1, _) = scale_min_k4(2 * c + 1, scales);
            let (mut s0, mut s1) = (0i32, 0i32);
            for l in 0..32 {
                let q = *qs.add(32 * c + l);
                s0 += (q & 0x0f) as i32 * (*q8.add(64 * c + l) as i8 as i32);
                s1 += (q >> 4) as i32 * (*q8.add(64 * c + 32 + l) as i8 as i32);
            }
            sumi += s0 * sc0 as i32 + s1 * sc1 as i32;
        }
        let d = f16_to_f32(rd_u16(xb)) * yd;
        let dmin = f16_to_f32(rd_u16(xb.add(2))) * yd;
        sumf += d * sumi as f32 - dmin * mins_dot_bsums(scales, yb.add(260)) as f32;
    }
    sumf
}

// ---------------------------------------------------------------- Q5_K

/// Scalar twin of [`dot_q5_k`].
pub unsafe fn dot_q5_k_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * Q5_K_BYTES), a.add(i * Q8K));
        let yd = rd_f32(yb);
        let scales = xb.add(4);
        let qh = xb.add(16);
        let qs = xb.add(48);
        let q8 = yb.add(4);
        let mut sumi = 0i32;
        for c in 0..4 {
            let (sc0, _) = scale_min_k4(2 * c, scales);
            let (sc1, _) = scale_min_k4(2 * c + 1, scales);
            let (mut s0, mut s1) = (0i32, 0i32);
            for l in 0..32 {
                let q = *qs.add(32 * c + l);
                let h = *qh.add(l);
                let v0 = (q & 0x0f) as i32 + if h & (1 << (2 * c)) != 0 { 16 } else { 0 };
                let v1 = (q >> 4) as i32 + if h & (2 << (2 * c)) != 0 { 16 } else { 0 };
                s0 += v0 * (*q8.add(64 * c + l) as i8 as i32);
                s1 += v1 * (*q8.add(64 * c + 32 + l) as i8 as i32);
            }
            sumi += s0 * sc0 as i32 + s1 * sc1 as i32;
        }
        let d = f16_to_f32(rd_u16(xb)) * yd;
        let dmin = f16_to_f32(rd_u16(xb.add(2))) * yd;
        sumf += d * sumi as f32 - dmin * mins_dot_bsums(scales, yb.add(260)) as f32;
    }
    sumf
}

// ---------------------------------------------------------------- Q6_K

/// Scalar twin of [`dot_q6_k`].
pub unsafe fn dot_q6_k_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * Q6_K_BYTES), a.add(i * Q8K));
        let d = f16_to_f32(rd_u16(xb.add(208))) * rd_f32(yb);
        let mut sumi = 0i32;
        for half in 0..2 {
            let ql = xb.add(64 * half);
            let qh = xb.add(128 + 32 * half);
            let sc = xb.add(192 + 8 * half);
            let y = yb.add(4 + 128 * half);
            for l in 0..32 {
                let is = l / 16;
                let h = *qh.add(l) as i32;
                let a0 = *ql.add(l) as i32;
                let a1 = *ql.add(l + 32) as i32;
                let q1 = ((a0 & 0xf) | ((h & 3) << 4)) - 32;
                let q2 = ((a1 & 0xf) | (((h >> 2) & 3) << 4)) - 32;
                let q3 = ((a0 >> 4) | (((h >> 4) & 3) << 4)) - 32;
                let q4 = ((a1 >> 4) | (((h >> 6) & 3) << 4)) - 32;
                let s = |k: usize| *sc.add(is + k) as i8 as i32;
                let yv = |k: usize| *y.add(l + k) as i8 as i32;
                sumi += s(0) * q1 * yv(0) + s(2) * q2 * yv(32) + s(4) * q3 * yv(64) + s(6) * q4 * yv(96);
            }
        }
        sumf += d * sumi as f32;
    }
    sumf
}
