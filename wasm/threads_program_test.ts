/**
 * The pool's task programs (one fork for several dependent steps):
 * `ffnSwigluMany` (several experts' gate/up/SwiGLU, a barrier, their down
 * projections) and `matmulMany` (several matrices over the same rows) give
 * the same bits as `ffnSwiglu` / `matmul` on one thread, for mixed types,
 * shared and distinct inputs, uneven token counts and empty jobs; they
 * decline (false, nothing done) on one thread; bad shapes are typed errors.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { RopeMode, WeightView } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { createWasmBackend, type FfnJob, type WasmBackend } from "./backend.ts";
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

interface Expert {
  tg: GgmlType;
  tu: GgmlType;
  td: GgmlType;
  g: Uint8Array;
  u: Uint8Array;
  d: Uint8Array;
}

Deno.test({
  name: "ffnSwigluMany equals ffnSwiglu per job, bit for bit, at 2, 3 and 4 threads",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend({ threads: 1 });
    const bes = await Promise.all([2, 3, 4].map((threads) => createWasmBackend({ threads })));
    try {
      const r = rng(21);
      const nEmbd = 512, nFf = 768;
      const types: [GgmlType, GgmlType, GgmlType][] = [
        [GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K],
        [GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q4_0],
        [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q8_0],
        [GgmlType.F16, GgmlType.F32, GgmlType.Q4_K],
      ];
      const experts: Expert[] = types.map(([tg, tu, td]) => ({
        tg,
        tu,
        td,
        g: randomWeights(r, tg, nFf, nEmbd),
        u: randomWeights(r, tu, nFf, nEmbd),
        d: randomWeights(r, td, nEmbd, nFf),
      }));
      const shared = randomActivations(r, 3 * nEmbd);
      // decode-like (every expert on the same row), prefill-like (own rows, uneven), an empty job
      const cases: { e: number; x: Float32Array; n: number }[][] = [
        [{ e: 0, x: shared.subarray(0, nEmbd), n: 1 }, {
          e: 1,
          x: shared.subarray(0, nEmbd),
          n: 1,
        }],
        [
          { e: 0, x: randomActivations(r, 5 * nEmbd), n: 5 },
          { e: 2, x: shared, n: 3 },
          { e: 3, x: shared, n: 3 },
          { e: 1, x: randomActivations(r, 1 * nEmbd), n: 1 },
          { e: 1, x: shared, n: 0 },
        ],
        [{ e: 2, x: randomActivations(r, 9 * nEmbd), n: 9 }],
      ];
      const views = (be: WasmBackend) =>
        experts.map((x) => ({
          gate: upload(be, x.g, x.tg, nFf, nEmbd),
          up: upload(be, x.u, x.tu, nFf, nEmbd),
          down: upload(be, x.d, x.td, nEmbd, nFf),
        }));
      const ref = views(one);
      const vs = bes.map(views);
      for (const jobs of cases) {
        const want = jobs.map((j) => {
          const out = new Float32Array(j.n * nEmbd);
          const w = ref[j.e];
          if (j.n > 0) one.ffnSwiglu(w.gate, w.up, w.down, j.x, j.n, out);
          return out;
        });
        // one thread declines
        equal(
          one.ffnSwigluMany(
            jobs.map((j) => ({
              ...ref[j.e],
              x: j.x,
              nTokens: j.n,
              out: new Float32Array(j.n * nEmbd),
            })),
          ),
          false,
        );
        bes.forEach((be, b) => {
          for (let pass = 0; pass < 2; pass++) { // second pass: the matrices are packed by then
            const fj: FfnJob[] = jobs.map((j) => ({
              ...vs[b][j.e],
              x: j.x,
              nTokens: j.n,
              out: new Float32Array(j.n * nEmbd).fill(Number.NaN),
            }));
            ok(be.ffnSwigluMany(fj), `threads ${be.threads} ran it`);
            fj.forEach((j, i) =>
              deepEqual(bits(j.out), bits(want[i]), `threads ${be.threads} job ${i} pass ${pass}`)
            );
          }
        });
        want.forEach((o, i) =>
          ok(o.every(Number.isFinite), `job ${i} of ${JSON.stringify(jobs.map((j) => j.e))}`)
        );
      }
      // shapes that do not chain are a typed error
      const w = vs[0];
      throws(
        () =>
          bes[0].ffnSwigluMany([
            { ...w[0], x: shared, nTokens: 1, out: new Float32Array(nEmbd) },
            {
              gate: w[1].gate,
              up: w[1].up,
              down: w[1].gate,
              x: shared,
              nTokens: 1,
              out: new Float32Array(nEmbd),
            },
          ]),
        (e) => e instanceof BackendError && e.code === "bad_shape",
      );
      throws(
        () =>
          bes[0].ffnSwigluMany([{ ...w[0], x: shared, nTokens: 4, out: new Float32Array(nEmbd) }]),
        (e) => e instanceof BackendError && e.code === "bad_shape",
      );
    } finally {
      one.dispose();
      for (const be of bes) be.dispose();
    }
  },
});

Deno.test({
  name:
    "ffnSwigluMany reuses its program per shape: other experts of the same shape, and a scratch region that moved in between, give the bits of ffnSwiglu",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend({ threads: 1 });
    const be = await createWasmBackend({ threads: 2 });
    try {
      const r = rng(31);
      const nEmbd = 512, nFf = 512, t = GgmlType.Q4_0;
      const raw = [0, 1, 2, 3].map(() => ({
        g: randomWeights(r, t, nFf, nEmbd),
        u: randomWeights(r, t, nFf, nEmbd),
        d: randomWeights(r, t, nEmbd, nFf),
      }));
      const views = (b: WasmBackend) =>
        raw.map((x) => ({
          gate: upload(b, x.g, t, nFf, nEmbd),
          up: upload(b, x.u, t, nFf, nEmbd),
          down: upload(b, x.d, t, nEmbd, nFf),
        }));
      const ref = views(one), vs = views(be);
      // decode-like pairs of the same shape; the 40-token call grows (moves) the scratch region
      const steps: [number[], number][] = [
        [[0, 1], 1],
        [[2, 3], 1],
        [[1, 2], 1],
        [[3], 40],
        [[3, 0], 1],
        [[0, 1], 1],
      ];
      for (let round = 0; round < 2; round++) {
        for (const [es, n] of steps) {
          const x = randomActivations(r, n * nEmbd);
          const jobs: FfnJob[] = es.map((e) => ({
            ...vs[e],
            x,
            nTokens: n,
            out: new Float32Array(n * nEmbd).fill(Number.NaN),
          }));
          ok(be.ffnSwigluMany(jobs));
          es.forEach((e, i) => {
            const want = new Float32Array(n * nEmbd);
            one.ffnSwiglu(ref[e].gate, ref[e].up, ref[e].down, x, n, want);
            ok(want.every(Number.isFinite));
            deepEqual(bits(jobs[i].out), bits(want), `round ${round} experts ${es} job ${i}`);
          });
        }
      }
    } finally {
      one.dispose();
      be.dispose();
    }
  },
});

Deno.test({
  name: "matmulMany equals matmul per matrix, bit for bit, at 2 and 4 threads",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend({ threads: 1 });
    const bes = await Promise.all([2, 4].map((threads) => createWasmBackend({ threads })));
    try {
      const r = rng(33);
      const cols = 1024;
      const mats: [GgmlType, number][] = [
        [GgmlType.Q4_0, 1024],
        [GgmlType.Q4_0, 260],
        [GgmlType.Q8_0, 256],
        [GgmlType.Q4_K, 36],
        [GgmlType.F16, 128],
      ];
      const ws = mats.map(([t, rows]) => randomWeights(r, t, rows, cols));
      for (const nTok of [1, 3, 16]) {
        const x = randomActivations(r, nTok * cols);
        const want = mats.map(([t, rows], i) => {
          const out = new Float32Array(nTok * rows);
          one.matmul(upload(one, ws[i], t, rows, cols), x, nTok, out);
          return out;
        });
        for (const be of bes) {
          const vs = mats.map(([t, rows], i) => upload(be, ws[i], t, rows, cols));
          for (let pass = 0; pass < 2; pass++) {
            const outs = mats.map(([, rows]) => new Float32Array(nTok * rows).fill(Number.NaN));
            ok(be.matmulMany(vs, x, nTok, outs));
            outs.forEach((o, i) =>
              deepEqual(bits(o), bits(want[i]), `threads ${be.threads} t=${nTok} matrix ${i}`)
            );
          }
        }
      }
      const v1 = upload(one, ws[0], GgmlType.Q4_0, 1024, cols);
      equal(one.matmulMany([v1], new Float32Array(cols), 1, [new Float32Array(1024)]), false);
      const v2 = upload(bes[0], ws[0], GgmlType.Q4_0, 1024, cols);
      throws(
        () => bes[0].matmulMany([v2], new Float32Array(cols), 1, [new Float32Array(10)]),
        (e) => e instanceof BackendError && e.code === "bad_shape",
      );
    } finally {
      one.dispose();
      for (const be of bes) be.dispose();
    }
  },
});

Deno.test({
  name: "attentionOutput equals attention then matmul(wo), bit for bit, at 2 and 4 threads",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend({ threads: 1 });
    const bes = await Promise.all([2, 4].map((threads) => createWasmBackend({ threads })));
    try {
      const shapes: [number, number, number, GgmlType][] = [
        [4, 4, 64, GgmlType.Q4_0],
        [3, 2, 40, GgmlType.F16],
      ];
      for (const [nKv, g, hd, type] of shapes) {
        const p = {
          nHeads: nKv * g,
          nKvHeads: nKv,
          headDimK: hd,
          headDimV: hd,
          scale: 1 / Math.sqrt(hd),
        };
        const nAtt = p.nHeads * hd, rows = 2048;
        const r = rng(50 + nKv);
        const wb = randomWeights(r, type, rows, nAtt);
        const spec = { layers: 2, nCtx: 96, nKvHeads: nKv, headDimK: hd, headDimV: hd };
        const all = [one, ...bes];
        const caches = all.map((be) => be.createKvCache(spec));
        const wos = all.map((be) => upload(be, wb, type, rows, nAtt));
        let pos = 0;
        for (const nTok of [40, 1, 7, 1]) {
          for (let layer = 0; layer < 2; layer++) {
            const q = randomActivations(r, nTok * p.nHeads * hd);
            const k = randomActivations(r, nTok * nKv * hd);
            const v = randomActivations(r, nTok * nKv * hd);
            const att = new Float32Array(nTok * nAtt);
            one.attention(caches[0], layer, pos, nTok, q, k, v, p, att);
            const want = new Float32Array(nTok * rows);
            one.matmul(wos[0], att, nTok, want);
            ok(want.every(Number.isFinite));
            equal(
              one.attentionOutput(caches[0], layer, pos, nTok, q, k, v, p, wos[0], want),
              false,
            );
            bes.forEach((be, i) => {
              const out = new Float32Array(nTok * rows).fill(Number.NaN);
              ok(be.attentionOutput(caches[i + 1], layer, pos, nTok, q, k, v, p, wos[i + 1], out));
              deepEqual(
                bits(out),
                bits(want),
                `nKv ${nKv} pos ${pos} layer ${layer} threads ${be.threads}`,
              );
              // the cache holds the same rows
              deepEqual(
                bits(be.readKv(caches[i + 1], layer, "v", pos + nTok)),
                bits(one.readKv(caches[0], layer, "v", pos + nTok)),
              );
            });
          }
          pos += nTok;
        }
        // a wo that does not fit the attention output is a typed error
        throws(
          () =>
            bes[0].attentionOutput(
              caches[1],
              0,
              pos,
              1,
              new Float32Array(nAtt),
              new Float32Array(nKv * hd),
              new Float32Array(nKv * hd),
              p,
              { ...wos[1], cols: nAtt / 2 },
              new Float32Array(rows),
            ),
          (e) => e instanceof BackendError && e.code === "bad_shape",
        );
      }
    } finally {
      one.dispose();
      for (const be of bes) be.dispose();
    }
  },
});

Deno.test({
  name:
    "attentionBlock equals matmul ×3, rope of Q and K, attention and matmul(wo), bit for bit, at 2 and 4 threads (its program kept across decode steps)",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const one = await createWasmBackend({ threads: 1 });
    const bes = await Promise.all([2, 4].map((threads) => createWasmBackend({ threads })));
    try {
      // nKv, group, head dim, nRot, mode, Q/K/V/O types (mixed: activations shared by type)
      const shapes: [number, number, number, number, RopeMode, GgmlType[]][] = [
        [4, 4, 64, 64, 0, [GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_0]],
        [3, 2, 40, 32, 2, [GgmlType.Q4_K, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.F16]],
      ];
      for (const [nKv, g, hd, nRot, mode, types] of shapes) {
        const p = {
          nHeads: nKv * g,
          nKvHeads: nKv,
          headDimK: hd,
          headDimV: hd,
          scale: 1 / Math.sqrt(hd),
        };
        const rope = { mode, nRot, freqBase: 10000, freqScale: 1 };
        const cols = 1024, nAtt = p.nHeads * hd, rows = 512;
        const qd = p.nHeads * hd, kd = nKv * hd;
        const r = rng(60 + nKv);
        const dims: [number, number][] = [[qd, cols], [kd, cols], [kd, cols], [rows, nAtt]];
        const wbs = dims.map(([m, c], i) => randomWeights(r, types[i], m, c));
        const spec = { layers: 2, nCtx: 96, nKvHeads: nKv, headDimK: hd, headDimV: hd };
        const all = [one, ...bes];
        const caches = all.map((be) => be.createKvCache(spec));
        const ws = all.map((be) => {
          const [q, k, v, o] = dims.map(([m, c], i) => upload(be, wbs[i], types[i], m, c));
          return { q, k, v, o };
        });
        let pos = 0;
        for (const nTok of [40, 1, 1, 1, 7, 1, 1]) {
          const positions = Int32Array.from({ length: nTok }, (_, t) => pos + t);
          for (let layer = 0; layer < 2; layer++) {
            const x = randomActivations(r, nTok * cols);
            // the ops one by one, on one thread
            const w0 = ws[0];
            const q = new Float32Array(nTok * qd), k = new Float32Array(nTok * kd);
            const v = new Float32Array(nTok * kd), att = new Float32Array(nTok * nAtt);
            one.matmul(w0.q, x, nTok, q);
            one.matmul(w0.k, x, nTok, k);
            one.matmul(w0.v, x, nTok, v);
            one.rope(q, nTok, p.nHeads, hd, positions, rope);
            one.rope(k, nTok, nKv, hd, positions, rope);
            one.attention(caches[0], layer, pos, nTok, q, k, v, p, att);
            const want = new Float32Array(nTok * rows);
            one.matmul(w0.o, att, nTok, want);
            ok(want.every(Number.isFinite));
            equal(
              one.attentionBlock(caches[0], layer, pos, nTok, x, w0, positions, rope, p, want),
              false,
            );
            bes.forEach((be, i) => {
              const out = new Float32Array(nTok * rows).fill(Number.NaN);
              const c = caches[i + 1];
              ok(be.attentionBlock(c, layer, pos, nTok, x, ws[i + 1], positions, rope, p, out));
              const at = `nKv ${nKv} pos ${pos} layer ${layer} threads ${be.threads}`;
              deepEqual(bits(out), bits(want), at);
              // the cache holds the same (rotated) K rows and V rows
              for (const which of ["k", "v"] as const) {
                deepEqual(
                  bits(be.readKv(c, layer, which, pos + nTok)),
                  bits(one.readKv(caches[0], layer, which, pos + nTok)),
                  `${which} ${at}`,
                );
              }
            });
          }
          pos += nTok;
        }
        const be = bes[0], c = caches[1], w = ws[1];
        const bad = (e: unknown) => e instanceof BackendError && e.code === "bad_shape";
        const call = (over: Partial<typeof w>, positions = Int32Array.of(pos)) =>
          be.attentionBlock(
            c,
            0,
            pos,
            1,
            new Float32Array(cols),
            { ...w, ...over },
            positions,
            rope,
            p,
            new Float32Array(rows),
          );
        // a K that does not fit the heads, a wo that does not fit the attention output,
        // a negative position: typed errors, nothing run
        throws(() => call({ k: { ...w.k, rows: kd + 4 } }), bad);
        throws(() => call({ o: { ...w.o, cols: nAtt / 2 } }), bad);
        throws(() => call({}, Int32Array.of(-1)), bad);
      }
    } finally {
      one.dispose();
      for (const be of bes) be.dispose();
    }
  },
});

Deno.test({
  name:
    "many short jobs of changing sizes on more threads than cores: every result bit-identical, no stall",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    // 8 threads on a 2-core machine: workers are descheduled between seeing a job and
    // claiming a chunk, so a stale worker meets the next job half written; a claim must
    // never take a chunk of a job it read half of, nor count one twice (that stalled the
    // join until the watchdog, or let a barrier pass early)
    const one = await createWasmBackend({ threads: 1 });
    const many = await createWasmBackend({ threads: 8 });
    const pool = many.threadPool!;
    pool.watchdogMs = 20_000;
    try {
      const r = rng(77);
      const nEmbd = 256, nFf = 256;
      const types: [GgmlType, GgmlType, GgmlType][] = [
        [GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q8_0],
        [GgmlType.Q8_0, GgmlType.Q8_0, GgmlType.Q4_0],
        [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_0],
      ];
      const experts: Expert[] = types.map(([tg, tu, td]) => ({
        tg,
        tu,
        td,
        g: randomWeights(r, tg, nFf, nEmbd),
        u: randomWeights(r, tu, nFf, nEmbd),
        d: randomWeights(r, td, nEmbd, nFf),
      }));
      const views = (be: WasmBackend) =>
        experts.map((x) => ({
          gate: upload(be, x.g, x.tg, nFf, nEmbd),
          up: upload(be, x.u, x.tu, nFf, nEmbd),
          down: upload(be, x.d, x.td, nEmbd, nFf),
        }));
      const ref = views(one), vs = views(many);
      const wm = randomWeights(r, GgmlType.Q8_0, 8, nEmbd);
      const m1 = upload(one, wm, GgmlType.Q8_0, 8, nEmbd);
      const m8 = upload(many, wm, GgmlType.Q8_0, 8, nEmbd);
      const xs = [1, 2, 3, 4].map((n) => randomActivations(r, n * nEmbd));
      const run = (be: WasmBackend, w: typeof ref, it: number): Float32Array[] => {
        if (it % 3 === 2) { // a tiny job (few chunks) between bigger ones
          const out = new Float32Array(8);
          be.matmul(be === one ? m1 : m8, xs[0], 1, out);
          return [out];
        }
        const jobs: FfnJob[] = (it % 3 === 0 ? [0] : [0, 1, 2]).map((e, i) => ({
          ...w[(e + it) % 3],
          x: xs[(i + it) % 4],
          nTokens: ((i + it) % 4) + 1,
          out: new Float32Array((((i + it) % 4) + 1) * nEmbd),
        }));
        if (be === one || !be.ffnSwigluMany(jobs)) {
          for (const j of jobs) be.ffnSwiglu(j.gate, j.up, j.down, j.x, j.nTokens, j.out);
        }
        return jobs.map((j) => j.out);
      };
      const t0 = performance.now();
      for (let it = 0; it < 1200; it++) {
        const want = run(one, ref, it);
        const got = run(many, vs, it);
        got.forEach((o, i) => deepEqual(bits(o), bits(want[i]), `iteration ${it} output ${i}`));
      }
      ok(performance.now() - t0 < 60_000);
    } finally {
      one.dispose();
      many.dispose();
    }
  },
});
