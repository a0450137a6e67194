/**
 * Per-token cost of a matmul by token count, for one or more builds of the single-threaded
 * kernel module in one process (not a test): for each token count of `tokens=` and each module,
 * round-robin for `rounds=` rounds, calls `matmul` for 8 ms and keeps the best time per call —
 * by default the process CPU time (`clock=cpu`; on a shared machine the slices other processes
 * take do not count), or the wall time (`clock=wall`). Prints µs per call and per token, so a
 * token tile's cost can be compared with a decode token's (docs/batching.md, session 8).
 *
 * ```sh
 * git show <rev>:wasm/pkg/moe_edge_kernels_relaxed.wasm > /tmp/old.wasm
 * deno run -A wasm/bench/tokens_ab.ts /tmp/old.wasm wasm/pkg/moe_edge_kernels_relaxed.wasm \
 *   [tokens=1,2,3,4,8,16] [type=Q4_0] [shape=2816x1024] [rounds=30] [clock=cpu|wall]
 * ```
 *
 * The matrix is packed where the type has a packed layout (as the backend does).
 *
 * @module
 */

import { cpuModel } from "./bench_args.ts";
import process from "node:process";
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";

/** The exports this bench calls. */
interface Raw {
  memory: WebAssembly.Memory;
  heap_base(): number;
  pack_scratch_bytes(ty: number, cols: number): number;
  pack_weights(ty: number, w: number, rows: number, cols: number, tmp: number, inv: number): number;
  matmul(...a: number[]): number;
}

const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`${k}=`))?.slice(k.length + 1) ?? d;
const mods = Deno.args.filter((a) => a.endsWith(".wasm"));
if (mods.length === 0) throw new Error("usage: tokens_ab.ts A.wasm [B.wasm ...] [tokens=..]");
const TOK = opt("tokens", "1,2,3,4,8,16").split(",").map(Number);
const [rows, cols] = opt("shape", "2816x1024").split("x").map(Number);
const typeName = opt("type", "Q4_0");
const ty = GgmlType[typeName as keyof typeof GgmlType];
if (ty === undefined) throw new Error(`type=${typeName}: unknown type`);
const ROUNDS = Number(opt("rounds", "30"));
const CPU = opt("clock", "cpu") === "cpu";

const w = randomWeights(rng(1), ty, rows, cols);
// Q8_0 quants of -128 never come out of ggml's quantizer; the relaxed build refuses them.
if (ty === GgmlType.Q8_0) {
  for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
}
const maxT = Math.max(...TOK);
const runs: (() => void)[][] = mods.map((p) => {
  const k = new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw;
  const base = (k.heap_base() + 63) & ~63;
  const need = base + w.length + cols * 4 * maxT + rows * 4 * maxT + (16 << 20);
  const cur = k.memory.buffer.byteLength;
  if (need > cur) k.memory.grow(Math.ceil((need - cur) / 65536));
  new Uint8Array(k.memory.buffer).set(w, base);
  const xp = (base + w.length + 63) & ~63;
  new Float32Array(k.memory.buffer).set(randomActivations(rng(2), cols * maxT), xp >> 2);
  const op = xp + cols * 4 * maxT + 64, sp = op + rows * 4 * maxT + 64, tmp = sp + (4 << 20);
  const packs = k.pack_scratch_bytes(ty, cols) > 0;
  if (packs) k.pack_weights(ty, base, rows, cols, tmp, 0);
  const kt = packs ? ty | 0x100 : ty;
  return TOK.map((nt) => () => k.matmul(kt, base, rows, cols, xp, nt, op, sp));
});
const best = mods.map(() => TOK.map(() => Infinity));
for (let r = 0; r < ROUNDS; r++) {
  for (let ti = 0; ti < TOK.length; ti++) {
    for (let m = 0; m < mods.length; m++) {
      const f = runs[m][ti];
      f();
      const t0 = performance.now(), c0 = process.cpuUsage();
      let n = 0;
      while (performance.now() - t0 < 8) {
        f();
        n++;
      }
      const c1 = process.cpuUsage(c0);
      const us = CPU ? (c1.user + c1.system) / n : ((performance.now() - t0) / n) * 1000;
      best[m][ti] = Math.min(best[m][ti], us);
    }
  }
}
const cpuName = cpuModel();
console.log(
  `${typeName} ${rows}x${cols}, best of ${ROUNDS} rounds of ${CPU ? "process CPU" : "wall"} ` +
    `time per call (8 ms windows), µs per call (per token); ${cpuName}; load average ${
      Deno.loadavg().map((v) => v.toFixed(2)).join(" ")
    }`,
);
for (let m = 0; m < mods.length; m++) {
  console.log(
    `${mods[m]}: ` +
      TOK.map((t, i) => `${t}: ${best[m][i].toFixed(0)} (${(best[m][i] / t).toFixed(0)})`).join(
        "  ",
      ),
  );
}
