/**
 * The official `openai` npm client against a real server on 127.0.0.1:
 * completions and chat, streaming and not, and errors surfacing as the
 * client's typed errors.
 */

import assert from "node:assert/strict";
import OpenAI from "npm:openai@6";
import { serve, tinyRuntime, until } from "../../serve/serve_test_util.ts";

const KEY = "test-key-123";

function client(url: string, apiKey = KEY): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0, timeout: 10_000 });
}

/** llama.cpp's `ignore_eos` extension: fixed-length outputs whatever the random model samples. */
const IGNORE_EOS = { ignore_eos: true } as Record<string, unknown>;

Deno.test("openai client: completions and chat, non-streaming and streaming", async () => {
  const rt = await tinyRuntime();
  const srv = serve(rt, { apiKey: KEY });
  try {
    const ai = client(srv.url);
    const models = await ai.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);

    const c = await ai.completions.create({
      model: "tiny",
      prompt: "Once upon a time",
      max_tokens: 8,
      temperature: 0,
      ...IGNORE_EOS,
    });
    assert.equal(c.object, "text_completion");
    assert.equal(c.choices[0].finish_reason, "length");
    assert.equal(c.usage?.completion_tokens, 8);

    const stream = await ai.completions.create({
      model: "tiny",
      prompt: "Once upon a time",
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      ...IGNORE_EOS,
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.choices[0]) {
        text += chunk.choices[0].text;
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, c.choices[0].text, "streamed text equals the non-streamed text");
    assert.equal(finish, "length");
    assert.equal(usage?.completion_tokens, 8);
    assert.equal(usage?.prompt_tokens, c.usage?.prompt_tokens);

    const chat = await ai.chat.completions.create({
      model: "tiny",
      messages: [{ role: "system", content: "You are terse." }, {
        role: "user",
        content: "Hello!",
      }],
      max_tokens: 6,
      temperature: 0,
      seed: 5,
      ...IGNORE_EOS,
    });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    assert.equal(chat.usage?.completion_tokens, 6);

    const chatStream = await ai.chat.completions.create({
      model: "tiny",
      messages: [{ role: "system", content: "You are terse." }, {
        role: "user",
        content: "Hello!",
      }],
      max_tokens: 6,
      temperature: 0,
      seed: 5,
      stream: true,
      ...IGNORE_EOS,
    });
    let chatText = "";
    let role: string | undefined;
    for await (const chunk of chatStream) {
      role ??= chunk.choices[0]?.delta.role;
      chatText += chunk.choices[0]?.delta.content ?? "";
    }
    assert.equal(role, "assistant");
    assert.equal(chatText, chat.choices[0].message.content);
  } finally {
    await srv.close();
  }
});

Deno.test("openai client: 401, 404, 400 and 429 arrive as typed errors", async () => {
  const rt = await tinyRuntime({ maxConcurrent: 1, maxQueue: 0, delayMs: 3 });
  const srv = serve(rt, { apiKey: KEY });
  try {
    await assert.rejects(
      client(srv.url, "wrong").completions.create({ model: "tiny", prompt: "x" }),
      (e: unknown) =>
        e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === "invalid_api_key",
    );
    const ai = client(srv.url);
    await assert.rejects(
      ai.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
      (e: unknown) =>
        e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found" &&
        e.param === "model",
    );
    await assert.rejects(
      ai.completions.create({ model: "tiny", prompt: "x", temperature: 7 }),
      (e: unknown) =>
        e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === "temperature",
    );
    await assert.rejects(
      ai.completions.create({ model: "tiny", prompt: "x", max_tokens: 100_000 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "max_tokens_too_large",
    );

    // hold the only slot with a stream, then ask again
    const holder = await ai.completions.create({
      model: "tiny",
      prompt: "hold",
      max_tokens: 200,
      stream: true,
      ...IGNORE_EOS,
    });
    const it = holder[Symbol.asyncIterator]();
    await it.next();
    assert.equal(rt.active, 1);
    await assert.rejects(
      ai.completions.create({ model: "tiny", prompt: "x", max_tokens: 1 }),
      (e: unknown) =>
        e instanceof OpenAI.RateLimitError && e.status === 429 && e.code === "queue_full" &&
        Number(e.headers?.get("retry-after")) >= 1,
    );
    holder.controller.abort();
    await until(() => rt.active === 0, 3000, "the aborted stream to free its slot");
    const after = await ai.completions.create({ model: "tiny", prompt: "x", max_tokens: 1 });
    assert.equal(after.choices.length, 1);
  } finally {
    await srv.close();
  }
});

Deno.test("openai client: every sampling field is honoured, unsupported ones are refused with 400", async () => {
  const rt = await tinyRuntime();
  const srv = serve(rt, { apiKey: KEY });
  try {
    const ai = client(srv.url);
    const base = { model: "tiny", prompt: "Once upon a time", max_tokens: 24, ...IGNORE_EOS };
    const text = async (extra: Record<string, unknown>): Promise<string> =>
      (await ai.completions.create(
        { ...base, ...extra } as OpenAI.CompletionCreateParamsNonStreaming,
      ))
        .choices[0].text;
    const greedy = await text({ temperature: 0 });
    // llama.cpp's top_k and min_p: at most one candidate left = greedy, whatever the seed
    for (const seed of [1, 2, 3]) {
      assert.equal(await text({ temperature: 1.5, seed, top_k: 1 }), greedy, `top_k seed ${seed}`);
      assert.equal(await text({ temperature: 1.5, seed, min_p: 1 }), greedy, `min_p seed ${seed}`);
    }
    // penalties change what greedy decoding picks (it would be identical if they were dropped)
    for (
      const extra of [
        { frequency_penalty: 2 },
        { presence_penalty: 2 },
        { repeat_penalty: 3 },
        { frequency_penalty: -2, presence_penalty: -2 },
      ]
    ) {
      assert.notEqual(await text({ temperature: 0, ...extra }), greedy, JSON.stringify(extra));
    }
    // logit_bias: +100 on one token makes greedy pick it every time; -100 bans it
    const tok = rt.model.tokenizer;
    const a = rt.encode("hello", false).at(-1)!;
    assert.equal(
      await text({ temperature: 0, max_tokens: 4, logit_bias: { [a]: 100 } }),
      tok.decode([a, a, a, a]),
    );
    const firstGreedy = rt.encode(greedy, false)[0];
    const banned = await ai.completions.create({
      ...base,
      prompt: [...rt.encode("Once upon a time")],
      max_tokens: 1,
      temperature: 0,
      logit_bias: { [firstGreedy]: -100 },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.notEqual(banned.choices[0].text, tok.decode([firstGreedy]));

    const refused: [Record<string, unknown>, string][] = [
      [{ logit_bias: { [rt.model.hp.nVocab]: 1 } }, "logit_bias"],
      [{ logit_bias: { "5": 101 } }, "logit_bias"],
      [{ logit_bias: { "-1": 1 } }, "logit_bias"],
      [{ frequency_penalty: 2.5 }, "frequency_penalty"],
      [{ presence_penalty: -3 }, "presence_penalty"],
      [{ top_k: -1 }, "top_k"],
      [{ min_p: 1.5 }, "min_p"],
      [{ repeat_penalty: 0 }, "repeat_penalty"],
      [{ n: 2 }, "n"],
    ];
    for (const [extra, param] of refused) {
      await assert.rejects(
        text(extra),
        (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === param,
        JSON.stringify(extra),
      );
    }
    const chat = (extra: Record<string, unknown>) =>
      ai.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "Hi" }],
        max_tokens: 2,
        ...extra,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    for (
      const [extra, param] of [
        [{ n: 3 }, "n"],
        [{ response_format: { type: "json_object" } }, "response_format"],
        [{
          response_format: { type: "json_schema", json_schema: { name: "x", schema: {} } },
        }, "response_format"],
        [{ tool_choice: "required" }, "tool_choice"],
        [{ modalities: ["text", "audio"] }, "modalities"],
      ] as [Record<string, unknown>, string][]
    ) {
      await assert.rejects(
        chat(extra),
        (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === param,
        JSON.stringify(extra),
      );
    }
    const okText = await chat({ response_format: { type: "text" }, n: 1, frequency_penalty: 1 });
    assert.equal(okText.choices.length, 1);
  } finally {
    await srv.close();
  }
});
