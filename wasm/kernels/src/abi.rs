//! The exported C ABI. Every pointer is a byte offset into linear memory,
//! every count a u32. Kernels with a SIMD body export a `_scalar` twin with
//! the same signature. Functions returning i32 give 0 on success and -1 for
//! an unsupported type or shape; they never trap on bad input shapes.

use crate::attention::AttnShape;
use crate::*;

/// Version of this ABI; bumped on any signature change.
#[no_mangle]
pub extern "C" fn abi_version() -> u32 {
    3
}

extern "C" {
    static __heap_base: u8;
}

/// First byte after static data and the stack: where the host's arena may start.
#[no_mangle]
pub extern "C" fn heap_base() -> u32 {
    unsafe { &__heap_base as *const u8 as u32 }
}

/// 1 if `ty` is a weight type `matmul`/`get_rows` accept.
#[no_mangle]
pub extern "C" fn type_supported(ty: u32) -> u32 {
    (matmul::act_row_bytes(ty, 256) > 0) as u32
}

/// Bytes of one converted activation row for weight type `ty`; 0 if unsupported.
#[no_mangle]
pub extern "C" fn act_row_bytes(ty: u32, cols: u32) -> u32 {
    matmul::act_row_bytes(ty, cols as usize) as u32
}

/// Bytes of one weight row; 0 if unsupported.
#[no_mangle]
pub extern "C" fn weight_row_bytes(ty: u32, cols: u32) -> u32 {
    types::row_bytes(ty, cols as usize).unwrap_or(0) as u32
}

macro_rules! twin_rows {
    ($simd:ident, $scalar:ident, $path:path, $spath:path, $t:ty) => {
        /// See the kernel module; `n` a whole number of blocks.
        #[no_mangle]
        pub unsafe extern "C" fn $simd(x: *const f32, y: *mut $t, n: u32) {
            $path(x, y, n as usize)
        }
        /// Scalar twin.
        #[no_mangle]
        pub unsafe extern "C" fn $scalar(x: *const f32, y: *mut $t, n: u32) {
            $spath(x, y, n as usize)
        }
    };
}

twin_rows!(quantize_q8_0, quantize_q8_0_scalar, quantize::quantize_q8_0, quantize::quantize_q8_0_scalar, u8);
twin_rows!(quantize_q8_1, quantize_q8_1_scalar, quantize::quantize_q8_1, quantize::quantize_q8_1_scalar, u8);
twin_rows!(quantize_q8_k, quantize_q8_k_scalar, quantize::quantize_q8_k, quantize::quantize_q8_k_scalar, u8);
twin_rows!(round_f16, round_f16_scalar, half::round_f16, half::round_f16_scalar, u16);
twin_rows!(round_bf16, round_bf16_scalar, half::round_bf16, half::round_bf16_scalar, u16);

/// f16 bits → f32.
#[no_mangle]
pub unsafe extern "C" fn f16_to_f32(h: *const u16, y: *mut f32, n: u32) {
    half::f16_to_f32_row(h, y, n as usize)
}

/// `y[i] = expf(x[i])` (SIMD), exposed for accuracy tests.
#[no_mangle]
pub unsafe extern "C" fn exp_f32(x: *const f32, y: *mut f32, n: u32) {
    let n = n as usize;
    let mut i = 0;
    while i + 4 <= n {
        simd::stf(y.add(i), mathf::expf_x4(simd::ldf(x.add(i))));
        i += 4;
    }
    while i < n {
        *y.add(i) = mathf::expf(*x.add(i));
        i += 1;
    }
}

/// Scalar twin of [`exp_f32`].
#[no_mangle]
pub unsafe extern "C" fn exp_f32_scalar(x: *const f32, y: *mut f32, n: u32) {
    for i in 0..n as usize {
        *y.add(i) = mathf::expf(*x.add(i));
    }
}

/// Convert `ntok` activation rows to the vec_dot_type of `ty` (F32: copy;
/// F16/BF16: f32 image of the rounded values; else Q8_0/Q8_1/Q8_K blocks).
#[no_mangle]
pub unsafe extern "C" fn prepare_act(ty: u32, x: *const f32, cols: u32, ntok: u32, dst: *mut u8) -> i32 {
    if matmul::prepare_act(ty, x, cols as usize, ntok as usize, dst, true) { 0 } else { -1 }
}

/// Scalar twin of [`prepare_act`].
#[no_mangle]
pub unsafe extern "C" fn prepare_act_scalar(ty: u32, x: *const f32, cols: u32, ntok: u32, dst: *mut u8) -> i32 {
    if matmul::prepare_act(ty, x, cols as usize, ntok as usize, dst, false) { 0 } else { -1 }
}

/// Scratch bytes `matmul` needs for `ntok` tokens (also enough for `matmul_prepared`).
#[no_mangle]
pub extern "C" fn matmul_scratch_bytes(ty: u32, cols: u32, ntok: u32) -> u32 {
    matmul::scratch_bytes(ty, cols as usize, ntok as usize) as u32
}

/// `out[t*rows+r] = W[r]·act[t]` on prepared activations; `scratch` as for `matmul`.
#[no_mangle]
pub unsafe extern "C" fn matmul_prepared(
    ty: u32, w: *const u8, rows: u32, cols: u32, act: *const u8, ntok: u32, out: *mut f32, scratch: *mut u8,
) -> i32 {
    matmul::matmul_prepared(ty, w, rows as usize, cols as usize, act, ntok as usize, out, scratch, true)
}

/// [`matmul_prepared`] writing `out[t*ldo+r]` (`ldo ≥ rows`; -1 otherwise):
/// one thread's row range of a larger matrix, bit-identical to the whole call.
#[no_mangle]
pub unsafe extern "C" fn matmul_prepared_ld(
    ty: u32, w: *const u8, rows: u32, cols: u32, act: *const u8, ntok: u32, out: *mut f32, ldo: u32, scratch: *mut u8,
) -> i32 {
    matmul::matmul_prepared_ld(ty, w, rows as usize, cols as usize, act, ntok as usize, out, ldo as usize, scratch, true)
}

/// Scalar twin of [`matmul_prepared`].
#[no_mangle]
pub unsafe extern "C" fn matmul_prepared_scalar(
    ty: u32, w: *const u8, rows: u32, cols: u32, act: *const u8, ntok: u32, out: *mut f32, scratch: *mut u8,
) -> i32 {
    matmul::matmul_prepared(ty, w, rows as usize, cols as usize, act, ntok as usize, out, scratch, false)
}

/// Full matmul; `scratch` holds `matmul_scratch_bytes(ty, cols, ntok)` bytes.
#[no_mangle]
pub unsafe extern "C" fn matmul(
    ty: u32, w: *const u8, rows: u32, cols: u32, x: *const f32, ntok: u32, out: *mut f32, scratch: *mut u8,
) -> i32 {
    matmul::matmul(ty, w, rows as usize, cols as usize, x, ntok as usize, out, scratch, true)
}

/// Scalar twin of [`matmul`].
#[no_mangle]
pub unsafe extern "C" fn matmul_scalar(
    ty: u32, w: *const u8, rows: u32, cols: u32, x: *const f32, ntok: u32, out: *mut f32, scratch: *mut u8,
) -> i32 {
    matmul::matmul(ty, w, rows as usize, cols as usize, x, ntok as usize, out, scratch, false)
}

/// Dequantize rows `ids[i]` of a `cols`-wide matrix into `out[i*cols..]`.
/// Ids are not bounds-checked here (the host checks them).
#[no_mangle]
pub unsafe extern "C" fn get_rows(ty: u32, w: *const u8, cols: u32, ids: *const i32, n: u32, out: *mut f32) -> i32 {
    let cols = cols as usize;
    if ty & packed::PACKED != 0 {
        return dequant::get_rows_packed(ty & !packed::PACKED, w, cols, ids, n as usize, out);
    }
    let rb = match types::row_bytes(ty, cols) {
        Some(b) => b,
        None => return -1,
    };
    for i in 0..n as usize {
        let r = *ids.add(i) as usize;
        if !dequant::dequantize_row(ty, w.add(r * rb), out.add(i * cols), cols) {
            return -1;
        }
    }
    0
}

/// RMSNorm of `rows` rows of `n`; `w` = 0 for no weight.
#[no_mangle]
pub unsafe extern "C" fn rmsnorm(x: *const f32, n: u32, rows: u32, eps: f32, w: *const f32, out: *mut f32) {
    norm::rmsnorm(x, n as usize, rows as usize, eps, w, out)
}

/// Scalar twin of [`rmsnorm`].
#[no_mangle]
pub unsafe extern "C" fn rmsnorm_scalar(x: *const f32, n: u32, rows: u32, eps: f32, w: *const f32, out: *mut f32) {
    norm::rmsnorm_scalar(x, n as usize, rows as usize, eps, w, out)
}

/// In-place RoPE; `cs` = per token `n_rot/2` cos then `n_rot/2` sin.
#[no_mangle]
pub unsafe extern "C" fn rope(x: *mut f32, ntok: u32, nheads: u32, hd: u32, nrot: u32, mode: u32, cs: *const f32) {
    rope::rope(x, ntok as usize, nheads as usize, hd as usize, nrot as usize, mode, cs)
}

/// Scalar twin of [`rope`].
#[no_mangle]
pub unsafe extern "C" fn rope_scalar(x: *mut f32, ntok: u32, nheads: u32, hd: u32, nrot: u32, mode: u32, cs: *const f32) {
    rope::rope_scalar(x, ntok as usize, nheads as usize, hd as usize, nrot as usize, mode, cs)
}

/// `out = silu(g)·u` over `n`.
#[no_mangle]
pub unsafe extern "C" fn swiglu(g: *const f32, u: *const f32, out: *mut f32, n: u32) {
    act::swiglu(g, u, out, n as usize)
}

/// Scalar twin of [`swiglu`].
#[no_mangle]
pub unsafe extern "C" fn swiglu_scalar(g: *const f32, u: *const f32, out: *mut f32, n: u32) {
    act::swiglu_scalar(g, u, out, n as usize)
}

/// Scratch bytes the attention kernels need.
#[no_mangle]
pub extern "C" fn attention_scratch_bytes(n_ctx: u32, nh: u32, nkv: u32, hdk: u32, hdv: u32) -> u32 {
    attention::scratch_bytes(n_ctx as usize, nh as usize, nkv as usize, hdk as usize, hdv as usize) as u32
}

/// The shape of one attention call from the exports' u32 arguments.
#[inline(always)]
fn attn_shape(n_ctx: u32, start: u32, ntok: u32, nh: u32, nkv: u32, hdk: u32, hdv: u32, scale: f32) -> AttnShape {
    AttnShape {
        n_ctx: n_ctx as usize, start: start as usize, ntok: ntok as usize, nh: nh as usize,
        nkv: nkv as usize, hdk: hdk as usize, hdv: hdv as usize, scale,
    }
}

macro_rules! attn_export {
    ($name:ident, $f:path) => {
        /// Causal GQA attention over one layer's f16 KV cache (see module docs).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            kc: *mut u16, vc: *mut u16, n_ctx: u32, start: u32, ntok: u32,
            q: *const f32, k: *const f32, v: *const f32,
            nh: u32, nkv: u32, hdk: u32, hdv: u32, scale: f32, out: *mut f32, scratch: *mut u8,
        ) -> i32 {
            let s = attn_shape(n_ctx, start, ntok, nh, nkv, hdk, hdv, scale);
            $f(kc, vc, q, k, v, out, scratch, s)
        }
    };
}

attn_export!(attention, attention::attention);

/// Attention for KV heads `[kv0, kv1)` only; stores the new K/V rows first
/// when `store` is 1 (a thread's share; bit-identical to `attention`, or with
/// `sinks` (0: none) and `window` (0: full) to `attention_ext`).
#[no_mangle]
pub unsafe extern "C" fn attention_heads(
    kc: *mut u16, vc: *mut u16, n_ctx: u32, start: u32, ntok: u32,
    q: *const f32, k: *const f32, v: *const f32,
    nh: u32, nkv: u32, hdk: u32, hdv: u32, scale: f32, out: *mut f32, scratch: *mut u8,
    kv0: u32, kv1: u32, store: u32, sinks: *const f32, window: u32,
) -> i32 {
    let s = attn_shape(n_ctx, start, ntok, nh, nkv, hdk, hdv, scale);
    attention::attention_heads_ext(
        kc, vc, q, k, v, out, scratch, s, kv0 as usize, kv1 as usize, store != 0, sinks, window as usize,
    )
}
attn_export!(attention_scalar, attention::attention_scalar);

macro_rules! attn_ext_export {
    ($name:ident, $f:expr) => {
        /// Attention with per-head sink logits (`sinks`: `nh` f32, 0 for none) and a sliding
        /// window (`window` > 0: a row at position p sees keys at positions > p − window).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            kc: *mut u16, vc: *mut u16, n_ctx: u32, start: u32, ntok: u32,
            q: *const f32, k: *const f32, v: *const f32,
            nh: u32, nkv: u32, hdk: u32, hdv: u32, scale: f32, out: *mut f32, scratch: *mut u8,
            sinks: *const f32, window: u32,
        ) -> i32 {
            let s = attn_shape(n_ctx, start, ntok, nh, nkv, hdk, hdv, scale);
            $f(kc, vc, q, k, v, out, scratch, s, sinks, window as usize)
        }
    };
}

attn_ext_export!(attention_ext, |kc, vc, q, k, v, out, scratch, s, sinks, window| {
    // every KV head, storing the new rows first: `attention_heads` over the whole layer
    attention::attention_heads_ext(kc, vc, q, k, v, out, scratch, s, 0, usize::MAX, true, sinks, window)
});
attn_ext_export!(attention_ext_scalar, attention::attention_scalar_ext);

/// Scratch bytes `ffn_swiglu` needs.
#[no_mangle]
pub extern "C" fn ffn_swiglu_scratch_bytes(tg: u32, tu: u32, td: u32, n_embd: u32, n_ff: u32, ntok: u32) -> u32 {
    ffn::ffn_scratch_bytes(tg, tu, td, n_embd as usize, n_ff as usize, ntok as usize) as u32
}

macro_rules! ffn_export {
    ($name:ident, $simd:expr) => {
        /// Fused SwiGLU expert FFN: `out = down · (silu(gate·x) ⊙ up·x)`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            tg: u32, wg: *const u8, tu: u32, wu: *const u8, td: u32, wd: *const u8,
            n_embd: u32, n_ff: u32, x: *const f32, ntok: u32, out: *mut f32, scratch: *mut u8,
        ) -> i32 {
            ffn::ffn_swiglu(tg, wg, tu, wu, td, wd, n_embd as usize, n_ff as usize, x, ntok as usize, out, scratch, $simd)
        }
    };
}

ffn_export!(ffn_swiglu, true);
ffn_export!(ffn_swiglu_scalar, false);

/// Kernel family of this module: 1 = simd128, 2 = simd128 + relaxed SIMD.
/// Packed byte orders are private to a family.
#[no_mangle]
pub extern "C" fn kernel_variant() -> u32 {
    packed::VARIANT
}

/// Relaxed build: set (`mode` 0 = split i16 dot, 1 = fused
/// `i32x4.relaxed_dot_i8x16_i7x16_add_s`) and return the dot form of the
/// relaxed-SIMD kernels; any other `mode` only reads it. Both forms give the
/// same bits; the host picks the faster one. simd128 build: always 0.
#[no_mangle]
pub extern "C" fn relaxed_dot_mode(mode: u32) -> u32 {
    #[cfg(moe_relaxed)]
    {
        crate::relaxed::dot_mode(mode)
    }
    #[cfg(not(moe_relaxed))]
    {
        let _ = mode;
        0
    }
}

/// Scratch bytes `pack_weights` needs for a matrix of type `ty` with `cols`
/// columns (0: the type has no packed layout).
#[no_mangle]
pub extern "C" fn pack_scratch_bytes(ty: u32, cols: u32) -> u32 {
    packed::scratch_bytes(ty, cols as usize) as u32
}

/// Repack a `rows × cols` matrix of type `ty` in place into the packed layout
/// (`inverse` = 1: back to the standard one). Returns 0 when done, 1 when
/// packing is refused (the matrix does not meet a fast path's precondition;
/// bytes untouched), -1 for an unsupported type or shape. Pass `ty | 0x100`
/// to `matmul`/`matmul_prepared`/`ffn_swiglu`/`get_rows` for a packed matrix.
#[no_mangle]
pub unsafe extern "C" fn pack_weights(ty: u32, w: *mut u8, rows: u32, cols: u32, tmp: *mut u8, inverse: u32) -> i32 {
    packed::pack(ty, w, rows as usize, cols as usize, tmp, inverse != 0)
}
