/**
 * Continuous batching through the HTTP server: concurrent requests share each
 * decode step (fewer steps than tokens) and each gets the completion it gets
 * alone; a disconnected stream leaves the batch and frees its slot within a
 * step or two; the slot count bounds the batch.
 */

import assert from "node:assert/strict";
import { serve, tinyRuntime, until } from "./serve_test_util.ts";

const BODIES = [
  { prompt: "ab", max_tokens: 12, temperature: 0, ignore_eos: true },
  { prompt: "hello there", max_tokens: 9, temperature: 0.9, seed: 5, ignore_eos: true },
  { prompt: "x", max_tokens: 14, temperature: 0.6, top_k: 8, seed: 77, ignore_eos: true },
  { prompt: "the cat sat on", max_tokens: 7, temperature: 1.1, seed: 1, ignore_eos: true },
];

async function complete(url: string, body: unknown): Promise<string> {
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "tiny", ...body as object }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const j = await r.json();
  return j.choices[0].text;
}

Deno.test("batching: concurrent requests share steps and each gets its solo completion", async () => {
  const runtime = await tinyRuntime({ maxConcurrent: 4 });
  const srv = serve(runtime);
  try {
    const solo: string[] = [];
    for (const b of BODIES) solo.push(await complete(srv.url, b));
    const s0 = runtime.batchSteps;
    const together = await Promise.all(BODIES.map((b) => complete(srv.url, b)));
    const steps = runtime.batchSteps - s0;
    assert.deepEqual(together, solo);
    const tokens = BODIES.reduce((a, b) => a + b.max_tokens, 0);
    // one prefill step each at most, then shared decode steps: far fewer steps than tokens
    assert.ok(steps < tokens - 10, `${steps} steps for ${tokens} tokens`);
    assert.equal(runtime.active, 0);
  } finally {
    await srv.close();
  }
});

Deno.test("batching: a disconnected stream leaves the batch while the other keeps going", async () => {
  const runtime = await tinyRuntime({ maxConcurrent: 2 });
  const srv = serve(runtime);
  try {
    const other = complete(srv.url, { prompt: "ab", max_tokens: 240, ignore_eos: true });
    const ac = new AbortController();
    const r = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "tiny",
        prompt: "hello",
        max_tokens: 240,
        stream: true,
        ignore_eos: true,
      }),
      signal: ac.signal,
    });
    const reader = r.body!.getReader();
    await reader.read();
    await until(() => runtime.active === 2, 5000, "both in the batch");
    ac.abort();
    await until(() => runtime.active === 1, 5000, "the slot to be freed");
    const text = await other;
    assert.ok(text.length > 0);
    await until(() => runtime.active === 0, 5000, "the other to finish");
  } finally {
    await srv.close();
  }
});

Deno.test("batching: an aborted or closed generation frees its slot within two steps", async () => {
  const runtime = await tinyRuntime({ maxConcurrent: 3 });
  try {
    const keep = await runtime.start({ prompt: [1, 5, 6], maxTokens: 240, ignoreEos: true });
    const ac = new AbortController();
    const gone = await runtime.start({
      prompt: [1, 7],
      maxTokens: 240,
      ignoreEos: true,
      signal: ac.signal,
    });
    const closed = await runtime.start({ prompt: [1, 9], maxTokens: 240, ignoreEos: true });
    for (const g of [keep, gone, closed]) await g.steps.next();
    assert.equal(runtime.active, 3);
    const s0 = runtime.batchSteps;
    ac.abort();
    // both leave at the next step: close() resolves once the slot is free
    await closed.close();
    await Promise.resolve();
    assert.ok(runtime.batchSteps - s0 <= 2, `freed after ${runtime.batchSteps - s0} steps`);
    assert.equal(runtime.active, 1);
    let n = 1;
    for (;;) {
      const r = await keep.steps.next();
      if (r.done) {
        assert.equal(r.value.tokens.length, 240);
        break;
      }
      n++;
    }
    await keep.close();
    assert.equal(runtime.active, 0);
  } finally {
    runtime.close();
  }
});

Deno.test("batching: the slot count bounds the batch; the rest queue and then run", async () => {
  const runtime = await tinyRuntime({ maxConcurrent: 2, maxQueue: 8 });
  const srv = serve(runtime);
  try {
    let peak = 0;
    const watch = setInterval(() => peak = Math.max(peak, runtime.active), 1);
    const all = await Promise.all(
      [...BODIES, ...BODIES].map((b) => complete(srv.url, { ...b, max_tokens: 20 })),
    );
    clearInterval(watch);
    assert.equal(all.length, 8);
    assert.ok(peak <= 2, `peak ${peak}`);
  } finally {
    await srv.close();
  }
});
