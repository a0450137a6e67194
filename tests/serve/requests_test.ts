/**
 * Bad and oversized requests through `app.request()`: malformed JSON, wrong
 * types, unknown models, body size and body timeouts, prompt and max_tokens
 * limits, templates that refuse a conversation, and bearer auth — each with
 * the right status and OpenAI's error shape.
 */

import assert from "node:assert/strict";
import { createApp, type ModelRuntime } from "../../serve/mod.ts";
import { ChatTemplate } from "../../serve/chat_template.ts";
import { expectError, post, tinyRuntime } from "./util.ts";

let shared: ModelRuntime | null = null;
async function runtime(): Promise<ModelRuntime> {
  shared ??= await tinyRuntime();
  return shared;
}

Deno.test("bad requests get 4xx with OpenAI's error shape", async () => {
  const app = createApp(await runtime());
  await expectError(await post(app, "/v1/completions", "{not json"), 400, "invalid_json");
  await expectError(await post(app, "/v1/completions", ""), 400, "invalid_json");
  await expectError(await post(app, "/v1/completions", "[1,2]"), 400, "invalid_request");
  await expectError(
    await post(app, "/v1/completions", { prompt: 42 }),
    400,
    "invalid_request",
    "prompt",
  );
  await expectError(await post(app, "/v1/completions", {}), 400, "invalid_request", "prompt");
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", max_tokens: "5" }),
    400,
    "invalid_request",
    "max_tokens",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", max_tokens: 0 }),
    400,
    "invalid_request",
    "max_tokens",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", temperature: 3 }),
    400,
    "invalid_request",
    "temperature",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", top_p: "x" }),
    400,
    "invalid_request",
    "top_p",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", stop: [1] }),
    400,
    "invalid_request",
    "stop",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", stop: ["a", "b", "c", "d", "e"] }),
    400,
    "invalid_request",
    "stop",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", stream: "yes" }),
    400,
    "invalid_request",
    "stream",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", n: 2 }),
    400,
    "invalid_request",
    "n",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", seed: 1.5 }),
    400,
    "invalid_request",
    "seed",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: [1, 99999] }),
    400,
    "invalid_request",
    "prompt",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", model: 7 }),
    400,
    "invalid_request",
    "model",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", model: "gpt-4o" }),
    404,
    "model_not_found",
    "model",
  );
  await expectError(
    await post(app, "/v1/chat/completions", { messages: "hi" }),
    400,
    "invalid_request",
    "messages",
  );
  await expectError(
    await post(app, "/v1/chat/completions", { messages: [] }),
    400,
    "invalid_request",
    "messages",
  );
  await expectError(
    await post(app, "/v1/chat/completions", { messages: [{ role: "wizard", content: "x" }] }),
    400,
    "invalid_request",
    "messages[0].role",
  );
  await expectError(
    await post(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }],
    }),
    400,
    "invalid_request",
    "messages[0].content[0].type",
  );
  const form = await app.request("/v1/completions", {
    method: "POST",
    headers: { "content-type": "text/plain" },
    body: "{}",
  });
  await expectError(form, 415, "unsupported_media_type");
  await expectError(await app.request("/v1/completions"), 405, "method_not_allowed");
  await expectError(await app.request("/nope"), 404, "not_found");
});

Deno.test("a model template that refuses the conversation is a 400", async () => {
  const { MIXTRAL } = await import("./templates.ts");
  const app = createApp(await runtime(), {
    chatTemplate: new ChatTemplate("llama", MIXTRAL, { bos: "<s>", eos: "</s>", addBos: true }),
  });
  const body = await expectError(
    await post(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }],
    }),
    400,
    "invalid_request",
    "messages",
  );
  assert.match(body.error.message, /alternate/);
});

Deno.test("body size: declared and streamed bodies over the limit get 413", async () => {
  const app = createApp(await runtime(), { maxBodyBytes: 1024 });
  const big = JSON.stringify({ prompt: "x".repeat(5000) });
  await expectError(await post(app, "/v1/completions", big), 413, "body_too_large");
  // no Content-Length: cut off while reading
  const chunked = new ReadableStream<Uint8Array>({
    start(ctl) {
      for (let i = 0; i < 8; i++) {
        ctl.enqueue(new TextEncoder().encode(big.slice(i * 700, (i + 1) * 700)));
      }
      ctl.close();
    },
  });
  const res = await app.request(
    new Request("http://x/v1/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked,
    }),
  );
  await expectError(res, 413, "body_too_large");
});

Deno.test("a body that does not arrive in time gets 408", async () => {
  const app = createApp(await runtime(), { bodyTimeoutMs: 50 });
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const slow = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
  ctl.enqueue(new TextEncoder().encode('{"prompt":'));
  const res = await app.request(
    new Request("http://x/v1/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: slow,
    }),
  );
  await expectError(res, 408, "request_timeout");
});

Deno.test("prompt and max_tokens limits get 400", async () => {
  const rt = await runtime();
  const app = createApp(rt, { maxPromptTokens: 8, maxTokensCap: 32 });
  await expectError(
    await post(app, "/v1/completions", { prompt: "word ".repeat(40) }),
    400,
    "prompt_too_long",
    "prompt",
  );
  await expectError(
    await post(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: "word ".repeat(40) }],
    }),
    400,
    "prompt_too_long",
    "messages",
  );
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", max_tokens: 33 }),
    400,
    "max_tokens_too_large",
    "max_tokens",
  );
  const wide = createApp(rt);
  await expectError(
    await post(wide, "/v1/completions", { prompt: "a b c d", max_tokens: rt.nCtx - 2 }),
    400,
    "context_length_exceeded",
    "max_tokens",
  );
});

Deno.test("bearer auth: missing or wrong key is 401, right key passes; health stays open", async () => {
  const app = createApp(await runtime(), { apiKey: "s3cret" });
  const missing = await expectError(
    await post(app, "/v1/completions", { prompt: "a" }),
    401,
    "invalid_api_key",
  );
  assert.match(missing.error.message, /Missing/);
  await expectError(
    await post(app, "/v1/completions", { prompt: "a" }, { authorization: "Bearer s3cre" }),
    401,
    "invalid_api_key",
  );
  await expectError(
    await app.request("/v1/models", { headers: { authorization: "Basic s3cret" } }),
    401,
    "invalid_api_key",
  );
  await expectError(await app.request("/metrics"), 401, "invalid_api_key");
  const ok = await app.request("/v1/models", { headers: { authorization: "Bearer s3cret" } });
  assert.equal(ok.status, 200);
  assert.equal((await app.request("/healthz")).status, 200);
  assert.equal((await app.request("/")).status, 200);
  const open = createApp(await runtime(), { apiKey: "s3cret", publicMetrics: true });
  assert.equal((await open.request("/metrics")).status, 200);
});
