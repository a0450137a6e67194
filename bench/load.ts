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
 * @module
 */

import { parseArgs } from "node:util";

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
): Promise<{ url: string; child: Deno.ChildProcess }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "--allow-net", MAIN],
    env: {
      MOE_EDGE_PORT: "0",
      MOE_EDGE_HOST: "127.0.0.1",
      MOE_EDGE_MAX_CONCURRENT: String(slots),
      MOE_EDGE_MAX_QUEUE: String(clients),
      MOE_EDGE_API_KEY: "",
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

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      clients: { type: "string", default: "64" },
      duration: { type: "string", default: "20" },
      warmup: { type: "string", default: "10" },
      "max-tokens": { type: "string", default: "32" },
      slots: { type: "string", default: "4,64" },
    },
  });
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
