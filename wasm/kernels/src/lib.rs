//! moe-edge compute kernels for wasm32 + simd128.
//!
//! `no_std`, no allocator, no imports: the host owns linear memory and
//! passes byte offsets. Every SIMD kernel has a scalar twin (same name,
//! `_scalar` suffix) that the tests pin it against. Numerics follow
//! llama.cpp's x86 CPU path (see `docs/specs-llamacpp.md` §2-§4).

#![no_std]
#![allow(clippy::missing_safety_doc, clippy::too_many_arguments, unused_unsafe)]

mod abi;
mod act;
mod attention;
mod dequant;
mod dot;
mod ffn;
mod formats;
mod group;
mod half;
mod kquants;
mod lowbit;
mod mathf;
mod matmul;
mod norm;
mod packed;
mod packed_bf16;
mod packed_f16;
#[cfg(moe_relaxed)]
mod packed_iq4nl;
#[cfg(moe_relaxed)]
mod packed_iq4xs;
#[cfg(moe_relaxed)]
mod packed_q2k;
#[cfg(moe_relaxed)]
mod packed_q3k;
#[cfg(moe_relaxed)]
mod packed_q5k;
#[cfg(moe_relaxed)]
mod packed_legacy;
#[cfg(moe_relaxed)]
mod packed_mxfp4;
#[cfg(moe_relaxed)]
mod packed_q6k;
mod quantize;
#[cfg(moe_relaxed)]
mod relaxed;
mod rope;
mod simd;
mod tiles;
mod types;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
