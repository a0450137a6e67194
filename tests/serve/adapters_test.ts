/**
 * Per-request adapters: `MOE_EDGE_MANIFEST` names a model manifest whose
 * `adapters` the server offers as `<base>:<name>`. With the official `openai`
 * client against one server process: `/v1/models` lists the base and each
 * adapter, concurrent requests for `<base>`, `<base>:sea` and `<base>:qa`
 * (batched together over the shared base weights) give three different
 * completions, each exactly the library's for that adapter alone; an unknown
 * adapter is an OpenAI-style 404; `/metrics` counts requests per adapter.
 */

import assert from "node:assert/strict";
import OpenAI from "npm:openai@6";
import { generateText, loadFromManifest } from "../../mod.ts";
import { prepare } from "../../serve/program.ts";
import { serve } from "../../serve/serve_test_util.ts";

const MANIFEST = new URL("../../examples/adapters/model.json", import.meta.url).pathname;
const EX = new URL("../../examples/", import.meta.url);

Deno.test("serve: MOE_EDGE_MANIFEST adapters are models '<base>:<adapter>', picked per request, sharing one base", async () => {
  const env: Record<string, string> = {
    MOE_EDGE_MANIFEST: MANIFEST,
    MOE_EDGE_MODEL_NAME: "stories",
    MOE_EDGE_BACKEND: "ref",
  };
  const p = await prepare((k) => env[k]);
  const srv = serve(p.runtime);
  try {
    const ai = new OpenAI({ apiKey: "none", baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const ids = (await ai.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, ["stories", "stories:sea", "stories:qa"]);
    assert.equal((await ai.models.retrieve("stories:qa")).id, "stories:qa");

    const ask = (model: string) =>
      ai.completions.create({ model, prompt: "The little fox", max_tokens: 12, temperature: 0 });
    // concurrently: the three share batched steps over one set of base weights
    const [base, sea, qa] = await Promise.all([
      ask("stories"),
      ask("stories:sea"),
      ask("stories:qa"),
    ]);
    assert.equal(sea.model, "stories:sea");
    const texts = [base, sea, qa].map((c) => c.choices[0].text);
    assert.equal(new Set(texts).size, 3, `three different completions: ${JSON.stringify(texts)}`);
    // each is the library's text for that adapter alone
    const lib = async (name: string) => {
      const { model } = await loadFromManifest(new URL(`${name}/model.json`, EX), {
        backend: "ref",
      });
      try {
        return (await generateText(model, "The little fox", { maxTokens: 12, temperature: 0 }))
          .text;
      } finally {
        model.dispose();
      }
    };
    assert.equal(texts[1], await lib("mola-sea"));
    assert.equal(texts[2], await lib("smora-qa"));
    assert.match(texts[1], /sailed/);

    // chat picks adapters the same way
    const chat = await ai.chat.completions.create({
      model: "stories:qa",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 4,
      temperature: 0,
    });
    assert.equal(chat.model, "stories:qa");

    // unknown adapter / model: the client's typed 404
    for (const model of ["stories:nope", "other", "other:sea", "stories:"]) {
      await assert.rejects(ask(model), (e: unknown) => {
        assert.ok(e instanceof OpenAI.NotFoundError, `${model}: ${e}`);
        assert.equal((e as InstanceType<typeof OpenAI.NotFoundError>).code, "model_not_found");
        return true;
      });
    }
    await assert.rejects(ai.models.retrieve("stories:nope"), OpenAI.NotFoundError);

    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    const count = (a: string) =>
      Number(
        metrics.match(
          new RegExp(
            `^moe_edge_adapter_requests_total\\{(?:[^}]*,)?adapter="${a}"(?:,[^}]*)?\\} (\\d+)$`,
            "m",
          ),
        )?.[1],
      );
    assert.equal(count(""), 1, metrics); // the base model
    assert.equal(count("sea"), 1);
    assert.equal(count("qa"), 2);
  } finally {
    await srv.close();
    p.model.dispose();
  }
});

Deno.test("serve: MOE_EDGE_MANIFEST with MOE_EDGE_MODEL, or a broken manifest, fails to start with one line", async () => {
  const { StartError } = await import("../../serve/program.ts");
  await assert.rejects(
    prepare((k) =>
      ({ MOE_EDGE_MANIFEST: MANIFEST, MOE_EDGE_MODEL: "x.gguf" } as Record<string, string>)[k]
    ),
    (e: unknown) =>
      e instanceof StartError && e.exitCode === 2 && /MOE_EDGE_MANIFEST/.test(e.message),
  );
  await assert.rejects(
    prepare((k) => ({ MOE_EDGE_MANIFEST: "/nonexistent/model.json" } as Record<string, string>)[k]),
    (e: unknown) =>
      e instanceof StartError && e.exitCode === 1 && !e.message.includes("\n") &&
      /nonexistent/.test(e.message),
  );
});
