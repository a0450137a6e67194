/**
 * A fault campaign for integrity-by-default: each run loads the test model
 * from a faulty HTTP server or a local file whose bytes change at a random
 * moment (a replaced file, a corrupting proxy on re-fetches), with random
 * budgets and random retryable network faults, and generates greedily. A
 * run passes when it gives the fully resident tokens or a typed
 * `StoreError`; "wrong" (other tokens, no error) and "untyped" fail it.
 *
 * Run as a script for a bigger campaign and a table per scenario:
 * `deno run -A tools/fuzz/integrity_campaign.ts 200` (add `--off` for the
 * same runs with the opt-out, for comparison)
 *
 * @module
 */

import {
  buildIntegrityManifest,
  type ByteSource,
  type ExpertManifest,
  FileSource,
  generateText,
  HttpSource,
  loadModel,
  type LoadModelOptions,
  MemorySource,
  readGguf,
  StoreError,
} from "../../mod.ts";
import {
  type Fault,
  type ServerValidators,
  startFaultServer,
} from "../../core/store/fault_server_test_util.ts";
import {
  ALL_EXPERT_BYTES,
  modelBytes,
  N_TOKENS,
  PROMPT,
  residentTokens,
  storeContext,
} from "../../core/store/store_test_util.ts";

/** What a run ended with. */
export type Outcome = "tokens" | "typed" | "wrong" | "untyped";

/** One run's scenario and result. */
export interface RunResult {
  /** Scenario name. */
  readonly scenario: string;
  /** Seed of the run. */
  readonly seed: number;
  /** Outcome. */
  readonly outcome: Outcome;
  /** The error code (typed) or message (untyped). */
  readonly detail: string;
}

/**
 * Scenarios the default checks must always catch (no manifest):
 * - `etag-swap`, `lm-swap`: the server's file is replaced mid-run and its
 *   ETag / Last-Modified change (every mainstream server);
 * - `no-validator`: a server that sends neither (refused at open);
 * - `flip-refetch`: a corrupting hop flips a byte of re-fetched ranges;
 * - `file-rewrite`: a local file rewritten in place mid-run;
 * - `liar-swap+manifest`: the file is replaced under unchanged validators,
 *   with a manifest;
 * - `liar-swap+pin`, `flip-first+pin`: the two gaps below, with
 *   `integrity: "pin"` (the whole file hashed at open).
 * Scenarios only a manifest can catch (reported, not asserted):
 * - `liar-swap`: replaced under unchanged validators, no manifest;
 * - `flip-first`: a byte flipped on the first read of a range, no manifest.
 */
export const ASSERTED = [
  "etag-swap",
  "lm-swap",
  "no-validator",
  "flip-refetch",
  "file-rewrite",
  "liar-swap+manifest",
  "liar-swap+pin",
  "flip-first+pin",
] as const;
/** Scenarios measured for the docs, where the default cannot know the truth. */
export const MEASURED = ["liar-swap", "flip-first"] as const;
/** Any scenario. */
export type Scenario = typeof ASSERTED[number] | typeof MEASURED[number];

function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

let expertRanges: [number, number][] | null = null;
async function ranges(): Promise<[number, number][]> {
  if (!expertRanges) {
    const file = await readGguf(new MemorySource(modelBytes()));
    expertRanges = file.tensors.map((t) => [t.fileOffset, t.nbytes]);
  }
  return expertRanges;
}

/** A copy of the model with 1–8 bytes changed inside random tensors. */
async function corrupted(rnd: () => number): Promise<Uint8Array> {
  const out = modelBytes().slice();
  const rs = await ranges();
  const n = 1 + Math.floor(rnd() * 8);
  for (let i = 0; i < n; i++) {
    const [off, len] = rs[Math.floor(rnd() * rs.length)];
    out[off + Math.floor(rnd() * len)] ^= 1 + Math.floor(rnd() * 255);
  }
  return out;
}

let manifest: ExpertManifest | null = null;
async function theManifest(): Promise<ExpertManifest> {
  if (!manifest) {
    const ctx = await storeContext(new MemorySource(modelBytes()));
    manifest = await buildIntegrityManifest(
      await readGguf(new MemorySource(modelBytes())),
      ctx.locations,
    );
  }
  return manifest;
}

const RETRYABLE: Fault[] = ["drop", "503", "500", "truncate"];

async function classify(
  scenario: string,
  seed: number,
  run: () => Promise<number[]>,
): Promise<RunResult> {
  const want = await residentTokens();
  try {
    const tokens = await run();
    const same = tokens.length === want.length && tokens.every((t, i) => t === want[i]);
    return { scenario, seed, outcome: same ? "tokens" : "wrong", detail: same ? "" : "tokens" };
  } catch (e) {
    if (e instanceof StoreError) return { scenario, seed, outcome: "typed", detail: e.code };
    return { scenario, seed, outcome: "untyped", detail: String(e) };
  }
}

async function generate(src: string | ByteSource, opts: LoadModelOptions): Promise<number[]> {
  const model = await loadModel(src, { backend: "ref", ...opts });
  try {
    // two passes over the same prompt: the second re-fetches evicted experts
    const a = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    const b = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    if (a.tokens.join() !== b.tokens.join()) return b.tokens.map((t) => -1 - t);
    return a.tokens;
  } finally {
    model.dispose();
  }
}

/** One run of `scenario` with `seed`. */
export async function campaignRun(
  scenario: Scenario,
  seed: number,
  integrity: "verify" | "pin" | "off" = "verify",
): Promise<RunResult> {
  const off = integrity === "off";
  if (!off && scenario.endsWith("+pin")) integrity = "pin";
  const rnd = prng(seed * 2654435761 + scenario.length);
  const budgets = [ALL_EXPERT_BYTES / 4, ALL_EXPERT_BYTES / 2, undefined];
  const budget = budgets[Math.floor(rnd() * budgets.length)];
  const bad = await corrupted(rnd);
  if (scenario === "file-rewrite") {
    const path = await Deno.makeTempFile({ suffix: ".gguf" });
    try {
      await Deno.writeFile(path, modelBytes());
      const past = new Date(Date.UTC(2026, 0, 1));
      await Deno.utime(path, past, past); // an old file, as models on disk are
      const file = await FileSource.open(path, { checkChanges: !off });
      const at = 1 + Math.floor(rnd() * 120);
      let reads = 0;
      const src: ByteSource = {
        size: file.size,
        name: file.name,
        read(offset, length) {
          if (++reads === at) Deno.writeFileSync(path, bad); // rewritten in place, same size
          return file.read(offset, length);
        },
        close: () => file.close(),
      };
      return await classify(
        scenario,
        seed,
        () => generate(src, { expertBudgetBytes: budget, integrity }),
      );
    } finally {
      await Deno.remove(path);
    }
  }
  const validators: ServerValidators = scenario === "lm-swap"
    ? "last-modified"
    : scenario === "no-validator"
    ? (rnd() < 0.5 ? "none" : "weak-etag")
    : "etag";
  const srv = startFaultServer(modelBytes(), 600, validators);
  try {
    // random retryable faults that the source rides out
    for (let i = 0; i < 6; i++) {
      if (rnd() < 0.5) srv.queue.push(RETRYABLE[Math.floor(rnd() * RETRYABLE.length)]);
      else srv.queue.push(null as unknown as Fault); // a request without fault
    }
    const at = 1 + Math.floor(rnd() * 150);
    const flip = scenario.startsWith("flip-");
    const seen = new Set<string>();
    if (flip) {
      // flip one byte of one answer (after the moment `at`): of a range read before, or never before
      const fresh = scenario.startsWith("flip-first");
      let armed = false;
      const src = await HttpSource.open(srv.url, {
        backoffMs: 1,
        maxBackoffMs: 4,
        retries: 6,
        validators: off ? "use" : "require",
      });
      const armAt = srv.requests + at;
      srv.onRequest = (n) => {
        if (n >= armAt) armed = true;
      };
      const tap: ByteSource = {
        size: src.size,
        name: src.name,
        async read(offset, length, signal) {
          const k = `${offset}:${length}`;
          const again = seen.has(k);
          seen.add(k);
          const hit = armed && again !== fresh && length > 0;
          if (hit) armed = false;
          const b = await src.read(offset, length, signal);
          if (!hit) return b;
          // the hop between server and runtime corrupts exactly this answer
          const out = b.slice();
          out[Math.floor(rnd() * length)] ^= 1 + Math.floor(rnd() * 255);
          return out;
        },
        close: () => src.close(),
      };
      return await classify(
        scenario,
        seed,
        () => generate(tap, { expertBudgetBytes: budget, integrity }),
      );
    }
    const opts: LoadModelOptions = { expertBudgetBytes: budget, integrity };
    if (scenario === "liar-swap+manifest") opts.manifest = await theManifest();
    const http = { backoffMs: 1, maxBackoffMs: 4, retries: 6 };
    return await classify(scenario, seed, async () => {
      const src = await HttpSource.open(srv.url, {
        ...http,
        validators: opts.manifest || off ? "use" : "require",
      });
      // the file opened is the good one; it is replaced `at` requests later
      const swapAt = srv.requests + at;
      srv.onRequest = (n) => {
        if (n === swapAt) srv.replace(bad, scenario.startsWith("liar") ? "keep" : "change");
      };
      return await generate(src, opts);
    });
  } finally {
    await srv.stop();
  }
}

/** Runs `n` seeds of each scenario; returns every result. */
export async function runCampaign(
  scenarios: readonly Scenario[],
  n: number,
  firstSeed = 1,
  integrity: "verify" | "off" = "verify",
): Promise<RunResult[]> {
  const out: RunResult[] = [];
  for (const s of scenarios) {
    for (let i = 0; i < n; i++) out.push(await campaignRun(s, firstSeed + i, integrity));
  }
  return out;
}

/** Counts per scenario and outcome. */
export function tally(results: readonly RunResult[]): Map<string, Record<Outcome, number>> {
  const t = new Map<string, Record<Outcome, number>>();
  for (const r of results) {
    const row = t.get(r.scenario) ?? { tokens: 0, typed: 0, wrong: 0, untyped: 0 };
    row[r.outcome]++;
    t.set(r.scenario, row);
  }
  return t;
}

if (import.meta.main) {
  const n = Number(Deno.args[0] ?? 20);
  const t0 = performance.now();
  // `--off`: the same runs with the opt-out (integrity "off", no validator requirement)
  const results = await runCampaign(
    [...ASSERTED, ...MEASURED],
    n,
    1,
    Deno.args.includes("--off") ? "off" : "verify",
  );
  console.log(`| scenario | runs | right tokens | typed error | wrong tokens | untyped |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const [s, r] of tally(results)) {
    console.log(
      `| ${s} | ${
        r.tokens + r.typed + r.wrong + r.untyped
      } | ${r.tokens} | ${r.typed} | ${r.wrong} | ${r.untyped} |`,
    );
  }
  const codes = new Map<string, number>();
  for (const r of results) {
    if (r.outcome === "typed") codes.set(r.detail, (codes.get(r.detail) ?? 0) + 1);
  }
  console.log(`typed codes: ${[...codes].map(([c, k]) => `${c}=${k}`).join(", ")}`);
  for (const r of results) {
    if (r.outcome === "untyped") {
      console.log(`untyped: ${r.scenario} seed ${r.seed}: ${r.detail}`);
    }
  }
  console.log(`${results.length} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
