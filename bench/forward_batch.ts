/**
 * In-process batched decode on the bench MoE (not a test): `Transformer.forwardBatch` of c
 * single-token sequences per step, each with its own KV cache and prompt, for each c of
 * `--seqs`, all in one process so the rows compare like with like. Prints step time (best and
 * median of `--steps` steps), aggregate decode tok/s and its ratio to one sequence, as markdown.
 *
 * ```sh
 * deno run -A bench/forward_batch.ts [--model q4_0] [--seqs 1,2,4,8] [--steps 15] [--prompt 8]
 *                                    [--backend wasm] [--rounds 2] [--threads 1]
 * ```
 *
 * The c counts run round-robin for `--rounds` rounds (each round: every c gets `--steps` timed
 * decode steps after one warm-up step), so machine noise hits them alike; the best and median
 * are over all rounds. Each step is timed twice: wall clock, and the process CPU time
 * (`process.cpuUsage`, user + system): on a shared, oversubscribed machine the CPU time leaves
 * out the slices other processes took (cache and memory-bandwidth contention still count), so
 * the ratios are given for both.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { ensureBenchModel } from "./bench_model.ts";
import { loadModel, type Model } from "../core/model/model.ts";
import type { KvCache } from "../core/backend/backend.ts";
import type { BatchInput } from "../core/model/transformer.ts";
import "../wasm/register.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "q4_0" },
    seqs: { type: "string", default: "1,2,4,8" },
    steps: { type: "string", default: "15" },
    prompt: { type: "string", default: "8" },
    backend: { type: "string", default: "wasm" },
    rounds: { type: "string", default: "2" },
    threads: { type: "string", default: "1" },
  },
});
const SEQS = values.seqs!.split(",").map(Number);
const STEPS = Number(values.steps);
const PROMPT = Number(values.prompt);
const ROUNDS = Number(values.rounds);
if (![STEPS, PROMPT, ROUNDS].every((v) => Number.isInteger(v) && v > 0)) {
  throw new RangeError("--steps, --prompt and --rounds must be positive integers");
}

const { path } = await ensureBenchModel(values.model!);
const THREADS = Number(values.threads);
if (!(Number.isInteger(THREADS) && THREADS >= 1)) {
  throw new RangeError("--threads must be a positive integer");
}
const model: Model = await loadModel(path, { backend: values.backend, threads: THREADS });
const hp = model.hp;
const tf = model.transformer;

/** Process CPU milliseconds (user + system). */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function newCache(nCtx: number): KvCache {
  return model.backend.createKvCache({
    layers: hp.nLayer,
    nCtx,
    nKvHeads: hp.nHeadKv,
    headDimK: hp.headDimK,
    headDimV: hp.headDimV,
  });
}

/** Decode step times (ms) of `c` sequences: prefill each, one warm-up step, `STEPS` timed steps. */
async function run(c: number): Promise<{ wall: number[]; cpu: number[] }> {
  const nCtx = PROMPT + STEPS + 2;
  const caches = Array.from({ length: c }, () => newCache(nCtx));
  const logits = new Float32Array(c * hp.nVocab);
  // Distinct prompts (ids spread over the vocabulary) so the sequences route differently.
  for (let s = 0; s < c; s++) {
    const ids = Int32Array.from(
      { length: PROMPT },
      (_, i) => 3 + ((s * 97 + i * 31) % (hp.nVocab - 3)),
    );
    await tf.forward(caches[s], ids, 0, logits.subarray(0, hp.nVocab));
  }
  const wall: number[] = [], cpu: number[] = [];
  for (let step = 0; step <= STEPS; step++) {
    const seqs: BatchInput[] = caches.map((cache, s) => ({
      cache,
      tokens: Int32Array.of(3 + ((s * 53 + step * 17) % (hp.nVocab - 3))),
      startPos: PROMPT + step,
    }));
    const t0 = performance.now(), c0 = cpuMs();
    await tf.forwardBatch(seqs, logits);
    if (step > 0) {
      wall.push(performance.now() - t0);
      cpu.push(cpuMs() - c0);
    }
  }
  for (const cache of caches) model.backend.freeKvCache(cache);
  return { wall, cpu };
}

const wallT = new Map<number, number[]>(SEQS.map((c) => [c, []]));
const cpuT = new Map<number, number[]>(SEQS.map((c) => [c, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const c of SEQS) {
    const { wall, cpu } = await run(c);
    wallT.get(c)!.push(...wall);
    cpuT.get(c)!.push(...cpu);
  }
}

const median = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const cpuName = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
console.log(
  `forwardBatch decode, bench MoE ${values.model} (${hp.nLayer} layers, ${hp.nExpert} experts, ` +
    `top-${hp.nExpertUsed}), backend ${values.backend}, ${THREADS} thread(s) (CPU ms: all threads); ${cpuName}; Deno ${Deno.version.deno}`,
);
console.log(
  `best / median of ${STEPS * ROUNDS} steps per row (${ROUNDS} round-robin rounds); ` +
    `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`,
);
console.log(
  "| sequences | wall ms best | wall ms median | CPU ms median | tok/s (wall best) | × 1 seq (wall best) | × 1 seq (wall median) | × 1 seq (CPU median) |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
const per1 = (m: Map<number, number[]>, f: (a: number[]) => number): number =>
  f(m.get(SEQS[0])!) / SEQS[0];
const wb1 = per1(wallT, (a) => Math.min(...a)), wm1 = per1(wallT, median), cm1 = per1(cpuT, median);
for (const c of SEQS) {
  const w = wallT.get(c)!, cp = cpuT.get(c)!;
  const wb = Math.min(...w), wm = median(w), cm = median(cp);
  console.log(
    `| ${c} | ${wb.toFixed(1)} | ${wm.toFixed(1)} | ${cm.toFixed(1)} | ${
      (c / wb * 1000).toFixed(1)
    } | ${(wb1 * c / wb).toFixed(2)}× | ${(wm1 * c / wm).toFixed(2)}× | ${
      (cm1 * c / cm).toFixed(2)
    }× |`,
  );
}
model.dispose();
