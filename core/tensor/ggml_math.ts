/**
 * Elementwise math as llama.cpp's x86 AVX2+FMA CPU build evaluates it, so the
 * reference backend reproduces its f32 results bit for bit:
 *
 * - `expf` in vector bodies is ggml's polynomial `ggml_v_expf` (an Arm
 *   optimized-routines design, ≤1.45 ulp), not libm; 8-lane bodies use it and
 *   scalar tails use libm `expf` (here `Math.exp` rounded to f32).
 * - SiLU is `x / (1 + e^-x)`; softmax sums each 8-lane chunk in f32
 *   (extract-high + low, movehl, movehdup) before adding it to a double.
 *
 * FMA is emulated as `fround(a*b + c)`: the product of two f32 values is exact
 * in f64, so only the f64 sum can round before the final f32 rounding (a
 * double rounding that differs from hardware FMA in rare halfway cases).
 *
 * @module
 */

const f = Math.fround;
const F32 = new Float32Array(1);
const I32 = new Int32Array(F32.buffer);

/** A hex-float constant `0x<mant>p<exp>` (mantissa digits after "1."), exact in f32. */
function hexf(frac: string, exp: number): number {
  return f(parseInt(`1${frac}`, 16) * 2 ** (exp - 4 * frac.length));
}

const R = hexf("8", 23);
const LOG2E = hexf("715476", 0);
const LN2_HI = hexf("62e4", -1);
const LN2_LO = hexf("7f7d1c", -20);
const C5 = hexf("0e4020", -7);
const C4 = hexf("573e2e", -5);
const C3 = hexf("555e66", -3);
const C2 = hexf("fffdb6", -2);
const C1 = hexf("ffffec", -1);
const ONE_BITS = 0x3f800000;

function bits(x: number): number {
  F32[0] = x;
  return I32[0];
}
function fromBits(b: number): number {
  I32[0] = b;
  return F32[0];
}
function fma(a: number, b: number, c: number): number {
  return f(a * b + c);
}

/** ggml's AVX2 `ggml_v_expf`, one lane. Input and output are f32 values. */
export function expfAvx2(x: number): number {
  const z = fma(x, LOG2E, R);
  const n = f(z - R);
  const b = f(f(x - n * LN2_HI) - n * LN2_LO);
  const e = bits(z) << 23;
  const k = fromBits((e + ONE_BITS) | 0);
  const u = f(b * b);
  const j = fma(fma(fma(C5, b, C4), u, fma(C3, b, C2)), u, f(C1 * b));
  const an = Math.abs(n);
  if (!(an > 126)) return fma(k, j, k);
  const g = n <= 0 ? 0x82000000 | 0 : 0;
  const s1 = fromBits((g + 0x7f000000) | 0);
  if (an > 192) return f(s1 * s1);
  const s2 = fromBits((e - g) | 0);
  return f(fma(s2, j, s2) * s1);
}

/** libm-style scalar `expf`: exp rounded to f32. */
export function expfScalar(x: number): number {
  return f(Math.exp(x));
}

/** Vector-body SiLU lane: `x / (1 + v_expf(0 - x))`. */
export function siluVec(x: number): number {
  return f(x / f(1 + expfAvx2(f(0 - x))));
}

/** Scalar SiLU (`ggml_silu_f32`): `x / (1 + expf(-x))`. */
export function siluScalar(x: number): number {
  return f(x / f(1 + expfScalar(-x)));
}

/** `ggml_vec_swiglu_f32`: `y = silu(x) · g`, 8-lane body then scalar tail. */
export function swigluRow(
  n: number,
  y: Float32Array,
  x: Float32Array,
  g: Float32Array,
  off = 0,
): void {
  const body = n & ~7;
  for (let i = 0; i < body; i++) y[off + i] = siluVec(x[off + i]) * g[off + i];
  for (let i = body; i < n; i++) y[off + i] = siluScalar(x[off + i]) * g[off + i];
}

/** `ggml_vec_silu_f32`: `y = silu(x)`, 8-lane body then scalar tail. */
export function siluRow(n: number, y: Float32Array, x: Float32Array, off = 0): void {
  const body = n & ~7;
  for (let i = 0; i < body; i++) y[off + i] = siluVec(x[off + i]);
  for (let i = body; i < n; i++) y[off + i] = siluScalar(x[off + i]);
}

/**
 * `ggml_vec_soft_max_f32`: writes `y[i] = exp(x[i] - max)` and returns the
 * double sum, with each 8-lane chunk summed in f32 the way AVX2 reduces it.
 */
export function softmaxExpSum(
  n: number,
  y: Float32Array,
  x: Float32Array,
  max: number,
  off = 0,
): number {
  let i = 0;
  let sum = 0;
  for (; i + 7 < n; i += 8) {
    for (let l = 0; l < 8; l++) y[off + i + l] = expfAvx2(f(x[off + i + l] - max));
    const p = off + i;
    // extract high 128 + low 128 → 4 lanes; movehl → 2; movehdup → 1
    const a0 = f(y[p + 4] + y[p]), a1 = f(y[p + 5] + y[p + 1]);
    const a2 = f(y[p + 6] + y[p + 2]), a3 = f(y[p + 7] + y[p + 3]);
    const b0 = f(a0 + a2), b1 = f(a1 + a3);
    sum += f(b0 + b1);
  }
  for (; i < n; i++) {
    const v = expfScalar(f(x[off + i] - max));
    y[off + i] = v;
    sum += v;
  }
  return sum;
}

/**
 * ggml `soft_max` of one row: max, exp/sum (`softmaxExpSum`), then scale by
 * `f32(1/sum)`. `out` may alias `x`.
 */
export function softmaxRow(x: Float32Array, out: Float32Array, n = x.length, off = 0): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > max) max = x[off + i];
  const sum = softmaxExpSum(n, out, x, max, off);
  const inv = f(1 / sum);
  for (let i = 0; i < n; i++) out[off + i] = f(out[off + i] * inv);
}
