/**
 * Non-flash causal GQA attention over an f16 KV cache (llama.cpp
 * `build_attn_mha`, as core/backend/ref_backend.ts evaluates it): one
 * workgroup per (head, token); scores `s = (q16·k)·scale` with Q already
 * rounded to f16 on the CPU, softmax with ggml's `v_expf` and `·(1/sum)`,
 * probabilities rounded to f16, `out = Σ p16·V`. Both dot products follow
 * ggml's `ggml_vec_dot_f16` order (the non-flash graph's `mul_mat(K, Q)` and
 * `mul_mat(Vᵀ, kq)`): 32 f32 lanes, the AVX2 reduction, then the tail (ggml
 * adds the tail in double, here in f32). The softmax sum is an f32 tree over
 * the workgroup (ggml: f32 8-lane chunks summed in double). Masked positions
 * are skipped. Scores and probabilities live in a storage scratch row per
 * (token, head), so the context length is not limited by workgroup memory.
 *
 * The cache layer buffer holds `K[nCtx][kRowPad]` then (at a 256-byte aligned
 * offset) `V[nCtx][vRowPad]`, both fp16 packed two per u32; row lengths are
 * padded to even so every position starts on a word.
 *
 * @module
 */

import { WGSL_EXPF, WGSL_F16, WGSL_REDUCE_V4 as REDUCE_V4 } from "./common.ts";

const ACC = Array.from({ length: 8 }, (_, v) => `  var a${v} = vec4f(0.0);\n`).join("");
const ACC_ARGS = Array.from({ length: 8 }, (_, v) => `a${v}`).join(", ");
/** `a{v} += vec4(term(v,0..3))` for the 8 accumulators of one 32-element step. */
function lanes(term: (v: number, k: number) => string): string {
  return Array.from({ length: 8 }, (_, v) => {
    const t = [0, 1, 2, 3].map((k) => term(v, k));
    return `    a${v} = a${v} + vec4f(${t.join(", ")});`;
  }).join("\n");
}

/** Workgroup size of the attention kernel. */
export const ATTN_WG = 64;

/** The attention kernel. */
export const ATTENTION_WGSL = /* wgsl */ `
struct P {
  n_tok: u32, n_heads: u32, n_kv_heads: u32, dk: u32,
  dv: u32, start: u32, k_row: u32, v_row: u32,   // k_row/v_row: padded halves per position
  s_stride: u32, scale: f32, t0: u32, _1: u32,   // t0: first token of this dispatch
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<u32>;
@group(0) @binding(3) var<storage, read> V: array<u32>;
@group(0) @binding(4) var<storage, read_write> S: array<f32>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
var<workgroup> red: array<f32, ${ATTN_WG}>;
${WGSL_F16}
${WGSL_EXPF}
fn half_at_k(i: u32) -> f32 { return h2f((K[i >> 1u] >> ((i & 1u) << 4u)) & 0xffffu); }
fn half_at_v(i: u32) -> f32 { return h2f((V[i >> 1u] >> ((i & 1u) << 4u)) & 0xffffu); }
${REDUCE_V4}
// q16 · K row (ggml_vec_dot_f16 order: 32 f32 lanes, reduce, then the tail)
fn dot_qk(qo: u32, ko: u32) -> f32 {
  let np = p.dk & ~31u;
${ACC}  for (var i = 0u; i < np; i += 32u) {
${lanes((v, k) => `Q[qo + i + ${4 * v + k}u] * half_at_k(ko + i + ${4 * v + k}u)`)}
  }
  var s = reduce_v4(${ACC_ARGS});
  for (var i = np; i < p.dk; i++) { s = s + Q[qo + i] * half_at_k(ko + i); }
  return s;
}
// p16 · V column over n positions (same order: ggml's kqv = mul_mat(Vᵀ, kq))
fn dot_pv(so: u32, vo: u32, n: u32) -> f32 {
  let np = n & ~31u;
${ACC}  for (var j = 0u; j < np; j += 32u) {
${lanes((v, k) => `S[so + j + ${4 * v + k}u] * half_at_v((j + ${4 * v + k}u) * p.v_row + vo)`)}
  }
  var s = reduce_v4(${ACC_ARGS});
  for (var j = np; j < n; j++) { s = s + S[so + j] * half_at_v(j * p.v_row + vo); }
  return s;
}

@compute @workgroup_size(${ATTN_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  let t = p.t0 + wg.y;
  let n = p.start + t + 1u;   // causal: positions <= own
  let kvh = h / (p.n_heads / p.n_kv_heads);
  let qo = (t * p.n_heads + h) * p.dk;
  let so = (wg.y * p.n_heads + h) * p.s_stride;

  var m = -3.4028234663852886e38;
  for (var j = li; j < n; j += ${ATTN_WG}u) {
    let s = dot_qk(qo, j * p.k_row + kvh * p.dk) * p.scale;
    S[so + j] = s;
    m = max(m, s);
  }
  red[li] = m;
  workgroupBarrier();
  for (var st = ${ATTN_WG / 2}u; st > 0u; st = st >> 1u) {
    if (li < st) { red[li] = max(red[li], red[li + st]); }
    workgroupBarrier();
  }
  let mx = red[0];
  workgroupBarrier();

  var sum = 0.0;
  for (var j = li; j < n; j += ${ATTN_WG}u) {
    let e = expf_v(S[so + j] - mx);
    S[so + j] = e;
    sum = sum + e;
  }
  red[li] = sum;
  workgroupBarrier();
  for (var st = ${ATTN_WG / 2}u; st > 0u; st = st >> 1u) {
    if (li < st) { red[li] = red[li] + red[li + st]; }
    workgroupBarrier();
  }
  let inv = 1.0 / red[0];
  for (var j = li; j < n; j += ${ATTN_WG}u) { S[so + j] = round_f16(S[so + j] * inv); }
  storageBarrier();
  workgroupBarrier();

  let oo = (t * p.n_heads + h) * p.dv;
  for (var i = li; i < p.dv; i += ${ATTN_WG}u) { O[oo + i] = dot_pv(so, kvh * p.dv + i, n); }
}
`;
