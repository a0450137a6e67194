/**
 * Test helpers for the WASM kernels: a bump allocator over an instance's
 * linear memory, a seeded PRNG, random weight/activation generators, and
 * an independent TypeScript implementation of llama.cpp's x86 activation
 * quantization rule (docs/specs-llamacpp.md §2.4) that the kernels must match bit-for-bit.
 *
 * @module
 */

import {
  instantiateKernels,
  type KernelExports,
  type KernelVariant,
} from "./pkg/moe_edge_kernels.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { mulberry32 } from "../core/util/rng.ts";

/** Instance plus a resettable bump allocator over its memory. */
export class KernelHarness {
  /** Typed exports. */
  readonly k: KernelExports;
  readonly #base: number;
  #top: number;

  private constructor(k: KernelExports) {
    this.k = k;
    this.#base = Math.ceil(k.heap_base() / 64) * 64;
    this.#top = this.#base;
  }

  /** Instantiate a fresh kernel instance (of `variant`, default the auto choice). */
  static async create(variant: KernelVariant = "auto"): Promise<KernelHarness> {
    return new KernelHarness((await instantiateKernels(variant)).exports);
  }

  /** Free everything allocated so far. */
  reset(): void {
    this.#top = this.#base;
  }

  /** Allocate `bytes` (64-aligned), growing memory when needed. */
  alloc(bytes: number): number {
    const p = this.#top;
    this.#top += Math.ceil(Math.max(bytes, 1) / 64) * 64 + 64; // + a guard gap
    const have = this.k.memory.buffer.byteLength;
    if (this.#top > have) this.k.memory.grow(Math.ceil((this.#top - have) / 65536));
    return p;
  }

  /** Bytes view of the memory. */
  u8(): Uint8Array {
    return new Uint8Array(this.k.memory.buffer);
  }

  /** Copy f32 data in; returns its address. */
  putF32(x: Float32Array): number {
    const p = this.alloc(x.length * 4);
    new Float32Array(this.k.memory.buffer, p, x.length).set(x);
    return p;
  }

  /** Copy bytes in; returns its address. */
  putU8(x: Uint8Array): number {
    const p = this.alloc(x.length);
    this.u8().set(x, p);
    return p;
  }

  /** Copy i32 data in. */
  putI32(x: Int32Array): number {
    const p = this.alloc(x.length * 4);
    new Int32Array(this.k.memory.buffer, p, x.length).set(x);
    return p;
  }

  /** Read `n` f32 at `p` (copy). */
  getF32(p: number, n: number): Float32Array {
    return new Float32Array(this.k.memory.buffer, p, n).slice();
  }

  /** Read `n` bytes at `p` (copy). */
  getU8(p: number, n: number): Uint8Array {
    return this.u8().slice(p, p + n);
  }

  /** Read `n` u16 at `p` (copy). */
  getU16(p: number, n: number): Uint16Array {
    return new Uint16Array(this.k.memory.buffer, p, n).slice();
  }
}

/** Deterministic 32-bit PRNG (mulberry32), floats in [0, 1); from `core/util/rng.ts`. */
export const rng: (seed: number) => () => number = mulberry32;

/**
 * Random activations: mostly N(0, σ) with a random per-row σ, sprinkled with
 * exact zeros, ties for rounding (k + 0.5 after scaling is not controllable,
 * so also exact duplicates of the max with either sign), and all-zero blocks.
 */
export function randomActivations(r: () => number, n: number): Float32Array {
  const x = new Float32Array(n);
  const sigma = Math.exp((r() - 0.5) * 8);
  for (let i = 0; i < n; i++) {
    const u = r();
    if (u < 0.03) x[i] = 0;
    else {
      // Box-Muller
      const g = Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
      x[i] = g * sigma;
    }
  }
  // Occasional structure: a zero block, a duplicated (negated) max.
  if (n >= 32 && r() < 0.3) x.fill(0, 0, 32);
  if (n >= 2 && r() < 0.3) {
    let m = 0;
    for (let i = 1; i < n; i++) if (Math.abs(x[i]) > Math.abs(x[m])) m = i;
    x[Math.floor(r() * n)] = r() < 0.5 ? -x[m] : x[m];
  }
  return x;
}

const F32B = new Float32Array(1);
const U32B = new Uint32Array(F32B.buffer);
const F16B = new Float16Array(1);
const U16B = new Uint16Array(F16B.buffer);

/** f32 bits of `x`. */
export function bitsOf(x: number): number {
  F32B[0] = x;
  return U32B[0];
}

/** f32 from bits. */
export function fromBits(b: number): number {
  U32B[0] = b >>> 0;
  return F32B[0];
}

/** f32 → f16 bits via the platform's `Float16Array` (RNE), NaN → sign|0x7E00 like ggml. */
export function toF16(x: number): number {
  const f = Math.fround(x);
  if (Number.isNaN(f)) return ((bitsOf(x) >>> 16) & 0x8000) | 0x7e00;
  F16B[0] = f;
  return U16B[0];
}

/** f16 bits → number. */
export function fromF16(h: number): number {
  U16B[0] = h;
  return F16B[0];
}

/** f32 → bf16 bits (RNE, NaN quieted with `| 64`), straight from the spec. */
export function toBf16(x: number): number {
  const u = bitsOf(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 64;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 0) >>> 16;
}

/** bf16 bits → number. */
export function fromBf16(h: number): number {
  return fromBits(h << 16);
}

/** Round half to even of an f32 value (|v| < 2^22). */
function rne(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Reference Q8_0 / Q8_1 (x86 AVX2 rule), written from the spec. */
export function refQuantQ8(x: Float32Array, q81: boolean): Uint8Array {
  const f = Math.fround;
  const bb = q81 ? 36 : 34;
  const out = new Uint8Array((x.length / 32) * bb);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]));
    const d = f(amax / 127);
    const id = amax !== 0 ? f(127 / amax) : 0;
    dv.setUint16(b * bb, toF16(d), true);
    let sum = 0;
    for (let j = 0; j < 32; j++) {
      const q = rne(f(x[32 * b + j] * id));
      sum += q;
      dv.setInt8(b * bb + (q81 ? 4 : 2) + j, q);
    }
    if (q81) dv.setUint16(b * bb + 2, toF16(f(d * sum)), true);
  }
  return out;
}

/** Reference Q8_K (`quantize_row_q8_K_ref`), bsums zeroed for all-zero blocks. */
export function refQuantQ8K(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 256) * 292);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 256; b++) {
    const o = b * 292;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 256; j++) {
      const ax = Math.abs(x[256 * b + j]);
      if (ax > amax) {
        amax = ax;
        max = x[256 * b + j];
      }
    }
    if (amax === 0) continue; // all zero bytes
    const iscale = f(-127 / max);
    for (let g = 0; g < 16; g++) {
      let s = 0;
      for (let j = 0; j < 16; j++) {
        const q = Math.min(127, rne(f(iscale * x[256 * b + 16 * g + j])));
        s += q;
        dv.setInt8(o + 4 + 16 * g + j, q);
      }
      dv.setInt16(o + 260 + 2 * g, s, true);
    }
    dv.setFloat32(o, f(1 / iscale), true);
  }
  return out;
}

/** Block geometry [elements, bytes] and the byte offsets of f16 scale fields. */
export const FORMATS: ReadonlyArray<{
  type: GgmlType;
  name: string;
  blk: number;
  bytes: number;
  scales: readonly number[];
  /** Byte offsets of E8M0 exponents (MXFP4). */
  e8m0?: readonly number[];
}> = [
  { type: GgmlType.F32, name: "F32", blk: 1, bytes: 4, scales: [] },
  { type: GgmlType.F16, name: "F16", blk: 1, bytes: 2, scales: [] },
  { type: GgmlType.BF16, name: "BF16", blk: 1, bytes: 2, scales: [] },
  { type: GgmlType.Q8_0, name: "Q8_0", blk: 32, bytes: 34, scales: [0] },
  { type: GgmlType.Q4_0, name: "Q4_0", blk: 32, bytes: 18, scales: [0] },
  { type: GgmlType.Q4_1, name: "Q4_1", blk: 32, bytes: 20, scales: [0, 2] },
  { type: GgmlType.Q5_0, name: "Q5_0", blk: 32, bytes: 22, scales: [0] },
  { type: GgmlType.Q5_1, name: "Q5_1", blk: 32, bytes: 24, scales: [0, 2] },
  { type: GgmlType.Q4_K, name: "Q4_K", blk: 256, bytes: 144, scales: [0, 2] },
  { type: GgmlType.Q5_K, name: "Q5_K", blk: 256, bytes: 176, scales: [0, 2] },
  { type: GgmlType.Q6_K, name: "Q6_K", blk: 256, bytes: 210, scales: [208] },
  { type: GgmlType.Q2_K, name: "Q2_K", blk: 256, bytes: 84, scales: [80, 82] },
  { type: GgmlType.Q3_K, name: "Q3_K", blk: 256, bytes: 110, scales: [108] },
  { type: GgmlType.IQ4_NL, name: "IQ4_NL", blk: 32, bytes: 18, scales: [0] },
  { type: GgmlType.IQ4_XS, name: "IQ4_XS", blk: 256, bytes: 136, scales: [0] },
  { type: GgmlType.MXFP4, name: "MXFP4", blk: 32, bytes: 17, scales: [], e8m0: [0] },
];

/**
 * Random weight bytes: uniformly random payload bits (every nibble/high-bit
 * pattern), with every f16 scale replaced by a finite random value; float
 * formats get random finite values.
 */
export function randomWeights(
  r: () => number,
  type: GgmlType,
  rows: number,
  cols: number,
): Uint8Array {
  const fm = FORMATS.find((f) => f.type === type)!;
  const nb = (rows * cols) / fm.blk;
  const out = new Uint8Array(nb * fm.bytes);
  const dv = new DataView(out.buffer);
  const gauss = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  if (type === GgmlType.F32) {
    for (let i = 0; i < nb; i++) dv.setFloat32(4 * i, gauss(), true);
    return out;
  }
  if (type === GgmlType.F16 || type === GgmlType.BF16) {
    for (let i = 0; i < nb; i++) {
      dv.setUint16(2 * i, type === GgmlType.F16 ? toF16(gauss()) : toBf16(gauss()), true);
    }
    return out;
  }
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  for (let b = 0; b < nb; b++) {
    for (const s of fm.scales) {
      // Positive or negative scales of varied magnitude (mins can be negative in practice).
      const v = (r() < 0.2 ? -1 : 1) * Math.exp((r() - 0.5) * 6) * 0.01;
      dv.setUint16(b * fm.bytes + s, toF16(v), true);
    }
    // E8M0 block exponents: 2^(e-128) for e in 118..131 (≈ 1e-3 .. 8)
    for (const s of fm.e8m0 ?? []) out[b * fm.bytes + s] = 118 + Math.floor(r() * 14);
  }
  return out;
}

/**
 * Reference Q4_0 matmul in ggml's generic order, the order of the relaxed build's
 * Q4_0 kernels (c/relaxed.c `q4r_block`, tiles.rs `tile_gg`): per row and token,
 * `sumf += f32(sumi)·(d_w·d_a)` block by block in f32, where `sumi = Σ (q − 8)·a`
 * is the block's exact integer sum and `a` the activation quantized by
 * {@link refQuantQ8} (Q8_0). Output `out[t·rows + r]`. Non-finite scales
 * propagate as f32 arithmetic does.
 */
export function refMatmulQ4_0Generic(
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
): Float32Array {
  const f = Math.fround;
  const nb = cols / 32;
  const out = new Float32Array(rows * nTok);
  const wv = new DataView(w.buffer, w.byteOffset, w.byteLength);
  for (let t = 0; t < nTok; t++) {
    const a = refQuantQ8(x.subarray(t * cols, (t + 1) * cols), false);
    const av = new DataView(a.buffer);
    for (let r = 0; r < rows; r++) {
      let sumf = 0;
      for (let i = 0; i < nb; i++) {
        const wb = (r * nb + i) * 18, ab = i * 34;
        let sumi = 0;
        for (let j = 0; j < 16; j++) {
          const q = w[wb + 2 + j];
          sumi += ((q & 15) - 8) * av.getInt8(ab + 2 + j) +
            ((q >> 4) - 8) * av.getInt8(ab + 18 + j);
        }
        const dd = f(fromF16(wv.getUint16(wb, true)) * fromF16(av.getUint16(ab, true)));
        sumf = f(sumf + f(sumi * dd));
      }
      out[t * rows + r] = sumf;
    }
  }
  return out;
}
