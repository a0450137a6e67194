//! One definition per tensor type: the table every standard-layout dispatch
//! reads (the role of ggml's `type_traits` / `type_traits_cpu`).
//!
//! A row gives the block geometry, the activation format matmuls convert to
//! (llama.cpp's `vec_dot_type`), the scalar row dot (the `_scalar` twin),
//! the SIMD micro-kernels for one weight row × 1..4 tokens, and the row
//! dequantizer. `types::block_geom`, `matmul::{act_row_bytes, prepare_act,
//! matmul_prepared}`, `tiles::ext_row_bytes` and `dequant::dequantize_row`
//! all derive from it, so a new type is one row here plus its kernels.
//! (The packed layouts — F16, Q8_0, Q4_0, Q4_K in `packed.rs`, `group.rs`,
//! `relaxed.rs` — keep their own per-layout dispatch.)

use crate::dequant::dequant;
use crate::dot::*;
use crate::kquants::*;
use crate::lowbit::{self, *};
use crate::tiles::*;
use crate::types::*;

/// Activation format of a weight type's matmul (`vec_dot_type`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Act {
    /// f32 values (F32 weights; F16/BF16 weights get the f32 image of the
    /// activations rounded to their type, see `prepare_act`).
    F32,
    /// Rounded to f16, kept as f32.
    F16,
    /// Rounded to bf16, kept as f32.
    BF16,
    /// Q8_0 blocks (34 B / 32), expanded for the SIMD kernels by `expand_q8`.
    Q8_0,
    /// Q8_1 blocks (36 B / 32), `expand_q8(.., true, ..)`.
    Q8_1,
    /// Q8_K blocks (292 B / 256), `expand_q8k`.
    Q8_K,
}

impl Act {
    /// (elements, bytes) of one converted activation block.
    pub const fn geom(self) -> (usize, usize) {
        match self {
            Act::F32 | Act::F16 | Act::BF16 => (1, 4),
            Act::Q8_0 => (32, 34),
            Act::Q8_1 => (32, 36),
            Act::Q8_K => (256, 292),
        }
    }
}

/// Scalar row dot: (weight row, converted activation row, elements).
pub type DotFn = unsafe fn(*const u8, *const u8, usize) -> f32;
/// One standard-layout weight row × `n` tokens (entry `n − 1`):
/// (weight row, blocks in the row, activations (expanded for quantized
/// formats), bytes per activation row, out, out stride in f32).
pub type TileFn = unsafe fn(*const u8, usize, *const u8, usize, *mut f32, usize);
/// Decode (one token) over two rows: (rows, blocks per row, expanded
/// activations, outputs); per row bit-identical to `tiles[0]`.
pub type Rows2Fn = unsafe fn(*const u8, *const u8, usize, *const u8, *mut f32, *mut f32);
/// Row dequantizer: (bytes, out, elements).
pub type DequantFn = unsafe fn(*const u8, *mut f32, usize);

/// The kernels of a weight type.
pub struct Kernels {
    pub act: Act,
    pub dot: DotFn,
    pub tiles: [TileFn; 4],
    /// Two-row decode kernel (two memory streams, shared activation loads), if any.
    pub rows2: Option<Rows2Fn>,
}

/// One tensor type.
pub struct Format {
    pub ty: u32,
    /// Elements per block.
    pub blk: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// Matmul kernels; None for activation-only formats (Q8_1, Q8_K).
    pub kernels: Option<Kernels>,
    pub dequant: DequantFn,
}

/// F32/F16/BF16 weight row × T tokens: one token takes the 4-accumulator
/// SIMD row dot of `dot.rs`, more the float token tile.
unsafe fn tile_float_any<const K: u32, const T: usize>(w: *const u8, n: usize, a: *const u8, arow: usize, out: *mut f32, ostride: usize) {
    if T == 1 {
        *out = match K {
            F32 => dot_f32(w, a, n),
            F16 => dot_f16(w, a, n),
            _ => dot_bf16(w, a, n),
        };
    } else {
        tile_float::<K, T>(w, n, a as *const f32, arow / 4, out, ostride)
    }
}

unsafe fn no_dequant(_: *const u8, _: *mut f32, _: usize) {}

// Two-row decode entry point: scalar arguments, the kernel inlined into it
// (passing the row arrays through a function pointer made the kernel index
// them in memory: measured 25% slower). A two-row Q2_K / Q3_K kernel was
// measured too: Q3_K no faster, Q2_K 10% slower than the one-row tile.
unsafe fn rows2_q6k(w0: *const u8, w1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
    rows_q6k::<2>([w0, w1], nb, a, [o0, o1])
}
unsafe fn rows2_iq4_nl(w0: *const u8, w1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
    rows_legacy::<IQ4_NL, 2>([w0, w1], nb, a, [o0, o1])
}
unsafe fn rows2_mxfp4(w0: *const u8, w1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
    rows_legacy::<MXFP4, 2>([w0, w1], nb, a, [o0, o1])
}
unsafe fn rows2_iq4_xs(w0: *const u8, w1: *const u8, nb: usize, a: *const u8, o0: *mut f32, o1: *mut f32) {
    rows_iq4_xs::<2>([w0, w1], nb, a, [o0, o1])
}


macro_rules! tiles {
    ($f:ident, [$($g:tt),*]) => {
        [$f::<$($g,)* 1>, $f::<$($g,)* 2>, $f::<$($g,)* 3>, $f::<$($g,)* 4>]
    };
}

macro_rules! weight {
    ($ty:expr, $blk:expr, $bytes:expr, $act:ident, $dot:expr, $tiles:expr, $dq:expr) => {
        weight!($ty, $blk, $bytes, $act, $dot, $tiles, $dq, None)
    };
    ($ty:expr, $blk:expr, $bytes:expr, $act:ident, $dot:expr, $tiles:expr, $dq:expr, $rows2:expr) => {
        Format {
            ty: $ty,
            blk: $blk,
            bytes: $bytes,
            kernels: Some(Kernels { act: Act::$act, dot: $dot, tiles: $tiles, rows2: $rows2 }),
            dequant: $dq,
        }
    };
}

/// Every type this crate knows, one row each.
pub static FORMATS: [Format; 18] = [
    weight!(F32, 1, 4, F32, dot_f32_scalar, tiles!(tile_float_any, [F32]), dequant::<F32>),
    weight!(F16, 1, 2, F16, dot_f16_scalar, tiles!(tile_float_any, [F16]), dequant::<F16>),
    weight!(BF16, 1, 2, BF16, dot_bf16_scalar, tiles!(tile_float_any, [BF16]), dequant::<BF16>),
    weight!(Q8_0, 32, 34, Q8_0, dot_q8_0_scalar, tiles!(tile_legacy, [Q8_0]), dequant::<Q8_0>),
    weight!(Q4_0, 32, 18, Q8_0, dot_q4_0_scalar, tiles!(tile_legacy, [Q4_0]), dequant::<Q4_0>),
    weight!(Q4_1, 32, 20, Q8_1, dot_q4_1_scalar, tiles!(tile_legacy, [Q4_1]), dequant::<Q4_1>),
    weight!(Q5_0, 32, 22, Q8_0, dot_q5_0_scalar, tiles!(tile_legacy, [Q5_0]), dequant::<Q5_0>),
    weight!(Q5_1, 32, 24, Q8_1, dot_q5_1_scalar, tiles!(tile_legacy, [Q5_1]), dequant::<Q5_1>),
    weight!(Q2_K, 256, 84, Q8_K, dot_q2_k_scalar, tiles!(tile_q23k, [2]), lowbit::dequant::<Q2_K>),
    weight!(Q3_K, 256, 110, Q8_K, dot_q3_k_scalar, tiles!(tile_q23k, [3]), lowbit::dequant::<Q3_K>),
    weight!(Q4_K, 256, 144, Q8_K, dot_q4_k_scalar, tiles!(tile_q45k, [Q4_K]), dequant::<Q4_K>),
    weight!(Q5_K, 256, 176, Q8_K, dot_q5_k_scalar, tiles!(tile_q45k, [Q5_K]), dequant::<Q5_K>),
    weight!(Q6_K, 256, 210, Q8_K, dot_q6_k_scalar, tiles!(tile_q6k, []), dequant::<Q6_K>, Some(rows2_q6k)),
    weight!(IQ4_NL, 32, 18, Q8_0, dot_iq4_nl_scalar, tiles!(tile_legacy, [IQ4_NL]), lowbit::dequant::<IQ4_NL>, Some(rows2_iq4_nl)),
    weight!(IQ4_XS, 256, 136, Q8_K, dot_iq4_xs_scalar, tiles!(tile_iq4_xs, []), lowbit::dequant::<IQ4_XS>, Some(rows2_iq4_xs)),
    weight!(MXFP4, 32, 17, Q8_0, dot_mxfp4_scalar, tiles!(tile_legacy, [MXFP4]), lowbit::dequant::<MXFP4>, Some(rows2_mxfp4)),
    Format { ty: Q8_1, blk: 32, bytes: 36, kernels: None, dequant: no_dequant },
    Format { ty: Q8_K, blk: 256, bytes: 292, kernels: None, dequant: no_dequant },
];

/// The row of type `ty` (`ty` without the packed flag), or None.
#[inline]
pub fn format(ty: u32) -> Option<&'static Format> {
    let mut i = 0;
    while i < FORMATS.len() {
        if FORMATS[i].ty == ty {
            return Some(&FORMATS[i]);
        }
        i += 1;
    }
    None
}

/// The kernels of weight type `ty`, or None (unknown or activation-only).
#[inline]
pub fn kernels(ty: u32) -> Option<&'static Kernels> {
    match format(ty) {
        Some(f) => f.kernels.as_ref(),
        None => None,
    }
}
