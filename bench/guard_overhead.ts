/**
 * Overhead of the connection guard (serve/guard.ts) of `deno task start`:
 * the same app served by `Deno.serve` directly and through the guard.
 *
 * - completion latency: sequential non-streaming `/v1/completions` of the
 *   tiny test model (4 tokens), median and p90 over N requests, a fresh
 *   keep-alive pool for both;
 * - SSE throughput: a handler that streams EVENTS events of ~100 bytes as
 *   fast as it can (no model), so that the relay, not generation, is the
 *   bottleneck; events/s and MB/s.
 *
 * Run: `deno run -A bench/guard_overhead.ts [N] [EVENTS]`.
 *
 * @module
 */

import { createApp } from "../serve/app.ts";
import { guardedServe } from "../serve/guard.ts";
import { tinyRuntime } from "../serve/serve_test_util.ts";

const N = Number(Deno.args[0] ?? 60);
const EVENTS = Number(Deno.args[1] ?? 20000);

type Handler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

function start(h: Handler, guarded: boolean): { url: string; stop: () => Promise<void> } {
  if (guarded) {
    const g = guardedServe({ hostname: "127.0.0.1", port: 0 }, h);
    return { url: `http://127.0.0.1:${g.addr.port}`, stop: () => g.shutdown() };
  }
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, h);
  return { url: `http://127.0.0.1:${s.addr.port}`, stop: () => s.shutdown() };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

async function latency(url: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < N + 5; i++) {
    const t0 = performance.now();
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 4, ignore_eos: true }),
    });
    await r.json();
    if (i >= 5) out.push(performance.now() - t0); // 5 warm-up requests
  }
  return out;
}

const line = `data: ${JSON.stringify({ choices: [{ text: "x".repeat(60), index: 0 }] })}\n\n`;
const sseHandler: Handler = () => {
  const bytes = new TextEncoder().encode(line);
  let i = 0;
  return new Response(
    new ReadableStream({
      pull(c) {
        for (let k = 0; k < 64 && i < EVENTS; k++, i++) c.enqueue(bytes);
        if (i >= EVENTS) c.close();
      },
    }),
    { headers: { "content-type": "text/event-stream" } },
  );
};

async function sse(url: string): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now();
  const r = await fetch(`${url}/sse`);
  let bytes = 0;
  for await (const chunk of r.body!) bytes += chunk.length;
  return { ms: performance.now() - t0, bytes };
}

const rt = await tinyRuntime();
const app = createApp(rt, {});
for (const guarded of [false, true, false, true]) {
  const s = start((req, info) => app.fetch(req, info), guarded);
  const lat = await latency(s.url);
  await s.stop();
  const s2 = start(sseHandler, guarded);
  await sse(s2.url); // warm-up
  const runs = [await sse(s2.url), await sse(s2.url), await sse(s2.url)];
  await s2.stop();
  const best = runs.reduce((a, b) => (a.ms < b.ms ? a : b));
  console.log(
    `${guarded ? "guard " : "direct"}  completion(4 tok) median ${pct(lat, 0.5).toFixed(2)} ms ` +
      `p90 ${pct(lat, 0.9).toFixed(2)} ms | SSE ${EVENTS} events ${best.ms.toFixed(0)} ms = ` +
      `${(EVENTS / best.ms * 1000).toFixed(0)} ev/s, ${
        (best.bytes / best.ms / 1000).toFixed(1)
      } MB/s`,
  );
}
rt.close();
