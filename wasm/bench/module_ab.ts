/**
 * A/B of two builds of the single-threaded kernel module: a matmul per type
 * and token count (default 1 and 16 tokens) on a 2816×1024 matrix (or `shape`) (packed
 * where the type has a packed layout), round-robin in one process, best of
 * 15 × 40 ms. Used to check that a kernel change leaves 1-thread speed alone;
 * it also checks that A and B write the same output bits.
 *
 *   git show <rev>:wasm/pkg/moe_edge_kernels_relaxed.wasm > /tmp/old.wasm
 *   deno run -A wasm/bench/module_ab.ts /tmp/old.wasm wasm/pkg/moe_edge_kernels_relaxed.wasm \
 *     [tokens=1,4,16] [types=Q4_0,Q4_K,Q8_0,Q6_K] [clock=wall|cpu] [modeA=0|1] [modeB=0|1]
 *     [shape=ROWSxCOLS]
 *
 * `modeA` / `modeB` set the relaxed build's dot form (`relaxed_dot_mode`: 0 split, 1 fused)
 * of instance A / B, so one module can be compared with itself.
 *
 * `shape` sets the matrix (default 2816x1024, in L2/L3; e.g. `shape=16384x4096`
 * measures the DRAM stream).
 *
 * `clock=cpu` reports the mean process CPU time per call over all rounds
 * instead of the best wall time: on a loaded machine, time slices lost to
 * other processes then do not count (cache and SMT contention still do).
 *
 * @module
 */

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

if (Deno.args.length < 2) {
  throw new Error("usage: module_ab.ts A.wasm B.wasm [tokens=..] [types=..]");
}
const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`${k}=`))?.slice(k.length + 1) ?? d;
const TOKENS = opt("tokens", "1,16").split(",").map(Number);
const TYPES = opt("types", "Q4_0,Q4_K,Q8_0,Q6_K").split(",");
const CPU = opt("clock", "wall") === "cpu";
const MODES = [opt("modeA", ""), opt("modeB", "")];
/** Process CPU milliseconds (user + system). */
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const insts = Deno.args.slice(0, 2).map((p) =>
  new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw
);
insts.forEach((k, i) => {
  if (MODES[i] === "") return;
  const f = (k as unknown as { relaxed_dot_mode?: (m: number) => number }).relaxed_dot_mode;
  if (!f) throw new Error(`module ${i === 0 ? "A" : "B"} has no relaxed_dot_mode`);
  f(Number(MODES[i]));
});
const [rows, cols] = opt("shape", "2816x1024").split("x").map(Number);
for (const name of TYPES) {
  const ty = GgmlType[name as keyof typeof GgmlType];
  const w = randomWeights(rng(1), ty, rows, cols);
  // Q8_0 quants of -128 never come out of ggml's quantizer; the relaxed build refuses them.
  if (ty === GgmlType.Q8_0) {
    for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
  }
  for (const nt of TOKENS) {
    const outs: Uint8Array[] = [];
    const x = randomActivations(rng(2), cols * nt);
    const runs = insts.map((k) => {
      const base = (k.heap_base() + 63) & ~63;
      const need = base + w.length + (8 << 20);
      const cur = k.memory.buffer.byteLength;
      if (need > cur) k.memory.grow(Math.ceil((need - cur) / 65536));
      new Uint8Array(k.memory.buffer).set(w, base);
      const xp = (base + w.length + 63) & ~63;
      new Float32Array(k.memory.buffer).set(x, xp >> 2);
      const op = xp + cols * 4 * nt + 64, sp = op + rows * 4 * nt + 64, tmp = sp + (4 << 20);
      const packs = k.pack_scratch_bytes(ty, cols) > 0;
      if (packs) k.pack_weights(ty, base, rows, cols, tmp, 0);
      const kt = packs ? ty | 0x100 : ty;
      k.matmul(kt, base, rows, cols, xp, nt, op, sp);
      outs.push(new Uint8Array(k.memory.buffer, op, rows * 4 * nt).slice());
      return () => k.matmul(kt, base, rows, cols, xp, nt, op, sp);
    });
    const same = outs[0].every((b, i) => b === outs[1][i]);
    const best = [Infinity, Infinity];
    const cpu = [0, 0], calls = [0, 0];
    for (let r = 0; r < 15; r++) {
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now(), c0 = CPU ? cpuMs() : 0;
        let n = 0;
        while (performance.now() - t0 < 40) {
          runs[i]();
          n++;
        }
        best[i] = Math.min(best[i], ((performance.now() - t0) / n) * 1000);
        if (CPU) {
          cpu[i] += cpuMs() - c0;
          calls[i] += n;
        }
      }
    }
    if (CPU) { for (let i = 0; i < 2; i++) best[i] = (cpu[i] / calls[i]) * 1000; }
    console.log(
      `${name} ${rows}x${cols} t=${nt}: A ${best[0].toFixed(1)} us, B ${
        best[1].toFixed(1)
      } us (A/B ${(best[0] / best[1]).toFixed(3)})${same ? "" : "  OUTPUT BITS DIFFER"}`,
    );
  }
}
console.log(`load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
