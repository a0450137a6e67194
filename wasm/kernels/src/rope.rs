//! RoPE NORM (adjacent pairs) and NEOX (halves), in place (docs/specs-llamacpp.md §4).
//!
//! `cs` holds, per token, `n_rot/2` cosines followed by `n_rot/2` sines
//! (already multiplied by the attention factor), computed on the TS side with
//! ggml's iterative f32 theta. Dimensions `[n_rot, head_dim)` pass through.
//! SIMD and scalar evaluate the same f32 expressions
//! (`x0·c − x1·s`, `x0·s + x1·c`), so they agree bit-for-bit.

use crate::simd::*;

/// Mode id of NEOX rotation.
pub const MODE_NEOX: u32 = 2;

/// In-place RoPE (SIMD).
pub unsafe fn rope(x: *mut f32, ntok: usize, nheads: usize, hd: usize, nrot: usize, mode: u32, cs: *const f32) {
    let half = nrot / 2;
    for t in 0..ntok {
        let c = cs.add(t * nrot);
        let s = c.add(half);
        for h in 0..nheads {
            let xh = x.add((t * nheads + h) * hd);
            let mut j = 0;
            if mode == MODE_NEOX {
                while j + 4 <= half {
                    let x0 = ldf(xh.add(j));
                    let x1 = ldf(xh.add(j + half));
                    let (cv, sv) = (ldf(c.add(j)), ldf(s.add(j)));
                    stf(xh.add(j), f32x4_sub(f32x4_mul(x0, cv), f32x4_mul(x1, sv)));
                    stf(xh.add(j + half), f32x4_add(f32x4_mul(x0, sv), f32x4_mul(x1, cv)));
                    j += 4;
                }
                while j < half {
                    let (x0, x1) = (*xh.add(j), *xh.add(j + half));
                    let (cj, sj) = (*c.add(j), *s.add(j));
                    *xh.add(j) = x0 * cj - x1 * sj;
                    *xh.add(j + half) = x0 * sj + x1 * cj;
                    j += 1;
                }
            } else {
                while j + 4 <= half {
                    let a = ldf(xh.add(2 * j)); // x0 x1 x0' x1'
                    let b = ldf(xh.add(2 * j + 4));
                    let x0 = i32x4_shuffle::<0, 2, 4, 6>(a, b);
                    let x1 = i32x4_shuffle::<1, 3, 5, 7>(a, b);
                    let (cv, sv) = (ldf(c.add(j)), ldf(s.add(j)));
                    let y0 = f32x4_sub(f32x4_mul(x0, cv), f32x4_mul(x1, sv));
                    let y1 = f32x4_add(f32x4_mul(x0, sv), f32x4_mul(x1, cv));
                    stf(xh.add(2 * j), i32x4_shuffle::<0, 4, 1, 5>(y0, y1));
                    stf(xh.add(2 * j + 4), i32x4_shuffle::<2, 6, 3, 7>(y0, y1));
                    j += 4;
                }
                while j < half {
                    let (x0, x1) = (*xh.add(2 * j), *xh.add(2 * j + 1));
                    let (cj, sj) = (*c.add(j), *s.add(j));
                    *xh.add(2 * j) = x0 * cj - x1 * sj;
                    *xh.add(2 * j + 1) = x0 * sj + x1 * cj;
                    j += 1;
                }
            }
        }
    }
}

/// Scalar twin of [`rope`].
pub unsafe fn rope_scalar(x: *mut f32, ntok: usize, nheads: usize, hd: usize, nrot: usize, mode: u32, cs: *const f32) {
    let half = nrot / 2;
    for t in 0..ntok {
        let c = cs.add(t * nrot);
        let s = c.add(half);
        for h in 0..nheads {
            let xh = x.add((t * nheads + h) * hd);
            for j in 0..half {
                let (i0, i1) = if mode == MODE_NEOX { (j, j + half) } else { (2 * j, 2 * j + 1) };
                let (x0, x1) = (*xh.add(i0), *xh.add(i1));
                let (cj, sj) = (*c.add(j), *s.add(j));
                *xh.add(i0) = x0 * cj - x1 * sj;
                *xh.add(i1) = x0 * sj + x1 * cj;
            }
        }
    }
}
