/**
 * The OpenAI-compatible HTTP app: completions and chat (JSON and SSE),
 * models, health, Prometheus metrics, MoE stats and the dashboard, behind
 * optional bearer auth and request limits. Runtime-neutral: hand
 * `app.fetch` to `Deno.serve`, `deno serve` or Deno Deploy.
 *
 * @module
 */

import { Hono } from "npm:hono@4";
import type { MiddlewareHandler } from "npm:hono@4";
import { HTTPException } from "npm:hono@4/http-exception";
import { routePath } from "npm:hono@4/route";
import { bearerAuth } from "./auth.ts";
import { readJsonBody } from "./body.ts";
import { type ChatTemplate, chatTemplateFor } from "./chat_template.ts";
import { dashboardHtml } from "./dashboard.ts";
import { errorResponse, ServeError } from "./errors.ts";
import {
  createMetricsRegistry,
  moeStats,
  PROMETHEUS_CONTENT_TYPE,
  RequestCounter,
} from "./metrics.ts";
import { chatCompletions, completions, type GenerationDeps } from "./openai.ts";
import type { ModelRuntime } from "./runtime.ts";

/** Options of {@link createApp}. */
export interface AppOptions {
  /**
   * Require `Authorization: Bearer <apiKey>` on `/v1/*` (and `/metrics`
   * unless `publicMetrics`). Null, absent or empty = no key: then only
   * loopback clients (and in-process `app.request()` calls) are served, unless
   * `public` is set.
   */
  apiKey?: string | null;
  /**
   * Serve clients that are not on loopback without an API key (default
   * false: without a key they get 403 on everything but `/healthz`).
   */
  public?: boolean;
  /**
   * Origins allowed to call the API from a browser (CORS), e.g.
   * `["https://app.example"]` or `["*"]`; absent/empty = no CORS headers.
   */
  corsOrigins?: readonly string[];
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
  /** Milliseconds one chat template render may take (default 2000) → 422 `template_limit`. */
  templateTimeoutMs?: number;
}

/** Whether `hostname` is a loopback address (127.0.0.0/8, ::1, IPv4-mapped 127.x). */
export function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "::1" || h === "localhost" || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * CORS for the listed origins (`*` = any): an allowed origin gets
 * `Access-Control-Allow-Origin` on every answer (errors included), and its
 * preflight `OPTIONS` gets 204 with the methods and the headers it asked
 * for. Other origins get no CORS headers (the browser then blocks them).
 */
function corsMiddleware(origins: readonly string[]): MiddlewareHandler {
  const any = origins.includes("*");
  return async function corsHeaders(c, next) {
    const origin = c.req.header("origin");
    const allowed = origin !== undefined && (any || origins.includes(origin));
    if (allowed && c.req.method === "OPTIONS" && c.req.header("access-control-request-method")) {
      const h = new Headers({
        "access-control-allow-origin": any ? "*" : origin,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-max-age": "600",
        vary: "Origin, Access-Control-Request-Headers",
      });
      const asked = c.req.header("access-control-request-headers");
      if (asked) h.set("access-control-allow-headers", asked);
      return new Response(null, { status: 204, headers: h });
    }
    await next();
    if (allowed) {
      c.res.headers.set("access-control-allow-origin", any ? "*" : origin);
      c.res.headers.set("access-control-expose-headers", "retry-after");
      if (!any) c.res.headers.append("vary", "Origin");
    }
  };
}

/** The client's address from the `Deno.serve` handler info Hono passes as `env`, if any. */
function remoteHost(env: unknown): string | null {
  const addr = (env as { remoteAddr?: { transport?: string; hostname?: string } } | undefined)
    ?.remoteAddr;
  if (!addr) return null; // in-process app.request(), or a runtime that does not say
  if (addr.transport !== "tcp" && addr.transport !== "udp") return null; // unix socket: local
  return addr.hostname ?? null;
}

const DASHBOARD_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

/**
 * Build the server app for a runtime.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "@moe-edge/runtime";
 * import { defaultModelBytes } from "@moe-edge/runtime/default-model";
 * import { createApp, createRuntime } from "@moe-edge/runtime/serve";
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
    template: options.chatTemplate ??
      chatTemplateFor(runtime.model, { limits: { maxMs: options.templateTimeoutMs ?? 2000 } }),
    limits: {
      maxPromptTokens: Math.min(options.maxPromptTokens ?? maxCtx, maxCtx),
      maxTokensCap: options.maxTokensCap ?? maxCtx,
      defaultCompletionTokens: options.defaultCompletionTokens ?? 16,
      requestTimeoutMs: options.requestTimeoutMs ?? 300_000,
    },
    readBody: (req) => readJsonBody(req, body),
  };
  const requests = new RequestCounter();
  const metrics = createMetricsRegistry(runtime, requests);
  const app = new Hono();

  app.use("*", async function countRequests(c, next) {
    await next();
    // label by the registered route that answered (bounded), never by the raw path
    const route = routePath(c, -1);
    requests.add(route === "" || route.includes("*") ? "other" : route, c.res.status);
  });
  // a middleware's HTTPException (bearer auth) already carries its OpenAI-style response
  app.onError((err) => err instanceof HTTPException ? err.getResponse() : errorResponse(err));
  app.notFound((c) =>
    errorResponse(new ServeError("not_found", `No route for ${c.req.method} ${c.req.path}`))
  );

  const origins = (options.corsOrigins ?? []).filter((o) => o !== "");
  if (origins.length > 0) app.use("*", corsMiddleware(origins));

  if (!options.apiKey && !options.public) {
    app.use("*", async function loopbackOnly(c, next) {
      const host = remoteHost(c.env);
      if (host !== null && !isLoopback(host) && c.req.path !== "/healthz") {
        throw new ServeError(
          "forbidden",
          "This server has no API key, so it serves only loopback clients: " +
            "set MOE_EDGE_API_KEY (clients send 'Authorization: Bearer <key>'), " +
            "or MOE_EDGE_PUBLIC=1 to serve everyone without one",
        );
      }
      await next();
    });
  }

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

  app.get("/metrics", async (c) => {
    c.header("content-type", PROMETHEUS_CONTENT_TYPE);
    return c.body(await metrics.metrics());
  });

  // the base model, then each named adapter as '<base>:<adapter>' (same base weights)
  const modelCard = (id: string): Record<string, unknown> => ({
    id,
    object: "model",
    created: runtime.created,
    owned_by: "moe-edge",
  });
  app.get("/v1/models", (c) => c.json({ object: "list", data: runtime.modelIds.map(modelCard) }));
  app.get("/v1/models/:id", (c) => {
    const id = c.req.param("id");
    if (!runtime.modelIds.includes(id)) {
      throw new ServeError("model_not_found", `The model '${id}' does not exist`, {
        param: "model",
      });
    }
    return c.json(modelCard(id));
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
