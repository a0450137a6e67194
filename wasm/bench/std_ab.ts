/**
 * Standard (unpacked) vs packed decode matvec, and the repack, on a
 * 2816×1024 matrix (one expert's gate/up in the bench MoE), for two builds
 * of the single-threaded relaxed kernel module: A's standard layout, B's
 * standard layout, B's packed layout and B's in-place repack
 * (`pack_weights`, then unpack, per call pair; the repack time is half of
 * that). Round-robin in one process, 15 rounds × 40 ms each; `clock=cpu`
 * reports mean process CPU time per call (time slices lost to other
 * processes on a loaded machine do not count). It also checks that all
 * three matvecs write the same output bits.
 *
 *   git show <rev>:wasm/pkg/moe_edge_kernels_relaxed.wasm > /tmp/old.wasm
 *   deno run -A wasm/bench/std_ab.ts /tmp/old.wasm wasm/pkg/moe_edge_kernels_relaxed.wasm \
 *     [types=Q4_0,Q4_K] [clock=wall|cpu] [shape=2816x1024]
 *
 * @module
 */

import { cpuModel } from "./bench_args.ts";
import process from "node:process";
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";

interface Raw {
  memory: WebAssembly.Memory;
  heap_base(): number;
  pack_scratch_bytes(ty: number, cols: number): number;
  pack_weights(ty: number, w: number, rows: number, cols: number, tmp: number, inv: number): number;
  matmul(...a: number[]): number;
}

if (Deno.args.length < 2) throw new Error("usage: std_ab.ts A.wasm B.wasm [types=..] [clock=cpu]");
const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`${k}=`))?.slice(k.length + 1) ?? d;
const TYPES = opt("types", "Q4_0,Q4_K").split(",");
const CPU = opt("clock", "wall") === "cpu";
const [rows, cols] = opt("shape", "2816x1024").split("x").map(Number);
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const [A, B] = Deno.args.slice(0, 2).map((p) =>
  new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw
);
console.log(`CPU ${Deno.build.arch} ${cpuModel()}; ${rows}x${cols}`);

/** Weights + activations placed in `k`'s memory; returns the call and its output view. */
function setup(k: Raw, w: Uint8Array, x: Float32Array, slot: number) {
  const size = Math.ceil((w.length + 4 * (rows + cols) + (6 << 20)) / 65536) * 65536;
  const base = ((k.heap_base() + 63) & ~63) + slot * size;
  const need = base + size;
  const cur = k.memory.buffer.byteLength;
  if (need > cur) k.memory.grow(Math.ceil((need - cur) / 65536));
  new Uint8Array(k.memory.buffer).set(w, base);
  const xp = (base + w.length + 63) & ~63;
  new Float32Array(k.memory.buffer).set(x, xp >> 2);
  const op = xp + cols * 4 + 64, sp = op + rows * 4 + 64, tmp = sp + (4 << 20);
  return { base, xp, op, sp, tmp };
}

for (const name of TYPES) {
  const ty = GgmlType[name as keyof typeof GgmlType];
  const w = randomWeights(rng(1), ty, rows, cols);
  if (ty === GgmlType.Q8_0) {
    for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
  }
  const x = randomActivations(rng(2), cols);
  const sa = setup(A, w, x, 0), sb = setup(B, w, x, 0), sp = setup(B, w, x, 1);
  const packs = B.pack_scratch_bytes(ty, cols) > 0;
  if (packs && B.pack_weights(ty, sp.base, rows, cols, sp.tmp, 0) !== 0) {
    throw new Error("pack refused");
  }
  const kt = packs ? ty | 0x100 : ty;
  const runs: [string, () => void][] = [
    ["A std", () => A.matmul(ty, sa.base, rows, cols, sa.xp, 1, sa.op, sa.sp)],
    ["B std", () => B.matmul(ty, sb.base, rows, cols, sb.xp, 1, sb.op, sb.sp)],
    ["B packed", () => B.matmul(kt, sp.base, rows, cols, sp.xp, 1, sp.op, sp.sp)],
  ];
  if (packs) {
    // pack + unpack of a copy in slot 2 (the copy stays standard between calls)
    const sr = setup(B, w, x, 2);
    runs.push(["B repack+unpack", () => {
      B.pack_weights(ty, sr.base, rows, cols, sr.tmp, 0);
      B.pack_weights(ty, sr.base, rows, cols, sr.tmp, 1);
    }]);
  }
  const outs = [
    [A, sa.op],
    [B, sb.op],
    [B, sp.op],
  ].map(([k, op], i) => {
    runs[i][1]();
    return new Uint8Array((k as Raw).memory.buffer, op as number, rows * 4).slice();
  });
  const same = outs.every((o) => o.every((b, i) => b === outs[0][i]));
  const best = runs.map(() => Infinity), cpu = runs.map(() => 0), calls = runs.map(() => 0);
  for (let r = 0; r < 15; r++) {
    runs.forEach(([, f], i) => {
      const t0 = performance.now(), c0 = CPU ? cpuMs() : 0;
      let n = 0;
      while (performance.now() - t0 < 40) {
        f();
        n++;
      }
      best[i] = Math.min(best[i], ((performance.now() - t0) / n) * 1000);
      if (CPU) {
        cpu[i] += cpuMs() - c0;
        calls[i] += n;
      }
    });
  }
  const t = CPU ? cpu.map((c, i) => (c / calls[i]) * 1000) : best;
  console.log(
    `${name}: ` + runs.map(([n], i) => `${n} ${t[i].toFixed(1)} us`).join(", ") +
      ` | A std / B std ${(t[0] / t[1]).toFixed(2)}x, B std / B packed ${
        (t[1] / t[2]).toFixed(2)
      }x` +
      (same ? " | bits identical" : "  OUTPUT BITS DIFFER"),
  );
}
console.log(`load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
