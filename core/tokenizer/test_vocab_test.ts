/** The generated test vocabularies and their GGUF metadata entries. */

import assert from "node:assert/strict";
import {
  buildTestVocab,
  createTokenizer,
  GPT2_TEST_SPECIALS,
  TokenType,
  type VocabSpec,
  vocabToGgufKeys,
} from "./mod.ts";
import { BYTE_TO_CHAR } from "./unicode.ts";

/** FNV-1a over the token texts, types and scores: pins the generated vocabularies. */
function fingerprint(spec: VocabSpec): string {
  let h = 0x811c9dc5;
  const mix = (s: string): void => {
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  };
  spec.tokens.forEach((t, i) =>
    mix(`${t}\u0000${spec.tokenTypes?.[i]}\u0000${spec.scores?.[i] ?? ""}\u0001`)
  );
  for (const m of spec.merges ?? []) mix(m);
  return (h >>> 0).toString(16).padStart(8, "0");
}

Deno.test("test vocab: exact sizes, unique tokens, loadable", () => {
  for (const size of [260, 300, 512, 1000, 2048, 5000]) {
    const spec = buildTestVocab("llama", { size });
    assert.equal(spec.tokens.length, size);
    assert.equal(new Set(spec.tokens).size, size);
    assert.equal(createTokenizer(spec).vocabSize, size);
  }
  for (const size of [259, 300, 512, 1000, 2048, 5000]) {
    const spec = buildTestVocab("gpt2", { size });
    assert.equal(spec.tokens.length, size);
    assert.equal(new Set(spec.tokens).size, size);
    assert.equal(createTokenizer(spec).vocabSize, size);
  }
  assert.equal(buildTestVocab("llama").tokens.length, 512);
  assert.equal(buildTestVocab("gpt2").tokens.length, 512);
});

Deno.test("test vocab: llama layout (<unk> <s> </s>, 256 byte tokens, ▁ pieces with scores)", () => {
  const spec = buildTestVocab("llama", { size: 1000 });
  const types = spec.tokenTypes!;
  const scores = spec.scores!;
  assert.deepEqual(spec.tokens.slice(0, 3), ["<unk>", "<s>", "</s>"]);
  assert.deepEqual([types[0], types[1], types[2]], [
    TokenType.UNKNOWN,
    TokenType.CONTROL,
    TokenType.CONTROL,
  ]);
  for (let b = 0; b < 256; b++) {
    assert.equal(spec.tokens[3 + b], `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    assert.equal(types[3 + b], TokenType.BYTE);
  }
  assert.equal(spec.tokens[259], "\u2581");
  const pieces = spec.tokens.slice(259);
  assert.ok(pieces.every((_, i) => types[259 + i] === TokenType.NORMAL));
  assert.ok(
    pieces.filter((p) => p.startsWith("\u2581") && p.length > 3).length > 50,
    "▁-prefixed words",
  );
  for (let i = 260; i < spec.tokens.length; i++) assert.ok(scores[i] < scores[i - 1]);
  assert.equal(scores.length, 1000);
  const tok = createTokenizer(spec);
  assert.deepEqual([tok.bosId, tok.eosId, tok.unkId, tok.addBos, tok.addSpacePrefix], [
    1,
    2,
    0,
    true,
    true,
  ]);
  assert.deepEqual(tok.eogIds, [2]);
  // words of the corpus compress
  assert.ok(tok.encode("the experts", { addBos: false }).length < "the experts".length);
});

Deno.test("test vocab: gpt2 layout (byte alphabet, consistent merges, CONTROL specials)", () => {
  for (const pre of ["qwen2", "gpt-2", "olmo", "llama3"]) {
    const spec = buildTestVocab("gpt2", { size: 1000, pre });
    assert.equal(spec.pre, pre);
    assert.deepEqual(spec.tokens.slice(0, 256), BYTE_TO_CHAR);
    const have = new Set(spec.tokens);
    for (const m of spec.merges!) {
      const [a, b] = m.split(" ");
      assert.ok(have.has(a) && have.has(b) && have.has(a + b), `merge ${m}`);
      assert.equal(m.split(" ").length, 2);
    }
    assert.ok(spec.merges!.length >= 1000 - 256 - 3);
    const n = spec.tokens.length;
    assert.deepEqual(spec.tokens.slice(n - 3), GPT2_TEST_SPECIALS);
    const types = spec.tokenTypes!;
    for (let i = 0; i < n; i++) {
      assert.equal(types[i], i >= n - 3 ? TokenType.CONTROL : TokenType.NORMAL);
    }
    const tok = createTokenizer(spec);
    assert.equal(tok.bosId, n - 3);
    assert.equal(tok.eosId, n - 3);
    assert.equal(tok.padId, n - 3);
    assert.deepEqual(tok.eogIds, [n - 3, n - 1]); // <|endoftext|>, <|im_end|>
    assert.equal(tok.addBos, false); // add_bos_token is written as false, even for llama3
  }
  assert.equal(buildTestVocab("gpt2").pre, "qwen2");
});

Deno.test("test vocab: deterministic, pinned, and returned as independent copies", () => {
  const a = buildTestVocab("gpt2", { size: 300, pre: "gpt-2" });
  (a.tokenTypes as Int32Array)[0] = 99;
  a.tokens[0] = "changed";
  const b = buildTestVocab("gpt2", { size: 300, pre: "gpt-2" });
  assert.equal(b.tokens[0], BYTE_TO_CHAR[0]);
  assert.equal(b.tokenTypes![0], TokenType.NORMAL);
  // Generated test models depend on these exact vocabularies; change them on purpose only.
  assert.deepEqual(
    {
      llama512: fingerprint(buildTestVocab("llama")),
      llama300: fingerprint(buildTestVocab("llama", { size: 300 })),
      gpt2qwen512: fingerprint(buildTestVocab("gpt2")),
      gpt2gpt2_1000: fingerprint(buildTestVocab("gpt2", { size: 1000, pre: "gpt-2" })),
    },
    PINNED,
  );
});

const PINNED = {
  llama512: "36863e62",
  llama300: "39d2241c",
  gpt2qwen512: "e5f66d63",
  gpt2gpt2_1000: "1e7d0875",
};

Deno.test("vocabToGgufKeys: tokenizer.ggml.* entries in a neutral shape", () => {
  const spm = buildTestVocab("llama", { size: 300 });
  const keys = vocabToGgufKeys(spm);
  const m = new Map(keys);
  assert.deepEqual(keys.map(([k]) => k), [
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
  ]);
  assert.deepEqual(m.get("tokenizer.ggml.model"), { type: "string", value: "llama" });
  assert.deepEqual(m.get("tokenizer.ggml.tokens"), { type: "string[]", value: spm.tokens });
  assert.deepEqual(m.get("tokenizer.ggml.scores"), {
    type: "f32[]",
    value: Float32Array.from(spm.scores!),
  });
  assert.deepEqual(m.get("tokenizer.ggml.token_type"), {
    type: "i32[]",
    value: Int32Array.from(spm.tokenTypes!),
  });
  assert.deepEqual(m.get("tokenizer.ggml.bos_token_id"), { type: "u32", value: 1 });
  assert.deepEqual(m.get("tokenizer.ggml.add_bos_token"), { type: "bool", value: true });

  const bpe = buildTestVocab("gpt2", { size: 300 });
  const g = new Map(vocabToGgufKeys(bpe));
  assert.deepEqual(g.get("tokenizer.ggml.pre"), { type: "string", value: "qwen2" });
  assert.deepEqual(g.get("tokenizer.ggml.merges"), { type: "string[]", value: bpe.merges });
  assert.deepEqual(g.get("tokenizer.ggml.padding_token_id"), { type: "u32", value: 297 });
  assert.equal(g.has("tokenizer.ggml.scores"), false);
  assert.equal(g.has("tokenizer.ggml.unknown_token_id"), false);
  // the entries describe the same tokenizer
  assert.deepEqual(
    createTokenizer({ ...bpe, eotId: 299 }).encode("hello"),
    createTokenizer(bpe).encode("hello"),
  );
  assert.deepEqual(
    new Map(vocabToGgufKeys({ ...bpe, eotId: 299 })).get("tokenizer.ggml.eot_token_id"),
    {
      type: "u32",
      value: 299,
    },
  );
});
