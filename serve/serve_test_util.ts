/**
 * Shared pieces of the server tests: a small synthesized MoE, an optional
 * slow expert store (each layer's experts "arrive" after a delay, as with a
 * streaming store that misses), and a real HTTP server on a free port.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  gguf,
  loadModel,
  MemorySource,
  type Model,
  readGguf,
  synthesizeModel,
  writeGguf,
} from "../mod.ts";
import { loadResidentStore } from "../core/model/model.ts";
import type { ExpertStore, ExpertStoreStats } from "../core/store/expert_store.ts";
import type { ExpertWeights } from "../core/moe/expert.ts";
import { createApp, createRuntime, type ModelRuntime, type RuntimeOptions } from "./mod.ts";
import type { AppOptions } from "./app.ts";
import type { Hono } from "npm:hono@4";

let small: Uint8Array | null = null;

/** GGUF bytes of a tiny MoE (2 layers × 4 experts, top-2). */
export function smallModelBytes(): Uint8Array {
  small ??= synthesizeModel({
    arch: "llama",
    nEmbd: 32,
    nLayer: 2,
    nHead: 2,
    nHeadKv: 1,
    nExpert: 4,
    nExpertUsed: 2,
    nFf: 48,
    nCtx: 256,
    seed: 11,
  });
  return small;
}

/** The tiny model's GGUF with extra metadata entries (e.g. `tokenizer.chat_template`). */
export async function withMetadata(
  bytes: Uint8Array,
  extra: Record<string, string>,
): Promise<Uint8Array> {
  const f = await readGguf(new MemorySource(bytes));
  const tensors = [];
  for (const t of f.tensors) {
    tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await f.readTensorBytes(t) });
  }
  const metadata = [...f.metadata].filter(([k]) => !(k in extra));
  for (const [k, v] of Object.entries(extra)) metadata.push([k, gguf.str(v)]);
  return writeGguf({ metadata, tensors });
}

/** Wraps a store so that every `ensure` takes `delayMs` (abortable), counting each as misses. */
class SlowStore implements ExpertStore {
  #misses = 0;
  constructor(readonly inner: ExpertStore, readonly delayMs: number) {}
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> {
    this.inner.ensure(layer, experts, signal);
    this.#misses += experts.length;
    return new Promise((resolve, reject) => {
      const id = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, this.delayMs);
      const onAbort = (): void => {
        clearTimeout(id);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
  weights(layer: number, index: number): ExpertWeights {
    return this.inner.weights(layer, index);
  }
  stats(): ExpertStoreStats {
    return { ...this.inner.stats(), hits: 0, misses: this.#misses };
  }
}

/** Load the tiny model; with `delayMs`, each MoE layer waits that long for its experts. */
export async function smallModel(delayMs = 0): Promise<Model> {
  return await loadModel(smallModelBytes(), {
    backend: "ref",
    hooks: delayMs > 0
      ? { createStore: async (ctx) => new SlowStore(await loadResidentStore(ctx, []), delayMs) }
      : undefined,
  });
}

/** A runtime named "tiny" over the tiny model. */
export async function tinyRuntime(
  opts: RuntimeOptions & { delayMs?: number } = {},
): Promise<ModelRuntime> {
  return createRuntime(await smallModel(opts.delayMs ?? 0), { name: "tiny", ...opts });
}

/** A running server. */
export interface TestServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The app it serves. */
  app: Hono;
  /** Stop the server. */
  close(): Promise<void>;
}

/** Serve `createApp(runtime, options)` on 127.0.0.1 and a free port. */
export function serve(runtime: ModelRuntime, options: AppOptions = {}): TestServer {
  const app = createApp(runtime, options);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    app,
    close: async () => {
      await server.shutdown();
      runtime.close();
    },
  };
}

/** Wait until `cond()` holds, polling every 5 ms; throw after `timeoutMs`. */
export async function until(
  cond: () => boolean,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** POST JSON with `app.request()`. */
export function post(
  app: Hono,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  }));
}

/** OpenAI's error body. */
export interface ErrorShape {
  /** The error. */
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Assert `res` is an OpenAI-style JSON error with this status, code and (when given) param. */
export async function expectError(
  res: Response,
  status: number,
  code: string,
  param?: string | null,
): Promise<ErrorShape> {
  const body = await res.json() as ErrorShape;
  assert.equal(res.status, status, JSON.stringify(body));
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0);
  assert.equal(body.error.code, code);
  if (param !== undefined) assert.equal(body.error.param, param);
  return body;
}
