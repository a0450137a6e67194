/**
 * A/B of kernel builds on matrices that do not fit in the cache: `--mats`
 * matrices of `--shape` rows×cols of each `--types` type are cycled (one
 * matmul per call), so decode streams weights from DRAM as the model does.
 * Round-robin between the modules in one process, best of `--rounds` × 60 ms,
 * timed in process CPU time (robust to time slices other jobs take).
 *
 *   deno run -A wasm/bench/ab_big.ts A.wasm B.wasm [--types Q6_K] [--tokens 1,16]
 *
 * @module
 */
import { parseArgs } from "node:util";
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

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    types: { type: "string", default: "Q6_K" },
    tokens: { type: "string", default: "1,16" },
    shape: { type: "string", default: "2816x1024" },
    mats: { type: "string", default: "24" },
    rounds: { type: "string", default: "12" },
  },
});
const [rows, cols] = values.shape!.split("x").map(Number);
const MATS = Number(values.mats);
const insts = positionals.map((p) =>
  new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw
);
for (const name of values.types!.split(",")) {
  const ty = GgmlType[name as keyof typeof GgmlType];
  const w = randomWeights(rng(1), ty, rows, cols);
  for (const nt of values.tokens!.split(",").map(Number)) {
    const x = randomActivations(rng(2), cols * nt);
    const runs = insts.map((k) => {
      const base = (k.heap_base() + 65535) & ~65535;
      const stride = (w.length + 4095) & ~4095;
      const xp = base + MATS * stride;
      const op = xp + cols * 4 * nt + 64, sp = op + rows * 4 * nt + 64, tmp = sp + (8 << 20);
      const need = tmp + (8 << 20);
      const cur = k.memory.buffer.byteLength;
      if (need > cur) k.memory.grow(Math.ceil((need - cur) / 65536));
      const packs = k.pack_scratch_bytes(ty, cols) > 0;
      for (let m = 0; m < MATS; m++) {
        new Uint8Array(k.memory.buffer).set(w, base + m * stride);
        if (packs) k.pack_weights(ty, base + m * stride, rows, cols, tmp, 0);
      }
      new Float32Array(k.memory.buffer).set(x, xp >> 2);
      const kt = packs ? ty | 0x100 : ty;
      let m = 0;
      return () => {
        k.matmul(kt, base + m * stride, rows, cols, xp, nt, op, sp);
        m = (m + 1) % MATS;
      };
    });
    const best = runs.map(() => Infinity);
    for (let r = 0; r < Number(values.rounds); r++) {
      for (let i = 0; i < runs.length; i++) {
        // Process CPU time, not wall time: on a shared machine the wall clock also
        // counts the time slices other jobs take.
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        let n = 0;
        while (performance.now() - t0 < 60) {
          runs[i]();
          n++;
        }
        const c = process.cpuUsage(c0);
        best[i] = Math.min(best[i], (c.user + c.system) / n);
      }
    }
    const gbs = best.map((us) => (w.length / us / 1e3).toFixed(2));
    console.log(
      `${name} ${rows}x${cols} t=${nt}: ` +
        best.map((us, i) => `${"ABCDEFG"[i]} ${us.toFixed(1)} us (${gbs[i]} GB/s)`).join(", ") +
        ` A/last ${(best[0] / best[best.length - 1]).toFixed(3)}`,
    );
  }
}
console.log(`load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
