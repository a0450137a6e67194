/**
 * ShardedWasmBackend (several wasm32 instances) against one WasmBackend:
 * a model spread over 2–3 small instances gives the same logits bit for bit;
 * fused FFN split across instances equals the fused op; KV caches split by
 * layer; placement, typed errors, dispose.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { WeightView } from "../core/backend/backend.ts";
import { Session } from "../core/generate/session.ts";
import { BackendError } from "../core/errors.ts";
import { loadModel } from "../core/model/model.ts";
import { synthesizeModel } from "../core/model/synthetic.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { createWasmBackend } from "./backend.ts";
import { randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { sharedMemorySupported } from "./pkg/moe_edge_kernels.ts";
import { createShardedWasmBackend, heapFor } from "./sharded.ts";

const MIB = 1 << 20;

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i;
  return b;
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(Float32Array.from(a).buffer);
}

function isCode(code: string): (e: unknown) => boolean {
  return (e) => e instanceof BackendError && e.code === code;
}

Deno.test("a model over 3 small instances gives the logits of one instance, bit for bit", async () => {
  // qwen2moe: routed experts (one slot each, fused) plus shared-expert matrices (three slots,
  // which may straddle instances and then run as separate ops)
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
  const runs: { logits: Uint32Array[]; tokens: number[] }[] = [];
  // one instance; three; three on 2 threads each (threads pass through, bit-identical)
  const configs = sharedMemorySupported() ? [0, 1, 2] : [0, 1];
  for (const threads of configs) {
    const sharded = threads > 0;
    const be = sharded
      ? await createShardedWasmBackend({
        instances: 3,
        instanceBytes: 10 * MIB,
        reserveBytes: 5 * MIB,
        threads,
      })
      : await createWasmBackend();
    if ("instanceCount" in be) equal(be.threads, threads);
    const model = await loadModel(bytes, { backend: be, nCtx: 64 });
    if (sharded && "stats" in be) {
      const used = be.stats().chargedBytes.filter((b) => b > 0).length;
      ok(used >= 2, `weights spread over ${used} instances: ${be.stats().chargedBytes}`);
    }
    const s = new Session(model, { nCtx: 64 });
    const logits: Uint32Array[] = [];
    const tokens: number[] = [];
    let l = await s.eval([5, 77, 120, 9, 33, 250, 17]);
    for (let i = 0; i < 6; i++) {
      logits.push(bits(l));
      const t = argmax(l);
      tokens.push(t);
      l = await s.eval([t]);
    }
    s.dispose();
    model.dispose();
    be.dispose();
    runs.push({ logits, tokens });
  }
  for (let i = 1; i < runs.length; i++) {
    deepEqual(runs[i].tokens, runs[0].tokens, `config ${i}`);
    runs[i].logits.forEach((l, j) => deepEqual(l, runs[0].logits[j], `config ${i} step ${j}`));
  }
});

Deno.test("experts streaming into slots across instances give the resident logits", async () => {
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
  const prompt = [5, 77, 120, 9, 33, 250, 17];
  const run = async (m: Awaited<ReturnType<typeof loadModel>>) => {
    const s = new Session(m, { nCtx: 64 });
    const out: Uint32Array[] = [];
    let l = await s.eval(prompt);
    for (let i = 0; i < 5; i++) {
      out.push(bits(l));
      l = await s.eval([argmax(l)]);
    }
    s.dispose();
    return out;
  };
  const one = await createWasmBackend();
  const ref = await loadModel(bytes, { backend: one, nCtx: 64 });
  const want = await run(ref);
  ref.dispose();
  one.dispose();
  // budget of ~5 of 24 experts: misses load into slots of whichever instance has room (in place)
  const sh = await createShardedWasmBackend({
    instances: 3,
    instanceBytes: 6 * MIB,
    reserveBytes: 2 * MIB,
  });
  const filler = sh.allocSlot(sh.stats().capacityBytes - 2 * MIB); // instance 0 keeps 2 MiB free
  const m = await loadModel(bytes, { backend: sh, nCtx: 64, expertBudgetBytes: 1200 * 1024 });
  equal(m.memoryPlan?.mode, "streaming");
  const got = await run(m);
  ok(m.store.stats().misses > 10, `misses ${m.store.stats().misses}`);
  sh.freeSlot(filler);
  ok(sh.stats().chargedBytes.filter((b) => b > 0).length >= 2, `${sh.stats().chargedBytes}`);
  got.forEach((l, i) => deepEqual(l, want[i], `step ${i}`));
  m.dispose();
  sh.dispose();
});

Deno.test("ffnSwiglu with gate/up/down in different instances equals the fused op", async () => {
  const one = await createWasmBackend();
  const sh = await createShardedWasmBackend({
    instances: 3,
    instanceBytes: 8 * MIB,
    reserveBytes: 2 * MIB,
  });
  const r = rng(7);
  const nEmbd = 256, nFf = 512;
  const types = [GgmlType.Q4_K, GgmlType.Q8_0, GgmlType.Q6_K];
  const mats = [
    randomWeights(r, types[0], nFf, nEmbd),
    randomWeights(r, types[1], nFf, nEmbd),
    randomWeights(r, types[2], nEmbd, nFf),
  ];
  const cap = sh.stats().capacityBytes;
  const views = (be: typeof one | typeof sh, fill: boolean): WeightView[] =>
    mats.map((m, i) => {
      // on the sharded backend, fill each instance before the next matrix so they straddle
      const slot = be.allocSlot(m.length);
      if (fill && i < 2) be.allocSlot(cap - (sh.stats().chargedBytes[i] ?? 0));
      be.writeSlot(slot, 0, m);
      return {
        slot,
        offset: 0,
        type: types[i],
        rows: i < 2 ? nFf : nEmbd,
        cols: i < 2 ? nEmbd : nFf,
      };
    });
  const v1 = views(one, false), v3 = views(sh, true);
  deepEqual(v3.map((v) => sh.instanceOf(v.slot)), [0, 1, 2]);
  for (const nTok of [1, 3]) {
    const x = new Float32Array(nTok * nEmbd);
    for (let t = 0; t < nTok; t++) x.set(randomActivations(r, nEmbd), t * nEmbd);
    const a = new Float32Array(nTok * nEmbd), b = new Float32Array(nTok * nEmbd);
    one.ffnSwiglu(v1[0], v1[1], v1[2], x, nTok, a);
    sh.ffnSwiglu(v3[0], v3[1], v3[2], x, nTok, b);
    deepEqual(bits(b), bits(a), `nTokens ${nTok}`);
    ok(a.some((v) => v !== 0));
  }
  throws(
    () => sh.ffnSwiglu(v3[0], v3[1], v3[0], new Float32Array(nEmbd), 1, new Float32Array(nEmbd)),
    isCode("bad_shape"),
  );
  one.dispose();
  sh.dispose();
});

Deno.test("a KV cache larger than one instance's room splits by layer; attention is unchanged", async () => {
  const one = await createWasmBackend();
  const sh = await createShardedWasmBackend({
    instances: 3,
    instanceBytes: 8 * MIB,
    reserveBytes: MIB,
  });
  const cap = sh.stats().capacityBytes;
  // leave instance 0 1 MiB of room, instances 1 and 2 1.5 MiB: 4 layers of 0.5 MiB cannot sit
  // in one instance
  const fills = [
    sh.allocSlot(cap - MIB),
    sh.allocSlot(cap - 1.5 * MIB),
    sh.allocSlot(cap - 1.5 * MIB),
  ];
  deepEqual(fills.map((s) => sh.instanceOf(s)), [0, 1, 2]);
  const spec = { layers: 4, nCtx: 256, nKvHeads: 2, headDimK: 256, headDimV: 256 };
  const c1 = one.createKvCache(spec), c3 = sh.createKvCache(spec);
  const parts = sh.kvPlacement(c3);
  ok(parts.length >= 2, `parts ${JSON.stringify(parts)}`);
  equal(parts.reduce((a, p) => a + p[2], 0), 4);
  const p = { nHeads: 4, nKvHeads: 2, headDimK: 256, headDimV: 256, scale: 1 / 16 };
  const r = rng(3);
  for (let layer = 0; layer < 4; layer++) {
    for (const [start, n] of [[0, 5], [5, 1], [6, 2]]) {
      const q = randomActivations(r, n * 4 * 256);
      const k = randomActivations(r, n * 2 * 256);
      const v = randomActivations(r, n * 2 * 256);
      const a = new Float32Array(n * 4 * 256), b = new Float32Array(n * 4 * 256);
      one.attention(c1, layer, start, n, q, k, v, p, a);
      sh.attention(c3, layer, start, n, q, k, v, p, b);
      deepEqual(bits(b), bits(a), `layer ${layer} start ${start}`);
    }
    deepEqual(bits(sh.readKv(c3, layer, "v", 8)), bits(one.readKv(c1, layer, "v", 8)));
  }
  const before = sh.stats().chargedBytes.reduce((a, b) => a + b, 0);
  sh.freeKvCache(c3);
  ok(sh.stats().chargedBytes.reduce((a, b) => a + b, 0) < before);
  throws(
    () => sh.attention(c3, 0, 0, 1, p as never, p as never, p as never, p, p as never),
    isCode("bad_cache"),
  );
  one.dispose();
  sh.dispose();
});

Deno.test("placement: first fit in instance order, out_of_memory when none has room", async () => {
  const sh = await createShardedWasmBackend({
    instances: 2,
    instanceBytes: 4 * MIB,
    reserveBytes: 0,
  });
  const cap = sh.stats().capacityBytes;
  equal(sh.caps.maxSlotBytes, cap);
  equal(sh.caps.heapBytes, heapFor(2, sh.caps.maxSlotBytes, 0));
  const a = sh.allocSlot(cap - MIB);
  const b = sh.allocSlot(2 * MIB); // does not fit instance 0's remaining MiB
  const c = sh.allocSlot(MIB / 2); // back-fills instance 0
  deepEqual([a, b, c].map((s) => sh.instanceOf(s)), [0, 1, 0]);
  throws(() => sh.allocSlot(cap), isCode("out_of_memory"));
  throws(() => sh.allocSlot(-1), isCode("bad_size"));
  sh.freeSlot(a);
  equal(sh.instanceOf(sh.allocSlot(cap - MIB)), 0); // freed room is reused
  throws(() => sh.freeSlot(a), isCode("bad_slot"));
  sh.dispose();
});

Deno.test("heapBytes picks the instance count; bad options are typed errors", async () => {
  const sh = await createShardedWasmBackend({
    heapBytes: 20 * MIB,
    instanceBytes: 8 * MIB,
    reserveBytes: MIB,
  });
  ok(sh.caps.heapBytes! >= 20 * MIB);
  ok(heapFor(sh.instanceCount - 1, sh.caps.maxSlotBytes + MIB, MIB) < 20 * MIB);
  sh.dispose();
  for (
    const bad of [
      { instances: 0 },
      { instances: 65 },
      { instanceBytes: MIB },
      { instanceBytes: 5 * 1024 ** 3 },
      { reserveBytes: 3 * MIB, instanceBytes: 4 * MIB },
      { heapBytes: -1 },
      { heapBytes: NaN },
    ]
  ) {
    let err: unknown;
    try {
      (await createShardedWasmBackend(bad)).dispose();
    } catch (e) {
      err = e;
    }
    ok(isCode("bad_options")(err), `${JSON.stringify(bad)}: ${err}`);
  }
  let err: unknown;
  try {
    (await createShardedWasmBackend({ heapBytes: 1e12, instanceBytes: 4 * MIB })).dispose();
  } catch (e) {
    err = e;
  }
  ok(isCode("out_of_memory")(err), String(err));
});

Deno.test("dispose releases every instance", async () => {
  const sh = await createShardedWasmBackend({
    instances: 2,
    instanceBytes: 4 * MIB,
    reserveBytes: 0,
  });
  const s = sh.allocSlot(sh.stats().capacityBytes);
  sh.allocSlot(MIB);
  ok(sh.memoryBytes() > 4 * MIB);
  sh.dispose();
  equal(sh.memoryBytes(), 0);
  throws(() => sh.allocSlot(64), isCode("disposed"));
  throws(() => sh.writeSlot(s, 0, new Uint8Array(1)), isCode("disposed"));
  sh.dispose(); // idempotent
});

Deno.test("loadModel goes multi-instance only when one heap stops the plan", async () => {
  // a "wasm" registry entry with 10 MiB heaps stands in for 4 GiB ones (this test file's registry)
  const { registerBackend } = await import("../core/backend/registry.ts");
  const { WASM_BACKEND_PRIORITY, wasmBackendFactory } = await import("./register.ts");
  const tiny = 10 * MIB;
  registerBackend(
    "wasm",
    WASM_BACKEND_PRIORITY,
    (o) =>
      o?.heapBytes !== undefined
        ? createShardedWasmBackend({
          heapBytes: o.heapBytes,
          reserveBytes: o.reserveBytes,
          instanceBytes: tiny,
        })
        : createWasmBackend({ maxMemoryBytes: tiny }),
  );
  try {
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
    const prompt = [5, 77, 120, 9];
    const logitsOf = async (m: Awaited<ReturnType<typeof loadModel>>) => {
      const s = new Session(m, { nCtx: 64 });
      const l = bits(await s.eval(prompt));
      s.dispose();
      return l;
    };
    // reference: one instance big enough for everything
    const big = await createWasmBackend();
    const ref = await loadModel(bytes, { backend: big, nCtx: 64 });
    equal(ref.memoryPlan?.mode, "resident");
    const want = await logitsOf(ref);
    ref.dispose();
    big.dispose();
    // no limit: one 10 MiB heap would stream; the machine holds it all -> several instances
    const wide = await loadModel(bytes, { backend: "wasm", nCtx: 64 });
    const be = wide.backend as { instanceCount?: number };
    ok((be.instanceCount ?? 1) >= 2, `instances ${be.instanceCount}`);
    equal(wide.memoryPlan?.mode, "resident");
    deepEqual(await logitsOf(wide), want);
    const p = wide.memoryPlan!;
    wide.dispose();
    wide.backend.dispose();
    // a limit below one heap binds first: one instance, streaming, same logits
    const lim = await loadModel(bytes, {
      backend: "wasm",
      nCtx: 64,
      // the host part, the fixed heap parts and 1.5 MiB of experts: under one 10 MiB heap
      memoryBytes: p.hostBytes + p.residentBytes + p.kvBytes + p.scratchBytes + 1.5 * MIB,
    });
    equal((lim.backend as { instanceCount?: number }).instanceCount, undefined);
    equal(lim.memoryPlan?.mode, "streaming");
    equal(lim.memoryPlan?.reason, "memory_limit");
    deepEqual(await logitsOf(lim), want);
    lim.dispose();
    lim.backend.dispose();
  } finally {
    registerBackend("wasm", WASM_BACKEND_PRIORITY, wasmBackendFactory);
  }
});

Deno.test({
  name:
    "on threads, Q/K/V and attention + output projection run fused in the instance holding them, and step aside across instances",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend();
    const sh = await createShardedWasmBackend({
      instances: 2,
      instanceBytes: 16 * MIB,
      reserveBytes: 2 * MIB,
      threads: 2,
    });
    try {
      const r = rng(21);
      const nEmbd = 1024, kvDim = 256, type = GgmlType.Q4_0;
      const shapes: [number, number][] = [[nEmbd, nEmbd], [kvDim, nEmbd], [kvDim, nEmbd], [
        nEmbd,
        nEmbd,
      ]];
      const mats = shapes.map(([rows, cols]) => randomWeights(r, type, rows, cols));
      const put = (be: typeof one | typeof sh, i: number): WeightView => {
        const slot = be.allocSlot(mats[i].length);
        be.writeSlot(slot, 0, mats[i]);
        return { slot, offset: 0, type, rows: shapes[i][0], cols: shapes[i][1] };
      };
      const w1 = mats.map((_, i) => put(one, i));
      const w2 = mats.map((_, i) => put(sh, i));
      equal(new Set(w2.map((w) => sh.instanceOf(w.slot))).size, 1, "all four in one instance");
      // a copy of Q in the other instance (fill the first one's room): Q/K/V then straddle
      sh.allocSlot(sh.stats().capacityBytes - sh.stats().chargedBytes[0]);
      const qOther = put(sh, 0);
      ok(sh.instanceOf(qOther.slot) !== sh.instanceOf(w2[0].slot));

      const x = randomActivations(r, nEmbd);
      const want = shapes.slice(0, 3).map(([rows]) => new Float32Array(rows));
      for (let i = 0; i < 3; i++) one.matmul(w1[i], x, 1, want[i]);
      const got = shapes.slice(0, 3).map(([rows]) => new Float32Array(rows));
      ok(sh.matmulMany(w2.slice(0, 3), x, 1, got), "fused in one instance");
      for (let i = 0; i < 3; i++) deepEqual(bits(got[i]), bits(want[i]), `matrix ${i}`);
      const untouched = shapes.slice(0, 3).map(([rows]) => new Float32Array(rows));
      equal(sh.matmulMany([qOther, w2[1], w2[2]], x, 1, untouched), false, "straddling");
      ok(untouched.every((o) => o.every((v) => v === 0)), "nothing written when declined");

      // attention + output projection: the cache sits in the roomier instance
      const spec = { layers: 2, nCtx: 64, nKvHeads: 4, headDimK: 64, headDimV: 64 };
      const c1 = one.createKvCache(spec), c2 = sh.createKvCache(spec);
      const [[cacheInst]] = sh.kvPlacement(c2);
      const p = { nHeads: 16, nKvHeads: 4, headDimK: 64, headDimV: 64, scale: 1 / 8 };
      const wo = sh.instanceOf(w2[3].slot) === cacheInst ? w2[3] : put(sh, 3);
      const woOther = sh.instanceOf(w2[3].slot) === cacheInst ? put(sh, 3) : w2[3];
      equal(sh.instanceOf(wo.slot), cacheInst);
      ok(sh.instanceOf(woOther.slot) !== cacheInst);
      let fused = 0;
      for (let pos = 0; pos < 40; pos++) {
        const q = randomActivations(r, nEmbd), k = randomActivations(r, kvDim);
        const v = randomActivations(r, kvDim);
        const att = new Float32Array(nEmbd), a = new Float32Array(nEmbd);
        one.attention(c1, 1, pos, 1, q, k, v, p, att);
        one.matmul(w1[3], att, 1, a);
        const b = new Float32Array(nEmbd);
        if (pos === 39) {
          // declined across instances (nothing stored), then the fused op in the right one
          equal(sh.attentionOutput(c2, 1, pos, 1, q, k, v, p, woOther, b), false);
          ok(b.every((x) => x === 0));
        }
        if (sh.attentionOutput(c2, 1, pos, 1, q, k, v, p, wo, b)) fused++;
        else {
          // too small to split at short positions: the unfused ops
          const att2 = new Float32Array(nEmbd);
          sh.attention(c2, 1, pos, 1, q, k, v, p, att2);
          sh.matmul(wo, att2, 1, b);
        }
        deepEqual(bits(b), bits(a), `position ${pos}`);
      }
      ok(fused >= 20, `fused at ${fused} of 40 positions`);
      deepEqual(bits(sh.readKv(c2, 1, "k", 40)), bits(one.readKv(c1, 1, "k", 40)));
    } finally {
      one.dispose();
      sh.dispose();
    }
  },
});
