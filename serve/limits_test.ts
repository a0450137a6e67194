/**
 * Concurrency, queueing, timeouts and client disconnects, against real
 * generations (a slow expert store makes each token take a few ms, without
 * blocking the event loop) and a real HTTP server where the socket matters.
 */

import assert from "node:assert/strict";
import { createApp } from "./mod.ts";
import { post, serve, tinyRuntime, until } from "./serve_test_util.ts";

const long = { prompt: "tell me a long story", max_tokens: 200, ignore_eos: true, temperature: 0 };

Deno.test("a full queue answers 429 with Retry-After; cancelling a stream frees its slot", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, maxQueue: 1, delayMs: 2 });
  const app = createApp(rt);
  // a stream holds its slot from the response on; nothing is generated until it is read
  const first = await post(app, "/v1/completions", { ...long, stream: true });
  assert.equal(first.status, 200);
  assert.equal(rt.active, 1);
  const queued = post(app, "/v1/completions", { prompt: "q", max_tokens: 1 });
  await until(() => rt.queued === 1, 2000, "the second request to queue");
  const refused = await post(app, "/v1/completions", { prompt: "r", max_tokens: 1 });
  assert.equal(refused.status, 429);
  assert.ok(Number(refused.headers.get("retry-after")) >= 1);
  const body = await refused.json();
  assert.equal(body.error.code, "queue_full");
  assert.equal(body.error.type, "rate_limit_error");

  const reader = first.body!.getReader();
  assert.match(new TextDecoder().decode((await reader.read()).value), /^data: /);
  await reader.cancel();
  // the slot passes to the queued request, which completes
  const done = await queued;
  assert.equal(done.status, 200);
  await done.json();
  await until(() => rt.active === 0 && rt.queued === 0, 2000, "the slot to be freed");
  const s = rt.stats.snapshot();
  assert.equal(s.generations.abort, 1);
  assert.equal(s.rejected, 1);
  assert.ok(s.completionTokens < 200);
  rt.close();
});

Deno.test("a generation over the request timeout gets 504 and frees its slot", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, delayMs: 5 });
  const app = createApp(rt, { requestTimeoutMs: 150 });
  const t0 = performance.now();
  const res = await post(app, "/v1/completions", long);
  assert.equal(res.status, 504);
  assert.equal((await res.json()).error.code, "generation_timeout");
  assert.ok(performance.now() - t0 < 2000);
  // streaming: headers went out already, so the timeout arrives as an error event
  const s = await post(app, "/v1/chat/completions", {
    ...long,
    prompt: undefined,
    messages: [{ role: "user", content: "hi" }],
    stream: true,
  });
  assert.equal(s.status, 200);
  const events = (await s.text()).trim().split("\n\n");
  const last = JSON.parse(events.at(-1)!.replace(/^data: /, ""));
  assert.equal(last.error.code, "generation_timeout");
  assert.equal(rt.active, 0);
  assert.equal(rt.stats.snapshot().generations.timeout, 2);
  rt.close();
});

Deno.test("a queued request that times out gets 504 without ever running", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, maxQueue: 4, delayMs: 2 });
  const app = createApp(rt, { requestTimeoutMs: 100 });
  // the slot is held by a generation with no deadline of its own (the runtime batches in the
  // background, so an HTTP holder would hit the same 100 ms timeout first and free the slot)
  const holder = await rt.start({
    prompt: rt.encode("tell me a long story"),
    maxTokens: 200,
    ignoreEos: true,
  });
  assert.equal(rt.active, 1);
  const res = await post(app, "/v1/completions", { prompt: "late", max_tokens: 1 });
  assert.equal(res.status, 504);
  assert.equal(rt.queued, 0);
  assert.equal(rt.active, 1, "the holder still runs: the late request never did");
  await holder.close();
  await until(() => rt.active === 0, 2000, "the slot to be freed");
  rt.close();
});

Deno.test("over HTTP: a streaming client that disconnects aborts its generation and frees the slot", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, maxQueue: 0, delayMs: 3 });
  const srv = serve(rt);
  try {
    const ctl = new AbortController();
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...long, stream: true }),
      signal: ctl.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let got = "";
    while (!got.includes('"text"')) got += new TextDecoder().decode((await reader.read()).value);
    assert.equal(rt.active, 1);
    ctl.abort();
    await reader.closed.catch(() => {});
    await until(() => rt.active === 0, 3000, "the server to notice the disconnect");
    const s = rt.stats.snapshot();
    assert.equal(s.generations.abort, 1);
    assert.ok(s.completionTokens < 200, `stopped early: ${s.completionTokens} tokens`);
    // the slot is usable again
    const next = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "again", max_tokens: 2 }),
    });
    assert.equal(next.status, 200);
    await next.json();
  } finally {
    await srv.close();
  }
});

Deno.test("over HTTP: a non-streaming client that disconnects aborts its generation and frees the slot", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, maxQueue: 0, delayMs: 3 });
  const srv = serve(rt);
  try {
    const ctl = new AbortController();
    const pending = fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(long),
      signal: ctl.signal,
    }).catch((e) => e);
    await until(() => rt.stats.snapshot().completionTokens > 2, 3000, "generation to start");
    ctl.abort();
    assert.ok((await pending) instanceof Error);
    await until(() => rt.active === 0, 3000, "the server to notice the disconnect");
    const s = rt.stats.snapshot();
    assert.equal(s.generations.abort, 1);
    assert.ok(s.completionTokens < 200, `stopped early: ${s.completionTokens} tokens`);
  } finally {
    await srv.close();
  }
});

Deno.test("over HTTP: concurrent streams interleave token by token and all finish", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 3, maxQueue: 8 });
  const srv = serve(rt);
  try {
    const run = async (i: number): Promise<number> => {
      const res = await fetch(`${srv.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          prompt: `client ${i}`,
          max_tokens: 12,
          ignore_eos: true,
          stream: true,
          seed: i,
        }),
      });
      const text = await res.text();
      assert.ok(text.endsWith("data: [DONE]\n\n"));
      return text.split("\n\n").length;
    };
    const counts = await Promise.all(Array.from({ length: 6 }, (_, i) => run(i)));
    assert.equal(counts.length, 6);
    assert.equal(rt.stats.snapshot().completionTokens, 72);
    // same request alone gives the same text as under concurrency (no shared-state corruption)
    const solo = async (): Promise<string> => {
      const r = await fetch(`${srv.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "same", max_tokens: 10, ignore_eos: true, temperature: 0 }),
      });
      return (await r.json()).choices[0].text;
    };
    const alone = await solo();
    const together = await Promise.all([solo(), solo(), solo()]);
    for (const t of together) assert.equal(t, alone);
  } finally {
    await srv.close();
  }
});

Deno.test("over HTTP: SSE chunks reach the client while the generation is still running", async () => {
  const rt = await tinyRuntime();
  const srv = serve(rt);
  try {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        prompt: "stream me",
        max_tokens: 200,
        ignore_eos: true,
        stream: true,
      }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    // synchronous backend ops must not starve the socket until the end
    const sofar = rt.stats.snapshot().completionTokens;
    assert.ok(sofar < 200, `first chunk arrived after ${sofar} of 200 tokens`);
    while (!(await reader.read()).done) { /* drain */ }
    assert.equal(rt.stats.snapshot().completionTokens, 200);
  } finally {
    await srv.close();
  }
});
