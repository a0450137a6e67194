/**
 * One @wllama/wllama measurement for bench/run.ts, in Deno (outside a browser):
 * wllama's own Web Worker runs llama.cpp compiled to WASM (memory64 build).
 *
 * ```sh
 * deno run -A bench/peers/wllama_bench.ts '<json request>'   # one JSON line on stdout
 * ```
 *
 * Request: `{ model, promptText, promptTokens, decode, banned: number[] }`.
 *
 * Settings: `n_threads: 1` (no pthreads: wllama's single-thread mode of its one
 * wasm build), `n_gpu_layers: 0` (no WebGPU: Deno exposes a software adapter),
 * flash attention off, F16 K/V cache, `n_batch = n_ubatch = n_ctx` (one ubatch
 * for the prompt), `n_parallel: 1`, no prompt cache. wllama's completion takes
 * a string, so the prompt is text that llama.cpp tokenizes (with BOS) to
 * `promptTokens` ids; the tokenizer's count is checked from the response
 * (`timings.prompt_n`). Greedy = `top_k: 1, temperature: 0` with
 * `logit_bias = -inf` on `banned` and `ignore_eos`, `max_tokens = decode + 1`
 * (the first token comes from the prompt's logits, then `decode` single-token
 * decodes). A warm-up completion (short prompt, 4 tokens) runs first.
 *
 * Prefill is llama.cpp's own `timings.prompt_ms` (measured inside the worker).
 * Decode is the wall time, seen from the main thread, from the first to the
 * last streamed token: `decode` single-token decodes plus sampling, the span
 * the other engines time (the worker's message hop per token is included; it
 * is small against a decode).
 *
 * @module
 */

import { LogLevel, Wllama } from "./node_modules/@wllama/wllama/esm/index.js";

interface Chunk {
  choices: { text?: string; finish_reason?: string | null }[];
  timings?: unknown;
}

interface Request {
  model: string;
  promptText: string;
  promptTokens: number;
  decode: number;
  banned: number[];
}

// wllama resolves asset paths against `self.location`, which Deno lacks without --location.
if (
  !("location" in globalThis) || (() => {
    try {
      return (globalThis as { location?: Location }).location === undefined;
    } catch {
      return true;
    }
  })()
) {
  Object.defineProperty(globalThis, "location", {
    value: new URL(import.meta.url),
    configurable: true,
  });
}

// Deno gives workers a Node-style `globalThis.process`, so wllama's Emscripten glue takes Node's path
// (`require("fs")`) and fails. Every worker wllama starts comes from a Blob URL: prefix its code
// with a line that removes `process` in that worker (the browser situation).
const HIDE_PROCESS = "try { delete globalThis.process; } catch (_) { /* not configurable */ }\n";
const createObjectURL = URL.createObjectURL.bind(URL);
URL.createObjectURL = (obj: Parameters<typeof URL.createObjectURL>[0]): string =>
  obj instanceof Blob && obj.type === "text/javascript"
    ? createObjectURL(new Blob([HIDE_PROCESS, obj], { type: obj.type }))
    : createObjectURL(obj);

// Emscripten fetches a file:// wasm with XMLHttpRequest (absent in Deno); a Blob URL goes through
// fetch + WebAssembly.instantiateStreaming instead.
const WASM_URL = createObjectURL(
  new Blob([
    await Deno.readFile(
      new URL("./node_modules/@wllama/wllama/esm/wasm/wllama.wasm", import.meta.url),
    ),
  ], { type: "application/wasm" }),
);

async function main(req: Request): Promise<Record<string, unknown>> {
  const logs: string[] = [];
  const push = (...a: unknown[]) => logs.push(a.map(String).join(" "));
  const wllama = new Wllama({ default: WASM_URL }, {
    logger: { debug: push, log: push, warn: push, error: push },
    // No download cache: the model is passed as a Blob (Deno has no OPFS/Cache storage for it).
    cacheManager: {} as never,
    modelManager: {} as never,
  });
  const t0 = performance.now();
  const bytes = await Deno.readFile(req.model);
  const blob = new Blob([bytes]);
  const nCtx = Math.max(256, Math.ceil((req.promptTokens + req.decode + 1) / 256) * 256);
  await wllama.loadModel([blob], {
    n_threads: 1,
    n_gpu_layers: 0,
    n_ctx: nCtx,
    n_batch: nCtx,
    n_ubatch: nCtx,
    n_parallel: 1,
    flash_attn: false,
    cache_type_k: "f16",
    cache_type_v: "f16",
    warmup: false,
    log_level: LogLevel.INFO,
  });
  const loadMs = performance.now() - t0;
  const bias = req.banned.map((id) => [id, false]); // false = -inf in llama.cpp's server API

  const complete = async (prompt: string, n: number) => {
    const chunks: { t: number; text: string }[] = [];
    let timings: Record<string, number> | undefined;
    let finish: string | null = null;
    const t = performance.now();
    await wllama.createCompletion({
      prompt,
      max_tokens: n,
      temperature: 0,
      top_k: 1,
      ignore_eos: true,
      cache_prompt: false,
      logit_bias: bias,
      stream: true,
      onData: (c: Chunk) => {
        chunks.push({ t: performance.now(), text: c.choices[0]?.text ?? "" });
        if (c.timings) timings = c.timings as unknown as Record<string, number>;
        finish = c.choices[0]?.finish_reason ?? finish;
      },
    } as never);
    return { t, chunks, timings, finish };
  };

  await complete(req.promptText.split(" ").slice(0, 4).join(" "), 4); // warm-up, discarded
  const r = await complete(req.promptText, req.decode + 1);
  const timings = r.timings ?? {};
  const textChunks = r.chunks.filter((c) => c.text !== "");
  const first = textChunks[0]?.t ?? NaN, last = textChunks[textChunks.length - 1]?.t ?? NaN;
  const wallSteps = textChunks.length - 1;
  const result = {
    engine: "wllama",
    version: JSON.parse(
      await Deno.readTextFile(
        new URL("./node_modules/@wllama/wllama/package.json", import.meta.url),
      ),
    ).version,
    threads: wllama.getNumThreads(),
    multithread: wllama.isMultithread(),
    loadMs,
    prefillMs: timings.prompt_n === req.promptTokens ? timings.prompt_ms : NaN,
    prefillTokens: timings.prompt_n,
    // Decode: wall time from the first to the last streamed token, i.e. `decode` single-token
    // decodes + sampling, the span the other engines time. (llama.cpp's own predicted_ms, in
    // `timings`, starts earlier and also counts the first token's sampling and streaming.)
    decodeMs: wallSteps === req.decode ? last - first : timings.predicted_ms,
    decodeSteps: wallSteps === req.decode ? wallSteps : (timings.predicted_n ?? 0) - 1,
    decodeSource: wallSteps === req.decode ? "wall" : "predicted_ms",
    wall: {
      firstTokenMs: first - r.t,
      decodeMs: last - first,
      decodeSteps: textChunks.length - 1,
    },
    timings,
    finish: r.finish,
    text: r.chunks.map((c) => c.text).join(""),
    logTail: logs.filter((l) => /flash_attn|n_threads|system_info|n_ubatch|error|warn/i.test(l))
      .slice(-12),
  };
  await wllama.exit();
  return result;
}

const req = JSON.parse(Deno.args[0] ?? (await new Response(Deno.stdin.readable).text()));
try {
  console.log(JSON.stringify(await main(req)));
  Deno.exit(0); // wllama's worker would keep the process alive
} catch (e) {
  console.log(JSON.stringify({ error: String((e as Error)?.stack ?? e) }));
  Deno.exit(1);
}
