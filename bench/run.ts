/**
 * Speed benchmark (not a test): moe-edge against native llama.cpp and against
 * llama.cpp compiled to WASM (wllama), on the bench MoE (`bench/bench_model.ts`)
 * in several weight types. Every measurement runs in a fresh child process;
 * engines alternate order between repeats, and each engine keeps its best
 * repeat. Prints a markdown table of ratios measured in this run and writes it
 * to `bench/RESULTS.md` (unless `--no-write`).
 *
 * ```sh
 * deno task bench                                   # everything (~15 min on 2 vCPUs)
 * deno task bench --quick                           # q8_0, 8 decode tokens, 1 repeat, no ref
 * deno task bench --types q8_0,q4_K --tokens 16 --backends wasm --peers llamacpp
 * ```
 *
 * Flags: `--types` (f32,q8_0,q4_0,q4_K), `--mixes` (llama.cpp ftype mixes of the bench MoE:
 * Q4_K_M,Q3_K_M,Q2_K,MXFP4_MOE; none by default, and no default types when given), `--tokens` (decode steps, 32), `--prompt`
 * (prompt tokens incl. BOS, 64), `--backends` (moe-edge backends: wasm,ref), `--ref-types`
 * (types the slow reference backend runs, q8_0,q4_K), `--ref-tokens` (its decode steps, 8),
 * `--peers` (llamacpp,wllama), `--repeats` (processes per engine and type, 3), `--passes`
 * (timed passes per process for moe-edge and llama.cpp, 3), `--clock` (wall | cpu: time by process
 * CPU time, for a shared machine; wllama has no CPU time), `--quick`, `--no-write`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  bannedTokens,
  BENCH_EXTRA_TYPES,
  BENCH_MIXES,
  BENCH_SHAPE,
  BENCH_TYPES,
  benchLabel,
  benchPrompt,
  ensureBenchModel,
  type WeightTraffic,
  weightTraffic,
} from "./bench_model.ts";
import { createTokenizer } from "../core/tokenizer/tokenizer.ts";
import { buildTestVocab } from "../core/tokenizer/test_vocab.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const HERE = new URL("./", import.meta.url).pathname;
const ORACLE_PKG = `${ROOT}tests/oracle/node_modules/node-llama-cpp/package.json`;
const WLLAMA_PKG = `${HERE}peers/node_modules/@wllama/wllama/package.json`;
const CHILD_TIMEOUT_MS = 600_000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    types: { type: "string" },
    mixes: { type: "string" },
    clock: { type: "string", default: "wall" },
    tokens: { type: "string" },
    prompt: { type: "string", default: "64" },
    backends: { type: "string" },
    "ref-types": { type: "string", default: "q8_0,q4_K" },
    "ref-tokens": { type: "string", default: "8" },
    peers: { type: "string", default: "llamacpp,wllama" },
    repeats: { type: "string" },
    passes: { type: "string" },
    quick: { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
  },
});
const quick = values.quick;
const list = (s: string): string[] => s.split(",").map((x) => x.trim()).filter((x) => x !== "");
const TYPE_NAMES = list(
  values.types ?? (values.mixes ? "" : quick ? "q8_0" : BENCH_TYPES.join(",")),
);
const MIXES = list(values.mixes ?? "");
for (const m of MIXES) {
  if (!BENCH_MIXES.includes(m as (typeof BENCH_MIXES)[number])) {
    throw new Error(`--mixes: unknown mix "${m}" (${BENCH_MIXES})`);
  }
}
/** Run keys: the type names, then `mix:NAME` per mix. */
const TYPES = [...TYPE_NAMES, ...MIXES.map((m) => `mix:${m}`)];
const DECODE = Number(values.tokens ?? (quick ? "8" : "32"));
const PROMPT_N = Number(values.prompt);
const BACKENDS = list(values.backends ?? (quick ? "wasm" : "wasm,ref"));
const REF_TYPES = list(values["ref-types"]);
const REF_DECODE = Number(values["ref-tokens"]);
const PEERS = list(values.peers);
/** `wall` (default) or `cpu`: time prefill and decode by process CPU time (shared machines). */
const CLOCK = values.clock;
if (CLOCK !== "wall" && CLOCK !== "cpu") throw new Error(`--clock: wall or cpu, not "${CLOCK}"`);
const REPEATS = Number(values.repeats ?? (quick ? "1" : "3"));
/** Timed passes per process for moe-edge and llama.cpp (wllama: 1; its passes are long). */
const PASSES = Number(values.passes ?? (quick ? "1" : "3"));
for (const t of TYPE_NAMES) {
  if (!BENCH_TYPES.includes(t) && !BENCH_EXTRA_TYPES.includes(t)) {
    throw new Error(`--types: unknown type "${t}" (${[...BENCH_TYPES, ...BENCH_EXTRA_TYPES]})`);
  }
}
for (const b of BACKENDS) {
  if (b !== "wasm" && b !== "ref") throw new Error(`--backends: unknown backend "${b}" (wasm,ref)`);
}
for (const p of PEERS) {
  if (p !== "llamacpp" && p !== "wllama") throw new Error(`--peers: unknown peer "${p}"`);
}

// ---------------------------------------------------------------------------------------------
// machine, memcpy

/** /proc/cpuinfo, through `cat` (Deno reads /proc/cpuinfo only with --allow-all). */
function cpuinfo(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    try {
      const out = new Deno.Command("cat", { args: ["/proc/cpuinfo"], stderr: "null" }).outputSync();
      return new TextDecoder().decode(out.stdout);
    } catch {
      return "";
    }
  }
}

function cpuModel(info: string): string {
  const m = /^model name\s*:\s*(.+)$/m.exec(info);
  return m ? m[1].trim() : "unknown";
}

function cpuFlags(info: string): string {
  const m = /^flags\s*:\s*(.+)$/m.exec(info);
  const f = new Set(m ? m[1].split(/\s+/) : []);
  return ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"].filter((x) => f.has(x)).join(" ");
}

const MEMCPY_BYTES = 256 << 20;
let memcpySrc: Uint8Array | null = null, memcpyDst: Uint8Array | null = null;

/** Best of 8 copies of 256 MiB with `Uint8Array.prototype.set`, in GB/s of bytes copied. */
function memcpyGBs(): number {
  memcpySrc ??= new Uint8Array(MEMCPY_BYTES).fill(7);
  memcpyDst ??= new Uint8Array(MEMCPY_BYTES);
  memcpyDst.set(memcpySrc); // fault the pages in
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    const t = performance.now();
    memcpyDst.set(memcpySrc);
    best = Math.min(best, performance.now() - t);
  }
  return MEMCPY_BYTES / (best / 1000) / 1e9;
}

// ---------------------------------------------------------------------------------------------
// child processes

interface Measurement {
  engine: string;
  prefillMs: number;
  prefillCpuMs?: number;
  decodeCpuMs?: number;
  prefillTokens: number;
  decodeMs: number;
  decodeSteps: number;
  loadMs: number;
  tokens?: number[];
  text?: string;
  compileMs?: number | null;
  instantiateMs?: number;
  warmupMs?: number;
  wall?: { firstTokenMs: number; decodeMs: number; decodeSteps: number };
  [k: string]: unknown;
}

async function child(cmd: string, args: string[]): Promise<Measurement> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(CHILD_TIMEOUT_MS),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n");
  const stderr = new TextDecoder().decode(out.stderr).trim();
  let res: Record<string, unknown> | null = null;
  try {
    res = JSON.parse(stdout[stdout.length - 1]);
  } catch { /* reported below */ }
  if (!out.success || res === null || "error" in res) {
    const why = res && "error" in res ? String(res.error) : stdout.slice(-5).join("\n");
    throw new Error(
      `${cmd} ${args[0]} ... failed (exit ${out.code}${out.signal ? ` ${out.signal}` : ""}): ` +
        `${why}\n${stderr.split("\n").slice(-8).join("\n")}`,
    );
  }
  return res as Measurement;
}

const DENO = Deno.execPath();
const DENO_RUN = ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-sys"];

interface Job {
  label: string;
  type: string;
  run: () => Promise<Measurement>;
}

function moeEdgeJob(type: string, model: string, backend: string, decode: number): Job {
  const req = {
    model,
    backend,
    prompt: PROMPT.ids,
    decode,
    banned: BANNED.all,
    passes: backend === "ref" ? 1 : PASSES,
  };
  return {
    label: `moe-edge ${backend}`,
    type,
    run: () => child(DENO, [...DENO_RUN, `${HERE}moe_edge_bench.ts`, JSON.stringify(req)]),
  };
}

function llamaCppJob(type: string, model: string): Job {
  const req = {
    model,
    prompt: PROMPT.ids,
    decode: DECODE,
    banned: BANNED.all,
    threads: 1,
    passes: PASSES,
  };
  return {
    label: "llama.cpp",
    type,
    run: () => child("node", [`${HERE}peers/llamacpp_bench.mjs`, JSON.stringify(req)]),
  };
}

function wllamaJob(type: string, model: string): Job {
  const req = {
    model,
    promptText: PROMPT.text,
    promptTokens: PROMPT.ids.length,
    decode: DECODE,
    banned: BANNED.all,
  };
  return {
    label: "wllama",
    type,
    run: () => child(DENO, [...DENO_RUN, `${HERE}peers/wllama_bench.ts`, JSON.stringify(req)]),
  };
}

// ---------------------------------------------------------------------------------------------
// run

const PROMPT = benchPrompt(PROMPT_N);
const BANNED = bannedTokens();
const tokenizer = createTokenizer(buildTestVocab("llama", { size: BENCH_SHAPE.nVocab }));
const t0 = performance.now();
const command = `deno task bench${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
const date = new Date().toISOString().replace(/\.\d+Z$/, "Z");
const nproc = navigator.hardwareConcurrency;
const CPUINFO = cpuinfo();
const cpu = cpuModel(CPUINFO);
const log = (s: string): void =>
  console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(0)}s] ${s}`);

const notes: string[] = [];
const failures: string[] = [];
const havePeer = (p: string): boolean => {
  const pkg = p === "llamacpp" ? ORACLE_PKG : WLLAMA_PKG;
  try {
    Deno.statSync(pkg);
    return true;
  } catch {
    const how = p === "llamacpp" ? "npm ci --prefix tests/oracle" : "npm ci --prefix bench/peers";
    failures.push(`${p}: not installed (run \`${how}\`); skipped`);
    return false;
  }
};
const peers = PEERS.filter(havePeer);

log(`${cpu}, ${nproc} vCPUs; types ${TYPES}; prompt ${PROMPT.ids.length} tokens, decode ${DECODE}`);
const models = new Map<string, { path: string; traffic: WeightTraffic; fileBytes: number }>();
for (const type of TYPES) {
  const m = await ensureBenchModel(type);
  if (m.built) {
    log(
      `synthesized ${type} model (${(m.bytes / 1e6).toFixed(0)} MB) in ${
        (m.buildMs / 1000).toFixed(1)
      } s`,
    );
  }
  models.set(type, { path: m.path, traffic: await weightTraffic(m.path), fileBytes: m.bytes });
}

const memcpy: number[] = [memcpyGBs()];
log(`memcpy ${memcpy[0].toFixed(1)} GB/s`);

/** results[type][engine] = measurements (one per repeat). */
const results = new Map<string, Map<string, Measurement[]>>();
const record = (type: string, label: string, m: Measurement): void => {
  if (!results.has(type)) results.set(type, new Map());
  const byEngine = results.get(type)!;
  if (!byEngine.has(label)) byEngine.set(label, []);
  byEngine.get(label)!.push(m);
};

async function runJob(job: Job): Promise<void> {
  const t = performance.now();
  try {
    const m = await job.run();
    record(job.type, job.label, m);
    log(
      `${job.type} ${job.label}: prefill ${
        (m.prefillTokens / m.prefillMs * 1000).toFixed(2)
      } tok/s, ` +
        `decode ${(m.decodeSteps / m.decodeMs * 1000).toFixed(2)} tok/s ` +
        `(${((performance.now() - t) / 1000).toFixed(0)} s)`,
    );
  } catch (e) {
    const msg = `${job.type} ${job.label}: ${(e as Error).message}`;
    failures.push(msg);
    log(`FAILED ${msg}`);
  }
}

for (const type of TYPES) {
  const { path } = models.get(type)!;
  const jobs: Job[] = [];
  if (BACKENDS.includes("wasm")) jobs.push(moeEdgeJob(type, path, "wasm", DECODE));
  if (peers.includes("llamacpp")) jobs.push(llamaCppJob(type, path));
  if (peers.includes("wllama")) jobs.push(wllamaJob(type, path));
  for (let r = 0; r < REPEATS; r++) {
    for (const job of r % 2 === 0 ? jobs : [...jobs].reverse()) await runJob(job);
  }
  memcpy.push(memcpyGBs());
}
if (BACKENDS.includes("ref")) {
  for (const type of REF_TYPES.filter((t) => TYPES.includes(t))) {
    await runJob(moeEdgeJob(type, models.get(type)!.path, "ref", REF_DECODE));
  }
}
memcpy.push(memcpyGBs());
const memcpyBest = Math.max(...memcpy);
log(`memcpy samples ${memcpy.map((x) => x.toFixed(1)).join(", ")} GB/s`);

// ---------------------------------------------------------------------------------------------
// report

interface Best {
  prefill: number; // tok/s
  decode: number; // tok/s
  m: Measurement; // the repeat with the best decode
  n: number;
}

function best(ms: Measurement[] | undefined): Best | null {
  if (!ms || ms.length === 0) return null;
  const cpu = CLOCK === "cpu";
  const pre = (m: Measurement) =>
    m.prefillTokens / ((cpu ? m.prefillCpuMs ?? NaN : m.prefillMs) / 1000);
  const dec = (m: Measurement) =>
    m.decodeSteps / ((cpu ? m.decodeCpuMs ?? NaN : m.decodeMs) / 1000);
  const bestDec = ms.reduce((a, b) => (dec(b) > dec(a) ? b : a));
  return { prefill: Math.max(...ms.map(pre)), decode: dec(bestDec), m: bestDec, n: ms.length };
}

const f2 = (x: number | null | undefined, d = 2): string =>
  x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(d);
const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || !(b > 0) ? "—" : `${(a / b).toFixed(2)}×`;

/** Greedy agreement with llama.cpp: equal leading tokens (ids, or decoded text for wllama). */
function agreement(b: Best, ref: Best | null): string {
  const want = ref?.m.tokens;
  if (!want) return "—";
  if (b.m.tokens) {
    let k = 0;
    while (k < want.length && k < b.m.tokens.length && want[k] === b.m.tokens[k]) k++;
    return `${k}/${Math.min(want.length, b.m.tokens.length)}`;
  }
  if (typeof b.m.text === "string") {
    const dec = new TextDecoder();
    let k = 0, acc = "";
    for (const id of want) {
      const next = acc + dec.decode(tokenizer.tokenBytes(id));
      if (!b.m.text.startsWith(next)) break;
      acc = next;
      k++;
    }
    return `${k}/${want.length} (text)`;
  }
  return "—";
}

const ENGINE_ORDER = ["moe-edge wasm", "moe-edge ref", "llama.cpp", "wllama"];
const rows: string[] = [];
const loadRows: string[] = [];
for (const type of TYPES) {
  const byEngine = results.get(type) ?? new Map<string, Measurement[]>();
  const native = best(byEngine.get("llama.cpp"));
  const wl = best(byEngine.get("wllama"));
  const traffic = models.get(type)!.traffic;
  for (const engine of ENGINE_ORDER) {
    const b = best(byEngine.get(engine));
    if (!b) continue;
    const gbs = b.decode * traffic.perToken / 1e9;
    rows.push(
      `| ${benchLabel(type)} | ${engine}${
        engine === "moe-edge ref" ? ` (${b.m.decodeSteps} decode)` : ""
      } | ` +
        `${f2(b.prefill)} | ${ratio(b.prefill, native?.prefill)} | ${
          ratio(b.prefill, wl?.prefill)
        } | ` +
        `${f2(b.decode)} | ${ratio(b.decode, native?.decode)} | ${ratio(b.decode, wl?.decode)} | ` +
        `${f2(gbs)} | ${f2(gbs / memcpyBest * 100, 0)} % | ${agreement(b, native)} | ${b.n} |`,
    );
    const loads = byEngine.get(engine)!.map((m) => m.loadMs);
    const load = Math.min(...loads);
    const wasm = engine === "moe-edge wasm"
      ? `${f2(Math.min(...byEngine.get(engine)!.map((m) => m.compileMs ?? NaN)), 1)} + ` +
        `${f2(Math.min(...byEngine.get(engine)!.map((m) => m.instantiateMs ?? NaN)), 1)} ms; ` +
        `first pass ${f2(Math.min(...byEngine.get(engine)!.map((m) => m.warmupMs ?? NaN)), 0)} ms`
      : "";
    const nativeLoad = native
      ? Math.min(...byEngine.get("llama.cpp")!.map((m) => m.loadMs))
      : undefined;
    loadRows.push(
      `| ${benchLabel(type)} | ${engine} | ${f2(load, 0)} | ${ratio(load, nativeLoad)} | ${wasm} |`,
    );
  }
}

const nativeInfo = [...results.values()].flatMap((m) => m.get("llama.cpp") ?? [])[0];
const wllamaInfo = [...results.values()].flatMap((m) => m.get("wllama") ?? [])[0];
const trafficLines = TYPES.map((t) => {
  const w = models.get(t)!.traffic;
  return `${benchLabel(t)} ${(w.perToken / 1e6).toFixed(1)} MB/token (file ${
    (models.get(t)!.fileBytes / 1e6).toFixed(0)
  } MB)`;
});
const wall = (performance.now() - t0) / 1000;

const table = [
  "| type | engine | prefill tok/s | prefill vs llama.cpp | prefill vs wllama | decode tok/s | decode vs llama.cpp | decode vs wllama | decode GB/s | % of memcpy | greedy = llama.cpp | processes |",
  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ...rows,
].join("\n");
const loadTable = [
  "| type | engine | load ms | vs llama.cpp | WASM compile + instantiate |",
  "|---|---|--:|--:|---|",
  ...loadRows,
].join("\n");

const md = `# moe-edge speed bench — results

- **Date:** ${date}
- **Machine:** ${nproc} vCPUs (\`nproc\`), ${cpu} (${cpuFlags(CPUINFO)}); shared with other jobs
- **Command:** \`${command}\` (wall time ${wall.toFixed(0)} s)
- **Model:** synthesized llama MoE, nEmbd ${BENCH_SHAPE.nEmbd}, ${BENCH_SHAPE.nLayer} layers, ${BENCH_SHAPE.nExpert} experts (${BENCH_SHAPE.nExpertUsed} active), nFf ${BENCH_SHAPE.nFf}, ${BENCH_SHAPE.nHead}/${BENCH_SHAPE.nHeadKv} heads, vocab ${BENCH_SHAPE.nVocab}; all big matrices (incl. embedding/output) in the row's type; a "mix" row has each matrix in the type llama-quantize's ftype gives it (\`quantMixType\`, after llama.cpp's \`llama_tensor_get_type\`)
- **Workload:** prompt of ${PROMPT.ids.length} tokens (BOS included) as one batch, then ${DECODE} greedy single-token decodes; byte tokens 0x80–0xFF and \`<unk>\`/\`<s>\`/\`</s>\` banned on every engine
- **Weight traffic per decoded token** (attention + router + ${BENCH_SHAPE.nExpertUsed} experts/layer + output + 1 embedding row): ${
  trafficLines.join("; ")
}
- **memcpy:** ${
  memcpyBest.toFixed(1)
} GB/s (bytes copied per second, \`Uint8Array.set\` of 256 MiB, best of ${memcpy.length}×8 copies spread over the run: ${
  memcpy.map((x) => x.toFixed(1)).join(", ")
})

${table}

${
  CLOCK === "cpu"
    ? "**Clock: process CPU time** (`--clock cpu`: user + system time of each engine's process over the timed span, so time slices taken by other jobs on this shared machine do not count; llama.cpp computes on 1 thread). "
    : ""
}Each cell is the best of \`processes\` fresh processes (engines alternate order between repeats) ×
${PASSES} timed passes per process for moe-edge wasm and llama.cpp (wllama and ref: 1 pass), each
after a discarded warm-up pass. Best-of estimates the uncontended speed on this shared machine.
tok/s are for context; compare the ratios, which were measured in this run on this machine.

${loadTable}

Load = from the engine's start of model loading to a ready context (best repeat). llama.cpp
maps the file (pages are read at first use, during its warm-up); moe-edge reads and copies
the weights into WASM linear memory (ref: JS typed arrays); wllama copies the file from a Blob
into its heap through JSPI async reads. The file is in the page cache for all of them.

**Engines**
- **moe-edge wasm / ref** — \`Session.eval\` on this repo's backends (Deno ${Deno.version.deno}, V8 ${Deno.version.v8}). The reference backend (plain TypeScript) runs only ${
  REF_TYPES.filter((t) => TYPES.includes(t)).join(", ") || "no types"
} with ${REF_DECODE} decode steps, because it is slow. WASM compile + instantiate is the cold \`WebAssembly.compile\` of the kernels (V8 compiles function bodies lazily, so most compile work lands in the first pass, which the warm-up absorbs).
- **llama.cpp** — native, node-llama-cpp ${nativeInfo?.nodeLlamaCppVersion ?? "?"} (${
  nativeInfo?.llamaCppVersion ?? "?"
}), in a Node child: CPU only, **1 thread** (in use: ${
  nativeInfo?.threadsInUse ?? "?"
}), flash attention **off** (log: \`flash_attn = ${
  nativeInfo?.flashAttention ?? "?"
}\`; llama.cpp's default would turn it on), F16 K/V, n_batch = n_ubatch = n_ctx, ggml's own CPU variant choice: **${
  nativeInfo?.cpuBackend ?? "?"
}** (\`${nativeInfo?.systemInfo ?? "?"}\`). Timed with \`controlledEvaluate\`.
- **wllama** — @wllama/wllama ${
  wllamaInfo?.version ?? "?"
} (llama.cpp compiled to WASM, memory64 + JSPI build) run **in Deno, outside a browser**, in its own Web Worker: threads ${
  wllamaInfo?.threads ?? "?"
} (single-thread mode of its one wasm build, no pthreads), no WebGPU (\`n_gpu_layers: 0\`), flash attention off, F16 K/V, one ubatch for the prompt. Its completion API takes a string, so the prompt is text that tokenizes to the same ${PROMPT.ids.length} ids (checked: \`prompt_n\`). Prefill = llama.cpp's own \`prompt_ms\`; decode = wall time between the first and last streamed token (the same span the other engines time). Its quantized dot products are ggml's scalar C code (no WASM SIMD), its f32 dot is SIMD; read its ratios with that in mind.
- **GB/s** = decode tok/s × weight bytes per token; **% of memcpy** compares a read-only stream with a copy (which also writes), so it can exceed 100 %.
- **greedy = llama.cpp**: leading generated tokens equal to llama.cpp's (wllama: compared on the decoded text).
${
  failures.length
    ? `\n**Failures / skipped**\n${failures.map((f) => `- ${f.split("\n")[0]}`).join("\n")}\n`
    : ""
}${notes.length ? `\n${notes.map((n) => `- ${n}`).join("\n")}\n` : ""}`;

console.log(md);
if (!values["no-write"]) {
  // keep the sections other benches append after their marker (bench/load.ts: batching)
  const prev = await Deno.readTextFile(`${HERE}RESULTS.md`).catch(() => "");
  const kept = prev.indexOf("\n<!-- bench/load.ts");
  await Deno.writeTextFile(`${HERE}RESULTS.md`, kept >= 0 ? md + prev.slice(kept) : md);
  // keep `deno fmt --check` clean (it aligns the tables)
  await new Deno.Command(DENO, { args: ["fmt", "-q", `${HERE}RESULTS.md`], cwd: ROOT }).output();
  log(`wrote bench/RESULTS.md`);
}
log(`done in ${wall.toFixed(0)} s`);
