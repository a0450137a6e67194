/**
 * Row-wise and elementwise kernels: `get_rows` (dequantize embedding rows,
 * exact), RMSNorm, RoPE (rotation only: cos/sin tables come from the CPU),
 * SwiGLU, and a byte-patch kernel for slot writes that are not word aligned.
 *
 * @module
 */

import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { WGSL_EXPF, WGSL_F16, wgslByteLoads } from "./common.ts";

/** Workgroup size of the 1-D kernels (x dimension). */
export const WG = 64;

const DEQUANT: ReadonlyMap<GgmlType, string> = new Map<GgmlType, string>([
  [GgmlType.F32, `fn deq(rb: u32, c: u32) -> f32 { return bitcast<f32>(w_u32(rb + 4u * c)); }`],
  [GgmlType.F16, `fn deq(rb: u32, c: u32) -> f32 { return h2f(w_u16(rb + 2u * c)); }`],
  [
    GgmlType.Q8_0,
    `fn deq(rb: u32, c: u32) -> f32 {
  let bb = rb + (c / 32u) * 34u;
  let q = i32(w_u8(bb + 2u + c % 32u) << 24u) >> 24u;
  return f32(q) * h2f(w_u16(bb));
}`,
  ],
  [
    GgmlType.Q4_0,
    `fn deq(rb: u32, c: u32) -> f32 {
  let bb = rb + (c / 32u) * 18u;
  let j = c % 32u;
  let byte = w_u8(bb + 2u + j % 16u);
  let nib = select(byte >> 4u, byte & 15u, j < 16u);
  return f32(i32(nib) - 8i) * h2f(w_u16(bb));
}`,
  ],
]);

/** Weight formats with a WGSL `get_rows` kernel. */
export const GPU_GET_ROWS_TYPES: readonly GgmlType[] = [...DEQUANT.keys()];

/** `get_rows` for one row per dispatch: `O[out_off + c] = deq(row, c)`. */
export function getRowsWgsl(type: GgmlType): string {
  const deq = DEQUANT.get(type);
  if (deq === undefined) throw new RangeError(`no WGSL get_rows kernel for ggml type ${type}`);
  return /* wgsl */ `
struct P { w_off: u32, cols: u32, out_off: u32, _0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
${WGSL_F16}
${wgslByteLoads("W", "w")}
${deq}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let c = g.x + g.y * 65535u * ${WG}u;
  if (c >= p.cols) { return; }
  O[p.out_off + c] = deq(p.w_off, c);
}
`;
}

/** RMSNorm, one workgroup per row (`rows` may span a 2-D grid of 65535 × k). */
export const RMSNORM_WGSL = /* wgsl */ `
struct P { n: u32, rows: u32, eps: f32, has_w: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wg.x + wg.y * 65535u;
  if (row >= p.rows) { return; }
  let o = row * p.n;
  var s = 0.0;
  for (var i = li; i < p.n; i += ${WG}u) { let v = X[o + i]; s = s + v * v; }
  red[li] = s;
  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st = st >> 1u) {
    if (li < st) { red[li] = red[li] + red[li + st]; }
    workgroupBarrier();
  }
  let mean = red[0] / f32(p.n);
  let scale = 1.0 / sqrt(mean + p.eps);
  for (var i = li; i < p.n; i += ${WG}u) {
    let v = X[o + i] * scale;
    Y[o + i] = select(v, v * Wt[i], p.has_w != 0u);
  }
}
`;

/**
 * RoPE rotation in place; `T` holds per token `nRot/2` cos then `nRot/2` sin
 * (computed on the CPU with ggml's iterative f32 theta).
 */
export const ROPE_WGSL = /* wgsl */ `
struct P { n_tok: u32, n_heads: u32, head_dim: u32, n_rot: u32, mode: u32, _0: u32, _1: u32, _2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> T: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let half = p.n_rot / 2u;
  let t = g.y;
  let h = g.x / half;
  let j = g.x % half;
  if (t >= p.n_tok || h >= p.n_heads) { return; }
  let o = (t * p.n_heads + h) * p.head_dim;
  var i0 = o + j;
  var i1 = i0 + half;
  if (p.mode == 0u) { i0 = o + 2u * j; i1 = i0 + 1u; }
  let a = X[i0];
  let b = X[i1];
  let c = T[t * p.n_rot + j];
  let s = T[t * p.n_rot + half + j];
  X[i0] = a * c - b * s;
  X[i1] = a * s + b * c;
}
`;

/**
 * SwiGLU `silu(g)·u`. ggml evaluates 8-lane bodies with its `v_expf`
 * polynomial and row tails (`rowLen % 8`) with libm `expf`; here both use the
 * polynomial (≤ 1.5 ulp from libm).
 */
export const SWIGLU_WGSL = /* wgsl */ `
struct P { len: u32, row_len: u32, nx: u32, _0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
${WGSL_EXPF}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let i = g.x + g.y * p.nx * ${WG}u;
  if (i >= p.len) { return; }
  Y[i] = silu_v(G[i]) * U[i];
}
`;

/**
 * Byte patch: copy `n` bytes of `S` (from byte 0) to byte `dst` of `D`,
 * one invocation per destination word, keeping the bytes around the range.
 */
export const PATCH_WGSL = /* wgsl */ `
struct P { dst: u32, n: u32, w0: u32, nw: u32, nx: u32, _0: u32, _1: u32, _2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> D: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
fn s_u8(b: u32) -> u32 { return (S[b >> 2u] >> ((b & 3u) << 3u)) & 0xffu; }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let k = g.x + g.y * p.nx * ${WG}u;
  if (k >= p.nw) { return; }
  let w = p.w0 + k;
  var v = D[w];
  for (var j = 0u; j < 4u; j++) {
    let b = 4u * w + j;
    if (b >= p.dst && b < p.dst + p.n) {
      let sh = j * 8u;
      v = (v & ~(0xffu << sh)) | (s_u8(b - p.dst) << sh);
    }
  }
  D[w] = v;
}
`;
