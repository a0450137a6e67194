/**
 * Micro-bench: WASM matvec throughput in GB/s of weight bytes, against a
 * memcpy of the same byte count in the same run (`copyWithin` on linear
 * memory, i.e. V8's native memmove).
 *
 *   deno run wasm/bench/matvec.ts [--scalar]
 *
 * @module
 */

import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { KernelHarness, randomActivations, randomWeights, rng } from "../kernel_test_util.ts";

const H = await KernelHarness.create();
const k = H.k;
const scalar = Deno.args.includes("--scalar");

/** Best-of-15 batches (min ms per call): robust against a noisy shared machine. */
function timeIt(fn: () => void, batchMs = 25): number {
  for (let i = 0; i < 5; i++) fn();
  let best = Infinity;
  for (let b = 0; b < 15; b++) {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < batchMs) {
      fn();
      n++;
      t = performance.now();
    }
    best = Math.min(best, (t - t0) / n);
  }
  return best;
}

const rowsN: string[] = [];
for (const [rows, cols] of [[2816, 1024], [1024, 2816]]) {
  for (
    const [name, type] of [
      ["F32", GgmlType.F32],
      ["F16", GgmlType.F16],
      ["Q8_0", GgmlType.Q8_0],
      ["Q4_0", GgmlType.Q4_0],
      ["Q4_K", GgmlType.Q4_K],
      ["Q6_K", GgmlType.Q6_K],
    ] as const
  ) {
    H.reset();
    const w = randomWeights(rng(1), type, rows, cols);
    const wp = H.putU8(w);
    const copyDst = H.alloc(w.length);
    const mem = () => new Uint8Array(k.memory.buffer);
    for (const nTok of [1, 16]) {
      const x = new Float32Array(nTok * cols);
      for (let t = 0; t < nTok; t++) x.set(randomActivations(rng(2 + t), cols), t * cols);
      const xp = H.putF32(x);
      const op = H.alloc(4 * nTok * rows);
      const sp = H.alloc(k.matmul_scratch_bytes(type, cols, nTok));
      const mm = scalar ? k.matmul_scalar : k.matmul;
      const ms = timeIt(() => mm(type, wp, rows, cols, xp, nTok, op, sp));
      const msCopy = timeIt(() => mem().copyWithin(copyDst, wp, wp + w.length));
      const gbs = w.length / ms / 1e6;
      const gbsCopy = w.length / msCopy / 1e6;
      rowsN.push(
        `| ${name} | ${rows}×${cols} | ${nTok} | ${(w.length / 1e6).toFixed(2)} | ${
          ms.toFixed(3)
        } | ${gbs.toFixed(2)} | ${gbsCopy.toFixed(2)} | ${(gbs / gbsCopy).toFixed(2)} | ${
          (2 * rows * cols * nTok / ms / 1e6).toFixed(1)
        } |`,
      );
    }
  }
}
console.log(
  `WASM ${
    scalar ? "scalar twins" : "SIMD"
  } matmul, single thread (Deno ${Deno.version.deno}, V8 ${Deno.version.v8})`,
);
console.log(
  "| type | rows×cols | tokens | weight MB | ms/call | weight GB/s | memcpy GB/s | ratio | GFLOP/s |",
);
console.log("|---|---|---|---|---|---|---|---|---|");
for (const r of rowsN) console.log(r);
