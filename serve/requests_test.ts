/**
 * Bad and oversized requests through `app.request()`: malformed JSON, wrong
 * types, unknown models, body size and body timeouts, prompt and max_tokens
 * limits, templates that refuse a conversation, and bearer auth — each with
 * the right status and OpenAI's error shape.
 */

import assert from "node:assert/strict";
import { createApp, type ModelRuntime } from "./mod.ts";
import { ChatTemplate } from "./chat_template.ts";
import { expectError, post, tinyRuntime } from "./serve_test_util.ts";
import fc from "npm:fast-check@4";
import { parseChatRequest, parseCompletionRequest } from "./validate.ts";
import { ServeError } from "./errors.ts";

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
  const { MIXTRAL } = await import("./templates_test_util.ts");
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

Deno.test("validation (Ajv schema): a wrong value names its field; right values parse to it", () => {
  const ranges: Record<string, [number, number, boolean]> = {
    temperature: [0, 2, false],
    top_p: [0, 1, false],
    min_p: [0, 1, false],
    frequency_penalty: [-2, 2, false],
    presence_penalty: [-2, 2, false],
    top_k: [0, 1 << 30, true],
    max_tokens: [1, 1 << 30, true],
  };
  const wrong = fc.oneof(
    fc.string({ maxLength: 3 }),
    fc.boolean(),
    fc.array(fc.nat(), { maxLength: 2 }),
  );
  fc.assert(
    fc.property(
      fc.constantFrom(...Object.keys(ranges)),
      fc.oneof(wrong, fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 })),
      fc.boolean(),
      (key, v, chat) => {
        const [lo, hi, integer] = ranges[key];
        const body = chat
          ? { [key]: v, messages: [{ role: "user", content: "x" }] }
          : { [key]: v, prompt: "x" };
        const ok = typeof v === "number" && v >= lo && v <= hi && (!integer || Number.isInteger(v));
        try {
          const p = chat ? parseChatRequest(body) : parseCompletionRequest(body);
          assert.ok(ok, `${key}=${JSON.stringify(v)} was accepted`);
          const got = {
            temperature: p.temperature,
            top_p: p.topP,
            min_p: p.minP,
            top_k: p.topK,
            frequency_penalty: p.frequencyPenalty,
            presence_penalty: p.presencePenalty,
            max_tokens: p.maxTokens,
          }[key];
          assert.equal(got, key === "top_p" ? Math.max(v as number, Number.MIN_VALUE) : v);
        } catch (e) {
          if (!(e instanceof ServeError)) throw e;
          assert.ok(!ok, `${key}=${JSON.stringify(v)} was refused: ${e.message}`);
          assert.equal(e.param, key);
          assert.match(
            e.message,
            typeof v === "number" && (!integer || Number.isInteger(v))
              ? new RegExp(`^'${key}' must be between ${lo} and ${hi}: received `)
              : new RegExp(`^'${key}' must be an? (number|integer): received `),
          );
        }
      },
    ),
    { numRuns: 500 },
  );
  assert.throws(() => parseCompletionRequest({ prompt: "x", repeat_penalty: 0 }), /greater than 0/);
  assert.throws(
    () => parseCompletionRequest({ prompt: "x", stop: ["a", "b", "c", "d", "e"] }),
    /at most 4 sequences: received 5/,
  );
  assert.throws(
    () => parseCompletionRequest({ prompt: "x", stop: [1, 2, 3, 4, 5] }),
    /string or an array of strings: received array/,
  );
  assert.throws(
    () => parseCompletionRequest({ prompt: "x", logit_bias: { "01": 1 } }),
    /keys must be token ids.*'01'/,
  );
  assert.throws(
    () => parseCompletionRequest({ prompt: "x", logit_bias: { 7: 101 } }),
    /'logit_bias\[7\]' must be a number between -100 and 100: received 101/,
  );
  assert.throws(() => parseChatRequest({ messages: [], n: 2 }), /'n' must be 1/);
  const p = parseCompletionRequest({ prompt: "x", logit_bias: { 7: -3 }, stop: "s", seed: -1 });
  assert.deepEqual([...p.logitBias], [[7, -3]]);
  assert.deepEqual(p.stop, ["s"]);
  assert.equal(p.seed, 0xffffffff);
});
