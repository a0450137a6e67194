/**
 * Matmul kernels, one per weight format: one invocation computes one output
 * `(row, token)` by walking the row's blocks in order, so the f32 operations
 * happen in the reference kernel's order (core/tensor/quant_legacy_dot.ts,
 * quant_float.ts): integer block dots are exact (`dot4I8Packed`), block scales
 * are applied as `sumi·(dx·dy)` (Q8_0) or `(sumi·dx)·dy` (Q4_0), F32/F16 keep
 * ggml's 32 AVX2 lane accumulators and their reduction tree.
 *
 * Activations arrive already converted on the CPU (core's `quantizeActivation`,
 * llama.cpp's x86 rule) in a word-aligned layout:
 * - Q8_0 (for Q8_0/Q4_0 weights): per block 9 words, `[d as f32 bits, q0..q31 as 8 packed i8 words]`;
 * - F16: f32 images of the f16-rounded values; F32: raw f32.
 *
 * Weights are read from the slot's bytes as they are in GGUF (any byte offset).
 *
 * @module
 */

import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { WGSL_F16, WGSL_REDUCE_V4, wgslByteLoads } from "./common.ts";

/** Words per 32-element block of the GPU Q8_0 activation layout. */
export const ACT_Q8_WORDS_PER_BLOCK = 9;

/** Uniform layout shared by every matmul kernel (8 × u32). */
const PARAMS = /* wgsl */ `
struct P {
  rows: u32,       // rows in this dispatch
  cols: u32,
  ntok: u32,       // tokens in this dispatch
  w_off: u32,      // byte offset of row 0 inside the bound weight range
  row_bytes: u32,
  out_stride: u32, // rows of the whole matrix (output row length per token)
  r0: u32,         // first row of this dispatch in the whole matrix
  a_stride: u32,   // activation words (or floats) per token
  a_off: u32,      // words before this dispatch's first token in the bound activations
  o_off: u32,      // floats before this dispatch's first token in the bound output
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
`;

const MAIN = /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let r = g.x;
  let t = g.y;
  if (r >= p.rows || t >= p.ntok) { return; }
  O[p.o_off + t * p.out_stride + p.r0 + r] =
    dot_row(p.w_off + r * p.row_bytes, p.a_off + t * p.a_stride);
}
`;

/** `n` consecutive words `W[i0]..` named `w0..`, then `n - 1` funnel-shifted words `f0..` at bit `s`. */
function loadWords(n: number): string {
  let out = "";
  for (let k = 0; k < n; k++) out += `    let w${k} = W[i0 + ${k}u];\n`;
  for (let k = 0; k + 1 < n; k++) out += `    let f${k} = fsh(w${k}, w${k + 1}, s);\n`;
  return out;
}

const FSH = /* wgsl */ `
// bytes [s/8, s/8 + 4) of the pair (a, b), little-endian
fn fsh(a: u32, b: u32, s: u32) -> u32 { return select((a >> s) | (b << (32u - s)), a, s == 0u); }
`;

const DOT_Q8_0 = /* wgsl */ `
@group(0) @binding(2) var<storage, read> A: array<u32>;
fn dot_row(rb: u32, ab: u32) -> f32 {
  let nb = p.cols / 32u;
  var sumf = 0.0;
  for (var b = 0u; b < nb; b++) {
    let wb = rb + b * 34u;
    let ai = ab + b * 9u;
    let i0 = (wb + 2u) >> 2u;
    let s = ((wb + 2u) & 3u) << 3u;
${loadWords(9)}    let sumi = ${
  Array.from({ length: 8 }, (_, k) => `dot4I8Packed(f${k}, A[ai + ${k + 1}u])`).join(" +\n      ")
};
    let dxy = h2f(w_u16(wb)) * bitcast<f32>(A[ai]);
    sumf = sumf + f32(sumi) * dxy;
  }
  return sumf;
}
`;

const DOT_Q4_0 = /* wgsl */ `
@group(0) @binding(2) var<storage, read> A: array<u32>;
fn dot_row(rb: u32, ab: u32) -> f32 {
  let nb = p.cols / 32u;
  var sumf = 0.0;
  for (var b = 0u; b < nb; b++) {
    let wb = rb + b * 18u;
    let ai = ab + b * 9u;
    let i0 = (wb + 2u) >> 2u;
    let s = ((wb + 2u) & 3u) << 3u;
${loadWords(5)}    // nibbles are 0..15, so (n - 8)·a = n·a - 8·a, all exact in i32
    let sumi = ${
  Array.from(
    { length: 4 },
    (_, k) =>
      `dot4I8Packed(f${k} & 0x0f0f0f0fu, A[ai + ${k + 1}u]) + ` +
      `dot4I8Packed((f${k} >> 4u) & 0x0f0f0f0fu, A[ai + ${k + 5}u])`,
  ).join(" +\n      ")
};
    let suma = ${
  Array.from({ length: 8 }, (_, k) => `dot4I8Packed(0x01010101u, A[ai + ${k + 1}u])`).join(
    " +\n      ",
  )
};
    let dx = h2f(w_u16(wb));
    let dy = bitcast<f32>(A[ai]);
    sumf = sumf + (f32(sumi - 8i * suma) * dx) * dy;
  }
  return sumf;
}
`;

function declareAcc(): string {
  return Array.from({ length: 8 }, (_, v) => `  var a${v} = vec4f(0.0);`).join("\n") + "\n";
}
const ACC_ARGS = Array.from({ length: 8 }, (_, v) => `a${v}`).join(", ");
function actVec(v: number): string {
  const i = (k: number) => `A[ab + i + ${4 * v + k}u]`;
  return `vec4f(${i(0)}, ${i(1)}, ${i(2)}, ${i(3)})`;
}

const DOT_F16 = /* wgsl */ `
@group(0) @binding(2) var<storage, read> A: array<f32>;
fn hh(w: u32) -> vec2f { return vec2f(h2f(w & 0xffffu), h2f(w >> 16u)); }
fn dot_row(rb: u32, ab: u32) -> f32 {
  let n = p.cols;
  let np = n & ~31u;
${declareAcc()}  for (var i = 0u; i < np; i += 32u) {
    let i0 = (rb + 2u * i) >> 2u;
    let s = ((rb + 2u * i) & 3u) << 3u;
${loadWords(17)}${
  // f16·f16 is exact in f32, so each lane add is the only rounding (as in ggml)
  Array.from(
    { length: 8 },
    (_, v) => `    a${v} = a${v} + vec4f(hh(f${2 * v}), hh(f${2 * v + 1})) * ${actVec(v)};`,
  ).join("\n")}
  }
  var sumf = reduce_v4(${ACC_ARGS});
  for (var i = np; i < n; i++) { sumf = sumf + h2f(w_u16(rb + 2u * i)) * A[ab + i]; }
  return sumf;
}
`;

const DOT_F32 = /* wgsl */ `
@group(0) @binding(2) var<storage, read> A: array<f32>;
fn dot_row(rb: u32, ab: u32) -> f32 {
  let n = p.cols;
  let np = n & ~31u;
${declareAcc()}  for (var i = 0u; i < np; i += 32u) {
    let i0 = (rb + 4u * i) >> 2u;
    let s = ((rb + 4u * i) & 3u) << 3u;
${loadWords(33)}${
  Array.from({ length: 8 }, (_, v) => {
    const w = [0, 1, 2, 3].map((k) => `f${4 * v + k}`).join(", ");
    return `    a${v} = fma(bitcast<vec4f>(vec4u(${w})), ${actVec(v)}, a${v});`;
  }).join("\n")
}
  }
  var sumf = reduce_v4(${ACC_ARGS});
  for (var i = np; i < n; i++) { sumf = sumf + bitcast<f32>(w_u32(rb + 4u * i)) * A[ab + i]; }
  return sumf;
}
`;

const DOTS: ReadonlyMap<GgmlType, string> = new Map<GgmlType, string>([
  [GgmlType.F32, FSH + WGSL_REDUCE_V4 + DOT_F32],
  [GgmlType.F16, FSH + WGSL_REDUCE_V4 + DOT_F16],
  [GgmlType.Q8_0, FSH + DOT_Q8_0],
  [GgmlType.Q4_0, FSH + DOT_Q4_0],
]);

/** Weight formats with a WGSL matmul kernel. */
export const GPU_MATMUL_TYPES: readonly GgmlType[] = [...DOTS.keys()];

/** WGSL source of the matmul kernel for `type` (one of {@link GPU_MATMUL_TYPES}). */
export function matmulWgsl(type: GgmlType): string {
  const dot = DOTS.get(type);
  if (dot === undefined) throw new RangeError(`no WGSL matmul kernel for ggml type ${type}`);
  return PARAMS + WGSL_F16 + wgslByteLoads("W", "w") + dot + MAIN;
}
