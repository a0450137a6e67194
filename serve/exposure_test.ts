/**
 * Who may use the server: without an API key only loopback clients (and
 * in-process `app.request()` calls) are served, unless the operator opts into
 * a public server; CORS is off unless origins are listed.
 */

import assert from "node:assert/strict";
import { createApp, type ModelRuntime } from "./mod.ts";
import { isLoopback } from "./app.ts";
import { expectError, serve, tinyRuntime } from "./serve_test_util.ts";

let shared: ModelRuntime | null = null;
async function runtime(): Promise<ModelRuntime> {
  shared ??= await tinyRuntime();
  return shared;
}

/** `Deno.serve`'s handler info for a TCP client at `hostname`. */
function from(hostname: string): Deno.ServeHandlerInfo<Deno.NetAddr> {
  return {
    remoteAddr: { transport: "tcp", hostname, port: 40000 },
    completed: Promise.resolve(),
  } as unknown as Deno.ServeHandlerInfo<Deno.NetAddr>;
}

const get = (path: string, headers: Record<string, string> = {}): Request =>
  new Request(`http://moe.test${path}`, { headers });

Deno.test("isLoopback: 127/8, ::1 and IPv4-mapped loopback only", () => {
  for (const h of ["127.0.0.1", "127.9.8.7", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"]) {
    assert.ok(isLoopback(h), h);
  }
  for (
    const h of [
      "0.0.0.0",
      "10.0.0.1",
      "192.168.1.2",
      "::",
      "::ffff:10.0.0.1",
      "128.0.0.1",
      "fe80::1",
    ]
  ) {
    assert.ok(!isLoopback(h), h);
  }
});

Deno.test("no API key: remote clients get 403 everywhere but /healthz; loopback and in-process calls are served", async () => {
  const app = createApp(await runtime());
  for (const path of ["/v1/models", "/metrics", "/", "/v1/moe/stats"]) {
    const body = await expectError(
      await app.fetch(get(path), from("203.0.113.7")),
      403,
      "forbidden",
    );
    assert.match(body.error.message, /MOE_EDGE_API_KEY/);
    assert.match(body.error.message, /MOE_EDGE_PUBLIC=1/);
  }
  const post = new Request("http://moe.test/v1/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hi", max_tokens: 1 }),
  });
  await expectError(await app.fetch(post, from("::ffff:10.1.2.3")), 403, "forbidden");
  const health = await app.fetch(get("/healthz"), from("203.0.113.7"));
  assert.equal(health.status, 200);
  await health.body?.cancel();
  for (const h of ["127.0.0.1", "::1"]) {
    const r = await app.fetch(get("/v1/models"), from(h));
    assert.equal(r.status, 200, h);
    await r.body?.cancel();
  }
  const inProcess = await app.request("/v1/models");
  assert.equal(inProcess.status, 200);
  await inProcess.body?.cancel();
});

Deno.test("public: true serves remote clients without a key; an API key makes them authenticate instead", async () => {
  const open = createApp(await runtime(), { public: true });
  const r = await open.fetch(get("/v1/models"), from("203.0.113.7"));
  assert.equal(r.status, 200);
  await r.body?.cancel();

  const keyed = createApp(await runtime(), { apiKey: "k" });
  await expectError(
    await keyed.fetch(get("/v1/models"), from("203.0.113.7")),
    401,
    "invalid_api_key",
  );
  const ok = await keyed.fetch(
    get("/v1/models", { authorization: "Bearer k" }),
    from("203.0.113.7"),
  );
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  // an empty key is no key: not an open server
  const empty = createApp(await runtime(), { apiKey: "" });
  await expectError(await empty.fetch(get("/v1/models"), from("203.0.113.7")), 403, "forbidden");
});

Deno.test("a real server on 127.0.0.1 without a key serves its loopback clients", async () => {
  const srv = serve(await tinyRuntime());
  try {
    const r = await fetch(`${srv.url}/v1/models`);
    assert.equal(r.status, 200);
    await r.body?.cancel();
  } finally {
    await srv.close();
  }
});

Deno.test("CORS is opt-in: listed origins get headers and preflight answers, others get none", async () => {
  const none = createApp(await runtime());
  const plain = await none.request("/v1/models", { headers: { origin: "https://app.example" } });
  assert.equal(plain.headers.get("access-control-allow-origin"), null);
  await plain.body?.cancel();

  const app = createApp(await runtime(), {
    apiKey: "k",
    corsOrigins: ["https://app.example"],
  });
  const pre = await app.request("/v1/chat/completions", {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, x-stainless-os",
    },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.example");
  assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
  assert.equal(
    pre.headers.get("access-control-allow-headers"),
    "authorization, content-type, x-stainless-os",
  );
  // errors carry the header too, so the browser can read them
  const denied = await app.request("/v1/models", { headers: { origin: "https://app.example" } });
  assert.equal(denied.status, 401);
  assert.equal(denied.headers.get("access-control-allow-origin"), "https://app.example");
  await denied.body?.cancel();
  const other = await app.request("/v1/models", {
    headers: { origin: "https://evil.example", authorization: "Bearer k" },
  });
  assert.equal(other.status, 200);
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  await other.body?.cancel();

  const any = createApp(await runtime(), { corsOrigins: ["*"] });
  const star = await any.request("/healthz", { headers: { origin: "https://x.example" } });
  assert.equal(star.headers.get("access-control-allow-origin"), "*");
  await star.body?.cancel();
});

Deno.test("the start-up line says who may use the server", async () => {
  const { exposureLine, readConfig } = await import("./config.ts");
  const line = (env: Record<string, string>): string => exposureLine(readConfig((k) => env[k]));
  assert.match(line({ MOE_EDGE_API_KEY: "k" }), /API key required on \/v1\/\* and \/metrics/);
  assert.match(
    line({ MOE_EDGE_API_KEY: "k", MOE_EDGE_PUBLIC_METRICS: "1" }),
    /required on \/v1\/\*$/,
  );
  assert.match(line({}), /only loopback clients are served/);
  assert.match(line({ MOE_EDGE_PUBLIC: "1" }), /^WARNING: no API key and MOE_EDGE_PUBLIC=1/);
  assert.match(line({ DENO_DEPLOYMENT_ID: "abc" }), /Deno Deploy.*403/);
  // a key no bearer header can carry is refused at start-up, not silently unusable
  assert.throws(() => line({ MOE_EDGE_API_KEY: "my key" }), /MOE_EDGE_API_KEY must be letters/);
  assert.throws(() => line({ MOE_EDGE_API_KEY: "pässwort" }), /RFC 6750/);
  assert.match(line({ MOE_EDGE_API_KEY: " " }), /only loopback/, "a blank key is no key");
});
