/**
 * Fork/join cost of the thread pool: an empty job (every chunk empty) timed
 * back to back and after a busy gap of the calling thread (the workers spin
 * for a short while after a job, then sleep: a job after a long gap pays
 * their wake-up). Median and best over `--n` forks per case.
 *
 *   deno run -A wasm/bench/threads_fork.ts [--threads 2] [--n 2000]
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";
import { createWasmBackend } from "../backend.ts";
import { OP_MATMUL } from "../thread_split.ts";

const threads = Number(arg("threads", "2"));
const n = Number(arg("n", "2000"));
const be = await createWasmBackend({ threads });
const pool = be.threadPool;
if (pool === null) throw new Error("no pool: shared memory unavailable");
// an OP_MATMUL job over 0 rows: every chunk is empty on every thread
const args = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
// the first threaded backend of a process runs on memory id 1 (empty chunks never read it)
const mem = 1;

function spin(us: number): void {
  const t0 = performance.now();
  while (performance.now() - t0 < us / 1000) { /* busy */ }
}

const load0 = Deno.loadavg();
console.log(`| gap before fork (µs) | median fork µs | best fork µs |`);
console.log(`| --: | --: | --: |`);
for (const gap of [0, 20, 50, 100, 1000]) {
  const ts: number[] = [];
  for (let i = 0; i < Math.min(n, gap >= 1000 ? 300 : n); i++) {
    if (gap > 0) spin(gap);
    const t0 = performance.now();
    pool.run(mem, threads, OP_MATMUL, args, () => 0);
    ts.push((performance.now() - t0) * 1000);
  }
  ts.sort((a, b) => a - b);
  console.log(`| ${gap} | ${ts[ts.length >> 1].toFixed(1)} | ${ts[0].toFixed(1)} |`);
}
const load1 = Deno.loadavg();
console.log(
  `threads ${threads}; load average before ${load0.map((v) => v.toFixed(2)).join(" ")}, after ${
    load1.map((v) => v.toFixed(2)).join(" ")
  }; ${navigator.hardwareConcurrency} CPUs (${cpuModel()})`,
);
be.dispose();
