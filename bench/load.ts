/**
 * Load test of the server (not a test): starts `main.ts` in a child process
 * on loopback, runs N concurrent streaming clients for a fixed time, and
 * prints a markdown table: requests, errors (goal: 0), p50/p99 time to first
 * token, generated tokens per second, and the server's RSS growth over the
 * run (from its `/metrics`). Each server configuration (generation slots)
 * is measured in the same run so the rows compare like with like.
 *
 * ```sh
 * deno run -A bench/load.ts [--clients 64] [--duration 20] [--warmup 10] [--max-tokens 32] [--slots 4,64]
 * ```
 *
 * With `--streams 1,2,4,8,16` it measures continuous batching instead: one
 * server (slots = the largest stream count) on `--model` (`default`, or a
 * bench MoE type such as `q4_0`, or a GGUF path), and for each stream count c,
 * c streaming clients started together (distinct prompts of `--prompt-tokens`
 * ids, greedy, `--max-tokens` tokens each); it reports aggregate decode tok/s
 * (tokens after each stream's first, over the time from the first first-token
 * to the last token), its ratio to one stream, and TTFT p50/p99, next to
 * llama.cpp's batched decode of the same prompts on the same model in the same
 * run (node-llama-cpp, one context with c sequences, `--threads` threads;
 * `bench/peers/llamacpp_batch.mjs`); the server gets the same number of WASM threads
 * (`MOE_EDGE_THREADS`; its own default is one per CPU).
 * It also reports tokens per second including TTFT (all tokens over the time from the
 * common start to the last token), which a server that flushes a stream's tokens in one
 * burst cannot inflate; a round where some stream's tokens arrived < 1 ms apart is marked
 * (†) and loses to any round without a burst when the best round is picked. Last, tokens
 * (prompt excluded, all streams) per second of each engine process's CPU time (server: from
 * `/proc/<pid>/stat`; llama.cpp peer: `process.cpuUsage`), best round: on an oversubscribed
 * machine it leaves out the time slices other processes took (prefill work is included).
 *
 * ```sh
 * deno run -A bench/load.ts --streams 1,2,4,8,16 --model q4_0 [--max-tokens 32] [--threads 1]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { bannedTokens, benchPrompt, ensureBenchModel } from "./bench_model.ts";
import { defaultModelBytes } from "../core/model/default_model.ts";
import { loadModel } from "../core/model/model.ts";

interface Config {
  clients: number;
  durationS: number;
  warmupS: number;
  maxTokens: number;
  slots: number;
}

interface Row {
  slots: number;
  clients: number;
  requests: number;
  errors: number;
  rejected: number;
  ttftP50: number;
  ttftP99: number;
  tokPerS: number;
  rssStart: number;
  rssEnd: number;
  /** RSS halfway through the run. */
  rssMid: number;
  rssPeak: number;
  wallS: number;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function startServer(
  slots: number,
  clients: number,
  modelPath?: string,
  threads?: number,
): Promise<{ url: string; child: Deno.ChildProcess }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "--allow-net", MAIN],
    env: {
      MOE_EDGE_PORT: "0",
      MOE_EDGE_HOST: "127.0.0.1",
      MOE_EDGE_MAX_CONCURRENT: String(slots),
      MOE_EDGE_MAX_QUEUE: String(clients),
      MOE_EDGE_API_KEY: "",
      ...(modelPath ? { MOE_EDGE_MODEL: modelPath } : {}),
      // the server's default is one WASM thread per CPU
      ...(threads ? { MOE_EDGE_THREADS: String(threads) } : {}),
    },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/http:\/\/[\d.]+:\d+\//.test(out)) {
    const { done, value } = await reader.read();
    if (done) {
      throw new Error(`Cannot start the server: it exited before listening; output: ${out}`);
    }
    out += value;
  }
  // keep draining stdout so the child never blocks on a full pipe
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return { url: /(http:\/\/[\d.]+:\d+)\//.exec(out)![1], child };
}

async function rss(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^process_resident_memory_bytes (\d+)/m.exec(text);
  return m ? Number(m[1]) : NaN;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** One streaming request; resolves to [ttft ms, completion tokens] or throws. */
async function streamOnce(
  url: string,
  i: number,
  n: number,
  maxTokens: number,
): Promise<[number, number]> {
  const chat = n % 2 === 1;
  const body = chat
    ? { messages: [{ role: "user", content: `Client ${i} says hello, request ${n}.` }] }
    : { prompt: `Client ${i}, request ${n}: once upon a time` };
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/${chat ? "chat/completions" : "completions"}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      ...body,
      max_tokens: maxTokens,
      temperature: 0.8,
      seed: i * 1000 + n,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`HTTP ${res.status}`);
  }
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let ttft = NaN;
  let tokens = -1;
  let done = false;
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    buf += value;
    let k: number;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k).replace(/^data: /, "");
      buf = buf.slice(k + 2);
      if (ev === "[DONE]") {
        done = true;
        continue;
      }
      const j = JSON.parse(ev);
      if (j.error) throw new Error(`stream error: ${j.error.code}`);
      const text = j.choices?.[0]?.text ?? j.choices?.[0]?.delta?.content;
      if (text && Number.isNaN(ttft)) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  if (!done || tokens < 0) throw new Error("stream ended without usage and [DONE]");
  return [ttft, tokens];
}

async function run(cfg: Config): Promise<Row> {
  const { url, child } = await startServer(cfg.slots, cfg.clients);
  try {
    // warm up under the same load (JIT, heap and WASM memory high-water marks), so the
    // RSS growth measured next is the steady state, where a leak would show
    const warmEnd = performance.now() + cfg.warmupS * 1000;
    await Promise.all(Array.from({ length: cfg.clients }, async (_, i) => {
      for (let n = 0; n === 0 || performance.now() < warmEnd; n++) {
        await streamOnce(url, 1000 + i, n, cfg.maxTokens).catch(() => {});
      }
    }));
    const rssStart = await rss(url);
    let rssPeak = rssStart;
    let rssMid = NaN;
    const sampler = setInterval(
      () => rss(url).then((r) => (rssPeak = Math.max(rssPeak, r)), () => {}),
      1000,
    );
    const mid = setTimeout(() => rss(url).then((r) => (rssMid = r), () => {}), cfg.durationS * 500);
    const ttfts: number[] = [];
    let tokens = 0, requests = 0, errors = 0, rejected = 0;
    const t0 = performance.now();
    const end = t0 + cfg.durationS * 1000;
    const client = async (i: number): Promise<void> => {
      for (let n = 0; performance.now() < end; n++) {
        requests++;
        try {
          const [ttft, toks] = await streamOnce(url, i, n, cfg.maxTokens);
          ttfts.push(ttft);
          tokens += toks;
        } catch (e) {
          errors++;
          if (String(e).includes("429")) rejected++;
        }
      }
    };
    await Promise.all(Array.from({ length: cfg.clients }, (_, i) => client(i)));
    const wallS = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    clearTimeout(mid);
    const rssEnd = await rss(url);
    ttfts.sort((a, b) => a - b);
    return {
      slots: cfg.slots,
      clients: cfg.clients,
      requests,
      errors,
      rejected,
      ttftP50: percentile(ttfts, 50),
      ttftP99: percentile(ttfts, 99),
      tokPerS: tokens / wallS,
      rssStart,
      rssEnd,
      rssMid,
      rssPeak: Math.max(rssPeak, rssEnd),
      wallS,
    };
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

function table(rows: Row[], cfg: Omit<Config, "slots">): string {
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const base = rows[0];
  const lines = [
    `Load: ${cfg.clients} concurrent streaming clients (completions and chat alternating), ` +
    `${cfg.durationS} s after ${cfg.warmupS} s of warm-up, max_tokens ${cfg.maxTokens}, ignore_eos, default model, loopback; ` +
    `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs.`,
    "",
    "| slots | requests | errors (429) | TTFT p50 ms | TTFT p99 ms | tok/s | tok/s vs first row " +
    "| RSS start MiB | RSS end MiB | RSS growth MiB | growth in 2nd half MiB | RSS peak MiB |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    const cells = [
      r.slots,
      r.requests,
      `${r.errors} (${r.rejected})`,
      r.ttftP50.toFixed(1),
      r.ttftP99.toFixed(1),
      r.tokPerS.toFixed(1),
      `${(r.tokPerS / base.tokPerS).toFixed(2)}×`,
      mib(r.rssStart),
      mib(r.rssEnd),
      mib(r.rssEnd - r.rssStart),
      mib(r.rssEnd - r.rssMid),
      mib(r.rssPeak),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** One stream of a scaling round: ms from the round's start to its first and last token. */
interface StreamTiming {
  first: number;
  end: number;
  tokens: number;
}

/** Aggregate figures of one round of `c` streams. */
interface RoundStats {
  streams: number;
  /** Σ (tokens − 1) / (last token − first first-token), tok/s. */
  decodeTokPerS: number;
  /** Σ tokens / (last token − common start), tok/s: prefill included, immune to bursts. */
  e2eTokPerS: number;
  /**
   * Some stream's tokens arrived faster than 1 ms each (the server flushed them in one burst
   * after generating them), so `decodeTokPerS` of this round is not a decode rate.
   */
  burst: boolean;
  ttftP50: number;
  ttftP99: number;
  /** Σ tokens per second of the engine process's CPU time (user + system) over the round. */
  cpuTokPerS?: number;
}

/** CPU milliseconds (user + system) a process has used, from `/proc/<pid>/stat` (Linux). */
function procCpuMs(pid: number): number {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) * 10; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

/** Whether round `b` is a better estimate than `a`: a non-burst round first, then faster decode. */
function better(a: RoundStats | null, b: RoundStats): boolean {
  if (a === null) return true;
  if (a.burst !== b.burst) return a.burst;
  return b.decodeTokPerS > a.decodeTokPerS;
}

/** Tokens generated in a round (all streams). */
function tokensOf(per: readonly StreamTiming[]): number {
  return per.reduce((a, p) => a + p.tokens, 0);
}

function roundStats(streams: number, per: readonly StreamTiming[]): RoundStats {
  const firsts = per.map((p) => p.first).sort((a, b) => a - b);
  const end = Math.max(...per.map((p) => p.end));
  const decoded = per.reduce((a, p) => a + p.tokens - 1, 0);
  return {
    streams,
    decodeTokPerS: decoded / ((end - firsts[0]) / 1000),
    e2eTokPerS: (decoded + per.length) / (end / 1000),
    burst: per.some((p) => p.tokens > 1 && p.end - p.first < p.tokens - 1),
    ttftP50: percentile(firsts, 50),
    ttftP99: percentile(firsts, 99),
  };
}

/** One greedy streaming completion of token ids; timings relative to `t0`. */
async function streamIds(
  url: string,
  prompt: number[],
  maxTokens: number,
  banned: readonly number[],
  t0: number,
): Promise<StreamTiming> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      ignore_eos: true,
      logit_bias: Object.fromEntries(banned.map((id) => [String(id), -100])),
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", first = NaN, last = NaN, tokens = -1;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += value;
    let k: number;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k).replace(/^data: /, "");
      buf = buf.slice(k + 2);
      if (ev === "[DONE]") continue;
      const j = JSON.parse(ev);
      if (j.error) throw new Error(`stream error: ${j.error.code}`);
      if (j.choices?.[0]?.text !== undefined) {
        last = performance.now() - t0;
        if (Number.isNaN(first)) first = last;
      }
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  if (tokens < 0) throw new Error("stream ended without usage");
  return { first, end: last, tokens };
}

interface ScalingConfig {
  streams: number[];
  /** Rounds per stream count; the round with the best decode tok/s is reported. */
  rounds: number;
  model: string;
  maxTokens: number;
  promptTokens: number;
  threads: number;
}

/** The model file, its prompts (one per stream) and the ids banned on both engines. */
async function scalingModel(
  cfg: ScalingConfig,
): Promise<{ path: string | undefined; file: string; prompts: number[][]; banned: number[] }> {
  const n = Math.max(...cfg.streams);
  if (cfg.model === "default") {
    const m = await loadModel(defaultModelBytes(), { backend: "ref" });
    const prompts = Array.from(
      { length: n },
      (_, i) => m.tokenizer.encode(`Once upon a time, story ${i + 1}: the`, { addBos: true }),
    );
    const eog = [m.tokenizer.eosId].filter((id): id is number => typeof id === "number");
    m.dispose();
    const file = new URL("../core/model/default_model.gguf", import.meta.url).pathname;
    return { path: undefined, file, prompts, banned: eog };
  }
  const file = /\.gguf$/.test(cfg.model) ? cfg.model : (await ensureBenchModel(cfg.model)).path;
  const base = benchPrompt(cfg.promptTokens).ids;
  // distinct prompts: the same words rotated, BOS first
  const prompts = Array.from({ length: n }, (_, i) => {
    const rest = base.slice(1);
    const r = i % rest.length;
    return [base[0], ...rest.slice(r), ...rest.slice(0, r)];
  });
  return { path: file, file, prompts, banned: bannedTokens().all as number[] };
}

/** llama.cpp's batched decode of the first `c` prompts (`rounds` rounds), via the peer script. */
async function llamaCppRound(
  cfg: ScalingConfig,
  file: string,
  prompts: number[][],
  banned: number[],
  c: number,
): Promise<{ stats: RoundStats; version: string; threads: number }> {
  const peer = new URL("./peers/llamacpp_batch.mjs", import.meta.url).pathname;
  const out = await new Deno.Command("node", {
    args: [
      peer,
      JSON.stringify({
        model: file,
        prompts: prompts.slice(0, Math.max(c, 2)),
        streams: [c],
        decode: cfg.maxTokens - 1,
        banned,
        threads: cfg.threads,
        rounds: cfg.rounds,
      }),
    ],
    stderr: "inherit",
  }).output();
  const res = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  if (res.error) throw new Error(`llama.cpp peer failed: ${res.error}`);
  const row: { streams: number; rounds: StreamTiming[][]; cpuMs?: number[] } = res.rows[0];
  const all = row.rounds.map((per, i) => ({
    ...roundStats(row.streams, per),
    cpuTokPerS: row.cpuMs ? tokensOf(per) / (row.cpuMs[i] / 1000) : undefined,
  }));
  const stats = all.reduce((a, b) => better(a, b) ? b : a);
  stats.cpuTokPerS = Math.max(...all.map((r) => r.cpuTokPerS ?? NaN));
  return { stats, version: res.llamaCppVersion, threads: res.threads };
}

async function runScaling(cfg: ScalingConfig): Promise<string> {
  const { path, file, prompts, banned } = await scalingModel(cfg);
  const maxC = Math.max(...cfg.streams);
  const ours: RoundStats[] = [];
  const theirs: RoundStats[] = [];
  let peerInfo = { version: "?", threads: cfg.threads };
  // moe-edge gets as many WASM threads as llama.cpp gets threads (`--threads`)
  const { url, child } = await startServer(maxC, maxC, path, cfg.threads);
  try {
    // warm-up: JIT, WASM memory, the model's pages
    await Promise.all([0, 1].map((i) => streamIds(url, prompts[i], 4, banned, performance.now())));
    // each stream count: moe-edge, then llama.cpp right after, so both see the same machine load
    for (const c of cfg.streams) {
      console.error(`bench/load: ${c} streams: moe-edge…`);
      let best: RoundStats | null = null;
      let bestCpu = NaN;
      for (let r = 0; r < cfg.rounds; r++) {
        const t0 = performance.now(), c0 = procCpuMs(child.pid);
        const per = await Promise.all(
          prompts.slice(0, c).map((p) => streamIds(url, p, cfg.maxTokens, banned, t0)),
        );
        const cpuTokPerS = tokensOf(per) / ((procCpuMs(child.pid) - c0) / 1000);
        if (!(bestCpu >= cpuTokPerS)) bestCpu = cpuTokPerS;
        const st = roundStats(c, per);
        if (better(best, st)) best = st;
      }
      best!.cpuTokPerS = bestCpu;
      ours.push(best!);
      console.error(`bench/load: ${c} streams: llama.cpp…`);
      const p = await llamaCppRound(cfg, file, prompts, banned, c);
      theirs.push(p.stats);
      peerInfo = p;
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
  const res = { llamaCppVersion: peerInfo.version, threads: peerInfo.threads };
  const lines = [
    `Streams: ${cfg.streams.join(", ")} concurrent greedy streaming completions of ` +
    `${prompts[0].length}-token prompts, max_tokens ${cfg.maxTokens}, best of ${cfg.rounds} ` +
    `rounds per row, model ${cfg.model} ` +
    `(${file.split("/").pop()}), loopback; llama.cpp ${res.llamaCppVersion} batched decode ` +
    `(one context, c sequences, ${res.threads} thread(s), flash attention off, F16 KV); ` +
    `moe-edge: one server, ${maxC} slots, backend auto (WASM, ${cfg.threads} thread(s), ` +
    `MOE_EDGE_THREADS). Deno ${Deno.version.deno}, ` +
    `${navigator.hardwareConcurrency} CPUs, load average ${
      Deno.loadavg().map((x) => x.toFixed(1)).join(" ")
    } at the end.`,
    "",
    "| streams | moe-edge decode tok/s | × 1 stream | TTFT p50 ms | TTFT p99 ms | llama.cpp decode tok/s | × 1 stream | TTFT p50 ms | TTFT p99 ms | moe-edge / llama.cpp | moe-edge tok/s incl. TTFT | llama.cpp tok/s incl. TTFT | ratio incl. TTFT | moe-edge tok per CPU-s | × 1 stream | llama.cpp tok per CPU-s | × 1 stream | ratio (CPU) |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const mark = (r: RoundStats): string => r.burst ? " †" : "";
  const f = (v: number | undefined, d = 1): string =>
    v === undefined || !isFinite(v) ? "—" : v.toFixed(d);
  const cpuCells = (a: RoundStats, b: RoundStats, a1: RoundStats, b1: RoundStats): string =>
    [
      f(a.cpuTokPerS),
      `${f(a.cpuTokPerS! / a1.cpuTokPerS!, 2)}×`,
      f(b.cpuTokPerS),
      `${f(b.cpuTokPerS! / b1.cpuTokPerS!, 2)}×`,
      `${f(a.cpuTokPerS! / b.cpuTokPerS!, 2)}×`,
    ].join(" | ");
  for (let i = 0; i < ours.length; i++) {
    const a = ours[i], b = theirs[i];
    lines.push(
      `| ${a.streams} | ${a.decodeTokPerS.toFixed(1)}${mark(a)} | ${
        (a.decodeTokPerS / ours[0].decodeTokPerS).toFixed(2)
      }× | ${a.ttftP50.toFixed(0)} | ${a.ttftP99.toFixed(0)} | ${b.decodeTokPerS.toFixed(1)}${
        mark(b)
      } | ${(b.decodeTokPerS / theirs[0].decodeTokPerS).toFixed(2)}× | ${b.ttftP50.toFixed(0)} | ${
        b.ttftP99.toFixed(0)
      } | ${(a.decodeTokPerS / b.decodeTokPerS).toFixed(2)}× | ${a.e2eTokPerS.toFixed(1)} | ${
        b.e2eTokPerS.toFixed(1)
      } | ${(a.e2eTokPerS / b.e2eTokPerS).toFixed(2)}× | ${cpuCells(a, b, ours[0], theirs[0])} |`,
    );
  }
  if ([...ours, ...theirs].some((r) => r.burst)) {
    lines.push(
      "",
      "† every round of this cell had a stream whose tokens arrived in one burst (< 1 ms apart): " +
        "its decode tok/s is not a decode rate; read the incl.-TTFT column.",
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      clients: { type: "string", default: "64" },
      duration: { type: "string", default: "20" },
      warmup: { type: "string", default: "10" },
      "max-tokens": { type: "string", default: "32" },
      slots: { type: "string", default: "4,64" },
      streams: { type: "string" },
      model: { type: "string", default: "default" },
      "prompt-tokens": { type: "string", default: "16" },
      threads: { type: "string", default: "1" },
      rounds: { type: "string", default: "2" },
    },
  });
  if (values.streams) {
    console.log(
      await runScaling({
        streams: values.streams.split(",").map(Number),
        model: values.model,
        maxTokens: Number(values["max-tokens"]),
        promptTokens: Number(values["prompt-tokens"]),
        rounds: Number(values.rounds),
        threads: Number(values.threads),
      }),
    );
    Deno.exit(0);
  }
  const common = {
    clients: Number(values.clients),
    durationS: Number(values.duration),
    warmupS: Number(values.warmup),
    maxTokens: Number(values["max-tokens"]),
  };
  const rows: Row[] = [];
  for (const slots of values.slots.split(",").map(Number)) {
    console.error(`bench/load: ${common.clients} clients, ${slots} slots, ${common.durationS} s…`);
    rows.push(await run({ ...common, slots }));
  }
  console.log(table(rows, common));
}
