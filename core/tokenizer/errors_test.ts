/** Bad vocabulary specs and bad calls raise TokenizerError with a code. */

import assert from "node:assert/strict";
import { TokenizerError } from "../errors.ts";
import { buildTestVocab, createTokenizer, type VocabSpec, vocabToGgufKeys } from "./mod.ts";
import { tinyBpe, tinySpm } from "./fixtures_test_util.ts";

function throwsCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TokenizerError, `expected TokenizerError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

const bad = (spec: unknown): () => unknown => () => createTokenizer(spec as VocabSpec);

Deno.test("errors: model, token list and arrays", () => {
  throwsCode(bad(null), "bad_spec");
  throwsCode(bad({ ...tinySpm(), model: "bert" }), "unknown_model", /bert/);
  throwsCode(bad({ model: "llama", tokens: [] }), "empty_vocab");
  throwsCode(bad({ model: "llama", tokens: "abc" }), "bad_tokens");
  throwsCode(bad({ model: "llama", tokens: ["<unk>", 7] }), "bad_tokens", /tokens\[1\]/);
  throwsCode(bad({ model: "llama", tokens: ["a", "b", "a"] }), "duplicate_token", /ids 0 and 2/);
  throwsCode(bad({ ...tinySpm(), scores: [0, 1] }), "bad_scores", /2 entries/);
  throwsCode(bad({ ...tinySpm(), scores: tinySpm().tokens.map(() => NaN) }), "bad_scores");
  throwsCode(bad({ ...tinySpm(), tokenTypes: [1] }), "bad_token_types");
  throwsCode(bad({ ...tinySpm(), tokenTypes: tinySpm().tokens.map(() => 1.5) }), "bad_token_types");
});

Deno.test("errors: gpt2 needs merges and a known pre-tokenizer", () => {
  throwsCode(bad({ ...tinyBpe(), merges: undefined }), "missing_merges");
  throwsCode(bad({ ...tinyBpe(), merges: ["a b", 3] }), "bad_merges", /merges\[1\]/);
  throwsCode(bad({ ...tinyBpe(), pre: "deepseek-llm" }), "unknown_pre", /deepseek-llm/);
  // llama.cpp quirks that are accepted: merges without a separator, empty tokens
  const ok = createTokenizer({ ...tinyBpe(), merges: ["ab", "a b"] });
  assert.equal(ok.vocabSize, tinyBpe().tokens.length);
  const empty = createTokenizer({ model: "llama", tokens: ["<unk>", "<s>", "</s>", ""] });
  assert.equal(empty.tokenText(3), "[EMPTY_3]");
});

Deno.test("errors: special ids must be token ids; add_bos/add_eos need the token", () => {
  const n = tinySpm().tokens.length;
  throwsCode(bad({ ...tinySpm(), bosId: n }), "bad_token_id", /bosId/);
  throwsCode(bad({ ...tinySpm(), eosId: -1 }), "bad_token_id", /eosId/);
  throwsCode(bad({ ...tinySpm(), unkId: 0.5 }), "bad_token_id", /unkId/);
  throwsCode(bad({ ...tinyBpe(), padId: 1e9 }), "bad_token_id", /padId/);
  throwsCode(bad({ ...tinyBpe(), eotId: n + 100 }), "bad_token_id", /eotId/);
  // defaults out of range are disabled, as in llama.cpp: bos 1 does not exist here
  throwsCode(bad({ model: "llama", tokens: ["<unk>"] }), "missing_bos");
  const noBos = createTokenizer({ model: "llama", tokens: ["<unk>"], addBos: false });
  assert.equal(noBos.bosId, null);
  assert.equal(noBos.eosId, null);
  throwsCode(() => noBos.encode("x", { addBos: true }), "missing_bos");
  throwsCode(() => noBos.encode("x", { addEos: true }), "missing_eos");
  throwsCode(bad({ model: "gpt2", tokens: ["a"], merges: [], addEos: true }), "missing_eos");
});

Deno.test("errors: bad ids and inputs at call time", () => {
  const tok = createTokenizer(tinyBpe());
  throwsCode(() => tok.decode([0, tok.vocabSize]), "bad_token_id", /265/);
  throwsCode(() => tok.decode([-1]), "bad_token_id");
  throwsCode(() => tok.decode([1.5]), "bad_token_id");
  throwsCode(() => tok.tokenText(NaN), "bad_token_id");
  throwsCode(() => tok.tokenBytes(1e6), "bad_token_id");
  throwsCode(() => tok.tokenAttr(-3), "bad_token_id");
  throwsCode(() => tok.encode(42 as unknown as string), "bad_text");
});

Deno.test("errors: test vocab sizes and GGUF key export validate", () => {
  throwsCode(() => buildTestVocab("llama", { size: 259 }), "bad_size", /260/);
  throwsCode(() => buildTestVocab("gpt2", { size: 100 }), "bad_size", /259/);
  throwsCode(() => buildTestVocab("gpt2", { size: 300.5 }), "bad_size");
  throwsCode(() => buildTestVocab("bert" as "llama"), "unknown_model");
  throwsCode(() => buildTestVocab("gpt2", { pre: "nope" }), "unknown_pre");
  throwsCode(() => vocabToGgufKeys({ model: "llama", tokens: ["a", "a"] }), "duplicate_token");
});
