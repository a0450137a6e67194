/**
 * The 2-thread ceiling of the machine right now: an integer loop alone,
 * then the same loop on this thread and a worker at once; the throughput
 * ratio (≤ 2) is what any 2-thread speed-up can reach while other processes
 * hold the cores. Run next to thread benchmarks on a shared machine.
 *
 *   deno run -A wasm/bench/cpu_ceiling.ts
 *
 * @module
 */

import { Worker } from "node:worker_threads";

/** `n` steps of an LCG (pure integer work, no memory traffic). */
export function spinLoop(n: number): number {
  let x = 0;
  for (let i = 0; i < n; i++) x = (x * 1664525 + 1013904223) | 0;
  return x;
}

/**
 * Throughput of two threads over one on `n` loop steps each (best of
 * `rounds` pairs of runs).
 */
export async function cpuCeiling(n = 1e8, rounds = 3): Promise<number> {
  const w = new Worker(new URL("./cpu_ceiling_worker.ts", import.meta.url));
  try {
    await new Promise<void>((r) => {
      w.once("message", () => r());
      w.postMessage(1000);
    });
    let one = Infinity, two = Infinity;
    for (let k = 0; k < rounds; k++) {
      let t0 = performance.now();
      spinLoop(n);
      one = Math.min(one, performance.now() - t0);
      t0 = performance.now();
      const p = new Promise((r) => w.once("message", r));
      w.postMessage(n);
      spinLoop(n);
      await p;
      two = Math.min(two, performance.now() - t0);
    }
    return (2 * one) / two;
  } finally {
    await w.terminate();
  }
}

if (import.meta.main) {
  console.log(`2-thread throughput ceiling now: ${(await cpuCeiling()).toFixed(2)}×`);
}
