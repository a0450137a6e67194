/**
 * The thread pool: matmul and the fused FFN bit-identical at 1, 2, 3 and 4
 * threads for every format (packed and standard layouts, decode and prefill,
 * row counts that do not split evenly), the row split, option checks, and
 * the pool's lifecycle (workers stop with the last backend).
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { WeightView } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { FORMATS, randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { createWasmBackend, type WasmBackend } from "./backend.ts";
import { rowRange } from "./thread_split.ts";
import { checkThreads } from "./threads.ts";
import { sharedMemorySupported } from "./pkg/moe_edge_kernels.ts";

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function upload(
  be: WasmBackend,
  bytes: Uint8Array,
  type: GgmlType,
  rows: number,
  cols: number,
): WeightView {
  const slot = be.allocSlot(bytes.length);
  be.writeSlot(slot, 0, bytes);
  return { slot, offset: 0, type, rows, cols };
}

Deno.test("rowRange: parts tile [0, rows) in order on multiples of 4", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 64 }), (rows, n) => {
      let prev = 0;
      for (let t = 0; t < n; t++) {
        const [r0, r1] = rowRange(rows, n, t);
        equal(r0, prev);
        ok(r1 >= r0);
        if (r1 < rows) equal(r1 % 4, 0);
        prev = r1;
      }
      equal(prev, rows);
    }),
  );
});

Deno.test("threads option: bad counts are a typed BackendError", async () => {
  for (const bad of [0, -1, 1.5, 65, Number.NaN, "2"]) {
    throws(() => checkThreads(bad), BackendError);
    let thrown: unknown = null;
    try {
      await createWasmBackend({ threads: bad as number });
    } catch (e) {
      thrown = e;
    }
    ok(thrown instanceof BackendError && thrown.code === "bad_threads", `threads ${String(bad)}`);
  }
});

Deno.test({
  name:
    "matmul and ffnSwiglu are bit-identical at 1, 2, 3 and 4 threads (every format, packed and not)",
  ignore: !sharedMemorySupported(),
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const counts = [1, 2, 3, 4];
    const bes = await Promise.all(counts.map((threads) => createWasmBackend({ threads })));
    deepEqual(bes.map((b) => b.threads), counts);
    try {
      const r = rng(7);
      for (const f of FORMATS) {
        for (const [rows, nTok] of [[260, 1], [132, 5], [37, 2], [512, 17]]) {
          const cols = 1024;
          const w = randomWeights(r, f.type, rows, cols);
          const x = randomActivations(r, nTok * cols);
          const outs = bes.map((be) => {
            const v = upload(be, w, f.type, rows, cols);
            const out = new Float32Array(nTok * rows);
            be.matmul(v, x, nTok, out);
            be.matmul(v, x, nTok, out); // second call: packed by now
            return out;
          });
          for (let i = 1; i < outs.length; i++) {
            deepEqual(
              bits(outs[i]),
              bits(outs[0]),
              `${f.name} ${rows}x${cols} t=${nTok} threads=${counts[i]}`,
            );
          }
        }
      }
      // Fused FFN: types mixed as in Q4_K_M (gate/up Q4_K, down Q6_K) and more.
      const mixes: [GgmlType, GgmlType, GgmlType][] = [
        [GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K],
        [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q8_0],
        [GgmlType.F16, GgmlType.F32, GgmlType.Q4_K],
      ];
      for (const [tg, tu, td] of mixes) {
        for (const nTok of [1, 3, 9]) {
          const nEmbd = 512, nFf = 768;
          const wg = randomWeights(r, tg, nFf, nEmbd);
          const wu = randomWeights(r, tu, nFf, nEmbd);
          const wd = randomWeights(r, td, nEmbd, nFf);
          const x = randomActivations(r, nTok * nEmbd);
          const outs = bes.map((be) => {
            const g = upload(be, wg, tg, nFf, nEmbd);
            const u = upload(be, wu, tu, nFf, nEmbd);
            const d = upload(be, wd, td, nEmbd, nFf);
            const out = new Float32Array(nTok * nEmbd);
            be.ffnSwiglu(g, u, d, x, nTok, out);
            return out;
          });
          for (let i = 1; i < outs.length; i++) {
            deepEqual(
              bits(outs[i]),
              bits(outs[0]),
              `ffn ${tg}/${tu}/${td} t=${nTok} threads=${counts[i]}`,
            );
          }
          ok(outs[0].every(Number.isFinite));
        }
      }
    } finally {
      for (const be of bes) be.dispose();
    }
  },
});

Deno.test("attachThreads on a single-threaded backend is a typed error", async () => {
  const be = await createWasmBackend({ threads: 1 });
  equal(be.threadPool, null);
  let thrown: unknown = null;
  try {
    await be.attachThreads(2);
  } catch (e) {
    thrown = e;
  }
  ok(thrown instanceof BackendError && thrown.code === "bad_threads");
  be.dispose();
});

Deno.test({
  name: "the pool is shared and stops with the last backend; a disposed backend refuses ops",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const a = await createWasmBackend({ threads: 2 });
    const b = await createWasmBackend({ threads: 2 });
    a.dispose();
    // b still runs threaded after a is gone.
    const w = randomWeights(rng(3), GgmlType.Q8_0, 512, 1024);
    const v = upload(b, w, GgmlType.Q8_0, 512, 1024);
    const out = new Float32Array(512);
    b.matmul(v, randomActivations(rng(4), 1024), 1, out);
    ok(out.every(Number.isFinite));
    b.dispose();
    throws(() => b.matmul(v, new Float32Array(1024), 1, out), BackendError);
  },
});

Deno.test({
  name:
    "a worker that dies gives a typed BackendError, never a hang; a new backend gets a fresh pool",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const w = randomWeights(rng(5), GgmlType.Q8_0, 512, 1024);
    const x = randomActivations(rng(6), 1024);
    const out = new Float32Array(512);
    // a worker that dies: ops stay correct (the caller claims the chunks the dead worker
    // leaves), and once its exit is seen every threaded op fails with a typed error
    const a = await createWasmBackend({ threads: 2 });
    const va = upload(a, w, GgmlType.Q8_0, 512, 1024);
    const pool = a.threadPool!;
    pool.watchdogMs = 2000;
    const before = new Float32Array(512);
    a.matmul(va, x, 1, before);
    pool.killWorker(0);
    const t0 = performance.now();
    let err: unknown = null;
    for (let i = 0; i < 100 && err === null; i++) {
      try {
        a.matmul(va, x, 1, out);
        deepEqual(bits(out), bits(before));
      } catch (e) {
        err = e;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    ok(err instanceof BackendError, String(err));
    ok(["thread_timeout", "thread_died"].includes(err.code), err.code);
    ok(performance.now() - t0 < 10_000);
    throws(
      () => a.matmul(va, x, 1, out),
      (e) => e instanceof BackendError && e.code === "thread_died",
    );
    a.dispose();
    // a later backend starts a fresh pool and computes the single-thread result
    const b = await createWasmBackend({ threads: 2 });
    const c = await createWasmBackend({ threads: 1 });
    ok(b.threadPool !== pool);
    const ob = new Float32Array(512), oc = new Float32Array(512);
    b.matmul(upload(b, w, GgmlType.Q8_0, 512, 1024), x, 1, ob);
    c.matmul(upload(c, w, GgmlType.Q8_0, 512, 1024), x, 1, oc);
    deepEqual(bits(ob), bits(oc));
    b.dispose();
    c.dispose();
  },
});

Deno.test({
  name:
    "attention split by KV heads is bit-identical at 1, 2, 3 and 4 threads (prefill + decode, GQA)",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const counts = [1, 2, 3, 4];
    const bes = await Promise.all(counts.map((threads) => createWasmBackend({ threads })));
    try {
      for (const [nKv, g, hd] of [[4, 2, 64], [3, 3, 40], [8, 1, 32]]) {
        const spec = { layers: 2, nCtx: 160, nKvHeads: nKv, headDimK: hd, headDimV: hd };
        const p = {
          nHeads: nKv * g,
          nKvHeads: nKv,
          headDimK: hd,
          headDimV: hd,
          scale: 1 / Math.sqrt(hd),
        };
        const caches = bes.map((be) => be.createKvCache(spec));
        const r = rng(11 + nKv);
        let pos = 0;
        for (const nTok of [96, 1, 17, 1]) {
          for (let layer = 0; layer < 2; layer++) {
            const q = randomActivations(r, nTok * p.nHeads * hd);
            const k = randomActivations(r, nTok * nKv * hd);
            const v = randomActivations(r, nTok * nKv * hd);
            const outs = bes.map((be, i) => {
              const out = new Float32Array(nTok * p.nHeads * hd);
              be.attention(caches[i], layer, pos, nTok, q, k, v, p, out);
              return out;
            });
            for (let i = 1; i < outs.length; i++) {
              deepEqual(
                bits(outs[i]),
                bits(outs[0]),
                `nKv ${nKv} pos ${pos} layer ${layer} threads ${counts[i]}`,
              );
            }
            ok(outs[0].every(Number.isFinite));
            // the cache holds the same rows too
            deepEqual(
              bits(bes[3].readKv(caches[3], layer, "k", pos + nTok)),
              bits(bes[0].readKv(caches[0], layer, "k", pos + nTok)),
            );
          }
          pos += nTok;
        }
      }
    } finally {
      for (const be of bes) be.dispose();
    }
  },
});
