//! Fused expert FFN (SwiGLU): `out = W_down · (silu(W_gate·x) ⊙ (W_up·x))`
//! for `ntok` tokens in one call, the default MoE expert (docs/specs-llamacpp.md §5). It runs
//! exactly the same kernels as the unfused ops (so results are bit-identical
//! to matmul → swiglu → matmul) but saves three host round trips, their
//! copies, and keeps `g`/`u` in linear memory.

use crate::act::{swiglu, swiglu_scalar};
use crate::matmul::{matmul, scratch_bytes};
use crate::tiles::align16;

fn max3(a: usize, b: usize, c: usize) -> usize {
    let m = if a > b { a } else { b };
    if m > c { m } else { c }
}

/// Scratch bytes [`ffn_swiglu`] needs.
pub fn ffn_scratch_bytes(tg: u32, tu: u32, td: u32, n_embd: usize, n_ff: usize, ntok: usize) -> usize {
    2 * align16(4 * ntok * n_ff)
        + max3(scratch_bytes(tg, n_embd, ntok), scratch_bytes(tu, n_embd, ntok), scratch_bytes(td, n_ff, ntok))
}

/// Fused SwiGLU FFN. Weights: gate/up `n_ff × n_embd`, down `n_embd × n_ff`.
/// Returns 0, or -1 when a weight type/shape is unsupported.
pub unsafe fn ffn_swiglu(
    tg: u32,
    wg: *const u8,
    tu: u32,
    wu: *const u8,
    td: u32,
    wd: *const u8,
    n_embd: usize,
    n_ff: usize,
    x: *const f32,
    ntok: usize,
    out: *mut f32,
    scratch: *mut u8,
    simd: bool,
) -> i32 {
    let g = scratch as *mut f32;
    let u = scratch.add(align16(4 * ntok * n_ff)) as *mut f32;
    let ms = scratch.add(2 * align16(4 * ntok * n_ff));
    if matmul(tg, wg, n_ff, n_embd, x, ntok, g, ms, simd) != 0 {
        return -1;
    }
    if matmul(tu, wu, n_ff, n_embd, x, ntok, u, ms, simd) != 0 {
        return -1;
    }
    if simd {
        swiglu(g, u, g, ntok * n_ff);
    } else {
        swiglu_scalar(g, u, g, ntok * n_ff);
    }
    matmul(td, wd, n_embd, n_ff, g, ntok, out, ms, simd)
}
