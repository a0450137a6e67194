//! Q2_K, Q3_K, IQ4_XS (· Q8_K) and IQ4_NL, MXFP4 (· Q8_0): row dequantization,
//! the scalar dot twins and the SIMD micro-kernels of the Q8_K-activated ones
//! (IQ4_NL / MXFP4 run through `tiles::tile_legacy`).
//!
//! The scalar twins follow `ggml-cpu/quants.c`'s generic kernels in C order
//! (as `core/tensor/quant_k_low.ts` / `quant_iq4.ts` do), so they equal the
//! TS traits bit for bit; the SIMD kernels keep integer partials in i32x4 lanes
//! per block and scale them once, like the other K-quant tiles.
//!
//! Layouts (docs/quant-types.md): Q2_K 84 B (`scales[16]`, `qs[64]`, `d`,
//! `dmin`), Q3_K 110 B (`hmask[32]`, `qs[64]`, `scales[12]`, `d`), IQ4_XS
//! 136 B (`d`, `scales_h`, `scales_l[4]`, `qs[128]`), IQ4_NL 18 B (`d`,
//! `qs[16]`), MXFP4 17 B (`e` E8M0, `qs[16]`).

use crate::half::f16_to_f32;
use crate::simd::*;
use crate::tiles::align16;

/// Bytes of one Q2_K block (256 values).
pub const Q2_K_BYTES: usize = 84;
/// Bytes of one Q3_K block (256 values).
pub const Q3_K_BYTES: usize = 110;
/// Bytes of one IQ4_XS block (256 values).
pub const IQ4_XS_BYTES: usize = 136;
/// Bytes of one IQ4_NL block (32 values).
pub const IQ4_NL_BYTES: usize = 18;
/// Bytes of one MXFP4 block (32 values).
pub const MXFP4_BYTES: usize = 17;
const Q8K: usize = 292;
const Q8_0B: usize = 34;

/// `kvalues_iq4nl`.
pub static KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
/// `kvalues_mxfp4` (E2M1 values times two).
pub static KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

#[inline(always)]
unsafe fn fp16(p: *const u8) -> f32 {
    f16_to_f32(rd_u16(p))
}

#[inline(always)]
unsafe fn i8at(p: *const u8, i: usize) -> i32 {
    *p.add(i) as i8 as i32
}

/// `ggml_e8m0_to_fp32_half`: `2^(e − 128)`.
#[inline(always)]
pub fn e8m0_half(e: u8) -> f32 {
    f32::from_bits(if e < 2 { 0x0020_0000u32 << e } else { ((e as u32) - 1) << 23 })
}

/// The sixteen Q3_K scales (biased by 32) of the 12 bytes at `p`: scale `j`
/// is the low (j < 8) or high nibble of byte `j % 8` plus bits `2·(j/4)..+1`
/// of byte `8 + j % 4`, decoded four at a time in 32-bit words.
#[inline(always)]
pub unsafe fn q3k_scales(p: *const u8) -> [i32; 16] {
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let (a0, a1, h) = (rd_u32(p), rd_u32(p.add(4)), rd_u32(p.add(8)));
    let words = [
        (a0 & M4) | ((h & M2) << 4),
        (a1 & M4) | (((h >> 2) & M2) << 4),
        ((a0 >> 4) & M4) | (((h >> 4) & M2) << 4),
        ((a1 >> 4) & M4) | (((h >> 6) & M2) << 4),
    ];
    let mut s = [0i32; 16];
    for j in 0..16 {
        s[j] = ((words[j / 4] >> (8 * (j % 4))) & 0xff) as i32;
    }
    s
}

/// IQ4_XS scale (biased by 32) of sub-block `ib` of the block at `b`.
#[inline(always)]
unsafe fn iq4xs_scale(b: *const u8, ib: usize) -> i32 {
    let h = rd_u16(b.add(2)) as u32;
    (((*b.add(4 + ib / 2) >> (4 * (ib & 1))) & 0x0f) as u32 | (((h >> (2 * ib)) & 3) << 4)) as i32
}

// ---------------------------------------------------------------- dequantize

/// Dequantize `n` values (whole blocks) of Q2_K, Q3_K, IQ4_XS, IQ4_NL or
/// MXFP4 (`ggml-quants.c` `dequantize_row_*`, same f32 operations; `TY` a
/// constant). Any other `TY` writes nothing.
pub unsafe fn dequant<const TY: u32>(x: *const u8, y: *mut f32, n: usize) {
    use crate::types::*;
    let ty = TY;
    match ty {
        Q2_K => {
            for b in 0..n / 256 {
                let (xb, yb) = (x.add(Q2_K_BYTES * b), y.add(256 * b));
                let (d, min) = (fp16(xb.add(80)), fp16(xb.add(82)));
                for k in 0..2 {
                    for j in 0..4 {
                        for h in 0..2 {
                            let sc = *xb.add(8 * k + 2 * j + h);
                            let dl = d * (sc & 0x0f) as f32;
                            let ml = min * (sc >> 4) as f32;
                            let q = xb.add(16 + 32 * k + 16 * h);
                            let o = yb.add(128 * k + 32 * j + 16 * h);
                            for l in 0..16 {
                                *o.add(l) = dl * ((*q.add(l) >> (2 * j)) & 3) as f32 - ml;
                            }
                        }
                    }
                }
            }
        }
        Q3_K => {
            for b in 0..n / 256 {
                let (xb, yb) = (x.add(Q3_K_BYTES * b), y.add(256 * b));
                let d = fp16(xb.add(108));
                let sc = q3k_scales(xb.add(96));
                for k in 0..2 {
                    for j in 0..4 {
                        let m = 1u8 << (4 * k + j);
                        for h in 0..2 {
                            let dl = d * (sc[8 * k + 2 * j + h] - 32) as f32;
                            let o = yb.add(128 * k + 32 * j + 16 * h);
                            for l in 0..16 {
                                let e = 16 * h + l;
                                let q = ((*xb.add(32 + 32 * k + e) >> (2 * j)) & 3) as i32
                                    - if *xb.add(e) & m != 0 { 0 } else { 4 };
                                *o.add(l) = dl * q as f32;
                            }
                        }
                    }
                }
            }
        }
        IQ4_XS => {
            for b in 0..n / 256 {
                let (xb, yb) = (x.add(IQ4_XS_BYTES * b), y.add(256 * b));
                let d = fp16(xb);
                for ib in 0..8 {
                    let dl = d * (iq4xs_scale(xb, ib) - 32) as f32;
                    let qs = xb.add(8 + 16 * ib);
                    let o = yb.add(32 * ib);
                    for j in 0..16 {
                        let q = *qs.add(j);
                        *o.add(j) = dl * KVALUES_IQ4NL[(q & 0x0f) as usize] as f32;
                        *o.add(j + 16) = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
                    }
                }
            }
        }
        IQ4_NL | MXFP4 => {
            let mx = ty == MXFP4;
            let (bb, qo) = if mx { (MXFP4_BYTES, 1) } else { (IQ4_NL_BYTES, 2) };
            let kv = if mx { &KVALUES_MXFP4 } else { &KVALUES_IQ4NL };
            for b in 0..n / 32 {
                let (xb, yb) = (x.add(bb * b), y.add(32 * b));
                let d = if mx { e8m0_half(*xb) } else { fp16(xb) };
                for j in 0..16 {
                    let q = *xb.add(qo + j);
                    let (v0, v1) = (kv[(q & 0x0f) as usize] as f32, kv[(q >> 4) as usize] as f32);
                    // dequantize_row_mxfp4 multiplies x·d, iq4_nl d·x (same value)
                    *yb.add(j) = if mx { v0 * d } else { d * v0 };
                    *yb.add(j + 16) = if mx { v1 * d } else { d * v1 };
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- scalar twins (generic C order)

/// `ggml_vec_dot_q2_K_q8_K` (generic).
pub unsafe fn dot_q2_k_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * Q2_K_BYTES), a.add(i * Q8K));
        let bs = yb.add(260) as *const i16;
        let mut summs = 0i32;
        for j in 0..16 {
            summs += bs.add(j).read_unaligned() as i32 * (*xb.add(j) >> 4) as i32;
        }
        let yd = rd_f32(yb);
        let dall = yd * fp16(xb.add(80));
        let dmin = yd * fp16(xb.add(82));
        let mut isum = 0i32;
        for k in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let d = (*xb.add(8 * k + 2 * j + h) & 0x0f) as i32;
                    let q2 = xb.add(16 + 32 * k + 16 * h);
                    let q8 = yb.add(4 + 128 * k + 32 * j + 16 * h);
                    let mut s = 0i32;
                    for l in 0..16 {
                        s += i8at(q8, l) * ((*q2.add(l) >> (2 * j)) & 3) as i32;
                    }
                    isum += d * s;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q3_K_q8_K` (generic: 8 integer lanes, f32 `sums[8]`).
pub unsafe fn dot_q3_k_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut aux8 = [0i8; 256];
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * Q3_K_BYTES), a.add(i * Q8K));
        for k in 0..2 {
            for j in 0..4 {
                let m = 1u8 << (4 * k + j);
                for l in 0..32 {
                    let v = ((*xb.add(32 + 32 * k + l) >> (2 * j)) & 3) as i8;
                    aux8[128 * k + 32 * j + l] = v - if *xb.add(l) & m != 0 { 0 } else { 4 };
                }
            }
        }
        let sc = q3k_scales(xb.add(96));
        let mut aux32 = [0i32; 8];
        let q8 = yb.add(4);
        for p in 0..32 {
            let s = sc[p / 2] - 32;
            for l in 0..8 {
                aux32[l] += s * (i8at(q8, 8 * p + l) * aux8[8 * p + l] as i32);
            }
        }
        let d = fp16(xb.add(108)) * rd_f32(yb);
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for l in 0..8 {
        sumf += sums[l];
    }
    sumf
}

/// `ggml_vec_dot_iq4_xs_q8_K` (generic).
pub unsafe fn dot_iq4_xs_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let (xb, yb) = (w.add(i * IQ4_XS_BYTES), a.add(i * Q8K));
        let d4d8 = fp16(xb) * rd_f32(yb);
        for ib in 0..8 {
            let dl = d4d8 * (iq4xs_scale(xb, ib) - 32) as f32;
            let qs = xb.add(8 + 16 * ib);
            let q8 = yb.add(4 + 32 * ib);
            let (mut s1, mut s2) = (0i32, 0i32);
            for j in 0..16 {
                let q = *qs.add(j);
                s1 += i8at(q8, j) * KVALUES_IQ4NL[(q & 0x0f) as usize] as i32;
                s2 += i8at(q8, j + 16) * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
            }
            sumf += dl * (s1 + s2) as f32;
        }
    }
    sumf
}

#[inline(always)]
unsafe fn dot_nl_scalar<const MX: bool>(w: *const u8, a: *const u8, n: usize) -> f32 {
    let (bb, qo) = if MX { (MXFP4_BYTES, 1) } else { (IQ4_NL_BYTES, 2) };
    let kv = if MX { &KVALUES_MXFP4 } else { &KVALUES_IQ4NL };
    let mut sumf = 0.0f32;
    for i in 0..n / 32 {
        let (xb, yb) = (w.add(i * bb), a.add(i * Q8_0B));
        let d = fp16(yb) * if MX { e8m0_half(*xb) } else { fp16(xb) };
        let (mut s1, mut s2) = (0i32, 0i32);
        for j in 0..16 {
            let q = *xb.add(qo + j);
            s1 += i8at(yb, 2 + j) * kv[(q & 0x0f) as usize] as i32;
            s2 += i8at(yb, 18 + j) * kv[(q >> 4) as usize] as i32;
        }
        sumf += d * (s1 + s2) as f32;
    }
    sumf
}

/// `ggml_vec_dot_iq4_nl_q8_0` (generic).
pub unsafe fn dot_iq4_nl_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_nl_scalar::<false>(w, a, n)
}

/// `ggml_vec_dot_mxfp4_q8_0` (generic).
pub unsafe fn dot_mxfp4_scalar(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_nl_scalar::<true>(w, a, n)
}

// ---------------------------------------------------------------- SIMD tiles (expanded Q8_K activations)

/// 16 signed weight bytes × 16 expanded (i16) activations at `y`.
#[inline(always)]
unsafe fn dot16(v: v128, y: *const u8) -> v128 {
    i32x4_add(
        i32x4_dot_i16x8(i16x8_extend_low_i8x16(v), ld(y)),
        i32x4_dot_i16x8(i16x8_extend_high_i8x16(v), ld(y.add(16))),
    )
}

/// Codebook lookup of the 32 nibbles of 16 bytes: (elements 0..15, 16..31).
#[inline(always)]
pub unsafe fn nl_unpack(q: v128, table: v128) -> (v128, v128) {
    let m4 = u8x16_splat(0x0f);
    (i8x16_swizzle(table, v128_and(q, m4)), i8x16_swizzle(table, u8x16_shr(q, 4)))
}

/// Q2_K (`K = 2`) or Q3_K (`K = 3`) weight row × T tokens of expanded Q8_K activations.
#[inline(always)]
pub unsafe fn tile_q23k<const K: u32, const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    let bsoff = align16(4 * nb);
    let qoff = bsoff + 32 * nb;
    let m3 = u8x16_splat(3);
    let four = u8x16_splat(4);
    let mut acc = [f32x4_splat(0.0); T];
    let mut accm = [0.0f32; T];
    for i in 0..nb {
        let xb = w.add(i * if K == 2 { Q2_K_BYTES } else { Q3_K_BYTES });
        // Per-16 scales (Q3_K: unbiased), Q2_K mins as i16x8 pairs for the bsums dot.
        let mut sc = [0i32; 16];
        let (mut mv0, mut mv1) = (i16x8_splat(0), i16x8_splat(0));
        if K == 2 {
            let s = ld(xb);
            for j in 0..16 {
                sc[j] = (*xb.add(j) & 0x0f) as i32;
            }
            let mins = u8x16_shr(s, 4);
            mv0 = i16x8_extend_low_u8x16(mins);
            mv1 = i16x8_extend_high_u8x16(mins);
        } else {
            let s = q3k_scales(xb.add(96));
            for j in 0..16 {
                sc[j] = s[j] - 32;
            }
        }
        let qs = xb.add(if K == 2 { 16 } else { 32 });
        // Constant shifts only (a variable wasm byte shift costs ~6 x86 ops): the quants move
        // down 2 bits per j, the Q3_K high-bit masks 1 bit per (k, j), in 16-bit lanes; only the
        // low bits of each byte are read, which never received bits of the other byte.
        let (mut hm0, mut hm1) = if K == 3 { (ld(xb), ld(xb.add(16))) } else { (m3, m3) };
        let one = u8x16_splat(1);
        let mut isum = [i32x4_splat(0); T];
        for k in 0..2 {
            let mut q0 = ld(qs.add(32 * k));
            let mut q1 = ld(qs.add(32 * k + 16));
            for j in 0..4 {
                let mut w0 = v128_and(q0, m3);
                let mut w1 = v128_and(q1, m3);
                q0 = u16x8_shr(q0, 2);
                q1 = u16x8_shr(q1, 2);
                if K == 3 {
                    // −4 where the high bit (now bit 0 of each byte) is clear
                    w0 = i8x16_sub(w0, v128_andnot(four, i8x16_eq(v128_and(hm0, one), one)));
                    w1 = i8x16_sub(w1, v128_andnot(four, i8x16_eq(v128_and(hm1, one), one)));
                    hm0 = u16x8_shr(hm0, 1);
                    hm1 = u16x8_shr(hm1, 1);
                }
                let (s0, s1) = (i32x4_splat(sc[8 * k + 2 * j]), i32x4_splat(sc[8 * k + 2 * j + 1]));
                for t in 0..T {
                    let y = a.add(t * arow + qoff + 512 * i + 2 * (128 * k + 32 * j));
                    isum[t] = i32x4_add(isum[t], i32x4_mul(dot16(w0, y), s0));
                    isum[t] = i32x4_add(isum[t], i32x4_mul(dot16(w1, y.add(32)), s1));
                }
            }
        }
        let (d, dmin) = if K == 2 { (fp16(xb.add(80)), fp16(xb.add(82))) } else { (fp16(xb.add(108)), 0.0) };
        for t in 0..T {
            let at = a.add(t * arow);
            let yd = *(at as *const f32).add(i);
            acc[t] = f32x4_add(acc[t], f32x4_mul(f32x4_convert_i32x4(isum[t]), f32x4_splat(d * yd)));
            if K == 2 {
                let bs = at.add(bsoff + 32 * i);
                let m = hsum_i32(i32x4_add(i32x4_dot_i16x8(mv0, ld(bs)), i32x4_dot_i16x8(mv1, ld(bs.add(16)))));
                accm[t] += (dmin * yd) * m as f32;
            }
        }
    }
    for t in 0..T {
        *out.add(t * ostride) = hsum_f32(acc[t]) - accm[t];
    }
}

/// IQ4_XS weight row × T tokens of expanded Q8_K activations.
#[inline(always)]
pub unsafe fn tile_iq4_xs<const T: usize>(w: *const u8, nb: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    let qoff = align16(4 * nb) + 32 * nb;
    let table = ld(KVALUES_IQ4NL.as_ptr() as *const u8);
    let mut acc = [f32x4_splat(0.0); T];
    for i in 0..nb {
        let xb = w.add(i * IQ4_XS_BYTES);
        let mut isum = [i32x4_splat(0); T];
        for ib in 0..8 {
            let (lo, hi) = nl_unpack(ld(xb.add(8 + 16 * ib)), table);
            let s = i32x4_splat(iq4xs_scale(xb, ib) - 32);
            for t in 0..T {
                let y = a.add(t * arow + qoff + 512 * i + 64 * ib);
                isum[t] = i32x4_add(isum[t], i32x4_mul(i32x4_add(dot16(lo, y), dot16(hi, y.add(32))), s));
            }
        }
        let d = fp16(xb);
        for t in 0..T {
            let yd = *(a.add(t * arow) as *const f32).add(i);
            acc[t] = f32x4_add(acc[t], f32x4_mul(f32x4_convert_i32x4(isum[t]), f32x4_splat(d * yd)));
        }
    }
    for t in 0..T {
        *out.add(t * ostride) = hsum_f32(acc[t]);
    }
}

/// R IQ4_XS rows × 1 token (decode), sharing the activation loads; per row
/// the operations of [`tile_iq4_xs`]`::<1>` (bit-identical).
#[inline(always)]
pub unsafe fn rows_iq4_xs<const R: usize>(w: [*const u8; R], nb: usize, a: *const u8, out: [*mut f32; R]) {
    let qoff = align16(4 * nb) + 32 * nb;
    let table = ld(KVALUES_IQ4NL.as_ptr() as *const u8);
    let mut acc = [f32x4_splat(0.0); R];
    for i in 0..nb {
        let mut isum = [i32x4_splat(0); R];
        for ib in 0..8 {
            let y = a.add(qoff + 512 * i + 64 * ib);
            let (y0, y1, y2, y3) = (ld(y), ld(y.add(16)), ld(y.add(32)), ld(y.add(48)));
            for r in 0..R {
                let xb = w[r].add(i * IQ4_XS_BYTES);
                let (lo, hi) = nl_unpack(ld(xb.add(8 + 16 * ib)), table);
                let s = i32x4_splat(iq4xs_scale(xb, ib) - 32);
                let dlo = i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(lo), y0),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(lo), y1),
                );
                let dhi = i32x4_add(
                    i32x4_dot_i16x8(i16x8_extend_low_i8x16(hi), y2),
                    i32x4_dot_i16x8(i16x8_extend_high_i8x16(hi), y3),
                );
                isum[r] = i32x4_add(isum[r], i32x4_mul(i32x4_add(dlo, dhi), s));
            }
        }
        let yd = *(a as *const f32).add(i);
        for r in 0..R {
            let d = fp16(w[r].add(i * IQ4_XS_BYTES));
            acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_convert_i32x4(isum[r]), f32x4_splat(d * yd)));
        }
    }
    for r in 0..R {
        *out[r] = hsum_f32(acc[r]);
    }
}
