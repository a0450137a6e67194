import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { TensorError } from "../errors.ts";
import { GgmlType } from "./ggml_type.ts";
import {
  activationBytes,
  isSupportedType,
  quantizeActivation,
  rowBytes,
  SUPPORTED_TYPES,
  traitsOf,
  WEIGHT_TYPES,
} from "./traits.ts";
import { F16_TO_F32 } from "./f16.ts";

const T = GgmlType;

// ---------------------------------------------------------------- (a) layout

Deno.test("traits: block size, type size and vec_dot_type match the spec tables", () => {
  const spec: Array<[number, number, number, number]> = [
    [T.F32, 1, 4, T.F32],
    [T.F16, 1, 2, T.F16],
    [T.BF16, 1, 2, T.BF16],
    [T.Q4_0, 32, 18, T.Q8_0],
    [T.Q4_1, 32, 20, T.Q8_1],
    [T.Q5_0, 32, 22, T.Q8_0],
    [T.Q5_1, 32, 24, T.Q8_1],
    [T.Q8_0, 32, 34, T.Q8_0],
    [T.Q8_1, 32, 36, T.Q8_1],
    [T.Q2_K, 256, 84, T.Q8_K],
    [T.Q3_K, 256, 110, T.Q8_K],
    [T.Q4_K, 256, 144, T.Q8_K],
    [T.Q5_K, 256, 176, T.Q8_K],
    [T.Q6_K, 256, 210, T.Q8_K],
    [T.Q8_K, 256, 292, T.Q8_K],
    [T.IQ4_NL, 32, 18, T.Q8_0],
    [T.IQ4_XS, 256, 136, T.Q8_K],
    [T.MXFP4, 32, 17, T.Q8_0],
  ];
  assert.deepEqual(
    [...SUPPORTED_TYPES].sort((a, b) => a - b),
    spec.map((r) => r[0]).sort((a, b) => a - b),
  );
  for (const [type, bs, ts, vdt] of spec) {
    const t = traitsOf(type);
    assert.equal(t.type, type);
    assert.equal(t.blockSize, bs, t.name);
    assert.equal(t.typeSize, ts, t.name);
    assert.equal(t.vecDotType, vdt, t.name);
    assert.equal(rowBytes(type, bs * 3), ts * 3);
    assert.equal(activationBytes(type, bs * 2), ts * 2);
    assert.ok(isSupportedType(type));
  }
  assert.deepEqual(
    [...WEIGHT_TYPES],
    SUPPORTED_TYPES.filter((t) => t !== T.Q8_1 && t !== T.Q8_K),
  );
});

Deno.test("traits: errors carry codes and name the type", () => {
  assert.throws(() => traitsOf(T.I32), (e: unknown) => {
    assert.ok(e instanceof TensorError);
    assert.equal(e.code, "unsupported_type");
    assert.match(e.message, /I32/);
    return true;
  });
  assert.throws(
    () => traitsOf(77),
    (e: unknown) => e instanceof TensorError && /type#77/.test(e.message),
  );
  assert.throws(
    () => rowBytes(T.Q4_0, 33),
    (e: unknown) => e instanceof TensorError && e.code === "bad_shape" && /Q4_0/.test(e.message),
  );
  assert.throws(
    () => traitsOf(T.Q8_K).vecDot(256, new Uint8Array(292), 0, new Uint8Array(292), 0),
    (e: unknown) => e instanceof TensorError && e.code === "unsupported_type",
  );
  assert.throws(
    () => quantizeActivation(T.Q4_0, new Float32Array(32), 0, 32, new Uint8Array(18), 0),
    (e: unknown) => e instanceof TensorError && e.code === "unsupported_type",
  );
  assert.throws(
    () => quantizeActivation(T.Q8_0, new Float32Array(32), 0, 32, new Uint8Array(33), 0),
    (e: unknown) => e instanceof TensorError && e.code === "out_of_range",
  );
});

// ---------------------------------------------------------------- helpers

/** Per-element round-trip error bound for weight quantization of block `x[o..o+bs)`. */
function weightBound(type: number, x: Float32Array, i: number): number {
  const t = traitsOf(type);
  const bs = t.blockSize;
  const o = i - (i % bs);
  let amax = 0, min = Infinity, max = -Infinity;
  for (let k = 0; k < bs; k++) {
    amax = Math.max(amax, Math.abs(x[o + k]));
    min = Math.min(min, x[o + k]);
    max = Math.max(max, x[o + k]);
  }
  const v = Math.abs(x[i]);
  // fp16 scales lose relative precision below 2^-14 (subnormal step 2^-24): an absolute term
  const sub = (levels: number): number => levels * 2 ** -24;
  const tiny = 2 ** -20 * amax + 1e-30;
  switch (type) {
    case T.F32:
      return 0;
    case T.F16:
      return v * 2 ** -11 + 2 ** -25;
    case T.BF16:
      return v * 2 ** -8 + 1e-38;
    case T.Q4_0: // trunc(x*id+8.5): ≤ half a step, one step where +max clamps 16 → 15
      return (amax / 8) * 1.01 + sub(8) + tiny;
    case T.Q5_0:
      return (amax / 16) * 1.01 + sub(16) + tiny;
    case T.Q4_1:
      return ((max - min) / 15) * 0.51 + (Math.abs(min) + Math.abs(max)) * 2 ** -10 + sub(16) +
        tiny;
    case T.Q5_1:
      return ((max - min) / 31) * 0.51 + (Math.abs(min) + Math.abs(max)) * 2 ** -10 + sub(32) +
        tiny;
    case T.Q8_0:
    case T.Q8_1:
      return (amax / 127) * 0.51 + amax * 2 ** -10 + sub(127) + tiny;
    case T.Q4_K: // sub-block steps ≤ range/15 plus 6-bit scale/min rounding (≈ 1/63 of block range)
      return (max - Math.min(0, min)) * (0.5 / 15 + 2 / 63) + sub(16 * 64) + tiny;
    case T.Q5_K:
      return (max - Math.min(0, min)) * (0.5 / 31 + 2 / 63) + sub(32 * 64) + tiny;
    case T.Q6_K:
      return amax * (1 / 32 + 2 / 128) + sub(32 * 128) + tiny;
    // llama.cpp's reference quantizers below minimise a weighted error, so a value may be clipped
    // to the end level: bounds are the block range (Q2_K, 2-bit with a min) or the largest
    // codebook step (IQ4_*: the widest gap is 24/127 of the scale, plus clipping at 113/127).
    case T.Q2_K:
      return (max - Math.min(0, min)) * 1.01 + sub(4 * 16) + tiny;
    case T.Q3_K:
      return amax * 1.01 + sub(8 * 64) + tiny;
    case T.IQ4_NL:
    case T.IQ4_XS:
      return amax * 0.3 + sub(127 * 64) + tiny;
    case T.MXFP4: // step 2^(e-1)·(0.5..2) with 2^(e+1) ≤ amax: ≤ amax/4, plus clipping above 6·2^e
      return amax * 0.5 + 2 ** -126 + tiny;
    default:
      throw new Error("no bound");
  }
}

/** Per-element error bound of the x86 activation conversion of `x[i]`. */
function actBound(vdt: number, x: Float32Array, i: number): number {
  const bs = traitsOf(vdt).blockSize;
  const o = i - (i % bs);
  let amax = 0;
  for (let k = 0; k < bs; k++) amax = Math.max(amax, Math.abs(x[o + k]));
  const v = Math.abs(x[i]);
  switch (vdt) {
    case T.F32:
      return 0;
    case T.F16:
      return v * 2 ** -11 + 2 ** -25;
    case T.BF16:
      return v * 2 ** -8 + 1e-38;
    case T.Q8_0:
    case T.Q8_1:
      return (amax / 127) * 0.5 * 1.0001 + amax * 2 ** -11 + 127 * 2 ** -25 + 1e-30;
    case T.Q8_K:
      return (amax / 127) * 0.5 * 1.0001 + 1e-30;
    default:
      throw new Error("no bound");
  }
}

function blocksArb(bs: number, maxBlocks: number): fc.Arbitrary<Float32Array> {
  return fc.integer({ min: 1, max: maxBlocks }).chain((nb) =>
    fc.tuple(
      fc.float32Array({
        minLength: nb * bs,
        maxLength: nb * bs,
        noNaN: true,
        noDefaultInfinity: true,
        min: -1e3,
        max: 1e3,
      }),
      fc.constantFrom(1, 1e-3, 1e-6, 0.375), // |x| ≤ 1000: keeps Q8_1 s = d·Σq inside fp16 range,
    ).map(([a, s]) => a.map((v) => Math.fround(v * s)))
  );
}

// ---------------------------------------------------------------- (b) round trip

for (const type of WEIGHT_TYPES) {
  const t = traitsOf(type);
  Deno.test(`traits ${t.name}: dequantize(quantize(x)) ≈ x within the per-type bound`, () => {
    fc.assert(
      fc.property(blocksArb(Math.max(t.blockSize, 32), t.blockSize === 1 ? 3 : 4), (x) => {
        const n = x.length;
        const bytes = new Uint8Array(3 + rowBytes(type, n));
        t.quantize(x, 0, n, bytes, 3); // odd offset: no alignment assumptions
        const back = new Float32Array(n + 1);
        t.dequantize(bytes, 3, n, back, 1);
        for (let i = 0; i < n; i++) {
          const err = Math.abs(back[1 + i] - x[i]);
          const bound = weightBound(type, x, i);
          if (!(err <= bound)) {
            throw new Error(`${t.name} i=${i} x=${x[i]} got ${back[1 + i]} err ${err} > ${bound}`);
          }
        }
      }),
      { numRuns: 150 },
    );
  });
}

// ---------------------------------------------------------------- (c) dot products

function f16(b: Uint8Array, o: number): number {
  return F16_TO_F32[b[o] | (b[o + 1] << 8)];
}

/**
 * f64 reference of what vecDot computes: Σ dequant(w)·dequant(a). For Q8_1 activations the
 * kernels use the stored `s = f16(d·Σq)` instead of d·Σq for the `m` term, so add m·(s − d·Σq).
 */
function f64Reference(type: number, n: number, w: Uint8Array, a: Uint8Array): number {
  const t = traitsOf(type);
  const wd = new Float32Array(n);
  const ad = new Float32Array(n);
  t.dequantize(w, 0, n, wd, 0);
  traitsOf(t.vecDotType).dequantize(a, 0, n, ad, 0);
  let s = 0;
  for (let i = 0; i < n; i++) s += wd[i] * ad[i];
  if (t.vecDotType === T.Q8_1) {
    for (let b = 0; b < n / 32; b++) {
      const m = f16(w, b * t.typeSize + 2);
      const dy = f16(a, b * 36);
      const sy = f16(a, b * 36 + 2);
      let sq = 0;
      for (let j = 0; j < 32; j++) sq += (a[b * 36 + 4 + j] << 24) >> 24;
      s += m * (sy - dy * sq);
    }
  }
  return s;
}

for (const type of WEIGHT_TYPES) {
  const t = traitsOf(type);
  Deno.test(`traits ${t.name}: vecDot equals the f64 block algebra and is within quantization error`, () => {
    const bs = Math.max(t.blockSize, 32);
    fc.assert(
      fc.property(blocksArb(bs, 4), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (x, seed) => {
        const n = x.length;
        // activation: a scrambled copy so w and y differ
        const y = new Float32Array(n);
        for (let i = 0; i < n; i++) y[i] = Math.fround(x[(i * 7 + seed) % n] * ((i % 3) - 1.1));
        const w = new Uint8Array(rowBytes(type, n));
        t.quantize(x, 0, n, w, 0);
        const a = new Uint8Array(activationBytes(t.vecDotType, n));
        quantizeActivation(t.vecDotType, y, 0, n, a, 0);
        const got = t.vecDot(n, w, 0, a, 0);
        assert.equal(Math.fround(got), got, "result is an f32 value");
        const ref = f64Reference(type, n, w, a);
        const wd = new Float32Array(n);
        const ad = new Float32Array(n);
        t.dequantize(w, 0, n, wd, 0);
        traitsOf(t.vecDotType).dequantize(a, 0, n, ad, 0);
        // magnitude of the terms the kernels add: |w|·|a| plus, for formats with a min/offset,
        // the block's largest |w| (the separately accumulated d·q and m terms can both be that big)
        let mag = 0;
        let exact = 0;
        let qbound = 0;
        let plain = 0;
        const bsz = t.blockSize;
        for (let b0 = 0; b0 < n; b0 += bsz) {
          let bmax = 0;
          for (let i = b0; i < b0 + bsz; i++) bmax = Math.max(bmax, Math.abs(wd[i]));
          for (let i = b0; i < b0 + bsz; i++) mag += (Math.abs(wd[i]) + bmax) * Math.abs(ad[i]);
        }
        for (let i = 0; i < n; i++) {
          exact += x[i] * y[i];
          plain += wd[i] * ad[i];
          qbound += weightBound(type, x, i) * Math.abs(ad[i]) +
            Math.abs(x[i]) * actBound(t.vecDotType, y, i);
        }
        // Q8_1: the m-term uses s = f16(d·Σq), not d·Σq; that difference is known exactly
        qbound += Math.abs(ref - plain);
        const tight = 2e-6 * mag + 1e-35;
        if (!(Math.abs(got - ref) <= tight)) {
          throw new Error(
            `${t.name}: vecDot ${got} vs f64 ${ref} (|Δ| ${Math.abs(got - ref)} > ${tight})`,
          );
        }
        const loose = qbound * 1.001 + 4e-6 * mag + 1e-30;
        if (!(Math.abs(got - exact) <= loose)) {
          throw new Error(
            `${t.name}: vecDot ${got} vs exact ${exact} (|Δ| ${Math.abs(got - exact)} > ${loose})`,
          );
        }
      }),
      { numRuns: 120 },
    );
  });
}

Deno.test("traits: vecDot honours byte offsets (row inside a larger buffer)", () => {
  for (const type of WEIGHT_TYPES) {
    const t = traitsOf(type);
    const n = 512;
    const x = new Float32Array(n).map((_, i) => Math.sin(i * 0.37));
    const y = new Float32Array(n + 5).map((_, i) => Math.cos(i * 0.11));
    const rb = rowBytes(type, n);
    const w = new Uint8Array(rb * 3 + 1);
    t.quantize(x, 0, n, w, rb + 1);
    const ab = activationBytes(t.vecDotType, n);
    const a = new Uint8Array(ab + 7);
    quantizeActivation(t.vecDotType, y, 5, n, a, 7 - (ab % 1 === 0 ? 0 : 0));
    const w0 = w.slice(rb + 1, 2 * rb + 1);
    const a0 = a.slice(7, 7 + ab);
    assert.equal(t.vecDot(n, w, rb + 1, a, 7), t.vecDot(n, w0, 0, a0, 0), t.name);
    // subarray views with a non-zero byteOffset
    assert.equal(
      t.vecDot(n, w.subarray(1), rb, a.subarray(3), 4),
      t.vecDot(n, w0, 0, a0, 0),
      t.name,
    );
  }
});
