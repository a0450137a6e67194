/**
 * WebGPU matmul against the reference backend: every WGSL format on random
 * odd shapes, decode and prefill, unaligned offsets; batched `matmulMany`;
 * row/token chunking under a small binding limit; the CPU fallback formats.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { Backend, WeightView } from "../core/backend/backend.ts";
import { createRefBackend } from "../core/backend/ref_backend.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { WEBGPU_FORMATS } from "./backend.ts";
import {
  assertBitsEqual,
  assertClose,
  dotMagnitudes,
  openGpu,
  randomActivations,
  randomWeights,
  rng,
} from "./gpu_test_util.ts";

/**
 * Matmul tolerance relative to Σ|w·x|. Each invocation walks its row's blocks
 * in the reference order and integer block sums are exact, so only operator
 * fusion (FMA for F32 lanes, f32 vs double for the F16 tail) can differ; on
 * llvmpipe quantized and F16 results are bit-identical.
 */
const MATMUL_REL_TOL = 1e-6;
/** fast-check runs per format (the software adapter costs ~12 ms per readback). */
const RUNS = 30;

const gpu = await openGpu();
const ref = createRefBackend();
const skip = gpu === null;

function upload(be: Backend, bytes: Uint8Array, pad: number): WeightView["slot"] {
  const s = be.allocSlot(bytes.length + pad + 3);
  be.writeSlot(s, pad, bytes);
  return s;
}

function run(
  be: Backend,
  type: GgmlType,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
  pad: number,
): Float32Array {
  const slot = upload(be, w, pad);
  const out = new Float32Array(nTok * rows);
  be.matmul({ slot, offset: pad, type, rows, cols }, x, nTok, out);
  be.freeSlot(slot);
  return out;
}

function activations(r: () => number, nTok: number, cols: number): Float32Array {
  const x = new Float32Array(nTok * cols);
  for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
  return x;
}

Deno.test({
  name: "webgpu matmul == ref for F32, F16, Q8_0, Q4_0 (odd shapes, prefill, unaligned offsets)",
  ignore: skip,
  fn() {
    for (const type of WEBGPU_FORMATS) {
      const blk = type === GgmlType.F32 || type === GgmlType.F16 ? 1 : 32;
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 1, max: blk === 1 ? 75 : 5 }),
          fc.constantFrom(1, 1, 2, 3, 5),
          fc.integer({ min: 0, max: 300 }),
          fc.integer(),
          (rows, units, nTok, pad, seed) => {
            const cols = units * blk;
            const r = rng(seed);
            const w = randomWeights(r, type, rows, cols);
            const x = activations(r, nTok, cols);
            const got = run(gpu!, type, w, rows, cols, x, nTok, pad);
            const want = run(ref, type, w, rows, cols, x, nTok, pad);
            const mag = dotMagnitudes(type, w, rows, cols, x, nTok);
            assertClose(
              `${ggmlTypeName(type)} ${rows}x${cols} nTok ${nTok} pad ${pad}`,
              got,
              want,
              (i) => MATMUL_REL_TOL * mag[i] + 1e-30,
            );
          },
        ),
        { numRuns: RUNS },
      );
    }
  },
});

Deno.test({
  name:
    "webgpu matmulMany (GPU and fallback formats, shared input) == one matmul each, bit for bit",
  ignore: skip,
  fn() {
    const r = rng(7);
    const cols = 256, nTok = 3;
    const types = [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.F16, GgmlType.Q4_K, GgmlType.Q4_0];
    const views = types.map((type, i) => {
      const rows = 5 + 3 * i;
      const slot = upload(gpu!, randomWeights(r, type, rows, cols), 2 * i);
      return { slot, offset: 2 * i, type, rows, cols };
    });
    const x = activations(r, nTok, cols);
    const many = views.map((v) => new Float32Array(nTok * v.rows));
    gpu!.matmulMany(views, x, nTok, many);
    for (let i = 0; i < views.length; i++) {
      const one = new Float32Array(nTok * views[i].rows);
      gpu!.matmul(views[i], x, nTok, one);
      assertBitsEqual(`view ${i} ${ggmlTypeName(views[i].type)}`, many[i], one);
      gpu!.freeSlot(views[i].slot);
    }
  },
});

Deno.test({
  name: "webgpu matmul split into row and token chunks (1 KiB binding limit) == ref",
  ignore: skip,
  async fn() {
    const small = (await openGpu({ maxBindingBytes: 1024 }))!;
    try {
      for (const type of WEBGPU_FORMATS) {
        const r = rng(100 + type);
        const rows = 37, cols = 64, nTok = 9; // 37 rows × 9 tokens of output > 1 KiB
        const w = randomWeights(r, type, rows, cols);
        const x = activations(r, nTok, cols);
        const got = run(small, type, w, rows, cols, x, nTok, 258);
        const want = run(ref, type, w, rows, cols, x, nTok, 258);
        const mag = dotMagnitudes(type, w, rows, cols, x, nTok);
        assertClose(ggmlTypeName(type), got, want, (i) => MATMUL_REL_TOL * mag[i] + 1e-30);
      }
    } finally {
      small.dispose();
    }
  },
});

Deno.test({
  name: "webgpu fallback formats run on a CPU mirror: == ref bit for bit, and follow later writes",
  ignore: skip,
  fn() {
    const fallback = [
      GgmlType.BF16,
      GgmlType.Q4_1,
      GgmlType.Q5_0,
      GgmlType.Q5_1,
      GgmlType.Q4_K,
      GgmlType.Q5_K,
      GgmlType.Q6_K,
    ];
    for (const type of fallback) {
      assertEquals(gpu!.supportsOp("matmul", type), true);
      assertEquals(gpu!.placement("matmul", type), "cpu");
      const r = rng(type);
      const rows = 3, cols = 512, nTok = 2;
      const w1 = randomWeights(r, type, rows, cols), w2 = randomWeights(r, type, rows, cols);
      const x = activations(r, nTok, cols);
      const slots = [gpu!, ref].map((be) => upload(be, w1, 6));
      const view = (i: number) => ({ slot: slots[i], offset: 6, type, rows, cols });
      for (const w of [w1, w2]) {
        if (w === w2) [gpu!, ref].forEach((be, i) => be.writeSlot(slots[i], 6, w2));
        const a = new Float32Array(nTok * rows), b = new Float32Array(nTok * rows);
        gpu!.matmul(view(0), x, nTok, a);
        ref.matmul(view(1), x, nTok, b);
        assertBitsEqual(`${ggmlTypeName(type)} matmul`, a, b);
        const ga = new Float32Array(2 * cols), gb = new Float32Array(2 * cols);
        gpu!.getRows(view(0), new Int32Array([2, 0]), ga);
        ref.getRows(view(1), new Int32Array([2, 0]), gb);
        assertBitsEqual(`${ggmlTypeName(type)} getRows`, ga, gb);
      }
      gpu!.freeSlot(slots[0]);
      ref.freeSlot(slots[1]);
    }
  },
});

Deno.test({
  name:
    "webgpu matmulBatch (different inputs, token counts and formats) == one matmul each, in one round trip",
  ignore: skip,
  fn() {
    const r = rng(11);
    const specs: [GgmlType, number, number, number][] = [
      [GgmlType.Q8_0, 7, 64, 1],
      [GgmlType.Q4_0, 9, 64, 3],
      [GgmlType.F32, 4, 37, 2],
      [GgmlType.Q6_K, 3, 256, 1],
      [GgmlType.Q8_0, 5, 64, 3],
    ];
    const jobs = specs.map(([type, rows, cols, nTokens]) => ({
      w: { slot: upload(gpu!, randomWeights(r, type, rows, cols), 0), offset: 0, type, rows, cols },
      x: activations(r, nTokens, cols),
      nTokens,
      out: new Float32Array(nTokens * rows),
    }));
    jobs[4].x = jobs[1].x; // shared input, same layout: converted once
    const before = gpu!.stats().calls.matmul ?? 0;
    gpu!.matmulBatch(jobs);
    assertEquals((gpu!.stats().calls.matmul ?? 0) - before, 1);
    for (const j of jobs) {
      const one = new Float32Array(j.out.length);
      gpu!.matmul(j.w, j.x, j.nTokens, one);
      assertBitsEqual(ggmlTypeName(j.w.type), j.out, one);
      gpu!.freeSlot(j.w.slot);
    }
  },
});
