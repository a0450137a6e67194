/**
 * Cost of the multi-instance option (wasm/sharded.ts) per op at batch 1,
 * same process, same weights: an OLMoE-1B-7B-shaped expert (Q4_K gate/up
 * 1024×2048, Q6_K down 2048×1024) as `ffnSwiglu` and as one `matmul`, on one
 * WasmBackend and on a ShardedWasmBackend whose weights sit in its second
 * instance; plus the activation copy itself (2048 f32 into linear memory,
 * which the single-instance backend does too) and the time to create an
 * instance.
 *
 * ```sh
 * deno run -A wasm/bench/mem64/sharded_overhead.ts [--reps 5] [--iters 400]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Backend, WeightView } from "../../../core/backend/backend.ts";
import { GgmlType } from "../../../core/tensor/ggml_type.ts";
import { createWasmBackend } from "../../backend.ts";
import { randomActivations, randomWeights, rng } from "../../kernel_test_util.ts";
import { createShardedWasmBackend } from "../../sharded.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { reps: { type: "string", default: "5" }, iters: { type: "string", default: "400" } },
});
const reps = Number(values.reps), iters = Number(values.iters);
const nEmbd = 2048, nFf = 1024;
const r = rng(1);
const mats = [
  { type: GgmlType.Q4_K, rows: nFf, cols: nEmbd },
  { type: GgmlType.Q4_K, rows: nFf, cols: nEmbd },
  { type: GgmlType.Q6_K, rows: nEmbd, cols: nFf },
].map((m) => ({ ...m, bytes: randomWeights(r, m.type, m.rows, m.cols) }));
const x = randomActivations(r, nEmbd);

function upload(be: Backend): WeightView[] {
  return mats.map((m) => {
    const slot = be.allocSlot(m.bytes.length);
    be.writeSlot(slot, 0, m.bytes);
    const v = { slot, offset: 0, type: m.type, rows: m.rows, cols: m.cols };
    be.prepareWeights?.(v);
    return v;
  });
}

/**
 * Fastest single call of `a` and of `b` (µs), calls alternating a, b, a, b… so the shared
 * machine's noise hits both alike; one call (0.1–1 ms) fits a scheduler slice.
 */
function bestPair(a: () => void, b: () => void): [number, number] {
  a();
  b();
  let ba = Infinity, bb = Infinity;
  for (let i = 0; i < reps * iters; i++) {
    let t = performance.now();
    a();
    ba = Math.min(ba, performance.now() - t);
    t = performance.now();
    b();
    bb = Math.min(bb, performance.now() - t);
  }
  return [ba * 1000, bb * 1000];
}

const cpu = /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "?";
console.log(
  `CPU ${cpu}; load ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}; fastest single call of ${
    reps * iters
  }, alternating`,
);

let t = performance.now();
const one = await createWasmBackend();
const createOne = performance.now() - t;
t = performance.now();
const sh = await createShardedWasmBackend({
  instances: 2,
  instanceBytes: 64 << 20,
  reserveBytes: 0,
});
const createTwo = performance.now() - t;
// push the expert into instance 1
sh.allocSlot(sh.stats().capacityBytes - (1 << 20));
const w1 = upload(one), w2 = upload(sh);
if (sh.instanceOf(w2[0].slot) !== 1) throw new Error("expected the weights in instance 1");

const out1 = new Float32Array(nEmbd), out2 = new Float32Array(nEmbd);
const rows = [
  [
    "ffnSwiglu (expert)",
    () => one.ffnSwiglu(w1[0], w1[1], w1[2], x, 1, out1),
    () => sh.ffnSwiglu(w2[0], w2[1], w2[2], x, 1, out2),
  ],
  [
    "matmul Q4_K 1024×2048",
    () => one.matmul(w1[0], x, 1, out1),
    () => sh.matmul(w2[0], x, 1, out2),
  ],
] as const;
console.log("| op (batch 1) | one instance µs | 2 instances, weights in #1 µs | ratio |");
console.log("|---|---:|---:|---:|");
for (const [name, a, b] of rows) {
  const [x1, x2] = bestPair(a, b);
  console.log(`| ${name} | ${x1.toFixed(1)} | ${x2.toFixed(1)} | ${(x2 / x1).toFixed(3)} |`);
}
// same bits
one.ffnSwiglu(w1[0], w1[1], w1[2], x, 1, out1);
sh.ffnSwiglu(w2[0], w2[1], w2[2], x, 1, out2);
const same = out1.every((v, i) => Object.is(v, out2[i]));
// the activation copy both backends do per op: 2048 f32 into linear memory
const mem = new WebAssembly.Memory({ initial: 16 });
const f32 = new Float32Array(mem.buffer);
const copy = bestPair(() => f32.set(x, 1024), () => {})[0];
console.log(
  `\nsame bits: ${same}; copy of one ${nEmbd}-float activation into linear memory: ${
    copy.toFixed(2)
  } µs; create 1 instance ${createOne.toFixed(1)} ms, 2 instances ${createTwo.toFixed(1)} ms`,
);
one.dispose();
sh.dispose();

// threads: every instance attaches its own memory to the one process-wide worker pool
// (each worker instantiates the module once per memory, with a 1 MiB stack in that memory)
for (const n of [1, 5]) {
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const b = await createShardedWasmBackend({ instances: n, threads: 2, instanceBytes: 64 << 20 });
  const ms = performance.now() - t0;
  console.log(
    `threads 2, ${n} instance${n > 1 ? "s" : ""}: created in ${ms.toFixed(1)} ms, RSS +${
      ((Deno.memoryUsage().rss - rss0) / 1048576).toFixed(1)
    } MiB, threads ${b.threads}`,
  );
  b.dispose();
}
