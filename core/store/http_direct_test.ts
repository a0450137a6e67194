/**
 * Tests of direct HTTP reads into views (`HttpSource.readInto` over a
 * keep-alive socket): the bytes are the server's, validators are sent and
 * compared, and every answer that is not a clean 206 goes back to the
 * `fetch` path with its errors and retries.
 */

import assert from "node:assert/strict";
import { HttpSource, type HttpSourceOptions } from "../../mod.ts";
import { type Fault, startFaultServer } from "./fault_server_test_util.ts";
import { DirectHttp } from "./http_direct.ts";
import { isStoreError } from "./store_test_util.ts";

const DATA = new Uint8Array(400_000).map((_, i) => (i * 31 + 7) & 255);

/**
 * Each test on this thread, on the worker into a staging buffer (views over
 * plain memory) and on the worker straight into the view (shared memory).
 */
function both(name: string, f: () => Promise<void>): void {
  for (
    const [mode, t, sh] of [
      ["this thread", false, false],
      ["worker thread, staged", true, false],
      ["worker thread, shared memory", true, true],
    ] as const
  ) {
    Deno.test(`${name} (${mode})`, async () => {
      [thread, shared] = [t, sh];
      try {
        await f();
      } finally {
        [thread, shared] = [false, false];
      }
    });
  }
}

/** Views over shared memory (as a threaded backend's slots), else over plain memory. */
let shared = false;
/** Reads on the worker thread (`readThread`), else on this one. */
let thread = false;

/** `HttpSource.open` with this mode's `readThread`. */
function open(url: string, opts: HttpSourceOptions = {}): Promise<HttpSource> {
  return HttpSource.open(url, { readThread: thread, ...opts });
}

async function into(src: HttpSource, offset: number, n: number): Promise<Uint8Array> {
  const mem = new WebAssembly.Memory({ initial: 8, maximum: 64, shared });
  const v = new Uint8Array(mem.buffer, 4096, n);
  await src.readInto(offset, v);
  return v.slice();
}

both(
  "direct http: readInto over a socket lands the server's bytes; ranges in parallel",
  async () => {
    const s = startFaultServer(DATA);
    try {
      const src = await open(s.url, { backoffMs: 1 });
      const got = await Promise.all([0, 100_000, 250_000].map((o) => into(src, o, 120_000)));
      for (const [i, o] of [0, 100_000, 250_000].entries()) {
        assert.deepEqual(got[i], DATA.subarray(o, o + 120_000));
      }
      // the fault server answers one request per connection: later reads find a closed socket
      assert.deepEqual(await into(src, 5, 1000), DATA.subarray(5, 1005));
      assert.equal(src.directReads.served, 4);
      assert.equal(src.directReads.declined, 0);
      assert.equal(src.directReads.offThread, thread ? 4 : 0);
      await src.close();
    } finally {
      await s.stop();
    }
  },
);

both(
  "direct http: faults fall back to fetch (retries, 'changed'); off with directReads: false",
  async () => {
    const cases: [Fault, string | null][] = [
      ["500", null],
      ["drop", null],
      ["truncate", null],
      ["bad-range", null],
      ["long", null],
      ["ignore-range", null],
      ["etag", "changed"],
      ["etag-412", "changed"],
    ];
    for (const [fault, code] of cases) {
      const s = startFaultServer(DATA);
      try {
        const src = await open(s.url, { backoffMs: 1 });
        // the direct request meets the fault; fetch repeats it
        s.queue.push(fault);
        if (code) {
          s.always = fault;
          await assert.rejects(into(src, 1000, 50_000), isStoreError(code), fault);
        } else {
          assert.deepEqual(await into(src, 1000, 50_000), DATA.subarray(1000, 51_000), fault);
          assert.equal(src.directReads.declined, 1, fault);
        }
        await src.close();
      } finally {
        await s.stop();
      }
    }
    const s = startFaultServer(DATA);
    try {
      const src = await open(s.url, { directReads: false });
      assert.deepEqual(await into(src, 0, 10_000), DATA.subarray(0, 10_000));
      assert.equal(src.directReads.served, 0);
      await src.close();
    } finally {
      await s.stop();
    }
  },
);

both("direct http: abort and timeout settle, then typed errors", async () => {
  const s = startFaultServer(DATA, 400);
  try {
    const src = await open(s.url, { backoffMs: 1, timeoutMs: 150, retries: 0 });
    s.always = "slow";
    const ac = new AbortController();
    const v = new Uint8Array(
      new WebAssembly.Memory({ initial: 1, maximum: 1, shared }).buffer,
      0,
      1000,
    );
    const p = src.readInto(0, v, ac.signal);
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(p, isStoreError("aborted"));
    await assert.rejects(into(src, 0, 1000), isStoreError("timeout"));
    s.always = null;
    assert.deepEqual(await into(src, 0, 1000), DATA.subarray(0, 1000));
    await src.close();
  } finally {
    await s.stop();
  }
  assert.equal(DirectHttp.supports("https://example.com/x"), false);
  assert.equal(DirectHttp.supports("http://example.com/x"), true);
});

both(
  "direct http: a server that answers in chunks is read through fetch; after 4 declines direct reads stop",
  async () => {
    // Deno.serve sends a stream body chunked: a clean 206 for fetch, not for the direct path
    let requests = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      requests++;
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.get("range") ?? "");
      const headers = { etag: '"c1"', "accept-ranges": "bytes" };
      if (!m) return new Response(DATA, { headers });
      const [a, b] = [Number(m[1]), Number(m[2])];
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(DATA.slice(a, b + 1));
          c.close();
        },
      });
      return new Response(body, {
        status: 206,
        headers: { ...headers, "content-range": `bytes ${a}-${b}/${DATA.byteLength}` },
      });
    });
    try {
      const src = await open(`http://127.0.0.1:${server.addr.port}/m.gguf`);
      for (let i = 0; i < 6; i++) {
        assert.deepEqual(await into(src, 1000 * i, 5000), DATA.subarray(1000 * i, 1000 * i + 5000));
      }
      assert.equal(src.directReads.served, 0);
      assert.equal(src.directReads.declined, 4);
      // open's probe, 4 direct tries + their fetch repeats, then 2 through fetch only
      assert.equal(requests, 1 + 4 * 2 + 2);
      await src.close();
    } finally {
      await server.shutdown();
    }
  },
);
