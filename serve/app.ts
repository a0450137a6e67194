/**
 * The OpenAI-compatible HTTP app: completions and chat (JSON and SSE),
 * models, health, Prometheus metrics, MoE stats and the dashboard, behind
 * optional bearer auth and request limits. Runtime-neutral: hand
 * `app.fetch` to `Deno.serve`, `deno serve` or Deno Deploy.
 *
 * @module
 */

import { Hono } from "hono";
import { bearerAuth } from "./auth.ts";
import { readJsonBody } from "./body.ts";
import { type ChatTemplate, chatTemplateFor } from "./chat_template.ts";
import { dashboardHtml } from "./dashboard.ts";
import { errorResponse, ServeError } from "./errors.ts";
import { moeStats, renderPrometheus, RequestCounter } from "./metrics.ts";
import { chatCompletions, completions, type GenerationDeps } from "./openai.ts";
import type { ModelRuntime } from "./runtime.ts";

/** Options of {@link createApp}. */
export interface AppOptions {
  /** Require `Authorization: Bearer <apiKey>` on `/v1/*` (and `/metrics` unless public); null/absent = open. */
  apiKey?: string | null;
  /** Largest request body in bytes (default 1 MiB) → 413. */
  maxBodyBytes?: number;
  /** Milliseconds to receive a request body (default 10 s) → 408. */
  bodyTimeoutMs?: number;
  /** Milliseconds from admission (queue wait included) to the end of a generation (default 300 s) → 504. */
  requestTimeoutMs?: number;
  /** Most prompt tokens (default: the runtime's context − 1) → 400. */
  maxPromptTokens?: number;
  /** Largest `max_tokens` (default: the runtime's context − 1) → 400. */
  maxTokensCap?: number;
  /** `max_tokens` of completion requests that send none (default 16, as OpenAI). */
  defaultCompletionTokens?: number;
  /** Serve `/metrics` without the API key (default false). */
  publicMetrics?: boolean;
  /** Chat formatting (default: the model's GGUF template or its architecture's fallback). */
  chatTemplate?: ChatTemplate;
}

const ROUTES = new Set([
  "/",
  "/healthz",
  "/metrics",
  "/v1/models",
  "/v1/moe/stats",
  "/v1/completions",
  "/v1/chat/completions",
]);

const DASHBOARD_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

/**
 * Build the server app for a runtime.
 *
 * @example
 * ```ts ignore
 * import { createApp, createRuntime, defaultModelBytes, loadModel } from "@moe-edge/runtime";
 * const runtime = createRuntime(await loadModel(defaultModelBytes()), { name: "moe-edge-default" });
 * Deno.serve({ port: 8000 }, createApp(runtime, { apiKey: Deno.env.get("MOE_EDGE_API_KEY") }).fetch);
 * ```
 */
export function createApp(runtime: ModelRuntime, options: AppOptions = {}): Hono {
  const maxCtx = runtime.nCtx - 1;
  const body = {
    maxBytes: options.maxBodyBytes ?? 1 << 20,
    timeoutMs: options.bodyTimeoutMs ?? 10_000,
  };
  const deps: GenerationDeps = {
    runtime,
    template: options.chatTemplate ?? chatTemplateFor(runtime.model),
    limits: {
      maxPromptTokens: Math.min(options.maxPromptTokens ?? maxCtx, maxCtx),
      maxTokensCap: options.maxTokensCap ?? maxCtx,
      defaultCompletionTokens: options.defaultCompletionTokens ?? 16,
      requestTimeoutMs: options.requestTimeoutMs ?? 300_000,
    },
    readBody: (req) => readJsonBody(req, body),
  };
  const requests = new RequestCounter();
  const app = new Hono();

  app.use("*", async function countRequests(c, next) {
    await next();
    requests.add(
      ROUTES.has(c.req.path)
        ? c.req.path
        : c.req.path.startsWith("/v1/models/")
        ? "/v1/models/:id"
        : "other",
      c.res.status,
    );
  });
  app.onError((err) => errorResponse(err));
  app.notFound((c) =>
    errorResponse(new ServeError("not_found", `No route for ${c.req.method} ${c.req.path}`))
  );

  if (options.apiKey) {
    const auth = bearerAuth(options.apiKey);
    app.use("/v1/*", auth);
    if (!options.publicMetrics) app.use("/metrics", auth);
  }

  app.get("/healthz", (c) =>
    c.json({
      status: "ok",
      model: runtime.name,
      active: runtime.active,
      queued: runtime.queued,
    }));

  app.get("/", (c) => {
    c.header("content-security-policy", DASHBOARD_CSP);
    c.header("cache-control", "no-cache");
    return c.html(dashboardHtml());
  });

  app.get("/metrics", (c) => {
    c.header("content-type", "text/plain; version=0.0.4; charset=utf-8");
    return c.body(renderPrometheus(runtime, requests));
  });

  const modelCard = (): Record<string, unknown> => ({
    id: runtime.name,
    object: "model",
    created: runtime.created,
    owned_by: "moe-edge",
  });
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelCard()] }));
  app.get("/v1/models/:id", (c) => {
    if (c.req.param("id") !== runtime.name) {
      throw new ServeError("model_not_found", `The model '${c.req.param("id")}' does not exist`, {
        param: "model",
      });
    }
    return c.json(modelCard());
  });
  app.get("/v1/moe/stats", (c) => {
    c.header("cache-control", "no-store");
    return c.json(moeStats(runtime, requests));
  });

  app.post("/v1/completions", (c) => completions(c, deps));
  app.post("/v1/chat/completions", (c) => chatCompletions(c, deps));
  for (const path of ["/v1/completions", "/v1/chat/completions"]) {
    app.all(path, (c) => {
      c.header("allow", "POST");
      throw new ServeError(
        "method_not_allowed",
        `${c.req.method} is not allowed on ${path}; use POST`,
      );
    });
  }
  return app;
}
