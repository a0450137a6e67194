/**
 * The server: the OpenAI-compatible API, metrics and dashboard over the
 * default model (the tiny MoE the project trains itself, embedded) or
 * the GGUF file named by `MOE_EDGE_MODEL`.
 *
 * - `deno task start` listens on `MOE_EDGE_HOST`:`MOE_EDGE_PORT` (or `PORT`),
 *   default 127.0.0.1:8000.
 * - `deno serve main.ts` and Deno Deploy use the default export's `fetch`.
 *
 * Environment: `MOE_EDGE_MODEL` (GGUF path), `MOE_EDGE_MODEL_NAME` (model id),
 * `MOE_EDGE_BACKEND` (`auto` = the WASM backend, or `ref`),
 * `MOE_EDGE_API_KEY` (require `Authorization: Bearer <key>`),
 * `MOE_EDGE_MAX_CONCURRENT`, `MOE_EDGE_MAX_QUEUE`, `MOE_EDGE_CTX`.
 *
 * @module
 */

import { createApp, createRuntime, defaultModelBytes, loadModel } from "./mod.ts";

function env(key: string): string | undefined {
  try {
    return Deno.env.get(key) || undefined;
  } catch {
    return undefined; // no --allow-env: run with the defaults
  }
}

function intEnv(key: string): number | undefined {
  const v = env(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`Cannot start: ${key} must be a non-negative integer: received '${v}'`);
  }
  return n;
}

const modelPath = env("MOE_EDGE_MODEL");
const model = await loadModel(modelPath ?? defaultModelBytes(), {
  backend: env("MOE_EDGE_BACKEND") ?? "auto",
});
const runtime = createRuntime(model, {
  name: env("MOE_EDGE_MODEL_NAME") ??
    (modelPath ? modelPath.replace(/^.*[\\/]/, "").replace(/\.gguf$/i, "") : "moe-edge-default"),
  maxConcurrent: intEnv("MOE_EDGE_MAX_CONCURRENT"),
  maxQueue: intEnv("MOE_EDGE_MAX_QUEUE"),
  nCtx: intEnv("MOE_EDGE_CTX"),
});
const app = createApp(runtime, { apiKey: env("MOE_EDGE_API_KEY") ?? null });

let servedByDeno = false;

/** `deno serve` / Deno Deploy entry. */
export default {
  fetch: app.fetch,
  onListen(addr: Deno.Addr): void {
    servedByDeno = true;
    const where = addr.transport === "tcp" || addr.transport === "udp"
      ? `http://${addr.hostname}:${addr.port}/`
      : addr.transport;
    console.log(`moe-edge: serving '${runtime.name}' on ${where}`);
  },
} satisfies Deno.ServeDefaultExport;

if (import.meta.main) {
  // `deno serve` binds the default export right after this module finishes
  // evaluating and reports through onListen; under `deno run` nobody does.
  setTimeout(() => {
    if (servedByDeno) return;
    const hostname = env("MOE_EDGE_HOST") ?? "127.0.0.1";
    const port = intEnv("MOE_EDGE_PORT") ?? intEnv("PORT") ?? 8000;
    Deno.serve({
      hostname,
      port,
      onListen: (addr) => {
        const { hp } = model;
        console.log(
          `moe-edge: serving '${runtime.name}' (${model.arch}, ${hp.nExpert} experts, top-${hp.nExpertUsed}, ` +
            `${model.backend.name}) on http://${addr.hostname}:${addr.port}/`,
        );
      },
    }, app.fetch);
  }, 0);
}
