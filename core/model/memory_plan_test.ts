/**
 * Memory above one wasm32 heap: `widerHeap` asks for more heap exactly when
 * the heap (not the limit or the machine) is what stops a model, and the
 * plan at the heap it asks for is what it promised; `backendHeapBytes` reads
 * a backend's total heap. End to end: a model that does not fit one small
 * instance is planned resident over several.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  backendHeapBytes,
  type ModelNeeds,
  modelNeeds,
  planMemory,
  widerHeap,
} from "./memory_plan.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { readHParams } from "./hparams.ts";
import { MemorySource } from "../store/byte_source.ts";
import { synthesizeModel } from "./synthetic.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import { ModelError } from "../errors.ts";
import { createShardedWasmBackend, heapFor } from "../../wasm/sharded.ts";
import { loadModel } from "./model.ts";
import { Session } from "../generate/session.ts";

const MIB = 1 << 20;
const GIB = 1024 * MIB;

function needs(p: { resident: number; experts: number; maxExpert: number }): ModelNeeds {
  return {
    residentBytes: p.resident,
    expertBytes: p.experts,
    maxExpertBytes: p.maxExpert,
    expertsPerToken: 8,
    expertCount: Math.max(1, Math.floor(p.experts / p.maxExpert)),
    kvBytesPerToken: 16 * 1024 * 8,
    kvLayerBytesPerToken: 16 * 1024,
    scratchBytes: (n, c) => 1000 * n + 10 * c + MIB,
    hostBytes: (c) => 96 * MIB + 100 * c,
  };
}

/** Shapes of OLMoE-1B-7B and Qwen3-30B-A3B Q4_K_M (bench/RESULTS.md plans). */
const OLMOE = needs({ resident: 297 * MIB, experts: 3800 * MIB, maxExpert: 7 * MIB });
const QWEN3 = needs({ resident: 952 * MIB, experts: 16500 * MIB, maxExpert: 2 * MIB });
const ONE_HEAP = 4 * GIB - MIB;

Deno.test("widerHeap: past one heap goes wide, resident, within the machine", () => {
  const w = widerHeap(OLMOE, { heapBytes: ONE_HEAP, machineBytes: 24 * GIB, nCtx: 2048 });
  assert.ok(w !== null);
  assert.equal(w.plan.mode, "resident");
  assert.ok(w.heapBytes > ONE_HEAP && w.heapBytes < 5 * GIB, `${w.heapBytes}`);
  assert.equal(w.heapBytes, w.plan.totalBytes - w.plan.hostBytes);
  // the plan at a heap of that size is the promised one
  const p = planMemory(OLMOE, { heapBytes: w.heapBytes, machineBytes: 24 * GIB, nCtx: 2048 });
  assert.equal(p.mode, "resident");
  assert.ok(w.reserveBytes >= p.scratchBytes);
});

Deno.test("widerHeap: null when one heap serves, or the limit or the machine binds", () => {
  // fits one heap
  const small = needs({ resident: 100 * MIB, experts: 1000 * MIB, maxExpert: 2 * MIB });
  assert.equal(widerHeap(small, { heapBytes: ONE_HEAP, nCtx: 2048 }), null);
  // a limit below one heap: the limit binds (streams, reason memory_limit)
  assert.equal(
    widerHeap(QWEN3, { heapBytes: ONE_HEAP, memoryBytes: 2048 * MIB, nCtx: 2048 }),
    null,
  );
  // no limit and the model does not fit the machine: streams in one heap, as before
  assert.equal(widerHeap(QWEN3, { heapBytes: ONE_HEAP, machineBytes: 16 * GIB, nCtx: 2048 }), null);
  // an explicit budget that fits one heap
  assert.equal(
    widerHeap(QWEN3, { heapBytes: ONE_HEAP, nCtx: 2048, expertBudgetBytes: 1024 * MIB }),
    null,
  );
});

Deno.test("widerHeap: a limit above one heap is filled (streaming) and resident where it fits", () => {
  const w = widerHeap(QWEN3, {
    heapBytes: ONE_HEAP,
    memoryBytes: 8192 * MIB,
    machineBytes: 24 * GIB,
    nCtx: 2048,
  });
  assert.ok(w !== null);
  assert.equal(w.plan.mode, "streaming");
  assert.equal(w.plan.reason, "memory_limit");
  assert.ok(w.plan.totalBytes <= 8192 * MIB);
  assert.ok(w.heapBytes > ONE_HEAP);
  const r = widerHeap(QWEN3, { heapBytes: ONE_HEAP, machineBytes: 24 * GIB, nCtx: 2048 });
  assert.equal(r?.plan.mode, "resident");
  // a budget too big for one heap but inside the limit
  const b = widerHeap(QWEN3, {
    heapBytes: ONE_HEAP,
    memoryBytes: 12 * GIB,
    nCtx: 2048,
    expertBudgetBytes: 6 * GIB,
  });
  assert.equal(b?.plan.reason, "explicit_budget");
  // nothing fits even with any heap: null, and the plan on one heap gives the typed error
  const o = { heapBytes: ONE_HEAP, memoryBytes: 600 * MIB, nCtx: 2048 };
  assert.equal(widerHeap(QWEN3, o), null);
  assert.throws(() => planMemory(QWEN3, o), (e) => e instanceof ModelError);
});

Deno.test("widerHeap: whenever it asks, that heap makes the plan work and one heap did not suffice", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3000 }),
      fc.integer({ min: 64, max: 30000 }),
      fc.option(fc.integer({ min: 256, max: 40000 }), { nil: undefined }),
      fc.integer({ min: 1, max: 8192 }),
      (resident, experts, limitMib, nCtx) => {
        const n = needs({ resident: resident * MIB, experts: experts * MIB, maxExpert: 4 * MIB });
        const o = {
          heapBytes: ONE_HEAP,
          memoryBytes: limitMib === undefined ? undefined : limitMib * MIB,
          machineBytes: 24 * GIB,
          nCtx,
        };
        const w = widerHeap(n, o);
        if (w === null) return;
        assert.ok(w.heapBytes > ONE_HEAP);
        const p = planMemory(n, { ...o, heapBytes: w.heapBytes });
        assert.equal(p.mode, w.plan.mode);
        assert.ok(p.expertBudgetBytes >= w.plan.expertBudgetBytes - 1);
        assert.ok(p.totalBytes <= Math.min(o.memoryBytes ?? Infinity, o.machineBytes));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("backendHeapBytes: a reported total, else one wasm heap, else unbounded", () => {
  assert.equal(backendHeapBytes({ name: "wasm", caps: { maxSlotBytes: 100 } }), 100);
  assert.equal(
    backendHeapBytes({ name: "wasm", caps: { maxSlotBytes: 100, heapBytes: 300 } }),
    300,
  );
  assert.equal(backendHeapBytes({ name: "ref", caps: { maxSlotBytes: 100 } }), Infinity);
});

Deno.test("a model past one small instance is planned resident over several", async () => {
  const bytes = synthesizeModel({
    arch: "qwen2moe",
    nEmbd: 256,
    nHead: 4,
    nHeadKv: 2,
    nLayer: 3,
    nExpert: 8,
    nExpertUsed: 2,
    nFf: 512,
    nVocab: 512,
    type: GgmlType.Q4_K,
    seed: 11,
  });
  const file = await readGguf(new MemorySource(bytes));
  const hp = readHParams(file.metadata, file.tensor("token_embd.weight").dims[1]);
  const n = modelNeeds(file, hp);
  const instanceBytes = 10 * MIB;
  const probe = await createShardedWasmBackend({ instances: 1, instanceBytes, reserveBytes: 0 });
  const oneHeap = probe.caps.maxSlotBytes;
  probe.dispose();
  const o = { heapBytes: oneHeap, nCtx: 64 };
  assert.equal(planMemory(n, o).mode, "streaming"); // one instance: experts would stream
  const w = widerHeap(n, o);
  assert.ok(w !== null);
  const be = await createShardedWasmBackend({
    heapBytes: w.heapBytes,
    reserveBytes: w.reserveBytes,
    instanceBytes,
  });
  assert.ok(be.instanceCount >= 2);
  assert.ok(be.caps.heapBytes! >= w.heapBytes);
  assert.equal(be.caps.heapBytes, heapFor(be.instanceCount, oneHeap, w.reserveBytes));
  const model = await loadModel(bytes, { backend: be, nCtx: 64 });
  assert.equal(model.memoryPlan?.mode, "resident");
  const s = new Session(model, { nCtx: 64 });
  const l = await s.eval([1, 2, 3, 4, 5]);
  assert.ok(l.every(Number.isFinite));
  s.dispose();
  model.dispose();
  be.dispose();
});
