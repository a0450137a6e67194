/** Admission control and the step lock, and the bearer-key check. */

import assert from "node:assert/strict";
import { Limiter, Mutex, QueueFullError } from "./limiter.ts";
import fc from "npm:fast-check@4";
import { Hono } from "npm:hono@4";
import { API_KEY_SYNTAX, bearerAuth } from "./auth.ts";
import { errorResponse } from "./errors.ts";
import { HTTPException } from "npm:hono@4/http-exception";
import { RuntimeStats } from "./stats.ts";

Deno.test("Limiter: slots, FIFO queue, refusal when full, abort leaves the queue", async () => {
  const lim = new Limiter(2, 2);
  const a = await lim.acquire();
  const b = await lim.acquire();
  assert.equal(lim.active, 2);
  const order: string[] = [];
  const c = lim.acquire().then((r) => (order.push("c"), r));
  const ctl = new AbortController();
  const d = lim.acquire(ctl.signal);
  assert.equal(lim.queued, 2);
  await assert.rejects(lim.acquire(), QueueFullError);
  ctl.abort(new Error("gone"));
  await assert.rejects(d, /gone/);
  assert.equal(lim.queued, 1);
  a();
  a(); // a second release is harmless
  const rc = await c;
  assert.deepEqual(order, ["c"]);
  assert.equal(lim.active, 2);
  b();
  rc();
  assert.equal(lim.active, 0);
  assert.throws(() => new Limiter(0, 1), RangeError);
});

Deno.test("Mutex runs callers one at a time in arrival order, passing errors through", async () => {
  const m = new Mutex();
  const log: string[] = [];
  const job = (name: string, ms: number) =>
    m.run(async () => {
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
      return name;
    });
  const fail = m.run(() => Promise.reject(new Error("boom")));
  const res = await Promise.all([job("a", 10), job("b", 1), fail.catch((e) => e.message)]);
  assert.deepEqual(res, ["a", "b", "boom"]);
  assert.deepEqual(log, ["a+", "a-", "b+", "b-"]);
});

/** A tiny app behind {@link bearerAuth}, erroring as serve/app.ts does. */
function guarded(key: string): Hono {
  const app = new Hono();
  app.onError((err) => err instanceof HTTPException ? err.getResponse() : errorResponse(err));
  app.use("*", bearerAuth(key));
  app.get("/", (c) => c.text("in"));
  return app;
}

Deno.test("bearer auth admits exactly the key, any other header is a 401 invalid_api_key", async () => {
  const token = fc.stringMatching(/^[A-Za-z0-9._~+/-]{1,12}=?$/);
  await fc.assert(
    fc.asyncProperty(
      token,
      fc.oneof(token, fc.string({ maxLength: 14 })),
      fc.constantFrom("Bearer ", "bearer ", "BEARER  ", "Basic ", "", "Bearer"),
      async (key, presented, scheme) => {
        const res = await guarded(key).request("/", {
          headers: { authorization: scheme + presented },
        });
        const admitted = /^bearer +$/i.test(scheme) && presented === key;
        if (admitted) {
          assert.equal(res.status, 200);
          assert.equal(await res.text(), "in");
        } else {
          assert.equal(res.status, 401, `${scheme}${presented} vs ${key}`);
          const body = await res.json();
          assert.equal(body.error.code, "invalid_api_key");
          assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /);
        }
      },
    ),
    { numRuns: 300 },
  );
  const none = await guarded("k").request("/");
  assert.equal(none.status, 401);
  assert.match((await none.json()).error.message, /Missing API key/);
});

Deno.test("bearer auth refuses keys no bearer header could carry", () => {
  for (const bad of ["", "has space", "tab\t", "é", "a=b", 'quote"']) {
    assert.ok(!API_KEY_SYNTAX.test(bad), bad);
    assert.throws(() => bearerAuth(bad), RangeError);
  }
  assert.doesNotThrow(() => bearerAuth("sk-abc_DEF.1~2+3/4=="));
});

Deno.test("RuntimeStats: throughput window and TTFT histogram", () => {
  let now = 100_000;
  const s = new RuntimeStats(() => now);
  for (let i = 0; i < 50; i++) s.addTokens(1);
  now += 5_000;
  s.addTokens(50);
  now += 500;
  const tps = s.tokensPerSecond();
  assert.ok(Math.abs(tps - 100 / 10.5) < 1e-9, String(tps));
  now += 20_000;
  assert.equal(s.tokensPerSecond(), 0);
  s.observeTtft(0.03);
  s.observeTtft(3);
  const snap = s.snapshot();
  assert.equal(snap.completionTokens, 100);
  assert.equal(snap.ttft.count, 2);
  assert.equal(snap.ttft.buckets[0], 0); // ≤ 10 ms
  assert.equal(snap.ttft.buckets[2], 1); // ≤ 50 ms
  assert.equal(snap.ttft.buckets.at(-1), 2); // ≤ 30 s
});
