/**
 * Expert streaming benchmark (not a test): the bench MoE (`bench_model.ts`:
 * 1024 embd, 8 layers, 8 experts top-2, q4_0) on the default backend (WASM)
 * with expert budgets of 50 % and 25 % of the expert bytes, from a local
 * file and from nginx over HTTP loopback, with LRU, next-layer prefetch and
 * the HOBBIT fallback (`--expert-fallback q2_k`: resident Q2_K copies from
 * a side GGUF made once by `plugins/quant-experts/quantize.ts`, cached).
 * Random weights route almost uniformly: the worst case for a cache.
 *
 * For each run: decode tok/s against the fully resident model measured
 * right before it (load drift cancels in the ratio), hits, misses, fallback
 * uses, the miss cost breakdown per load (read, verify, copy+repack) and the
 * wait per miss, next to a plain read of the same bytes (three `FileSource`
 * or `HttpSource` reads per expert, no store: into a buffer already mapped,
 * as an in-place load does, and into fresh buffers, which costs page
 * faults). Fallback rows add teacher-forced agreement
 * with full precision: the share of positions where the argmax equals the
 * resident model's, feeding the resident model's greedy tokens. A/B rows in
 * the same run: the step waiting for all its loads (`perExpertReady:
 * false`, before per-expert readiness), session 8's defaults against the
 * previous ones (`packAfterUses: 3`, `prefaultSlots: false`) and the opt-in
 * `verifyOnce`, HTTP direct reads on a worker thread
 * (`readThread: true`, opt-in), HTTP bodies through `fetch`
 * (`directReads: false`, before direct socket reads). `--pregate` prints
 * how often pre-gating (the next layer's router on this layer's input)
 * names the experts the next layer routes to. `--interleave` runs the
 * selected rows round by round (each round: every row once, its resident
 * run right before) instead of row by row, so load drift hits every row
 * alike; the "medians" column is the median streamed over the median
 * resident speed of the rounds. "By CPU time": the least process CPU time
 * (user + system of every thread, reads included) of a resident generation
 * over the least of a streamed one (prompt and decode): on an oversubscribed
 * machine it leaves out the slices other processes took, but also the time
 * spent waiting for reads, so read it next to the wall-clock ratios. "Least
 * CPU ms": of one generation (prompt and decode), the JS thread alone (Linux
 * schedstat: what the miss path costs the thread that computes) and the
 * whole process, streamed (resident).
 *
 * ```sh
 * deno run -A bench/streaming.ts [--tokens 24] [--no-http] [--no-fallback] [--reps N]
 *   [--only SUBSTRING[|SUBSTRING…]] [--pack-after N] [--copy] [--integrity off|pin] [--cap]
 *   [--pregate] [--interleave]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import {
  type ByteSource,
  createBackend,
  FileSource,
  generateText,
  HttpSource,
  loadModel,
  type LoadModelOptions,
  type Model,
  nextMoeLayer,
  parseExpertManifest,
  type PrefetchContext,
  readGguf,
  Session,
  type StreamingExpertStore,
} from "../mod.ts";
import { createNextLayerPrefetcher } from "../plugins/prefetch-next-layer/mod.ts";
import { expertLocations, planExperts, writeExpertCopies } from "../plugins/quant-experts/mod.ts";
import { findNginx, startNginx } from "../tests/nginx/nginx_test_util.ts";
import { ensureBenchModel } from "./bench_model.ts";
import { GgmlType } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "wasm" },
    tokens: { type: "string", default: "24" },
    "no-http": { type: "boolean", default: false },
    "no-fallback": { type: "boolean", default: false },
    "pack-after": { type: "string" },
    "copy": { type: "boolean", default: false },
    only: { type: "string" },
    reps: { type: "string", default: "1" },
    integrity: { type: "string" },
    cap: { type: "boolean", default: false },
    pregate: { type: "boolean", default: false },
    interleave: { type: "boolean", default: false },
  },
});
const N_TOKENS = Number(values.tokens);
const REPS = Math.max(1, Number(values.reps));
/** Store options every streamed row gets (`--pack-after N`, `--copy`: read into a buffer, then copy). */
const COMMON: NonNullable<LoadModelOptions["streaming"]> = {
  ...(values["pack-after"] ? { packAfterUses: Number(values["pack-after"]) } : {}),
  ...(values.copy ? { readInPlace: false } : {}),
};
if (values.backend === "wasm") await import("../wasm/mod.ts");
const { createWasmBackend } = await import("../wasm/backend.ts");

const PROMPT = [1, 20, 300, 41, 5, 160, 77, 8];
const fmt = (x: number, d = 2): string => x.toFixed(d);

const bench = await ensureBenchModel("q4_0");
const fileSrc = await FileSource.open(bench.path);
const fileSrcNode = await FileSource.open(bench.path, { nodeReads: true });
const locations = await expertLocations(fileSrc);
const experts = locations.flat();
const expertBytes = experts.reduce((a, e) => a + e.bytes, 0);

/** The Q2_K copies as a side file (made once, ~3 min of quantizing; cached beside the model). */
async function fallbackFile(): Promise<string> {
  const path = bench.path.replace(/\.gguf$/, ".q2_k.gguf");
  try {
    await Deno.stat(`${path}.manifest.json`);
    return path;
  } catch { /* build it */ }
  const plan = planExperts(locations, { mode: "hobbit", type: GgmlType.Q2_K });
  const { gguf, manifest } = await writeExpertCopies(fileSrc, locations, plan);
  await Deno.writeFile(path, gguf);
  await Deno.writeTextFile(`${path}.manifest.json`, JSON.stringify(manifest));
  return path;
}

/**
 * On-CPU ms of the JS (main) thread so far: Linux `/proc/self/task/PID/schedstat` (ns, the
 * scheduler's own account, so time other processes took is left out); NaN elsewhere.
 */
function jsThreadMs(): number {
  try {
    const t = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/schedstat`);
    return Number(t.split(" ")[0]) / 1e6;
  } catch {
    return NaN;
  }
}

interface Run {
  tokPerS: number;
  /** Process CPU ms (user + system, every thread: reads included) of the whole generation. */
  cpuMs: number;
  /** CPU ms of the JS thread alone (Linux `schedstat`; NaN elsewhere) over the generation. */
  jsMs: number;
  tokens: number[];
  model: Model;
}

async function run(
  src: ByteSource,
  opts: LoadModelOptions = {},
  hashCopied = false,
): Promise<Run> {
  // rows with off-thread loads run on shared memory (the load worker writes into the slots)
  const shared = opts.expertBudgetBytes !== undefined && opts.streaming?.offThreadLoads === true;
  const backend = values.backend === "wasm" && hashCopied
    ? await createWasmBackend({ hashInPlace: false, sharedMemory: shared })
    : await createBackend(values.backend, {
      threads: 1,
      ...(shared ? { sharedMemory: true } : {}),
    });
  const model = await loadModel(src, { backend, ...opts });
  const c0 = process.cpuUsage();
  const j0 = jsThreadMs();
  const out = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  const c = process.cpuUsage(c0);
  const cpuMs = (c.user + c.system) / 1000;
  const jsMs = jsThreadMs() - j0;
  return { tokPerS: out.timings.decodeTokensPerS, cpuMs, jsMs, tokens: out.tokens, model };
}

/** Share of positions whose argmax equals `ref` when `ref` is fed token by token. */
async function agreement(model: Model, ref: number[]): Promise<number> {
  const s = new Session(model);
  let logits = await s.eval(PROMPT);
  let same = 0;
  for (const t of ref) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    if (best === t) same++;
    logits = await s.eval([t]);
  }
  s.dispose();
  return same / ref.length;
}

/**
 * Milliseconds of a plain read of one expert's bytes (its three ranges, in
 * parallel), median of 16 experts: into fresh buffers (`read`) and into one
 * buffer already mapped (`readInto`, what an in-place load does; NaN when
 * the source has none).
 */
async function plainReadMs(src: ByteSource): Promise<{ fresh: number; mapped: number }> {
  const med = (ms: number[]) => ms.sort((a, b) => a - b)[ms.length >> 1];
  const fresh: number[] = [], mapped: number[] = [];
  const buf = new Uint8Array(experts[0].bytes).fill(1);
  for (let i = 0; i < 16; i++) {
    const loc = experts[(i * 13) % experts.length];
    const parts = [loc.gate!, loc.up, loc.down];
    let t0 = performance.now();
    await Promise.all(parts.map((m) => src.read(m.fileOffset, m.nbytes)));
    fresh.push(performance.now() - t0);
    if (!src.readInto) continue;
    t0 = performance.now();
    let at = 0;
    await Promise.all(parts.map((m) => {
      const v = buf.subarray(at, at += m.nbytes);
      return src.readInto!(m.fileOffset, v);
    }));
    mapped.push(performance.now() - t0);
  }
  return { fresh: med(fresh), mapped: mapped.length ? med(mapped) : NaN };
}

/** Counts of one pre-gating guess kind: routed experts it named, routed experts in all. */
interface GuessCount {
  hit: number;
  total: number;
}

/**
 * Accuracy of pre-gating on this model: layer l+1's router applied to layer
 * l's MoE input (what `createNextLayerPrefetcher` guesses) against the
 * experts layer l+1 then routes to, over the greedy decode (each decoded
 * token, every layer pair); also its top-1 guess alone (share of those
 * guesses routed), the guess two layers ahead, and recency (the experts
 * the previous token routed to at that layer, what LRU keeps). Chance is
 * k/n per routed expert.
 */
async function pregateAccuracy(): Promise<{
  next: GuessCount;
  top1: GuessCount;
  ahead2: GuessCount;
  recency: GuessCount;
  chance: number;
}> {
  let ctx: PrefetchContext | null = null;
  const guess = new Map<number, Int32Array>(), guess2 = new Map<number, Int32Array>();
  const prev = new Map<number, Int32Array>();
  const next = { hit: 0, total: 0 }, top1 = { hit: 0, total: 0 };
  const ahead2 = { hit: 0, total: 0 }, recency = { hit: 0, total: 0 };
  let decoding = false;
  const logits = new Float32Array(64);
  const count = (c: GuessCount, g: ArrayLike<number> | undefined, r: Int32Array): void => {
    if (!g) return;
    for (const e of r) if (Array.prototype.includes.call(g, e)) c.hit++;
    c.total += r.length;
  };
  const guessAt = (l: number, hidden: Float32Array): Int32Array => {
    const next = ctx!.layers[l]!;
    const lg = logits.subarray(0, next.gateInp.rows);
    ctx!.backend.matmul(next.gateInp, hidden, 1, lg);
    return Int32Array.from(next.router.route(lg, l).experts);
  };
  const model = await loadModel(fileSrc, {
    backend: await createBackend(values.backend, { threads: 1 }),
    expertBudgetBytes: expertBytes,
    streaming: {
      prefetcher: {
        name: "pregate-probe",
        init: (c) => void (ctx = c),
        observe: (layer, token, route, hidden) => {
          if (!ctx || token !== 0) return null;
          if (decoding) {
            count(next, guess.get(layer), route.experts);
            count(ahead2, guess2.get(layer), route.experts);
            count(recency, prev.get(layer), route.experts);
            const g = guess.get(layer);
            if (g) {
              top1.total++;
              if (route.experts.includes(g[0])) top1.hit++;
            }
          }
          prev.set(layer, Int32Array.from(route.experts));
          const l = nextMoeLayer(ctx, layer);
          if (l < 0) return null;
          guess.set(l, guessAt(l, hidden));
          const l2 = nextMoeLayer(ctx, l);
          if (l2 >= 0) guess2.set(l2, guessAt(l2, hidden));
          return null;
        },
      },
    },
  });
  const s = new Session(model);
  await s.eval(PROMPT);
  decoding = true;
  let logitsOut = await s.eval([PROMPT[0]]);
  for (let i = 0; i < N_TOKENS; i++) {
    let best = 0;
    for (let j = 1; j < logitsOut.length; j++) if (logitsOut[j] > logitsOut[best]) best = j;
    guess.clear();
    guess2.clear();
    logitsOut = await s.eval([best]);
  }
  s.dispose();
  const c = ctx as PrefetchContext | null;
  model.dispose();
  return { next, top1, ahead2, recency, chance: c ? c.nExpertUsed / c.nExpert : NaN };
}

if (values.pregate) {
  const a = await pregateAccuracy();
  const pc = (c: GuessCount): string =>
    `${c.hit} / ${c.total} (${fmt(100 * c.hit / c.total, 1)} %)`;
  console.log(
    `Pre-gating on the bench MoE, ${N_TOKENS + 1} decoded tokens (chance ${
      fmt(100 * a.chance, 1)
    } % per routed expert):\n` +
      `- layer l+1's router on layer l's MoE input: ${pc(a.next)} routed experts guessed\n` +
      `- its top-1 guess alone: ${pc(a.top1)} of those guesses routed\n` +
      `- two layers ahead (layer l+2's router on layer l's input): ${pc(a.ahead2)}\n` +
      `- recency (the previous token's experts at that layer): ${pc(a.recency)}\n`,
  );
}

const nginx = values["no-http"] || !findNginx()
  ? null
  : await startNginx({ "bench.gguf": await Deno.readFile(bench.path) });
const fbPath = values["no-fallback"] ? null : await fallbackFile();
const fbManifest = fbPath
  ? parseExpertManifest(JSON.parse(await Deno.readTextFile(`${fbPath}.manifest.json`)))
  : undefined;

type Case = {
  source: "file" | "http";
  frac: number;
  label: string;
  streaming?: LoadModelOptions["streaming"];
  /** Integrity hashes copied into the hash module's memory (before in-place hashing). */
  hashCopied?: boolean;
  /** File read with node:fs `fs.read` (before Deno read handles). */
  nodeReads?: boolean;
  fallback?: boolean;
  /** HTTP with `directReads: false` (bodies through `fetch`). */
  fetchBody?: boolean;
  /** HTTP with `readThread: true` (direct reads on a worker thread). */
  workerReads?: boolean;
};
const cases: Case[] = [
  { source: "file", frac: 0.5, label: "LRU" },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, hashes copied (before in-place hashing)",
    hashCopied: true,
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, node:fs reads and hashes copied (before session 7)",
    hashCopied: true,
    nodeReads: true,
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, loads on a worker thread (offThreadLoads, shared memory)",
    streaming: { offThreadLoads: true },
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, step waits for all its loads (before per-expert readiness)",
    streaming: { perExpertReady: false },
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, repacked on the third use (before session 8)",
    streaming: { packAfterUses: 3 },
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU, verifyOnce (opt-in: re-reads of checked experts not hashed)",
    streaming: { verifyOnce: true },
  },
  { source: "file", frac: 0.25, label: "LRU" },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, repacked on the third use (before session 8)",
    streaming: { packAfterUses: 3 },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, slots not prefaulted (before session 8)",
    streaming: { prefaultSlots: false },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, verifyOnce (opt-in: re-reads of checked experts not hashed)",
    streaming: { verifyOnce: true },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, hashes copied (before in-place hashing)",
    hashCopied: true,
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, node:fs reads and hashes copied (before session 7)",
    hashCopied: true,
    nodeReads: true,
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, loads on a worker thread (offThreadLoads, shared memory)",
    streaming: { offThreadLoads: true },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, step waits for all its loads (before per-expert readiness)",
    streaming: { perExpertReady: false },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, one expert's reads after another (staggerLoads)",
    streaming: { staggerLoads: true },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, read into fresh buffers then copied (previous miss path)",
    streaming: { readInPlace: false },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU, packAfterUses auto (repack at load on reuse, and while waiting)",
    streaming: { packAfterUses: "auto" },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU + next-layer prefetch",
    streaming: { prefetcher: createNextLayerPrefetcher() },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU + next-layer prefetch, replacing in its layer",
    streaming: { prefetcher: createNextLayerPrefetcher(), prefetchReplacesLayer: true },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU + next-layer top-1 prefetch, replacing in its layer",
    streaming: {
      prefetcher: createNextLayerPrefetcher({ topK: 1 }),
      prefetchReplacesLayer: true,
    },
  },
  {
    source: "file",
    frac: 0.25,
    label: "LRU + next-layer prefetch (2 layers ahead), replacing in its layer",
    streaming: {
      prefetcher: createNextLayerPrefetcher({ lookahead: 2 }),
      prefetchReplacesLayer: true,
    },
  },
  {
    source: "file",
    frac: 0.5,
    label: "LRU + next-layer prefetch, replacing in its layer",
    streaming: { prefetcher: createNextLayerPrefetcher(), prefetchReplacesLayer: true },
  },
];
if (values.cap) {
  // every expert read once, then hits: what streamed compute costs without misses
  cases.unshift(
    { source: "file", frac: 1, label: "all experts fit (read once)" },
    {
      source: "file",
      frac: 1,
      label: "all experts fit, never repacked",
      streaming: { packAfterUses: Infinity },
    },
  );
}
if (fbPath) {
  cases.push({ source: "file", frac: 0.25, label: "LRU + fallback q2_k", fallback: true });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, hashes copied (before in-place hashing)",
    fallback: true,
    hashCopied: true,
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, node:fs reads and hashes copied (before session 7)",
    fallback: true,
    hashCopied: true,
    nodeReads: true,
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, loads on a worker thread (offThreadLoads, shared memory)",
    fallback: true,
    streaming: { offThreadLoads: true },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, background load on every use (before)",
    fallback: true,
    streaming: { fallbackCopies: { backgroundLoads: { minWeight: 0, maxPerToken: Infinity } } },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, background loads also by gate weight share ≥ 0.5",
    fallback: true,
    streaming: { fallbackCopies: { backgroundLoads: { minWeight: 0.5 } } },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, background loads on any use, at most k per token",
    fallback: true,
    streaming: { fallbackCopies: { backgroundLoads: { minWeight: 0 } } },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, no background load",
    fallback: true,
    streaming: { fallbackCopies: { loadOnFallback: false } },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, slots not prefaulted (before session 8)",
    fallback: true,
    streaming: { prefaultSlots: false },
  });
  cases.push({
    source: "file",
    frac: 0.25,
    label: "LRU + fallback q2_k, no background load, slots not prefaulted (before session 8)",
    fallback: true,
    streaming: { prefaultSlots: false, fallbackCopies: { loadOnFallback: false } },
  });
}
if (nginx) {
  cases.push({ source: "http", frac: 0.25, label: "LRU" });
  cases.push({
    source: "http",
    frac: 0.25,
    label: "LRU, direct reads on a worker thread (readThread)",
    workerReads: true,
  });
  cases.push({
    source: "http",
    frac: 0.25,
    label: "LRU, body through fetch (before direct reads)",
    fetchBody: true,
  });
  if (fbPath) {
    cases.push({ source: "http", frac: 0.25, label: "LRU + fallback q2_k", fallback: true });
  }
}

const rows: string[] = [];
const summary: Record<string, number> = {};
try {
  await run(fileSrc).then((r) => r.model.dispose()); // warm-up (JIT)
  const plainFile = await plainReadMs(fileSrc);
  const httpSrc = nginx ? await HttpSource.open(`${nginx.baseUrl}bench.gguf`) : null;
  const httpJsSrc = nginx
    ? await HttpSource.open(`${nginx.baseUrl}bench.gguf`, { readThread: true })
    : null;
  const httpFetchSrc = nginx
    ? await HttpSource.open(`${nginx.baseUrl}bench.gguf`, { directReads: false })
    : null;
  const plainHttp = httpSrc ? await plainReadMs(httpSrc) : { fresh: NaN, mapped: NaN };
  const plainHttpJs = httpJsSrc ? await plainReadMs(httpJsSrc) : { fresh: NaN, mapped: NaN };
  const plainHttpFetch = httpFetchSrc
    ? await plainReadMs(httpFetchSrc)
    : { fresh: NaN, mapped: NaN };
  let reference: number[] | null = null;
  const only = values.only;
  // a whole row name selects that row only; anything else every row containing it
  // (several alternatives separated by "|")
  const alts = only?.split("|") ?? [];
  const pick = (name: string): boolean =>
    alts.some((o) =>
      cases.some((c) => `${c.source} ${c.frac * 100}% ${c.label}` === o)
        ? name === o
        : name.includes(o)
    );
  /** Per selected row: its best pair and every round's decode speeds. */
  interface Tally {
    c: Case;
    base: number;
    best: Run | null;
    stats: ReturnType<StreamingExpertStore["stats"]> | null;
    idlePacks: number;
    streamed: number[];
    resident: number[];
    /** Least CPU ms of a generation, resident and streamed. */
    cpuResident: number;
    cpuStreamed: number;
    /** Least JS-thread CPU ms of a generation, resident and streamed. */
    jsResident: number;
    jsStreamed: number;
  }
  const tallies: Tally[] = cases
    .filter((c) => !only || pick(`${c.source} ${c.frac * 100}% ${c.label}`))
    .map((c) => ({
      c,
      base: 0,
      best: null,
      stats: null,
      idlePacks: 0,
      streamed: [],
      resident: [],
      cpuResident: Infinity,
      cpuStreamed: Infinity,
      jsResident: Infinity,
      jsStreamed: Infinity,
    }));
  /** One resident → streamed pair of row `t`; keeps the best streamed run (its model only for fallback rows). */
  const pair = async (t: Tally): Promise<void> => {
    const c = t.c;
    const b = await run(fileSrc);
    reference ??= b.tokens;
    b.model.dispose();
    t.resident.push(b.tokPerS);
    t.cpuResident = Math.min(t.cpuResident, b.cpuMs);
    t.jsResident = Math.min(t.jsResident, b.jsMs);
    t.base = Math.max(t.base, b.tokPerS);
    const src = c.source === "file"
      ? (c.nodeReads ? fileSrcNode : fileSrc)
      : c.fetchBody
      ? httpFetchSrc!
      : c.workerReads
      ? httpJsSrc!
      : httpSrc!;
    const fbSrc = c.fallback ? await FileSource.open(fbPath!) : null;
    const s = await run(src, {
      ...(values.integrity ? { integrity: values.integrity as "verify" | "off" | "pin" } : {}),
      expertBudgetBytes: Math.floor(expertBytes * c.frac),
      streaming: {
        ...COMMON,
        ...c.streaming,
        fallbackCopies: fbSrc
          ? { ...c.streaming?.fallbackCopies, source: fbSrc, manifest: fbManifest }
          : undefined,
      },
    }, c.hashCopied);
    fbSrc?.close();
    t.streamed.push(s.tokPerS);
    t.cpuStreamed = Math.min(t.cpuStreamed, s.cpuMs);
    t.jsStreamed = Math.min(t.jsStreamed, s.jsMs);
    if (!c.fallback && s.tokens.join() !== reference.join()) {
      throw new Error(`tokens differ: ${c.label}`);
    }
    if (!t.best || s.tokPerS > t.best.tokPerS) {
      if (t.best?.model) t.best.model.dispose();
      t.best = s;
      const store = s.model.store as StreamingExpertStore;
      t.stats = store.stats();
      t.idlePacks = store.idlePacks;
    }
    if (!c.fallback || t.best !== s) s.model.dispose();
  };
  // best of REPS pairs (resident right before streamed): noise on a shared machine only slows;
  // --interleave: round by round over the rows, so load drift hits every row alike
  if (values.interleave) {
    for (let rep = 0; rep < REPS; rep++) for (const t of tallies) await pair(t);
  } else {
    for (const t of tallies) for (let rep = 0; rep < REPS; rep++) await pair(t);
  }
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[xs.length >> 1];
  for (const t of tallies) {
    const { c, best: r, stats: st } = t;
    if (!r || !st || !reference) continue;
    const base = t.base;
    const rel = r.tokPerS / base;
    const loads = Math.max(1, st.loads ?? 0);
    const waitsOn = Math.max(1, st.misses - (st.fallbackHits ?? 0));
    let agree = "—";
    if (c.fallback) {
      agree = `${fmt(100 * await agreement(r.model, reference), 1)} %`;
      r.model.dispose();
    }
    rows.push(
      `| ${c.source} | ${c.frac * 100} % | ${c.label} | ${fmt(r.tokPerS, 1)} | ${
        fmt(base, 1)
      } | **${fmt(rel)}×** | ${fmt(med(t.streamed) / med(t.resident))}× | ${
        fmt(t.cpuResident / t.cpuStreamed)
      }× | ${fmt(t.jsStreamed, 0)} / ${fmt(t.cpuStreamed, 0)} (${fmt(t.jsResident, 0)} / ${
        fmt(t.cpuResident, 0)
      }) | ${st.hits} / ${st.misses} | ${st.fallbackHits ?? 0} (${
        c.fallback ? st.prefetches : "—"
      }) | ${fmt((st.readMs ?? 0) / loads)} | ${fmt((st.verifyMs ?? 0) / loads)} | ${
        fmt((st.repackMs ?? 0) / loads)
      } | ${st.packs ?? 0} (${t.idlePacks}) | ${fmt(st.stallMs / waitsOn)} | ${
        ((p) => `${fmt(p.mapped)} / ${fmt(p.fresh)}`)(
          c.source === "file"
            ? plainFile
            : c.fetchBody
            ? plainHttpFetch
            : c.workerReads
            ? plainHttpJs
            : plainHttp,
        )
      } | ${agree} |`,
    );
    summary[`${c.source} ${c.frac * 100}% ${c.label}`] = rel;
  }
  await httpSrc?.close();
  await httpFetchSrc?.close();
  await httpJsSrc?.close();
  const f = await readGguf(fileSrc);
  console.log(
    `Expert streaming, backend '${values.backend}' (${
      values.copy ? "read, then copy" : "read in place"
    }${values["pack-after"] ? `, packAfterUses ${values["pack-after"]}` : ""}${
      values.integrity ? `, integrity ${values.integrity}` : ""
    }, best of ${REPS}${
      values.interleave ? ", rows interleaved round by round" : ""
    }), bench MoE q4_0 (${f.tensors.length} tensors, ` +
      `${experts.length} experts × ${fmt(experts[0].bytes / 2 ** 20)} MiB = ${
        fmt(expertBytes / 2 ** 20, 0)
      } MiB of experts), prompt ${PROMPT.length} tokens, ${N_TOKENS} greedy tokens. ` +
      `Load average ${
        Deno.loadavg().map((x) => fmt(x)).join(" ")
      } on ${navigator.hardwareConcurrency} CPUs.` +
      (nginx ? "" : " (no nginx: no HTTP rows)") + "\n",
  );
  console.log(
    "| source | budget | policy | decode tok/s | resident tok/s | × resident | medians × resident | × resident by CPU time | least CPU ms, JS thread / process (resident) | hits / misses | fallback uses (background loads) | read ms/load | verify ms/load | copy+repack ms/load | repacks (while waiting) | wait ms/miss | plain read ms/expert (into mapped / fresh buffer) | agreement vs full |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(r);
  const http = summary["http 25% LRU"], file = summary["file 25% LRU"];
  const httpFetch = summary["http 25% LRU, body through fetch (before direct reads)"];
  const httpJs = summary["http 25% LRU, direct reads on a worker thread (readThread)"];
  if (http !== undefined) console.log(`\nHTTP / file at 25 %: ${fmt(http / file)}×`);
  if (httpJs !== undefined) {
    console.log(`HTTP from the read worker / file at 25 %: ${fmt(httpJs / file)}×`);
  }
  if (httpFetch !== undefined) {
    console.log(`HTTP through fetch / file at 25 %: ${fmt(httpFetch / file)}×`);
  }
} finally {
  await nginx?.stop();
  fileSrc.close();
}
