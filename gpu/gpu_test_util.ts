/**
 * Shared helpers of the WebGPU tests: open the backend (or explain why the
 * suite is skipped), a seeded PRNG, random weights/activations, comparisons.
 *
 * @module
 */

import { GgmlType } from "../core/tensor/ggml_type.ts";
import { rowBytes, traitsOf } from "../core/tensor/traits.ts";
import { createWebGpuBackend, type WebGpuBackend, type WebGpuBackendOptions } from "./backend.ts";
import { mulberry32 } from "../core/util/rng.ts";

let reported = false;

/**
 * The WebGPU backend, or null (with a printed reason, once) when this runtime
 * has no `navigator.gpu` or no adapter. Any other failure is thrown: CI runs
 * on a software adapter, so a broken device must fail the suite, not skip it.
 */
export async function openGpu(opts: WebGpuBackendOptions = {}): Promise<WebGpuBackend | null> {
  const be = await createWebGpuBackend(opts);
  if (!be && !reported) {
    reported = true;
    const why = (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu
      ? "navigator.gpu has no adapter"
      : "navigator.gpu is absent in this runtime";
    console.log(`gpu tests skipped: ${why}`);
  }
  return be;
}

/** Deterministic 32-bit PRNG (mulberry32), floats in [0, 1); from `core/util/rng.ts`. */
export const rng: (seed: number) => () => number = mulberry32;

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/**
 * Random activations: N(0, σ) with a random σ over 3 decades, exact zeros,
 * sometimes an all-zero first block and a duplicated (±) maximum (ties of the
 * Q8_0 scale).
 */
export function randomActivations(r: () => number, n: number): Float32Array {
  const x = new Float32Array(n);
  const sigma = Math.exp((r() - 0.5) * 7);
  for (let i = 0; i < n; i++) x[i] = r() < 0.03 ? 0 : gauss(r) * sigma;
  if (n >= 32 && r() < 0.3) x.fill(0, 0, 32);
  if (n >= 2 && r() < 0.3) {
    let m = 0;
    for (let i = 1; i < n; i++) if (Math.abs(x[i]) > Math.abs(x[m])) m = i;
    x[Math.floor(r() * n)] = r() < 0.5 ? -x[m] : x[m];
  }
  return x;
}

/**
 * Random weight bytes of `type`. Q8_0/Q4_0 get uniformly random payload bits
 * with finite random (± , varied magnitude) f16 scales; other types are
 * quantized from Gaussian values with the traits table.
 */
export function randomWeights(
  r: () => number,
  type: GgmlType,
  rows: number,
  cols: number,
): Uint8Array {
  const n = rows * cols;
  const out = new Uint8Array(rowBytes(type, n));
  if (type === GgmlType.Q8_0 || type === GgmlType.Q4_0) {
    const bs = type === GgmlType.Q8_0 ? 34 : 18;
    for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
    const dv = new DataView(out.buffer);
    const h = new Float16Array(1);
    for (let b = 0; b < n / 32; b++) {
      h[0] = (r() < 0.2 ? -1 : 1) * Math.exp((r() - 0.5) * 6) * 0.01;
      dv.setUint16(b * bs, new Uint16Array(h.buffer)[0], true);
    }
    return out;
  }
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = gauss(r);
  traitsOf(type).quantize(f, 0, n, out, 0);
  return out;
}

/** `Σ_c |W[r,c]·x[t,c]|` per output: the scale matmul tolerances are relative to. */
export function dotMagnitudes(
  type: GgmlType,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
): Float64Array {
  const deq = new Float32Array(rows * cols);
  traitsOf(type).dequantize(w, 0, rows * cols, deq, 0);
  const mag = new Float64Array(nTok * rows);
  for (let t = 0; t < nTok; t++) {
    for (let i = 0; i < rows; i++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += Math.abs(deq[i * cols + c] * x[t * cols + c]);
      mag[t * rows + i] = s;
    }
  }
  return mag;
}

/** Throw naming the first element where `|got − want| > tol(i)`. */
export function assertClose(
  what: string,
  got: Float32Array,
  want: Float32Array,
  tol: (i: number) => number,
): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: length ${got.length} vs ${want.length}`);
  }
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= tol(i)) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      throw new Error(`${what} [${i}]: ${got[i]} vs ref ${want[i]} (|Δ| ${d} > ${tol(i)})`);
    }
  }
}

/** Throw unless the two arrays hold identical f32 bit patterns. */
export function assertBitsEqual(what: string, got: Float32Array, want: Float32Array): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} vs ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what} [${i}]: ${got[i]} vs ref ${want[i]} (bits differ)`);
  }
}
