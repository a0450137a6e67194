/** Admission control and the step lock, and the constant-time key check. */

import assert from "node:assert/strict";
import { Limiter, Mutex, QueueFullError } from "../../serve/limiter.ts";
import { keysMatch, timingSafeEqual } from "../../serve/auth.ts";
import { RuntimeStats } from "../../serve/stats.ts";

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

Deno.test("API keys compare through digests", async () => {
  assert.ok(await keysMatch("k", "k"));
  assert.ok(!(await keysMatch("k", "k ")));
  assert.ok(!(await keysMatch("", "k")));
  assert.ok(timingSafeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2])));
  assert.ok(!timingSafeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0])));
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
