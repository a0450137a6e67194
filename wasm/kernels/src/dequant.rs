//! Row dequantization to f32 (`get_rows`), following `ggml-quants.c`
//! `dequantize_row_*` (docs/specs-llamacpp.md §2.2). Scalar only: it runs once per token for
//! the embedding lookup, far off the hot path.

use crate::half::{bf16_to_f32, f16_to_f32};
use crate::kquants::scale_min_k4;
use crate::simd::{rd_f32, rd_u16, rd_u32};
use crate::types::*;

#[inline(always)]
unsafe fn fp16(p: *const u8) -> f32 {
    f16_to_f32(rd_u16(p))
}

/// Dequantize `n` elements of type `ty` at `x` into `y`. Returns false for
/// a type without a row in `formats::FORMATS`.
pub unsafe fn dequantize_row(ty: u32, x: *const u8, y: *mut f32, n: usize) -> bool {
    match crate::formats::format(ty) {
        Some(f) => {
            (f.dequant)(x, y, n);
            true
        }
        None => false,
    }
}

/// `dequantize_row_*` of the legacy, float and Q4_K..Q6_K formats (`TY`
/// a constant: each instance compiles to one arm). Other types live in
/// `lowbit.rs`; an unknown `TY` writes nothing.
pub unsafe fn dequant<const TY: u32>(x: *const u8, y: *mut f32, n: usize) {
    let ty = TY;
    match ty {
        F32 => {
            for i in 0..n {
                *y.add(i) = rd_f32(x.add(4 * i));
            }
        }
        F16 => {
            for i in 0..n {
                *y.add(i) = fp16(x.add(2 * i));
            }
        }
        BF16 => {
            for i in 0..n {
                *y.add(i) = bf16_to_f32(rd_u16(x.add(2 * i)));
            }
        }
        Q8_0 => {
            for b in 0..n / 32 {
                let (xb, yb) = (x.add(34 * b), y.add(32 * b));
                let d = fp16(xb);
                for j in 0..32 {
                    *yb.add(j) = (*xb.add(2 + j) as i8 as f32) * d;
                }
            }
        }
        Q4_0 => {
            for b in 0..n / 32 {
                let (xb, yb) = (x.add(18 * b), y.add(32 * b));
                let d = fp16(xb);
                for j in 0..16 {
                    let q = *xb.add(2 + j);
                    *yb.add(j) = ((q & 0x0f) as i32 - 8) as f32 * d;
                    *yb.add(j + 16) = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        Q4_1 => {
            for b in 0..n / 32 {
                let (xb, yb) = (x.add(20 * b), y.add(32 * b));
                let (d, m) = (fp16(xb), fp16(xb.add(2)));
                for j in 0..16 {
                    let q = *xb.add(4 + j);
                    *yb.add(j) = (q & 0x0f) as f32 * d + m;
                    *yb.add(j + 16) = (q >> 4) as f32 * d + m;
                }
            }
        }
        Q5_0 | Q5_1 => {
            let one = ty == Q5_1;
            let bb = if one { 24 } else { 22 };
            for b in 0..n / 32 {
                let (xb, yb) = (x.add(bb * b), y.add(32 * b));
                let d = fp16(xb);
                let m = if one { fp16(xb.add(2)) } else { 0.0 };
                let qh = rd_u32(xb.add(if one { 4 } else { 2 }));
                let qs = xb.add(if one { 8 } else { 6 });
                for j in 0..16 {
                    let q = *qs.add(j) as u32;
                    let v0 = ((q & 0x0f) | (((qh >> j) << 4) & 0x10)) as i32;
                    let v1 = ((q >> 4) | ((qh >> (j + 12)) & 0x10)) as i32;
                    if one {
                        *yb.add(j) = v0 as f32 * d + m;
                        *yb.add(j + 16) = v1 as f32 * d + m;
                    } else {
                        *yb.add(j) = (v0 - 16) as f32 * d;
                        *yb.add(j + 16) = (v1 - 16) as f32 * d;
                    }
                }
            }
        }
        Q4_K | Q5_K => {
            let five = ty == Q5_K;
            let bb = if five { 176 } else { 144 };
            for b in 0..n / 256 {
                let (xb, yb) = (x.add(bb * b), y.add(256 * b));
                let (d, dmin) = (fp16(xb), fp16(xb.add(2)));
                let scales = xb.add(4);
                let qh = xb.add(16);
                let qs = xb.add(if five { 48 } else { 16 });
                for c in 0..4 {
                    let (sc0, m0) = scale_min_k4(2 * c, scales);
                    let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
                    let (d1, mm1) = (d * sc0 as f32, dmin * m0 as f32);
                    let (d2, mm2) = (d * sc1 as f32, dmin * m1 as f32);
                    for l in 0..32 {
                        let q = *qs.add(32 * c + l);
                        let mut lo = (q & 0x0f) as i32;
                        let mut hi = (q >> 4) as i32;
                        if five {
                            let h = *qh.add(l);
                            if h & (1 << (2 * c)) != 0 {
                                lo += 16;
                            }
                            if h & (2 << (2 * c)) != 0 {
                                hi += 16;
                            }
                        }
                        *yb.add(64 * c + l) = d1 * lo as f32 - mm1;
                        *yb.add(64 * c + 32 + l) = d2 * hi as f32 - mm2;
                    }
                }
            }
        }
        Q6_K => {
            for b in 0..n / 256 {
                let (xb, yb0) = (x.add(210 * b), y.add(256 * b));
                let d = fp16(xb.add(208));
                for half in 0..2 {
                    let ql = xb.add(64 * half);
                    let qh = xb.add(128 + 32 * half);
                    let sc = xb.add(192 + 8 * half);
                    let yb = yb0.add(128 * half);
                    for l in 0..32 {
                        let is = l / 16;
                        let h = *qh.add(l) as i32;
                        let a0 = *ql.add(l) as i32;
                        let a1 = *ql.add(l + 32) as i32;
                        let s = |k: usize| (*sc.add(is + k) as i8) as f32;
                        *yb.add(l) = d * s(0) * (((a0 & 0xf) | ((h & 3) << 4)) - 32) as f32;
                        *yb.add(l + 32) = d * s(2) * (((a1 & 0xf) | (((h >> 2) & 3) << 4)) - 32) as f32;
                        *yb.add(l + 64) = d * s(4) * (((a0 >> 4) | (((h >> 4) & 3) << 4)) - 32) as f32;
                        *yb.add(l + 96) = d * s(6) * (((a1 >> 4) | (((h >> 6) & 3) << 4)) - 32) as f32;
                    }
                }
            }
        }
        _ => {}
    }
}

/// `get_rows` over a packed matrix: each block is read back to its standard
/// bytes (`packed::read_block`) and dequantized as above.
pub unsafe fn get_rows_packed(ty: u32, w: *const u8, cols: usize, ids: *const i32, n: usize, out: *mut f32) -> i32 {
    use crate::packed;
    let rb = match row_bytes(ty, cols) {
        Some(b) if packed::packable(ty) => b,
        _ => return -1,
    };
    let (be, bb, gr) = (packed::block_elems(ty), packed::block_bytes(ty), packed::group_rows(ty));
    let nb = cols / be;
    let mut buf = [0u8; 256]; // one standard block (Q6_K: 210 B)
    for k in 0..n {
        let r = *ids.add(k) as usize;
        let g = w.add((r / gr) * gr * rb);
        let y = out.add(k * cols);
        for i in 0..nb {
            packed::read_block(ty, g, nb, r % gr, i, buf.as_mut_ptr());
            dequantize_row(ty, buf.as_ptr(), y.add(i * be), be);
        }
        // F16: the `cols % 8` tail is stored unchanged.
        dequantize_row(ty, g.add(nb * bb), y.add(nb * be), cols - nb * be);
    }
    0
}
