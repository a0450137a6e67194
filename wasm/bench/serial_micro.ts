/**
 * The calling thread's own work in the fused programs, without the parallel
 * regions: on a 2-thread backend with `pool.run` replaced by a no-op, times
 * `attentionBlock` (and `attentionOutput` + `matmulMany`) and `ffnSwigluMany`
 * over the bench MoE's decode shapes (1024 wide, 16/4 heads of 64, 2 experts
 * of 1024, Q4_0). The results are garbage (no task runs); only the time
 * counts. Best of `--rounds` batches of `--calls`, µs per call.
 *
 *   deno run -A wasm/bench/serial_micro.ts [--calls 2000] [--rounds 7]
 *
 * @module
 */
import { arg } from "./bench_args.ts";
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";
import { createWasmBackend, type WasmBackend } from "../backend.ts";

const calls = Number(arg("calls", "2000"));
const rounds = Number(arg("rounds", "7"));

const be = await createWasmBackend({ threads: 2 });
const pool = be.threadPool!;
pool.run = () => {};
const r = rng(3);
function up(b: WasmBackend, rows: number, cols: number, type: GgmlType = GgmlType.Q4_0) {
  const bytes = randomWeights(r, type, rows, cols);
  const slot = b.allocSlot(bytes.length);
  b.writeSlot(slot, 0, bytes);
  return { slot, offset: 0, type, rows, cols };
}
const nEmbd = 1024, nFf = 1024, hd = 64, nH = 16, nKv = 4;
const w = {
  q: up(be, nH * hd, nEmbd),
  k: up(be, nKv * hd, nEmbd),
  v: up(be, nKv * hd, nEmbd),
  o: up(be, nEmbd, nH * hd),
};
const experts = [0, 1].map(() => ({
  gate: up(be, nFf, nEmbd),
  up: up(be, nFf, nEmbd),
  down: up(be, nEmbd, nFf),
}));
const cache = be.createKvCache({ layers: 1, nCtx: 256, nKvHeads: nKv, headDimK: hd, headDimV: hd });
const p = { nHeads: nH, nKvHeads: nKv, headDimK: hd, headDimV: hd, scale: 0.125 };
const rope = { mode: 0 as const, nRot: hd, freqBase: 10000, freqScale: 1 };
const x = randomActivations(r, nEmbd);
const out = new Float32Array(nEmbd);
const q = new Float32Array(nH * hd), k = new Float32Array(nKv * hd), v = new Float32Array(nKv * hd);
const pos = Int32Array.of(80);
const jobs = experts.map((e) => ({ ...e, x, nTokens: 1, out: new Float32Array(nEmbd) }));
const router = up(be, 8, nEmbd, GgmlType.F32);
const logits = new Float32Array(8);
const cases: [string, () => void][] = [
  ["attentionBlock", () => be.attentionBlock(cache, 0, 80, 1, x, w, pos, rope, p, out)],
  ["matmulMany q,k,v + rope ×2 + attentionOutput", () => {
    be.matmulMany([w.q, w.k, w.v], x, 1, [q, k, v]);
    be.rope(q, 1, nH, hd, pos, rope);
    be.rope(k, 1, nKv, hd, pos, rope);
    be.attentionOutput(cache, 0, 80, 1, q, k, v, p, w.o, out);
  }],
  ["ffnSwigluMany (2 experts, 1 token)", () => be.ffnSwigluMany(jobs)],
  ["matmul 8×1024 F32 (a router)", () => be.matmul(router, x, 1, logits)],
  ["rmsnorm 1024", () => be.rmsnorm(x, nEmbd, 1e-5, x, out)],
];
for (const [name, f] of cases) {
  let best = Infinity;
  for (let i = 0; i < 200; i++) f();
  for (let rd = 0; rd < rounds; rd++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) f();
    best = Math.min(best, (performance.now() - t0) * 1000 / calls);
  }
  console.log(`${name}: ${best.toFixed(2)} µs/call`);
}

console.log(`load ${Deno.loadavg().join(" ")}`);
be.dispose();
Deno.exit(0);
