/**
 * WebGpuBackend as a whole: slot writes at any byte offset, CPU mirrors,
 * errors, the no-fallback mode, registry priority, and a synthetic MoE model
 * run through the unchanged transformer on WebGPU vs the reference backend.
 */
import { equal as assertEquals, ok as assert, rejects, throws } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { backendNames, createBackend } from "../core/backend/registry.ts";
import { BackendError, type MoeEdgeError } from "../core/errors.ts";
import { argmax } from "../core/generate/sampler.ts";
import { Session } from "../core/generate/session.ts";
import { loadModel } from "../core/model/model.ts";
import { synthesizeModel } from "../core/model/synthetic.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { createRefBackend } from "../core/backend/ref_backend.ts";
import { openGpu, randomWeights, rng } from "./gpu_test_util.ts";
import {
  isSoftwareAdapter,
  WEBGPU_PRIORITY_HARDWARE,
  WEBGPU_PRIORITY_SOFTWARE,
  webGpuPriority,
} from "./register.ts";

/**
 * Logits of a model run, absolute (logits are O(1–10)): same tolerance as the
 * llama.cpp conformance suite — a 1-ulp difference in K or V before the f16
 * cache rounding moves later logits by up to ~1e-3.
 */
const LOGIT_TOL = 2e-3;
/** Runs of the slot write/read property. */
const RUNS = 30;

const gpu = await openGpu();
const skip = gpu === null;
const code = (c: string) => (e: unknown) => e instanceof BackendError && e.code === c;

Deno.test({
  name: "webgpu slots: writes at any byte offset/length read back exactly; neighbours untouched",
  ignore: skip,
  fn() {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 40 })), { minLength: 1, maxLength: 6 }),
        fc.integer(),
        (size, writes, seed) => {
          const r = rng(seed);
          const mirror = new Uint8Array(size);
          const s = gpu!.allocSlot(size);
          for (const [o, n] of writes) {
            const off = o % size, len = Math.min(n, size - off);
            const data = Uint8Array.from({ length: len }, () => Math.floor(r() * 256));
            gpu!.writeSlot(s, off, data);
            mirror.set(data, off);
          }
          assertEquals(gpu!.readSlot(s, 0, size).join(), mirror.join());
          const o = Math.floor(r() * size);
          assertEquals(gpu!.readSlot(s, o, size - o).join(), mirror.subarray(o).join());
          gpu!.freeSlot(s);
        },
      ),
      { numRuns: RUNS },
    );
  },
});

Deno.test({
  name: "webgpu errors name the problem: range, freed slot, bad size, bad token, disposed",
  ignore: skip,
  async fn() {
    const be = (await openGpu())!;
    const s = be.allocSlot(100);
    throws(() => be.writeSlot(s, 90, new Uint8Array(20)), code("out_of_range"));
    throws(() => be.readSlot(s, 50, 51), code("out_of_range"));
    throws(() => be.allocSlot(-1), code("bad_size"));
    throws(() => be.allocSlot(be.caps.maxSlotBytes + 1), code("bad_size"));
    const view = { slot: s, offset: 0, type: GgmlType.Q8_0, rows: 3, cols: 32 };
    throws(() => be.matmul(view, new Float32Array(32), 1, new Float32Array(3)), /exceeds slot/);
    throws(
      () => be.getRows({ ...view, rows: 2 }, new Int32Array([2]), new Float32Array(32)),
      code("bad_token"),
    );
    be.freeSlot(s);
    throws(() => be.writeSlot(s, 0, new Uint8Array(1)), code("bad_slot"));
    throws(() => be.freeSlot(s), code("bad_slot"));
    be.dispose();
    throws(() => be.allocSlot(4), code("disposed"));
    throws(() => be.matmul(view, new Float32Array(32), 1, new Float32Array(3)), code("disposed"));
    be.dispose(); // idempotent
  },
});

Deno.test({
  name:
    "webgpu with fallback off: supportsOp answers false for non-WGSL formats and the loader fails early",
  ignore: skip,
  async fn() {
    const be = (await openGpu({ fallback: false }))!;
    try {
      for (const t of [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0]) {
        assertEquals(be.supportsOp("matmul", t), true);
      }
      for (const t of [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.BF16, GgmlType.Q4_1, GgmlType.Q5_0]) {
        assertEquals(be.supportsOp("matmul", t), false);
        assertEquals(be.placement("matmul", t), null);
      }
      assertEquals(be.caps.formats.length, 4);
      const w = randomWeights(rng(1), GgmlType.Q4_K, 2, 256);
      const s = be.allocSlot(w.length);
      be.writeSlot(s, 0, w);
      const view = { slot: s, offset: 0, type: GgmlType.Q4_K, rows: 2, cols: 256 };
      throws(
        () => be.matmul(view, new Float32Array(256), 1, new Float32Array(2)),
        code("unsupported_type"),
      );
      const model = synthesizeModel({
        nEmbd: 256,
        nHead: 4,
        nLayer: 1,
        nFf: 256,
        nVocab: 300,
        type: GgmlType.Q4_K,
      });
      await rejects(
        loadModel(model, { backend: be }),
        (e: MoeEdgeError) =>
          e.code === "unsupported_type" && /Q4_K/.test(e.message) && /webgpu/.test(e.message),
      );
    } finally {
      be.dispose();
    }
  },
});

Deno.test({
  name: "webgpu memoryBytes counts slots, KV caches and CPU mirrors",
  ignore: skip,
  async fn() {
    const be = (await openGpu())!;
    try {
      assertEquals(be.memoryBytes(), 0);
      const s = be.allocSlot(1001);
      assertEquals(be.memoryBytes(), 1004);
      const c = be.createKvCache({ layers: 2, nCtx: 8, nKvHeads: 1, headDimK: 3, headDimV: 5 });
      // per layer: K 8×4 halves → 64 B, padded to 256; V 8×6 halves → 96 B
      assertEquals(be.memoryBytes(), 1004 + 2 * (256 + 96));
      be.freeKvCache(c);
      const w = randomWeights(rng(2), GgmlType.Q6_K, 1, 256);
      be.writeSlot(s, 0, w);
      be.matmul(
        { slot: s, offset: 0, type: GgmlType.Q6_K, rows: 1, cols: 256 },
        new Float32Array(256),
        1,
        new Float32Array(1),
      );
      assertEquals(be.memoryBytes(), 1004 + 1001); // + the mirror
      be.freeSlot(s);
      assertEquals(be.memoryBytes(), 0);
    } finally {
      be.dispose();
    }
  },
});

Deno.test("webgpu registry: registered below WASM (readbacks cost ~11 ms in Deno)", async () => {
  assert(isSoftwareAdapter({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" }));
  assert(isSoftwareAdapter({ description: "SwiftShader Device (Subzero)" }));
  assert(isSoftwareAdapter({ description: "", isFallbackAdapter: true }));
  assert(!isSoftwareAdapter({ description: "NVIDIA GeForce RTX 4090", isFallbackAdapter: false }));
  assert(WEBGPU_PRIORITY_SOFTWARE < WEBGPU_PRIORITY_HARDWARE && WEBGPU_PRIORITY_HARDWARE < 10);
  assert(backendNames().includes("webgpu"));
  if (skip) return;
  const p = await webGpuPriority();
  assertEquals(
    p,
    isSoftwareAdapter(gpu!.device) ? WEBGPU_PRIORITY_SOFTWARE : WEBGPU_PRIORITY_HARDWARE,
  );
  const be = await createBackend("webgpu");
  assertEquals(be.name, "webgpu");
  be.dispose();
});

Deno.test({
  name:
    "webgpu runs a synthetic MoE model through the unchanged transformer: logits == ref within LOGIT_TOL",
  ignore: skip,
  async fn() {
    // Q4_0 matrices on the GPU, Q4_K embeddings/output through the CPU fallback
    const bytes = synthesizeModel({
      nEmbd: 256,
      nHead: 4,
      nHeadKv: 2,
      headDim: 40,
      nLayer: 2,
      nExpert: 4,
      nExpertUsed: 2,
      nFf: 64,
      nVocab: 300,
      type: GgmlType.Q4_0,
      embdType: GgmlType.Q4_K,
      seed: 3,
    });
    const results: Float32Array[][] = [];
    for (const backend of [gpu!, createRefBackend()]) {
      const model = await loadModel(bytes, { backend });
      const s = new Session(model, { nCtx: 32 });
      const steps: Float32Array[] = [(await s.eval([5, 77, 120, 9])).slice()];
      for (let i = 0; i < 6; i++) {
        steps.push((await s.eval([argmax(steps[steps.length - 1])])).slice());
      }
      s.dispose?.();
      model.dispose();
      results.push(steps);
    }
    for (let i = 0; i < results[0].length; i++) {
      let d = 0;
      for (let j = 0; j < results[0][i].length; j++) {
        d = Math.max(d, Math.abs(results[0][i][j] - results[1][i][j]));
      }
      assert(d <= LOGIT_TOL, `step ${i}: max |Δlogit| ${d} > ${LOGIT_TOL}`);
      assertEquals(argmax(results[0][i]), argmax(results[1][i]), `step ${i} greedy token`);
    }
  },
});
