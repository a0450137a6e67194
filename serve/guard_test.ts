/**
 * The connection guard of `deno task start` (serve/guard.ts): a trickled
 * request head is closed at its deadline while others are served, an idle
 * keep-alive connection is closed, requests and SSE streams longer than the
 * idle timeout still work (the official `openai` client included), excess
 * connections get 503, and the app still sees each client's real address.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import OpenAI from "npm:openai@6";
import { createApp } from "./app.ts";
import { ConfigError, readConfig } from "./config.ts";
import { guardedServe, type GuardedServer, type GuardOptions, HeadEnd } from "./guard.ts";
import type { ModelRuntime } from "./runtime.ts";
import { tinyRuntime, until } from "./serve_test_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function guarded(
  rt: ModelRuntime,
  opts: Partial<GuardOptions> = {},
  app: Parameters<typeof createApp>[1] = {},
): { srv: GuardedServer; url: string; close: () => Promise<void> } {
  const srv = guardedServe(
    { hostname: "127.0.0.1", port: 0, ...opts },
    createApp(rt, app).fetch,
  );
  return {
    srv,
    url: `http://127.0.0.1:${srv.addr.port}`,
    close: async () => {
      await srv.shutdown();
      rt.close();
    },
  };
}

/** Read until the peer closes (or resets); returns what arrived and when the close came. */
async function readToClose(c: Deno.Conn): Promise<{ text: string; at: number }> {
  const buf = new Uint8Array(16384);
  let text = "";
  for (;;) {
    let n: number | null;
    try {
      n = await c.read(buf);
    } catch {
      n = null;
    }
    if (n === null) return { text, at: Date.now() };
    text += dec.decode(buf.subarray(0, n));
  }
}

async function writeAll(c: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await c.write(data.subarray(off));
}

Deno.test("guard: a head trickled a byte every 500 ms is closed at the header deadline; /healthz stays responsive", async () => {
  const g = guarded(await tinyRuntime(), { headerTimeoutMs: 1500, idleTimeoutMs: 10_000 });
  const c = await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port });
  try {
    const t0 = Date.now();
    const closed = readToClose(c);
    let stop = false;
    const trickle = (async () => {
      const head = enc.encode("GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " + "a".repeat(100));
      for (const b of head) {
        if (stop) break;
        try {
          await c.write(new Uint8Array([b]));
        } catch {
          break; // closed under us: what we want
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    // while it trickles, others are served promptly
    for (let i = 0; i < 3; i++) {
      const s = Date.now();
      const h = await fetch(`${g.url}/healthz`);
      assert.equal(h.status, 200);
      await h.body?.cancel();
      assert.ok(Date.now() - s < 1000, `healthz took ${Date.now() - s} ms`);
      await new Promise((r) => setTimeout(r, 300));
    }
    const { text, at } = await closed;
    stop = true;
    await trickle;
    assert.equal(text, "", "no response to an unfinished head");
    const took = at - t0;
    assert.ok(took >= 1400 && took < 3000, `closed after ${took} ms (deadline 1500)`);
    assert.equal(g.srv.stats.headerTimeouts, 1);
  } finally {
    try {
      c.close();
    } catch { /* closed by the guard */ }
    await g.close();
  }
});

Deno.test("guard: a complete head in time is served; an idle keep-alive connection is then closed", async () => {
  const g = guarded(await tinyRuntime(), { headerTimeoutMs: 1000, idleTimeoutMs: 800 });
  const c = await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port });
  try {
    // a head sent in pieces, complete well inside the deadline, is not cut
    await writeAll(c, enc.encode("GET /healthz HTTP/1.1\r\n"));
    await new Promise((r) => setTimeout(r, 300));
    await writeAll(c, enc.encode("host: x\r\n\r\n"));
    const t0 = Date.now();
    const { text, at } = await readToClose(c);
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /"status":"ok"/);
    const idle = at - t0;
    assert.ok(idle >= 700 && idle < 2500, `idle connection closed after ${idle} ms (timeout 800)`);
    assert.equal(g.srv.stats.idleTimeouts, 1);
    assert.equal(g.srv.stats.headerTimeouts, 0);
  } finally {
    try {
      c.close();
    } catch { /* closed by the guard */ }
    await g.close();
  }
});

Deno.test("guard: a generation and an SSE stream longer than the idle timeout complete; openai client works", async () => {
  // 40 ms per layer → ~80 ms per token: 12 tokens take ~1 s, the idle timeout is 300 ms
  const g = guarded(await tinyRuntime({ delayMs: 40 }), { idleTimeoutMs: 300 });
  try {
    const t0 = Date.now();
    const res = await fetch(`${g.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once", max_tokens: 12, ignore_eos: true, temperature: 0 }),
    });
    const body = await res.json();
    assert.equal(res.status, 200);
    assert.equal(body.usage.completion_tokens, 12);
    assert.ok(Date.now() - t0 > 300, "the non-streaming generation outlasted the idle timeout");

    const s0 = Date.now();
    const sse = await fetch(`${g.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        prompt: "Once",
        max_tokens: 12,
        ignore_eos: true,
        temperature: 0,
        stream: true,
      }),
    });
    const text = await sse.text();
    assert.ok(Date.now() - s0 > 300, "the stream outlasted the idle timeout");
    const events = text.split("\n\n").filter((e) => e.startsWith("data: "));
    assert.equal(events.at(-1), "data: [DONE]");
    const tokens = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)))
      .filter((e) => e.choices?.[0]?.text !== undefined && e.choices[0].finish_reason === null);
    // the same 12 greedy tokens, streamed as they come (a busy machine may flush two
    // tokens in one event, so the count of events is only bounded below)
    assert.equal(tokens.map((e) => e.choices[0].text).join(""), body.choices[0].text);
    assert.ok(tokens.length >= 3, `${tokens.length} token events`);
    assert.equal(g.srv.stats.idleTimeouts, 0);

    const ai = new OpenAI({ apiKey: "x", baseURL: `${g.url}/v1`, maxRetries: 0, timeout: 10_000 });
    const c = await ai.completions.create({
      model: "tiny",
      prompt: "Once upon a time",
      max_tokens: 4,
      ...{ ignore_eos: true } as Record<string, unknown>,
    });
    assert.equal(c.usage?.completion_tokens, 4);
    const stream = await ai.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 6,
      stream: true,
      ...{ ignore_eos: true } as Record<string, unknown>,
    });
    let chunks = 0;
    for await (const ch of stream) if (ch.choices[0]?.delta?.content) chunks++;
    assert.ok(chunks >= 1, `${chunks} streamed chunks`);
  } finally {
    await g.close();
  }
});

Deno.test("guard: connections beyond MOE_EDGE_MAX_CONNECTIONS get 503 and are closed", async () => {
  const g = guarded(await tinyRuntime(), { maxConnections: 2 });
  const held = [
    await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port }),
    await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port }),
  ];
  try {
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(g.srv.stats.open, 2);
    const c = await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port });
    const { text } = await readToClose(c);
    c.close();
    assert.match(text, /^HTTP\/1\.1 503 /);
    const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4));
    assert.equal(body.error.code, "too_many_connections");
    assert.equal(g.srv.stats.refused, 1);
    // a slot freed is a slot to use
    held.pop()!.close();
    await new Promise((r) => setTimeout(r, 100));
    const h = await fetch(`${g.url}/healthz`);
    assert.equal(h.status, 200);
    await h.body?.cancel();
  } finally {
    for (const c of held) c.close();
    await g.close();
  }
});

Deno.test("guard: the handler sees the client's own address, not the relay's, and info.completed", async () => {
  let completions = 0;
  const srv = guardedServe(
    { hostname: "127.0.0.1", port: 0 },
    (_req, info) => {
      info.completed.then(() => completions++);
      return Response.json(info.remoteAddr);
    },
  );
  try {
    for (let i = 0; i < 3; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: srv.addr.port });
      await writeAll(c, enc.encode("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"));
      const { text } = await readToClose(c);
      const seen = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4));
      assert.equal(seen.port, (c.localAddr as Deno.NetAddr).port);
      assert.equal(seen.hostname, "127.0.0.1");
      c.close();
    }
    await until(() => completions === 3, 2000, "info.completed resolved for each response");
  } finally {
    await srv.shutdown();
  }
});

/** A non-loopback IPv4 address of this machine, if it has one. */
function externalIPv4(): string | null {
  try {
    return Deno.networkInterfaces().find((i) =>
      i.family === "IPv4" && !i.address.startsWith("127.")
    )?.address ?? null;
  } catch {
    return null;
  }
}

Deno.test({
  name:
    "guard: without a key, a client on a non-loopback address still gets 403; loopback is served",
  ignore: externalIPv4() === null,
  fn: async () => {
    const ip = externalIPv4()!;
    const g = guarded(await tinyRuntime(), { hostname: "0.0.0.0" });
    try {
      const remote = await fetch(`http://${ip}:${g.srv.addr.port}/v1/models`);
      assert.equal(remote.status, 403);
      assert.equal((await remote.json()).error.code, "forbidden");
      const health = await fetch(`http://${ip}:${g.srv.addr.port}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const local = await fetch(`http://127.0.0.1:${g.srv.addr.port}/v1/models`);
      assert.equal(local.status, 200);
      await local.body?.cancel();
    } finally {
      await g.close();
    }
  },
});

Deno.test("guard: a client that goes away mid-stream aborts its generation", async () => {
  const rt = await tinyRuntime({ delayMs: 40 });
  const g = guarded(rt, { idleTimeoutMs: 5000 });
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: g.srv.addr.port });
    const body = JSON.stringify({
      prompt: "Once",
      max_tokens: 200,
      ignore_eos: true,
      stream: true,
    });
    await writeAll(
      c,
      enc.encode(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
          `content-length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    const buf = new Uint8Array(4096);
    let got = "";
    while (!got.includes("data: ")) got += dec.decode(buf.subarray(0, (await c.read(buf)) ?? 0));
    assert.equal(rt.active, 1);
    c.close();
    const t0 = Date.now();
    await until(() => rt.active === 0, 3000, "generation aborted");
    assert.ok(Date.now() - t0 < 3000);
  } finally {
    await g.close();
  }
});

const START = new URL("./start.ts", import.meta.url).pathname;

Deno.test("deno task start runs behind the guard: a trickled head is closed, /healthz and completions are served", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "--allow-net", START],
    env: { MOE_EDGE_PORT: "0", MOE_EDGE_HEADER_TIMEOUT_MS: "1000", MOE_EDGE_BACKEND: "ref" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    let m: RegExpExecArray | null = null;
    while (!(m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(out))) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`did not start: ${out}`);
      out += value;
    }
    const port = Number(m[1]);
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    const t0 = Date.now();
    const closed = readToClose(c);
    await writeAll(c, enc.encode("GET /healthz HTTP/1.1\r\nhost"));
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(h.status, 200);
    await h.body?.cancel();
    const { text, at } = await closed;
    c.close();
    assert.equal(text, "");
    assert.ok(at - t0 >= 900 && at - t0 < 3000, `closed after ${at - t0} ms`);
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 3, ignore_eos: true }),
    });
    assert.equal((await res.json()).usage.completion_tokens, 3);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    while (!(await reader.read()).done) { /* drain */ }
    await child.stderr.cancel();
  }
});

Deno.test("guard settings: defaults, and a bad value is one line naming the variable", () => {
  const cfg = readConfig(() => undefined);
  assert.equal(cfg.headerTimeoutMs, 10_000);
  assert.equal(cfg.idleTimeoutMs, 60_000);
  assert.equal(cfg.maxConnections, 512);
  const set = (k: string, v: string) => readConfig((key) => key === k ? v : undefined);
  assert.equal(set("MOE_EDGE_IDLE_TIMEOUT_MS", "2500").idleTimeoutMs, 2500);
  for (
    const [k, v] of [
      ["MOE_EDGE_HEADER_TIMEOUT_MS", "0"],
      ["MOE_EDGE_HEADER_TIMEOUT_MS", "10s"],
      ["MOE_EDGE_IDLE_TIMEOUT_MS", "-1"],
      ["MOE_EDGE_IDLE_TIMEOUT_MS", "99999999999"],
      ["MOE_EDGE_MAX_CONNECTIONS", "0"],
      ["MOE_EDGE_MAX_CONNECTIONS", "1.5"],
    ]
  ) {
    assert.throws(
      () => set(k, v),
      (e: unknown) => e instanceof ConfigError && e.message.startsWith(k),
    );
  }
});

Deno.test("HeadEnd: fed in any chunks, ends exactly where a blank line follows text", () => {
  const ref = (s: string): boolean => /[^\r\n][\s\S]*?\n\r?\n/.test(s);
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom("\r", "\n", "a", ":", " ", "\r\n"), { maxLength: 40 }),
      fc.array(fc.nat(40), { maxLength: 6 }),
      (parts, cuts) => {
        const bytes = enc.encode(parts.join(""));
        const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const h = new HeadEnd();
        let prev = 0;
        for (const c of [...at, bytes.length]) {
          h.feed(bytes.subarray(prev, c));
          prev = c;
        }
        assert.equal(h.done, ref(parts.join("")), JSON.stringify(parts.join("")));
      },
    ),
    { numRuns: 2000 },
  );
  const h = new HeadEnd();
  assert.equal(h.feed(enc.encode("\r\n\r\n")), false, "leading empty lines are not a head");
  assert.equal(h.feed(enc.encode("GET / HTTP/1.1\r\nhost: x\r\n")), false);
  assert.equal(h.feed(enc.encode("\r")), false);
  assert.equal(h.feed(enc.encode("\n")), true);
});
