/** `generate` with a reused session evaluates only the prompt's uncached tail (prompt caching). */

import assert from "node:assert/strict";
import { defaultModelBytes } from "../model/default_model.ts";
import { loadModel } from "../model/model.ts";
import { generateText } from "./generate.ts";
import { Session } from "./session.ts";
import { GenerationError } from "../errors.ts";

const model = await loadModel(defaultModelBytes(), { backend: "ref" });

Deno.test("prompt cache: a reused session gives the tokens of a fresh one and keeps the prefix", async () => {
  const s = new Session(model, { nCtx: 256 });
  try {
    const a = await generateText(model, "The little fox", { maxTokens: 6, session: s });
    // the session holds the prompt and the generated tokens but the last
    assert.deepEqual(s.tokens, [...a.promptTokens, ...a.tokens.slice(0, -1)]);
    const text2 = "The little fox" + a.text + " Then the cat";
    let evaluated = 0;
    const real = s.eval.bind(s);
    s.eval = (ids, o) => { // count what the second call evaluates
      evaluated += ids.length;
      return real(ids, o);
    };
    const b = await generateText(model, text2, { maxTokens: 6, session: s });
    const fresh = await generateText(model, text2, { maxTokens: 6 });
    assert.deepEqual(b.tokens, fresh.tokens);
    assert.equal(b.text, fresh.text);
    // the session's tokens that begin the new prompt came from the cache (the first prompt and
    // the generated text, re-tokenized the same way); only the rest and the decode steps ran
    const before = [...a.promptTokens, ...a.tokens.slice(0, -1)];
    let common = 0;
    while (common < b.promptTokens.length - 1 && before[common] === b.promptTokens[common]) {
      common++;
    }
    assert.ok(common > a.promptTokens.length, `${common} tokens reused`);
    assert.equal(evaluated, b.promptTokens.length - common + (b.tokens.length - 1));
    // a different prompt drops the cache beyond the common prefix
    const c = await generateText(model, "A cat", { maxTokens: 3, session: s });
    const freshC = await generateText(model, "A cat", { maxTokens: 3 });
    assert.deepEqual(c.tokens, freshC.tokens);
    // the same prompt again: everything but its last token is reused
    const d = await generateText(model, "A cat", { maxTokens: 3, session: s });
    assert.deepEqual(d.tokens, freshC.tokens);
  } finally {
    s.dispose();
  }
});

Deno.test("prompt cache: a prompt longer than the session's context is a GenerationError", async () => {
  const s = new Session(model, { nCtx: 8 });
  try {
    await assert.rejects(
      generateText(model, "The little fox woke up early and went to the field.", { session: s }),
      (e: unknown) => e instanceof GenerationError && e.code === "context_full",
    );
  } finally {
    s.dispose();
  }
});
