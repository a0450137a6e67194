/**
 * Thread scaling of the WASM backend on Mixtral-shaped expert matrices:
 * one expert FFN (gate/up Q4_K 14336×4096, down Q6_K 4096×14336, as in a
 * Q4_K_M file) and one dense Q4_K matvec, decode (1 token) and prefill
 * (32 tokens), at each thread count, round-robin in one process (best of
 * `--rounds`). Prints a markdown table and the load average.
 *
 *   deno run -A wasm/bench/threads.ts [--threads 1,2] [--rounds 5] [--small] [--a <checkout>]
 *
 * With `--a`, another checkout's backend runs next to this one at each
 * count (same process, round-robin): columns `a`/`b`, and a / b.
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import type { WeightView } from "../../core/backend/backend.ts";
import { createWasmBackend, type WasmBackend } from "../backend.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";

const counts = arg("threads", "1,2").split(",").map(Number);
const rounds = Number(arg("rounds", "5"));
const small = Deno.args.includes("--small");
const nEmbd = small ? 1024 : 4096, nFf = small ? 2816 : 14336;

const r = rng(1);
const wg = randomWeights(r, GgmlType.Q4_K, nFf, nEmbd);
const wu = randomWeights(r, GgmlType.Q4_K, nFf, nEmbd);
const wd = randomWeights(r, GgmlType.Q6_K, nEmbd, nFf);
const wg2 = randomWeights(r, GgmlType.Q4_K, nFf, nEmbd);
const wu2 = randomWeights(r, GgmlType.Q4_K, nFf, nEmbd);
const wd2 = randomWeights(r, GgmlType.Q6_K, nEmbd, nFf);
const x1 = randomActivations(r, nEmbd);
const x32 = randomActivations(r, 32 * nEmbd);
const x1f = randomActivations(r, nFf);

interface Setup {
  /** `"a "`/`"b "` in an A/B run, else empty. */
  tag: string;
  threads: number;
  be: WasmBackend;
  g: WeightView;
  u: WeightView;
  d: WeightView;
  /** A second expert (other weights) for the two-expert case. */
  g2: WeightView;
  u2: WeightView;
  d2: WeightView;
}

function up(
  be: WasmBackend,
  b: Uint8Array,
  type: GgmlType,
  rows: number,
  cols: number,
): WeightView {
  const slot = be.allocSlot(b.length);
  be.writeSlot(slot, 0, b);
  const v = { slot, offset: 0, type, rows, cols };
  be.prepareWeights(v);
  return v;
}

// --a <checkout>: also run another checkout's backend (same-process A/B), next to each count
const other = arg("a", "");
type Create = (o: { threads: number }) => Promise<WasmBackend>;
const makers: { tag: string; create: Create }[] = [{ tag: "", create: createWasmBackend }];
if (other !== "") {
  const root = `file://${other.endsWith("/") ? other : other + "/"}`;
  const mod = await import(new URL("wasm/backend.ts", root).href);
  makers.unshift({ tag: "a ", create: mod.createWasmBackend as Create });
  makers[1].tag = "b ";
}
const setups: Setup[] = [];
for (const threads of counts) {
  for (const mk of makers) {
    const be = await mk.create({ threads });
    setups.push({
      tag: mk.tag,
      threads,
      be,
      g: up(be, wg, GgmlType.Q4_K, nFf, nEmbd),
      u: up(be, wu, GgmlType.Q4_K, nFf, nEmbd),
      d: up(be, wd, GgmlType.Q6_K, nEmbd, nFf),
      g2: up(be, wg2, GgmlType.Q4_K, nFf, nEmbd),
      u2: up(be, wu2, GgmlType.Q4_K, nFf, nEmbd),
      d2: up(be, wd2, GgmlType.Q6_K, nEmbd, nFf),
    });
  }
}

type Case = { name: string; run: (s: Setup) => void };
const out1 = new Float32Array(nFf),
  outE = new Float32Array(32 * nEmbd),
  outF = new Float32Array(32 * nFf),
  outE2 = new Float32Array(nEmbd);
const cases: Case[] = [
  { name: `matvec Q4_K ${nFf}×${nEmbd}, 1 token`, run: (s) => s.be.matmul(s.g, x1, 1, out1) },
  { name: `matvec Q6_K ${nEmbd}×${nFf}, 1 token`, run: (s) => s.be.matmul(s.d, x1f, 1, outE) },
  { name: `matmul Q4_K ${nFf}×${nEmbd}, 32 tokens`, run: (s) => s.be.matmul(s.g, x32, 32, outF) },
  {
    name: "expert FFN (Q4_K/Q4_K/Q6_K), 1 token",
    run: (s) => s.be.ffnSwiglu(s.g, s.u, s.d, x1, 1, outE),
  },
  {
    // a decode step's MoE layer: top-2 experts over the same row (one region on threads)
    name: "2 experts (Q4_K/Q4_K/Q6_K), 1 token",
    run: (s) => {
      const jobs = [
        { gate: s.g, up: s.u, down: s.d, x: x1, nTokens: 1, out: outE },
        { gate: s.g2, up: s.u2, down: s.d2, x: x1, nTokens: 1, out: outE2 },
      ];
      if (!s.be.ffnSwigluMany?.(jobs)) { // an older backend without it: one by one
        for (const j of jobs) s.be.ffnSwiglu(j.gate, j.up, j.down, j.x, 1, j.out);
      }
    },
  },
  {
    name: "expert FFN (Q4_K/Q4_K/Q6_K), 32 tokens",
    run: (s) => s.be.ffnSwiglu(s.g, s.u, s.d, x32, 32, outE),
  },
];

function time(c: Case, s: Setup): number {
  const t0 = performance.now();
  let n = 0;
  do {
    c.run(s);
    n++;
  } while (performance.now() - t0 < 150);
  return (performance.now() - t0) / n;
}

for (const c of cases) for (const s of setups) time(c, s); // warm-up
const load0 = Deno.loadavg();
const best = cases.map(() => setups.map(() => Infinity));
for (let k = 0; k < rounds; k++) {
  cases.forEach((c, i) =>
    setups.forEach((s, j) => {
      best[i][j] = Math.min(best[i][j], time(c, s));
    })
  );
}
const last = setups.length - 1, first = makers.length - 1; // b (or the only) at the first count
console.log(
  `| op | ${setups.map((s) => `${s.tag}${s.threads} thread(s) ms`).join(" | ")} | speed-up ${
    setups[last].tag
  }${counts.at(-1)} vs ${counts[0]} |${other !== "" ? " a / b at " + counts.at(-1) + " |" : ""}`,
);
console.log(`| -- | ${setups.map(() => "--").join(" | ")} | -- |${other !== "" ? " -- |" : ""}`);
cases.forEach((c, i) => {
  console.log(
    `| ${c.name} | ${best[i].map((v) => v.toFixed(3)).join(" | ")} | ${
      (best[i][first] / best[i][last]).toFixed(2)
    }× |${other !== "" ? ` ${(best[i][last - 1] / best[i][last]).toFixed(3)} |` : ""}`,
  );
});
console.log(
  `load average before ${load0.map((v) => v.toFixed(2)).join(" ")}, after: ${
    Deno.loadavg().map((v) => v.toFixed(2)).join(" ")
  }, ${navigator.hardwareConcurrency} CPUs (${cpuModel()})`,
);
for (const s of setups) s.be.dispose();
