/**
 * The app through `app.request()`: routes, completions and chat (JSON and
 * SSE), metrics, MoE stats and the dashboard page, against a real tiny model.
 */

import assert from "node:assert/strict";
import { createApp, type ModelRuntime } from "./mod.ts";
import { ChatTemplate } from "./chat_template.ts";
import { expectError, post, tinyRuntime } from "./serve_test_util.ts";
import { QWEN2 } from "./templates_test_util.ts";

let shared: ModelRuntime | null = null;
async function runtime(): Promise<ModelRuntime> {
  shared ??= await tinyRuntime();
  return shared;
}

Deno.test("GET /healthz, /v1/models and /v1/models/:id", async () => {
  const app = createApp(await runtime());
  const h = await app.request("/healthz");
  assert.equal(h.status, 200);
  assert.equal((await h.json()).status, "ok");
  const m = await (await app.request("/v1/models")).json();
  assert.equal(m.object, "list");
  assert.equal(m.data[0].id, "tiny");
  assert.equal(m.data[0].object, "model");
  assert.equal((await app.request("/v1/models/tiny")).status, 200);
  await expectError(await app.request("/v1/models/gpt-9"), 404, "model_not_found", "model");
});

Deno.test("POST /v1/completions answers with text, finish_reason and usage", async () => {
  const app = createApp(await runtime());
  const res = await post(app, "/v1/completions", {
    model: "tiny",
    prompt: "Once upon a time",
    max_tokens: 5,
    temperature: 0,
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.object, "text_completion");
  assert.match(body.id, /^cmpl-/);
  assert.equal(body.model, "tiny");
  assert.equal(typeof body.choices[0].text, "string");
  assert.ok(["length", "stop"].includes(body.choices[0].finish_reason));
  assert.ok(body.usage.prompt_tokens > 0);
  assert.ok(body.usage.completion_tokens <= 5);
  assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens);
  // greedy decoding is deterministic; a token-id prompt is accepted too
  const again = await (await post(app, "/v1/completions", {
    prompt: "Once upon a time",
    max_tokens: 5,
    temperature: 0,
  })).json();
  assert.equal(again.choices[0].text, body.choices[0].text);
  const ids = await post(app, "/v1/completions", {
    prompt: [1, 20, 30],
    max_tokens: 2,
    ignore_eos: true,
  });
  assert.equal((await ids.json()).usage.completion_tokens, 2);
});

Deno.test("seed makes sampling reproducible and max_tokens bounds the output", async () => {
  const app = createApp(await runtime());
  const req = {
    prompt: "abc",
    max_tokens: 12,
    temperature: 1.2,
    top_p: 0.9,
    seed: 42,
    ignore_eos: true,
  };
  const a = await (await post(app, "/v1/completions", req)).json();
  const b = await (await post(app, "/v1/completions", req)).json();
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.equal(a.usage.completion_tokens, 12);
  assert.equal(a.choices[0].finish_reason, "length");
});

Deno.test("stop strings end the completion and are not emitted", async () => {
  const app = createApp(await runtime());
  const full = await (await post(app, "/v1/completions", {
    prompt: "x",
    max_tokens: 24,
    temperature: 0,
    ignore_eos: true,
  })).json();
  const text: string = full.choices[0].text;
  const stop = text.slice(3, 5);
  assert.ok(
    stop.length === 2,
    `need some output to pick a stop string from: ${JSON.stringify(text)}`,
  );
  const cut = await (await post(app, "/v1/completions", {
    prompt: "x",
    max_tokens: 24,
    temperature: 0,
    ignore_eos: true,
    stop: [stop],
  })).json();
  assert.equal(cut.choices[0].finish_reason, "stop");
  assert.equal(cut.choices[0].text, text.slice(0, text.indexOf(stop)));
});

Deno.test("POST /v1/completions with stream:true sends SSE chunks, usage and [DONE]", async () => {
  const app = createApp(await runtime());
  const res = await post(app, "/v1/completions", {
    prompt: "Hello",
    max_tokens: 6,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /text\/event-stream/);
  const events = (await res.text()).split("\n\n").filter((e) => e).map((e) =>
    e.replace(/^data: /, "")
  );
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 6);
  assert.equal(chunks.at(-2).choices[0].finish_reason, "length");
  const text = chunks.slice(0, -2).map((c) => c.choices[0].text).join("");
  const whole = await (await post(app, "/v1/completions", {
    prompt: "Hello",
    max_tokens: 6,
    temperature: 0,
    ignore_eos: true,
  })).json();
  assert.equal(text, whole.choices[0].text);
});

Deno.test("POST /v1/chat/completions: JSON and SSE, with the model's template or the fallback", async () => {
  const rt = await runtime();
  const app = createApp(rt);
  const res = await post(app, "/v1/chat/completions", {
    model: "tiny",
    messages: [{ role: "system", content: "Be brief." }, {
      role: "user",
      content: [{ type: "text", text: "Hi" }],
    }],
    max_tokens: 4,
    temperature: 0,
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.object, "chat.completion");
  assert.equal(body.choices[0].message.role, "assistant");
  assert.equal(typeof body.choices[0].message.content, "string");
  // "[INST] Be brief.\n\nHi [/INST]" plus BOS: many more tokens than "Hi"
  assert.ok(body.usage.prompt_tokens > 8);

  const qwen = createApp(rt, {
    chatTemplate: new ChatTemplate("qwen2moe", QWEN2, { bos: "", eos: "", addBos: false }),
  });
  const s = await post(qwen, "/v1/chat/completions", {
    messages: [{ role: "user", content: "Hi" }],
    max_tokens: 3,
    stream: true,
  });
  const events = (await s.text()).split("\n\n").filter((e) => e).map((e) =>
    e.replace(/^data: /, "")
  );
  assert.equal(events.at(-1), "[DONE]");
  const first = JSON.parse(events[0]);
  assert.equal(first.object, "chat.completion.chunk");
  assert.deepEqual(first.choices[0].delta, { role: "assistant", content: "" });
  assert.ok(["length", "stop"].includes(JSON.parse(events.at(-2)!).choices[0].finish_reason));
});

Deno.test("GET /metrics is Prometheus text with requests, tokens, experts and queue", async () => {
  const app = createApp(await runtime());
  await post(app, "/v1/completions", { prompt: "metrics", max_tokens: 3, ignore_eos: true });
  await app.request("/nope");
  await app.request("/v1/models/no-such-model");
  await app.request("/v1/completions"); // GET: 405
  await app.request("/v1/%2e%2e/x/y"); // under /v1/* but no route
  const res = await app.request("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  for (
    const family of [
      "moe_edge_requests_total",
      "moe_edge_prompt_tokens_total",
      "moe_edge_completion_tokens_total",
      "moe_edge_tokens_per_second",
      "moe_edge_expert_hits_total",
      "moe_edge_expert_misses_total",
      "moe_edge_expert_usage_total",
      "moe_edge_queue_depth",
      "moe_edge_time_to_first_token_seconds",
    ]
  ) assert.match(text, new RegExp(`^# TYPE ${family} `, "m"), family);
  assert.match(text, /^moe_edge_requests_total\{route="\/v1\/completions",status="200"\} \d+$/m);
  assert.match(text, /^moe_edge_requests_total\{route="other",status="404"\} 2$/m);
  assert.match(text, /^moe_edge_requests_total\{route="\/v1\/models\/:id",status="404"\} 1$/m);
  assert.match(text, /^moe_edge_requests_total\{route="\/v1\/completions",status="405"\} 1$/m);
  // the route label is always a registered route or "other", never a raw path
  for (const [, route] of text.matchAll(/^moe_edge_requests_total\{route="([^"]*)"/gm)) {
    assert.ok(
      ["/v1/completions", "/v1/models/:id", "other"].includes(route),
      route,
    );
  }
  assert.match(text, /^moe_edge_expert_usage_total\{model="tiny",layer="1",expert="3"\} \d+$/m);
  const hits = [
    ...text.matchAll(/^moe_edge_expert_hits_total\{model="tiny",layer="(\d)"\} (\d+)$/gm),
  ];
  assert.equal(hits.length, 2);
  for (const h of hits) assert.ok(Number(h[2]) > 0, `layer ${h[1]} has hits`);
  // every line is a comment, `name{labels} value`, or empty (the format allows blank lines)
  for (const line of text.trim().split("\n")) {
    if (line === "") continue;
    assert.match(
      line,
      /^(# (HELP|TYPE) .+|[a-z_]+(\{[^}]*\})? [-+0-9.e]+|[a-z_]+(\{[^}]*\})? \+Inf)$/,
    );
  }
});

Deno.test("GET /v1/moe/stats reports per-layer expert usage that matches the routed tokens", async () => {
  const rt = await tinyRuntime();
  const app = createApp(rt);
  const r =
    await (await post(app, "/v1/completions", { prompt: "usage", max_tokens: 4, ignore_eos: true }))
      .json();
  const s = await (await app.request("/v1/moe/stats")).json();
  assert.deepEqual(s.experts.moeLayers, [0, 1]);
  const evaluated = r.usage.prompt_tokens + r.usage.completion_tokens - 1; // the last token is never fed back
  assert.equal(s.experts.routedTokens, evaluated);
  for (const l of [0, 1]) {
    const total = s.experts.usage[l].reduce((a: number, b: number) => a + b, 0);
    assert.equal(total, evaluated * 2, "top-2 routing counts two experts per token");
    assert.ok(s.experts.hits[l] > 0);
  }
  assert.equal(s.stats.completionTokens, 4);
  assert.equal(s.queue.maxConcurrent, 4);
  rt.close();
});

Deno.test("GET / serves the self-contained dashboard", async () => {
  const app = createApp(await runtime());
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /text\/html/);
  assert.match(res.headers.get("content-security-policy")!, /connect-src 'self'/);
  const html = await res.text();
  assert.match(html, /<canvas id="heatmap"/);
  assert.match(html, /\/v1\/moe\/stats/);
  assert.doesNotMatch(html, /<script[^>]+src=/, "no external scripts");
  assert.doesNotMatch(html, /https?:\/\//, "no external URLs");
});

Deno.test("the chat template comes from the GGUF's tokenizer.chat_template", async () => {
  const { loadModel } = await import("../mod.ts");
  const { createRuntime } = await import("./mod.ts");
  const { smallModelBytes, withMetadata } = await import("./serve_test_util.ts");
  const { QWEN2 } = await import("./templates_test_util.ts");
  const bytes = await withMetadata(smallModelBytes(), { "tokenizer.chat_template": QWEN2 });
  const rt = createRuntime(await loadModel(bytes, { backend: "ref" }), { name: "tiny" });
  const { chatTemplateFor } = await import("./chat_template.ts");
  const t = chatTemplateFor(rt.model);
  assert.equal(t.kind, "gguf");
  assert.deepEqual(t.stop, ["<|im_end|>"]);
  const app = createApp(rt);
  const res = await post(app, "/v1/chat/completions", {
    messages: [{ role: "user", content: "Hi" }],
    max_tokens: 2,
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  // the Qwen template adds a default system turn: far more prompt tokens than the fallback would
  const rendered = t.render([{ role: "user", content: "Hi" }]);
  assert.match(rendered.text, /^<\|im_start\|>system\nYou are a helpful assistant/);
  const expected = rt.encode(rendered.text, rendered.addBos).length;
  assert.equal(body.usage.prompt_tokens, expected);
  rt.close();
});

Deno.test("top_p 0 means greedy", async () => {
  const app = createApp(await runtime());
  const req = { prompt: "greedy", max_tokens: 8, ignore_eos: true };
  const greedy = await (await post(app, "/v1/completions", { ...req, temperature: 0 })).json();
  const p0 = await (await post(app, "/v1/completions", { ...req, temperature: 1, top_p: 0 }))
    .json();
  assert.equal(p0.choices[0].text, greedy.choices[0].text);
});
