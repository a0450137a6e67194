//! Matrix multiplication over any supported weight type.
//!
//! `out[t*rows + r] = Σ_c W[r,c]·x[t*cols + c]`. Each activation row is first
//! converted once to the weight type's `vec_dot_type` (docs/specs-llamacpp.md §2.3); then the
//! weight matrix is swept row by row with the token loop innermost, in
//! token blocks sized so the converted activations stay cache-resident, and
//! each weight block is unpacked once per tile of ≤ 4 tokens (`tiles.rs`):
//! prefill is matrix·matrix, not repeated matvec.

use crate::dot::*;
use crate::formats::{format, kernels, Act, Format};
use crate::half::{round_bf16_f32, round_f16_f32};
use crate::tiles::*;
use crate::quantize::*;
use crate::types::*;
use crate::packed::{self, PACKED};
use crate::group;
use crate::packed_f16;

/// A row dot product: (weight row, converted activation row, elements).
pub use crate::formats::DotFn;

/// Tokens per tile: 16 converted rows of 4096 Q8_0 values ≈ 70 KiB.
const TOKEN_TILE: usize = 16;

/// Bytes of one converted activation row of `cols` values for weight type
/// `ty`, or 0 if unsupported / `cols` not a whole number of blocks.
pub fn act_row_bytes(ty: u32, cols: usize) -> usize {
    match format(ty) {
        Some(Format { blk, kernels: Some(k), .. }) => {
            let (ae, ab) = k.act.geom();
            if cols % blk == 0 && cols % ae == 0 {
                cols / ae * ab
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// Row dot of the scalar twin path.
fn dot_fn(ty: u32) -> Option<DotFn> {
    kernels(ty).map(|k| k.dot)
}

/// Scratch bytes [`matmul`] / [`matmul_prepared`] need for `ntok` tokens.
pub fn scratch_bytes(ty: u32, cols: usize, ntok: usize) -> usize {
    if ty & PACKED != 0 {
        let b = ty & !PACKED;
        let rb = row_bytes(b, cols).unwrap_or(0);
        let e = ntok * group::ext_row_bytes(b, cols);
        let ext = if e > rb { e } else { rb };
        // F16: a token block's activation rows scaled by 2^112 (`packed_f16::scale_act`).
        let sb = 4 * cols * if ntok < TOKEN_TILE { ntok } else { TOKEN_TILE };
        let ext = if b == F16 && ext < sb { sb } else { ext };
        return ntok * act_row_bytes(b, cols) + ext + 64;
    }
    #[cfg(moe_relaxed)]
    {
        // one-token decode over standard rows may expand for `relaxed::std_kernels`
        let e = crate::relaxed::std_kernels(ty).map_or(0, |k| (k.ext_row_bytes)(cols));
        let x = ext_row_bytes(ty, cols);
        if e > ntok * x {
            return ntok * act_row_bytes(ty, cols) + e + 64;
        }
    }
    ntok * (act_row_bytes(ty, cols) + ext_row_bytes(ty, cols)) + 64
}

/// Convert `ntok` rows of `cols` f32 to the vec_dot_type of `ty` into `dst`
/// (`act_row_bytes(ty, cols)` per row). Returns false if unsupported.
pub unsafe fn prepare_act(ty: u32, x: *const f32, cols: usize, ntok: usize, dst: *mut u8, simd: bool) -> bool {
    let rb = act_row_bytes(ty, cols);
    if rb == 0 {
        return false;
    }
    let act = kernels(ty).unwrap_unchecked().act;
    for t in 0..ntok {
        let xr = x.add(t * cols);
        let d = dst.add(t * rb);
        match (act, simd) {
            (Act::F32, _) => core::ptr::copy(xr, d as *mut f32, cols),
            (Act::F16, _) => round_f16_f32(xr, d as *mut f32, cols, simd),
            (Act::BF16, _) => round_bf16_f32(xr, d as *mut f32, cols, simd),
            (Act::Q8_0, true) => quantize_q8_0(xr, d, cols),
            (Act::Q8_0, false) => quantize_q8_0_scalar(xr, d, cols),
            (Act::Q8_1, true) => quantize_q8_1(xr, d, cols),
            (Act::Q8_1, false) => quantize_q8_1_scalar(xr, d, cols),
            (Act::Q8_K, true) => quantize_q8_k(xr, d, cols),
            (Act::Q8_K, false) => quantize_q8_k_scalar(xr, d, cols),
        }
    }
    true
}

/// Matmul on activations already converted by [`prepare_act`]. The SIMD
/// path expands quantized activations into `scratch`
/// (`ntok·ext_row_bytes`). Returns 0, or -1 for an unsupported type/shape.
pub unsafe fn matmul_prepared(
    ty: u32,
    w: *const u8,
    rows: usize,
    cols: usize,
    act: *const u8,
    ntok: usize,
    out: *mut f32,
    scratch: *mut u8,
    simd: bool,
) -> i32 {
    matmul_prepared_ld(ty, w, rows, cols, act, ntok, out, rows, scratch, simd)
}

/// [`matmul_prepared`] writing token `t`'s row `r` to `out[t*ldo + r]`
/// (`ldo ≥ rows`): a thread computes a row range of a larger matrix with the
/// same kernels, so every value is bit-identical to the whole-matrix call.
/// Inlined into both callers so the whole-matrix path (`ldo = rows`)
/// compiles as it did before the stride existed.
#[inline(always)]
pub unsafe fn matmul_prepared_ld(
    ty: u32,
    w: *const u8,
    rows: usize,
    cols: usize,
    act: *const u8,
    ntok: usize,
    out: *mut f32,
    ldo: usize,
    scratch: *mut u8,
    simd: bool,
) -> i32 {
    if ldo < rows {
        return -1;
    }
    if ty & PACKED != 0 {
        return matmul_packed(ty & !PACKED, w, rows, cols, act, ntok, out, ldo, scratch, simd);
    }
    let (wrb, arb) = match (row_bytes(ty, cols), act_row_bytes(ty, cols)) {
        (Some(w), a) if a > 0 => (w, a),
        _ => return -1,
    };
    let k = kernels(ty).unwrap_unchecked(); // act_row_bytes > 0: a weight type
    if !simd {
        let dot = k.dot;
        for t in 0..ntok {
            for r in 0..rows {
                *out.add(t * ldo + r) = dot(w.add(r * wrb), act.add(t * arb), cols);
            }
        }
        return 0;
    }
    // Decode over standard rows, relaxed build: 4-row groups read straight
    // from the standard layout (`relaxed::std_kernels`), two groups half a
    // matrix apart per call, as `matmul_packed` does for packed matrices.
    #[cfg(moe_relaxed)]
    if let (1, 0, Some(gk)) = (ntok, rows % 4, crate::relaxed::std_kernels(ty)) {
        std_groups(gk, w, wrb, rows, cols / format(ty).unwrap_unchecked().blk, cols, act, out, scratch);
        return 0;
    }
    // SIMD: expand quantized activations once, then sweep weight rows with
    // token tiles of ≤ 4 inside cache-sized token blocks.
    let erb = ext_row_bytes(ty, cols);
    let (a, arow) = if erb > 0 {
        for t in 0..ntok {
            let src = act.add(t * arb);
            let dst = scratch.add(t * erb);
            match k.act {
                Act::Q8_K => expand_q8k(src, cols / 256, dst),
                Act::Q8_1 => expand_q8(src, cols / 32, true, dst),
                _ => expand_q8(src, cols / 32, false, dst),
            }
        }
        (scratch as *const u8, erb)
    } else {
        (act, arb)
    };
    let mut r0 = 0;
    if ty == F32 && ntok == 1 {
        // Four rows spread over the matrix per call: four memory streams.
        let q = rows / 4;
        for r in 0..q {
            let rs = [r, r + q, r + 2 * q, r + 3 * q];
            dot_f32_x4(rs.map(|x| w.add(x * wrb)), a, cols, out.add(r), q);
        }
        r0 = 4 * q;
    }
    let nb = cols / format(ty).unwrap_unchecked().blk;
    if let (1, Some(rows2)) = (ntok, k.rows2) {
        // Decode: rows r and r + rows/2 per call (two streams, shared activation loads;
        // for Q6_K measured faster than four rows, which spill registers).
        let q = rows / 2;
        for r in 0..q {
            rows2(w.add(r * wrb), w.add((r + q) * wrb), nb, a, out.add(r), out.add(r + q));
        }
        r0 = 2 * q;
    }
    let mut t0 = 0;
    while t0 < ntok {
        let t1 = if t0 + TOKEN_TILE < ntok { t0 + TOKEN_TILE } else { ntok };
        for r in r0..rows {
            let wr = w.add(r * wrb);
            let mut t = t0;
            while t < t1 {
                let n = if t1 - t >= 4 { 4 } else { t1 - t };
                (k.tiles[n - 1])(wr, nb, a.add(t * arow), arow, out.add(t * ldo + r), ldo);
                t += n;
            }
        }
        t0 = t1;
    }
    0
}

/// One token over a standard-layout matrix (`rows % 4 == 0`) with the
/// relaxed build's standard-row group kernels: groups `p` and `p + ng/2`
/// per call (two memory streams), an odd last group alone.
#[cfg(moe_relaxed)]
#[inline(always)]
unsafe fn std_groups(
    gk: &crate::relaxed::StdKernels,
    w: *const u8,
    wrb: usize,
    rows: usize,
    nb: usize,
    cols: usize,
    act: *const u8,
    out: *mut f32,
    scratch: *mut u8,
) {
    (gk.expand)(act, cols, scratch);
    let a = scratch as *const u8;
    let mut r0 = 0;
    if rows % 8 == 0 {
        // Rows p + j·s (j = 0..8, s ≈ rows/8) per call: eight streams an
        // eighth of the matrix apart (even j one set, odd j the other), with
        // s picked among rows/8 − 15..=rows/8 so that the streams' offsets
        // spread over a 4 KiB page (streams 4 KiB-aligned to each other
        // share L1 sets: a 26 MB Q6_K matrix ran 3x slower); the 8·(rows/8 −
        // s) rows left over run below.
        let e = rows / 8;
        let (mut best, mut s) = (0, e);
        for t in 0..(if e < 16 { e } else { 16 }) {
            let c = e - t;
            let mut worst = 4096;
            for j in 1..8 {
                let m = (j * c * wrb) % 4096;
                let d = if m < 4096 - m { m } else { 4096 - m };
                worst = if d < worst { d } else { worst };
            }
            if worst > best {
                best = worst;
                s = c;
            }
        }
        for p in 0..s {
            (gk.groups)(w.add(p * wrb), w.add((p + s) * wrb), nb, a, out.add(p), out.add(p + s), 2 * s * wrb, 2 * s);
        }
        r0 = 8 * s;
    }
    // 4 adjacent rows per set: groups g and g + ng/2 of the rows left, an odd last one alone.
    let (w, out) = (w.add(r0 * wrb), out.add(r0));
    let ng = (rows - r0) / 4;
    let half = ng / 2;
    for p in 0..ng - half {
        let (ga, gb) = if p < half { (p, p + half) } else { (ng - 1, usize::MAX) };
        let (wb, ob) = if gb != usize::MAX {
            (w.add(4 * gb * wrb), out.add(4 * gb))
        } else {
            (core::ptr::null(), core::ptr::null_mut())
        };
        (gk.groups)(w.add(4 * ga * wrb), wb, nb, a, out.add(4 * ga), ob, wrb, 1);
    }
}

/// Matmul over a packed matrix (`packed.rs`), inside the same token blocks as
/// the standard path: Q8_0/Q4_0/Q4_K run two 4-row groups half a matrix apart
/// per kernel call (two memory streams) for one token, or — relaxed Q4_0/Q4_K
/// — one group for up to 4 tokens; F16 decodes 2 rows half a matrix apart
/// per call. The scalar twin reads each row back to the standard layout
/// (`packed::read_row`) and runs the standard scalar dot.
#[inline(always)]
unsafe fn matmul_packed(
    ty: u32,
    w: *const u8,
    rows: usize,
    cols: usize,
    act: *const u8,
    ntok: usize,
    out: *mut f32,
    ldo: usize,
    scratch: *mut u8,
    simd: bool,
) -> i32 {
    let (rb, arb) = match (row_bytes(ty, cols), act_row_bytes(ty, cols)) {
        (Some(r), a) if a > 0 && packed::packable(ty) && rows % packed::group_rows(ty) == 0 => (r, a),
        _ => return -1,
    };
    if !simd {
        let dot = dot_fn(ty).unwrap_unchecked();
        for r in 0..rows {
            packed::read_row(ty, w, cols, r, scratch);
            for t in 0..ntok {
                *out.add(t * ldo + r) = dot(scratch, act.add(t * arb), cols);
            }
        }
        return 0;
    }
    if ty == F16 {
        // The activation rows of a token block scaled by 2^112 into `scratch`
        // (`scratch_bytes`: ≤ TOKEN_TILE rows).
        let arow = arb / 4;
        let (af, sa) = (act as *const f32, scratch as *mut f32);
        let mut r0 = 0;
        if ntok == 1 {
            // Rows r and r + rows/2 per call: two memory streams.
            packed_f16::scale_act(act, cols, sa);
            let q = rows / 2;
            for r in 0..q {
                packed_f16::dot_f16p_x2([r, r + q].map(|x| w.add(x * rb)), sa, act, cols, out.add(r), q);
            }
            r0 = 2 * q;
        }
        let mut t0 = 0;
        while t0 < ntok {
            let t1 = if t0 + TOKEN_TILE < ntok { t0 + TOKEN_TILE } else { ntok };
            if r0 < rows {
                for t in t0..t1 {
                    packed_f16::scale_act(act.add(t * arb), cols, sa.add((t - t0) * arow));
                }
            }
            for r in r0..rows {
                let wr = w.add(r * rb);
                let mut t = t0;
                while t < t1 {
                    let (a, s, o) = (af.add(t * arow), sa.add((t - t0) * arow) as *const f32, out.add(t * ldo + r));
                    let n = if t1 - t >= 4 { 4 } else { t1 - t };
                    match n {
                        1 => *o = packed_f16::dot_f16p_x1(wr, s, a as *const u8, cols),
                        2 => packed_f16::tile_f16p::<2>(wr, cols, s, a, arow, o, ldo),
                        3 => packed_f16::tile_f16p::<3>(wr, cols, s, a, arow, o, ldo),
                        _ => packed_f16::tile_f16p::<4>(wr, cols, s, a, arow, o, ldo),
                    }
                    t += n;
                }
            }
            t0 = t1;
        }
        return 0;
    }
    let l = packed::layout(ty).unwrap_unchecked();
    let gk = l.kernels.unwrap_unchecked();
    let erb = (gk.ext_row_bytes)(cols);
    for t in 0..ntok {
        (gk.expand)(act.add(t * arb), cols, scratch.add(t * erb));
    }
    let nb = cols / l.block_elems;
    // Group g runs with group g + ng/2 (two memory streams); an odd last one alone.
    let ng = rows / 4;
    let half = ng / 2;
    let mut t0 = 0;
    while t0 < ntok {
        let t1 = if t0 + TOKEN_TILE < ntok { t0 + TOKEN_TILE } else { ntok };
        for p in 0..ng - half {
            // Pairs (p, p + half); with an odd count the last group runs alone.
            let paired = p < half;
            let (ga, gb) = if paired { (p, p + half) } else { (ng - 1, ng - 1) };
            let wa = w.add(4 * ga * rb);
            let mut t = t0;
            while t < t1 {
                let a = scratch.add(t * erb) as *const u8;
                let oa = out.add(t * ldo + 4 * ga);
                if let (true, Some(tile)) = (t1 - t >= 2, gk.tile) {
                    // Token tiles (relaxed build): weights unpacked once for up to 4 tokens.
                    let n = if t1 - t >= 4 { 4 } else { t1 - t };
                    tile(wa, nb, a, erb, n, oa, ldo);
                    if paired {
                        tile(w.add(4 * gb * rb), nb, a, erb, n, out.add(t * ldo + 4 * gb), ldo);
                    }
                    t += n;
                    continue;
                }
                let (wb, ob) = if paired {
                    (w.add(4 * gb * rb), out.add(t * ldo + 4 * gb))
                } else {
                    (core::ptr::null(), core::ptr::null_mut())
                };
                (gk.groups)(wa, wb, nb, a, oa, ob);
                t += 1;
            }
        }
        t0 = t1;
    }
    0
}

/// Full matmul: converts `x` into `scratch` ([`scratch_bytes`]; unused for
/// F32), then [`matmul_prepared`] with the rest of the scratch.
pub unsafe fn matmul(
    ty: u32,
    w: *const u8,
    rows: usize,
    cols: usize,
    x: *const f32,
    ntok: usize,
    out: *mut f32,
    scratch: *mut u8,
    simd: bool,
) -> i32 {
    let base = ty & !PACKED;
    if ty == F32 {
        return matmul_prepared(ty, w, rows, cols, x as *const u8, ntok, out, scratch, simd);
    }
    if !prepare_act(base, x, cols, ntok, scratch, simd) {
        return -1;
    }
    let ext = scratch.add(crate::tiles::align16(ntok * act_row_bytes(base, cols)));
    matmul_prepared(ty, w, rows, cols, scratch, ntok, out, ext, simd)
}
