/**
 * WebGPU getRows / rmsnorm / rope / swiglu against the reference backend,
 * with every op placed on the GPU (`cpuOps: []`), plus the default placement.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { RopeMode } from "../core/backend/backend.ts";
import { createRefBackend } from "../core/backend/ref_backend.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { DEFAULT_CPU_OPS, WEBGPU_FORMATS } from "./backend.ts";
import {
  assertBitsEqual,
  assertClose,
  openGpu,
  randomActivations,
  randomWeights,
  rng,
} from "./gpu_test_util.ts";

/**
 * RMSNorm, relative per element: the GPU sums squares in f32 (a tree of 64
 * partials) where ggml sums in double, and WGSL allows 2.5 ulp for `/` and
 * `sqrt`. Measured on llvmpipe: ≤ 2 ulp (2.4e-7).
 */
const RMSNORM_REL_TOL = 1e-6;
/** RoPE, relative to |x0|+|x1| of the pair (one rounding per product; measured bit-exact). */
const ROPE_REL_TOL = 2.5e-7;
/**
 * SwiGLU, relative: ggml's `v_expf` polynomial everywhere (ggml uses libm
 * `expf` in row tails, ≤ 1.5 ulp apart) and WGSL's 2.5-ulp division.
 */
const SWIGLU_REL_TOL = 1e-6;
/** fast-check runs per property. */
const RUNS = 30;

const gpu = await openGpu({ cpuOps: [] });
const ref = createRefBackend();
const skip = gpu === null;

Deno.test({
  name: "webgpu getRows == ref bit for bit (every WGSL format, unaligned offsets, repeated ids)",
  ignore: skip,
  fn() {
    for (const type of WEBGPU_FORMATS) {
      const blk = type === GgmlType.F32 || type === GgmlType.F16 ? 1 : 32;
      for (const [rows, cols, pad] of [[5, 37 * blk, 0], [9, 3 * blk, 2], [2, blk, 259]]) {
        const w = randomWeights(rng(type * 31 + rows), type, rows, cols);
        const ids = new Int32Array([rows - 1, 0, Math.floor(rows / 2), rows - 1]);
        const outs = [gpu!, ref].map((be) => {
          const slot = be.allocSlot(w.length + pad);
          be.writeSlot(slot, pad, w);
          const out = new Float32Array(ids.length * cols);
          be.getRows({ slot, offset: pad, type, rows, cols }, ids, out);
          be.freeSlot(slot);
          return out;
        });
        assertBitsEqual(`${ggmlTypeName(type)} ${rows}x${cols} pad ${pad}`, outs[0], outs[1]);
      }
    }
  },
});

Deno.test({
  name: "webgpu rmsnorm == ref within RMSNORM_REL_TOL (odd n, many rows, with/without weight)",
  ignore: skip,
  fn() {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        fc.constantFrom(1e-5, 1e-6),
        fc.integer(),
        (n, rows, withW, eps, seed) => {
          const r = rng(seed);
          const x = randomActivations(r, n * rows);
          const w = withW ? randomActivations(r, n) : null;
          const a = new Float32Array(n * rows), b = new Float32Array(n * rows);
          gpu!.rmsnorm(x, n, eps, w, a);
          ref.rmsnorm(x, n, eps, w, b);
          assertClose(`rmsnorm n ${n} rows ${rows}`, a, b, (i) => RMSNORM_REL_TOL * Math.abs(b[i]));
        },
      ),
      { numRuns: RUNS },
    );
  },
});

Deno.test({
  name: "webgpu rope == ref within ROPE_REL_TOL (NORM/NEOX, partial rotary, far positions)",
  ignore: skip,
  fn() {
    fc.assert(
      fc.property(
        fc.constantFrom<RopeMode>(0, 2),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 8 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom(10000, 1000000, 500),
        fc.constantFrom(1, 0.25),
        fc.integer(),
        (mode, halfRot, extra, nHeads, nTok, freqBase, freqScale, seed) => {
          const r = rng(seed);
          const nRot = 2 * halfRot, headDim = nRot + extra;
          const x = randomActivations(r, nTok * nHeads * headDim);
          const pos = Int32Array.from({ length: nTok }, () => Math.floor(r() * 40000));
          const p = { mode, nRot, freqBase, freqScale };
          const a = x.slice(), b = x.slice();
          gpu!.rope(a, nTok, nHeads, headDim, pos, p);
          ref.rope(b, nTok, nHeads, headDim, pos, p);
          // pair partner of element i (the tolerance scales with the pair's magnitude)
          const partner = (i: number): number => {
            const o = i - (i % headDim), j = i % headDim;
            if (j >= nRot) return i;
            if (mode === 0) return o + (j ^ 1);
            return o + (j < halfRot ? j + halfRot : j - halfRot);
          };
          assertClose(
            `rope mode ${mode} nRot ${nRot} hd ${headDim}`,
            a,
            b,
            (i) => ROPE_REL_TOL * (Math.abs(x[i]) + Math.abs(x[partner(i)])),
          );
        },
      ),
      { numRuns: RUNS },
    );
  },
});

Deno.test({
  name: "webgpu swiglu == ref within SWIGLU_REL_TOL (rows with tails, large |gate|)",
  ignore: skip,
  fn() {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 1, max: 4 }),
        fc.double({ min: 0.1, max: 60, noNaN: true }),
        fc.integer(),
        (rowLen, rows, spread, seed) => {
          const r = rng(seed);
          const n = rowLen * rows;
          const g = Float32Array.from(randomActivations(r, n), (v) => v * spread);
          const u = randomActivations(r, n);
          const a = new Float32Array(n), b = new Float32Array(n);
          gpu!.swiglu(g, u, a, rowLen);
          ref.swiglu(g, u, b, rowLen);
          assertClose(
            `swiglu rowLen ${rowLen}`,
            a,
            b,
            (i) => SWIGLU_REL_TOL * Math.abs(b[i]) + 1e-37,
          );
        },
      ),
      { numRuns: RUNS },
    );
  },
});

Deno.test({
  name: "webgpu default placement: rmsnorm/rope/swiglu on the CPU with reference bits",
  ignore: skip,
  async fn() {
    const be = (await openGpu())!;
    try {
      for (const op of DEFAULT_CPU_OPS) assertEquals(be.placement(op), "cpu");
      assertEquals(be.placement("attention"), "gpu");
      assertEquals(be.placement("matmul", GgmlType.Q4_0), "gpu");
      assertEquals(gpu!.placement("rmsnorm"), "gpu");
      const r = rng(3);
      const x = randomActivations(r, 3 * 96), w = randomActivations(r, 96);
      const a = new Float32Array(x.length), b = new Float32Array(x.length);
      be.rmsnorm(x, 96, 1e-6, w, a);
      ref.rmsnorm(x, 96, 1e-6, w, b);
      assertBitsEqual("rmsnorm", a, b);
      be.swiglu(x, w.subarray(0, 96), a.subarray(0, 96));
      ref.swiglu(x, w.subarray(0, 96), b.subarray(0, 96));
      assertBitsEqual("swiglu", a, b);
    } finally {
      be.dispose();
    }
  },
});
