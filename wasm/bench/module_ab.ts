/**
 * A/B of two builds of the single-threaded kernel module: one matvec
 * (1 token) and one 16-token matmul per type on a 2816×1024 matrix (packed
 * where the type has a packed layout), round-robin in one process, best of
 * 15 × 40 ms. Used to check that a kernel change leaves 1-thread speed alone.
 *
 *   git show <rev>:wasm/pkg/moe_edge_kernels_relaxed.wasm > /tmp/old.wasm
 *   deno run -A wasm/bench/module_ab.ts /tmp/old.wasm wasm/pkg/moe_edge_kernels_relaxed.wasm
 *
 * @module
 */

import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";

interface Raw {
  memory: WebAssembly.Memory;
  heap_base(): number;
  pack_scratch_bytes(ty: number, cols: number): number;
  pack_weights(ty: number, w: number, rows: number, cols: number, tmp: number, inv: number): number;
  matmul(...a: number[]): number;
}

if (Deno.args.length !== 2) throw new Error("usage: module_ab.ts A.wasm B.wasm");
const insts = Deno.args.map((p) =>
  new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw
);
const rows = 2816, cols = 1024;
const types = [[GgmlType.Q4_0, "Q4_0"], [GgmlType.Q4_K, "Q4_K"], [GgmlType.Q8_0, "Q8_0"], [
  GgmlType.Q6_K,
  "Q6_K",
]] as const;
for (const [ty, name] of types) {
  const w = randomWeights(rng(1), ty, rows, cols);
  for (const nt of [1, 16]) {
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
      return () => k.matmul(kt, base, rows, cols, xp, nt, op, sp);
    });
    const best = [Infinity, Infinity];
    for (let r = 0; r < 15; r++) {
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now();
        let n = 0;
        while (performance.now() - t0 < 40) {
          runs[i]();
          n++;
        }
        best[i] = Math.min(best[i], ((performance.now() - t0) / n) * 1000);
      }
    }
    console.log(
      `${name} ${rows}x${cols} t=${nt}: A ${best[0].toFixed(1)} us, B ${
        best[1].toFixed(1)
      } us (A/B ${(best[0] / best[1]).toFixed(3)})`,
    );
  }
}
console.log(`load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
