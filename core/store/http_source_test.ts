/**
 * HttpSource against the fault-injecting server: every fault gives a retry
 * (and then the right bytes) or a typed `StoreError`.
 */

import assert from "node:assert/strict";
import { HttpSource, StoreError } from "../../mod.ts";
import { type Fault, startFaultServer } from "./fault_server_test_util.ts";

const DATA = new Uint8Array(64 * 1024).map((_, i) => (i * 7 + (i >> 8)) & 255);
const FAST = { backoffMs: 1, maxBackoffMs: 5, timeoutMs: 2000 };

function expectSlice(got: Uint8Array, offset: number, length: number): void {
  assert.equal(got.byteLength, length);
  assert.deepEqual(got, DATA.subarray(offset, offset + length));
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<StoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StoreError, `expected StoreError, got ${e}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected StoreError '${code}'`);
}

async function withServer(
  fn: (s: ReturnType<typeof startFaultServer>) => Promise<void>,
): Promise<void> {
  const s = startFaultServer(DATA, 600);
  try {
    await fn(s);
  } finally {
    await s.stop();
  }
}

Deno.test("http source: open learns size and ETag, reads exact ranges", async () => {
  await withServer(async (s) => {
    const src = await HttpSource.open(s.url, FAST);
    assert.equal(src.size, DATA.byteLength);
    assert.equal(src.etag, '"v1"');
    expectSlice(await src.read(100, 5000), 100, 5000);
    expectSlice(await src.read(DATA.byteLength - 1, 1), DATA.byteLength - 1, 1);
    assert.equal((await src.read(5, 0)).byteLength, 0);
    await rejectsWith(src.read(DATA.byteLength - 2, 3), "out_of_range");
    const parts = await Promise.all([0, 1, 2, 3].map((i) => src.read(i * 9000, 9000)));
    parts.forEach((p, i) => expectSlice(p, i * 9000, 9000));
  });
});

for (const fault of ["drop", "500", "503", "truncate", "slow"] as Fault[]) {
  Deno.test(`http source: '${fault}' is retried, then the bytes are right`, async () => {
    await withServer(async (s) => {
      const src = await HttpSource.open(s.url, { ...FAST, timeoutMs: 300 });
      s.queue.push(fault, fault);
      expectSlice(await src.read(1000, 20000), 1000, 20000);
      assert.equal(src.stats().retries, 2);
    });
  });
}

for (
  const [fault, code] of [
    ["500", "http_status"],
    ["drop", "truncated"],
    ["truncate", "truncated"],
    ["slow", "timeout"],
  ] as [Fault, string][]
) {
  Deno.test(`http source: persistent '${fault}' gives up after bounded retries with '${code}'`, async () => {
    await withServer(async (s) => {
      const src = await HttpSource.open(s.url, { ...FAST, timeoutMs: 200, retries: 2 });
      s.always = fault;
      const before = s.requests;
      const e = await rejectsWith(src.read(0, 4096), code);
      assert.match(e.message, /gave up after 3 attempts/);
      assert.equal(s.requests - before, 3);
    });
  });
}

for (
  const [fault, code] of [
    ["etag", "changed"],
    ["etag-412", "changed"],
    ["bad-range", "bad_response"],
    ["ignore-range", "range_unsupported"],
    ["long", "bad_response"],
  ] as [Fault, string][]
) {
  Deno.test(`http source: '${fault}' fails at once with '${code}'`, async () => {
    await withServer(async (s) => {
      const src = await HttpSource.open(s.url, FAST);
      s.queue.push(fault);
      const before = s.requests;
      await rejectsWith(src.read(10, 100), code);
      assert.equal(s.requests - before, 1, "no retry");
    });
  });
}

Deno.test("http source: a server ignoring Range is refused at open", async () => {
  await withServer(async (s) => {
    s.queue.push("ignore-range");
    await rejectsWith(HttpSource.open(s.url, FAST), "range_unsupported");
  });
});

Deno.test("http source: 404 and unreachable hosts are typed errors", async () => {
  await withServer(async (s) => {
    s.always = "500";
    await rejectsWith(HttpSource.open(s.url, { ...FAST, retries: 0 }), "http_status");
  });
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await rejectsWith(
    HttpSource.open(`http://127.0.0.1:${port}/x`, { ...FAST, retries: 1 }),
    "network",
  );
});

Deno.test("http source: a caller's abort stops retries with 'aborted'", async () => {
  await withServer(async (s) => {
    const src = await HttpSource.open(s.url, { ...FAST, backoffMs: 200, maxBackoffMs: 200 });
    s.always = "500";
    const ac = new AbortController();
    const p = src.read(0, 100, ac.signal);
    setTimeout(() => ac.abort(), 30);
    await rejectsWith(p, "aborted");
  });
});

Deno.test("http source: the Web Cache tier serves repeated ranges without the server", async () => {
  if (!("caches" in globalThis)) return; // runtime without the Cache API: the tier is off by design
  const name = `moe-edge-test-${crypto.randomUUID()}`;
  try {
    await withServer(async (s) => {
      const src = await HttpSource.open(s.url, { ...FAST, cacheName: name });
      expectSlice(await src.read(300, 3000), 300, 3000);
      const before = s.requests;
      expectSlice(await src.read(300, 3000), 300, 3000);
      assert.equal(s.requests, before, "second read came from the cache");
      assert.equal(src.stats().cacheHits, 1);
      // a different validator (file changed, new open) does not see the old entries
      const src2 = await HttpSource.open(s.url, { ...FAST, cacheName: name });
      s.always = "etag";
      await rejectsWith(src2.read(5000, 10), "changed");
    });
  } finally {
    await caches.delete(name);
  }
});
