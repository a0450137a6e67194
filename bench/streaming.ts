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
 * resident model's, feeding the resident model's greedy tokens.
 *
 * ```sh
 * deno run -A bench/streaming.ts [--tokens 24] [--no-http] [--no-fallback] [--reps N]
 *   [--only SUBSTRING] [--pack-after N] [--copy] [--integrity off|pin] [--cap]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ByteSource,
  createBackend,
  FileSource,
  generateText,
  HttpSource,
  loadModel,
  type LoadModelOptions,
  type Model,
  parseExpertManifest,
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

const PROMPT = [1, 20, 300, 41, 5, 160, 77, 8];
const fmt = (x: number, d = 2): string => x.toFixed(d);

const bench = await ensureBenchModel("q4_0");
const fileSrc = await FileSource.open(bench.path);
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

interface Run {
  tokPerS: number;
  tokens: number[];
  model: Model;
}

async function run(src: ByteSource, opts: LoadModelOptions = {}): Promise<Run> {
  const model = await loadModel(src, { backend: await createBackend(values.backend), ...opts });
  const out = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  return { tokPerS: out.timings.decodeTokensPerS, tokens: out.tokens, model };
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
  fallback?: boolean;
};
const cases: Case[] = [
  { source: "file", frac: 0.5, label: "LRU" },
  { source: "file", frac: 0.25, label: "LRU" },
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
    label: "LRU + fallback q2_k, no background load",
    fallback: true,
    streaming: { fallbackCopies: { loadOnFallback: false } },
  });
}
if (nginx) {
  cases.push({ source: "http", frac: 0.25, label: "LRU" });
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
  const plainHttp = httpSrc ? await plainReadMs(httpSrc) : { fresh: NaN, mapped: NaN };
  let reference: number[] | null = null;
  const only = values.only;
  // a whole row name selects that row only; anything else every row containing it
  const onlyExact = cases.some((c) => `${c.source} ${c.frac * 100}% ${c.label}` === only);
  for (const c of cases) {
    const name = `${c.source} ${c.frac * 100}% ${c.label}`;
    if (only && !(onlyExact ? name === only : name.includes(only))) continue;
    // best of REPS pairs (resident right before streamed): noise on a shared machine only slows
    let base: Run | null = null, r: Run | null = null;
    for (let rep = 0; rep < REPS; rep++) {
      const b = await run(fileSrc);
      reference ??= b.tokens;
      b.model.dispose();
      if (!base || b.tokPerS > base.tokPerS) base = b;
      const src = c.source === "file" ? fileSrc : httpSrc!;
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
      });
      fbSrc?.close();
      if (!r || s.tokPerS > r.tokPerS) {
        r?.model.dispose();
        r = s;
      } else s.model.dispose();
    }
    if (!base || !r || !reference) continue;
    const st = (r.model.store as StreamingExpertStore).stats();
    const rel = r.tokPerS / base.tokPerS;
    const loads = Math.max(1, st.loads ?? 0);
    const waitsOn = Math.max(1, st.misses - (st.fallbackHits ?? 0));
    let agree = "—";
    if (c.fallback) agree = `${fmt(100 * await agreement(r.model, reference), 1)} %`;
    else if (r.tokens.join() !== reference.join()) throw new Error(`tokens differ: ${c.label}`);
    rows.push(
      `| ${c.source} | ${c.frac * 100} % | ${c.label} | ${fmt(r.tokPerS, 1)} | ${
        fmt(base.tokPerS, 1)
      } | **${fmt(rel)}×** | ${st.hits} / ${st.misses} | ${st.fallbackHits ?? 0} | ${
        fmt((st.readMs ?? 0) / loads)
      } | ${fmt((st.verifyMs ?? 0) / loads)} | ${fmt((st.repackMs ?? 0) / loads)} | ${
        st.packs ?? 0
      } (${(r.model.store as StreamingExpertStore).idlePacks}) | ${fmt(st.stallMs / waitsOn)} | ${
        ((p) => `${fmt(p.mapped)} / ${fmt(p.fresh)}`)(c.source === "file" ? plainFile : plainHttp)
      } | ${agree} |`,
    );
    summary[`${c.source} ${c.frac * 100}% ${c.label}`] = rel;
    r.model.dispose();
  }
  await httpSrc?.close();
  const f = await readGguf(fileSrc);
  console.log(
    `Expert streaming, backend '${values.backend}' (${
      values.copy ? "read, then copy" : "read in place"
    }${values["pack-after"] ? `, packAfterUses ${values["pack-after"]}` : ""}${
      values.integrity ? `, integrity ${values.integrity}` : ""
    }, best of ${REPS}), bench MoE q4_0 (${f.tensors.length} tensors, ` +
      `${experts.length} experts × ${fmt(experts[0].bytes / 2 ** 20)} MiB = ${
        fmt(expertBytes / 2 ** 20, 0)
      } MiB of experts), prompt ${PROMPT.length} tokens, ${N_TOKENS} greedy tokens. ` +
      `Load average ${
        Deno.loadavg().map((x) => fmt(x)).join(" ")
      } on ${navigator.hardwareConcurrency} CPUs.` +
      (nginx ? "" : " (no nginx: no HTTP rows)") + "\n",
  );
  console.log(
    "| source | budget | policy | decode tok/s | resident tok/s | × resident | hits / misses | fallback uses | read ms/load | verify ms/load | copy+repack ms/load | repacks (while waiting) | wait ms/miss | plain read ms/expert (into mapped / fresh buffer) | agreement vs full |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(r);
  const http = summary["http 25% LRU"], file = summary["file 25% LRU"];
  if (http !== undefined) console.log(`\nHTTP / file at 25 %: ${fmt(http / file)}×`);
} finally {
  await nginx?.stop();
  fileSrc.close();
}
