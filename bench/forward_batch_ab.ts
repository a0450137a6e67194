/**
 * Same-process A/B of batched decode steps between checkouts (not a test): loads the bench MoE
 * once per checkout given (each through its own `core/model/model.ts` and `wasm/register.ts`, so
 * each runs its own `wasm/pkg` kernels), then for each sequence count of `--seqs` runs
 * `Transformer.forwardBatch` steps of that many single-token sequences, checkout after checkout,
 * for `--rounds` rounds (the order reversed every other round). Each step is timed by the process
 * CPU time (user + system), which leaves out the slices other processes take on a shared machine;
 * prints min / 25th percentile / median ms per step, tokens per CPU-second at the 25th percentile
 * and the ratio to one sequence, per checkout.
 *
 * ```sh
 * git worktree add /tmp/base <rev>        # or: git archive <rev> | tar -x -C /tmp/base
 * deno run -A bench/forward_batch_ab.ts /tmp/base "$PWD" [--seqs=1,2,4,8] [--steps=8]
 *   [--rounds=4] [--threads=1] [--model=q4_0]
 * ```
 *
 * Checkouts are absolute paths; the bench model is built or found under each one's `.cache/bench`.
 *
 * @module
 */

import process from "node:process";
import type { KvCache } from "../core/backend/backend.ts";
import type { Model } from "../core/model/model.ts";
import type { BatchInput } from "../core/model/transformer.ts";

const trees = Deno.args.filter((a) => a.startsWith("/"));
if (trees.length === 0) throw new Error("usage: forward_batch_ab.ts /abs/checkout... [--seqs=..]");
const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const SEQS = opt("seqs", "1,2,4,8").split(",").map(Number);
const STEPS = Number(opt("steps", "8"));
const ROUNDS = Number(opt("rounds", "4"));
const THREADS = Number(opt("threads", "1"));
const MODEL = opt("model", "q4_0");
const PROMPT = 8;
if (![STEPS, ROUNDS, THREADS, ...SEQS].every((v) => Number.isInteger(v) && v > 0)) {
  throw new RangeError("--seqs, --steps, --rounds and --threads must be positive integers");
}

/** Process CPU milliseconds (user + system). */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const models: Model[] = [];
for (const t of trees) {
  const { ensureBenchModel } = await import(`${t}/bench/bench_model.ts`);
  const { loadModel } = await import(`${t}/core/model/model.ts`);
  await import(`${t}/wasm/register.ts`);
  const { path } = await ensureBenchModel(MODEL);
  models.push(await loadModel(path, { backend: "wasm", threads: THREADS }));
}

/** CPU ms of `STEPS` decode steps of `c` sequences (after prefill and one warm-up step). */
async function run(model: Model, c: number): Promise<number[]> {
  const hp = model.hp, tf = model.transformer;
  const caches: KvCache[] = Array.from({ length: c }, () =>
    model.backend.createKvCache({
      layers: hp.nLayer,
      nCtx: PROMPT + STEPS + 2,
      nKvHeads: hp.nHeadKv,
      headDimK: hp.headDimK,
      headDimV: hp.headDimV,
    }));
  const logits = new Float32Array(c * hp.nVocab);
  for (let s = 0; s < c; s++) {
    const ids = Int32Array.from(
      { length: PROMPT },
      (_, i) => 3 + ((s * 97 + i * 31) % (hp.nVocab - 3)),
    );
    await tf.forward(caches[s], ids, 0, logits.subarray(0, hp.nVocab));
  }
  const cpu: number[] = [];
  for (let step = 0; step <= STEPS; step++) {
    const seqs: BatchInput[] = caches.map((cache, s) => ({
      cache,
      tokens: Int32Array.of(3 + ((s * 53 + step * 17) % (hp.nVocab - 3))),
      startPos: PROMPT + step,
    }));
    const c0 = cpuMs();
    await tf.forwardBatch(seqs, logits);
    if (step > 0) cpu.push(cpuMs() - c0);
  }
  for (const cache of caches) model.backend.freeKvCache(cache);
  return cpu;
}

const res = models.map(() => new Map<number, number[]>(SEQS.map((c) => [c, []])));
for (let r = 0; r < ROUNDS; r++) {
  for (const c of SEQS) {
    for (let e = 0; e < models.length; e++) {
      const i = r % 2 ? models.length - 1 - e : e;
      res[i].get(c)!.push(...await run(models[i], c));
    }
  }
}
const pct = (a: number[], p: number): number =>
  [...a].sort((x, y) => x - y)[Math.floor(a.length * p)];
const cpuName = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
console.log(
  `forwardBatch decode, bench MoE ${MODEL}, ${THREADS} thread(s), ${ROUNDS} interleaved rounds × ` +
    `${STEPS} steps; process CPU ms per step (min / p25 / median); ${cpuName}; load average ${
      Deno.loadavg().map((v) => v.toFixed(2)).join(" ")
    }`,
);
console.log(`| checkout | ${SEQS.map((c) => `${c} seq (tok/CPU-s @p25, × 1 seq)`).join(" | ")} |`);
console.log(`|---|${SEQS.map(() => "---:").join("|")}|`);
for (let e = 0; e < models.length; e++) {
  const per1 = pct(res[e].get(SEQS[0])!, 0.25) / SEQS[0];
  const cells = SEQS.map((c) => {
    const a = res[e].get(c)!, p25 = pct(a, 0.25);
    return `${Math.min(...a).toFixed(1)} / ${p25.toFixed(1)} / ${pct(a, 0.5).toFixed(1)} (${
      (c / p25 * 1000).toFixed(0)
    }, ${(per1 * c / p25).toFixed(2)}×)`;
  });
  console.log(`| ${trees[e]} | ${cells.join(" | ")} |`);
}
for (const m of models) m.dispose();
