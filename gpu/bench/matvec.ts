/**
 * Matvec micro-benchmark: WebGPU vs the reference and WASM backends on the
 * same weights (best of 3 batches, same run), with ratios (> 1 = WebGPU
 * faster), plus the WebGPU marginal cost of one more matvec batched into the
 * same round trip (`matmulMany` of 8), which separates kernel time from the
 * per-readback floor (~11 ms in Deno 2.9).
 *
 * Run: `deno run -A gpu/bench/matvec.ts` (prints a markdown table).
 *
 * @module
 */

import type { Backend, WeightView } from "../../core/backend/backend.ts";
import { createRefBackend } from "../../core/backend/ref_backend.ts";
import { GgmlType, ggmlTypeName } from "../../core/tensor/ggml_type.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../backend.ts";
import { randomActivations, randomWeights, rng } from "../gpu_test_util.ts";

const SHAPES: [GgmlType, number, number, number][] = [
  [GgmlType.Q8_0, 2816, 1024, 1],
  [GgmlType.Q4_0, 2816, 1024, 1],
  [GgmlType.F16, 2816, 1024, 1],
  [GgmlType.F32, 2816, 1024, 1],
  [GgmlType.Q4_0, 1024, 2816, 1],
  [GgmlType.Q4_0, 1024, 2816, 16],
];
const BATCH = 8;

function time(fn: () => void, reps: number): number {
  fn(); // warm (pipeline compilation, mirrors)
  let best = Infinity;
  for (let b = 0; b < 3; b++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) fn();
    best = Math.min(best, (performance.now() - t) / reps);
  }
  return best;
}

const gpu = (await createWebGpuBackend()) as WebGpuBackend;
if (!gpu) {
  console.log("no WebGPU adapter");
  Deno.exit(0);
}
const ref = createRefBackend();
const wasm = await createWasmBackend();
console.log(
  `adapter: ${gpu.device.description}${gpu.device.isFallbackAdapter ? " (fallback)" : ""}`,
);
console.log(
  "\n| weights | rows×cols, tokens | ref ms | wasm ms | webgpu ms/call | ref ÷ webgpu | wasm ÷ webgpu | webgpu marginal ms | marginal GB/s |",
);
console.log("|---|---|---|---|---|---|---|---|---|");
for (const [type, rows, cols, nTok] of SHAPES) {
  const r = rng(rows + cols + type);
  const w = randomWeights(r, type, rows, cols);
  const x = new Float32Array(nTok * cols);
  for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
  const view = (be: Backend): WeightView => {
    const slot = be.allocSlot(w.length);
    be.writeSlot(slot, 0, w);
    return { slot, offset: 0, type, rows, cols };
  };
  const out = new Float32Array(nTok * rows);
  const vr = view(ref), vw = view(wasm), vg = view(gpu);
  const tRef = time(() => ref.matmul(vr, x, nTok, out), 3);
  const tWasm = time(() => wasm.matmul(vw, x, nTok, out), 20);
  const tGpu = time(() => gpu.matmul(vg, x, nTok, out), 10);
  const many = Array.from({ length: BATCH }, () => vg);
  const outs = Array.from({ length: BATCH }, () => new Float32Array(nTok * rows));
  const tMany = time(() => gpu.matmulMany(many, x, nTok, outs), 5);
  const marginal = (tMany - tGpu) / (BATCH - 1);
  const cells = [
    ggmlTypeName(type),
    `${rows}×${cols}, ${nTok}`,
    tRef.toFixed(2),
    tWasm.toFixed(2),
    tGpu.toFixed(2),
    (tRef / tGpu).toFixed(2),
    (tWasm / tGpu).toFixed(3),
    marginal.toFixed(2),
    (w.length / (marginal * 1e6)).toFixed(2),
  ];
  console.log(`| ${cells.join(" | ")} |`);
  for (const [be, v] of [[ref, vr], [wasm, vw], [gpu, vg]] as const) be.freeSlot(v.slot);
}
gpu.dispose();
