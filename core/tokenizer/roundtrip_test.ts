/**
 * Round-trip properties on the test vocabularies, with arbitrary Unicode (full code
 * point range incl. lone surrogates, emoji, CJK, control characters, runs of spaces
 * and newlines).
 *
 * What round-trips exactly, by llama.cpp's rules (`wf(t)` = `t.toWellFormed()`: the
 * encoder sees UTF-8, so a lone surrogate is U+FFFD):
 * - SPM with add_space_prefix: `decode(encode(t, {addBos: false})) == wf(t)` with
 *   every U+2581 read back as a space (SPM escapes ' ' to U+2581 before merging, and
 *   decoding maps U+2581 back to ' '). The prefix space the encoder adds is the one
 *   decode strips from the first piece. With BOS (the default) the strip is spent on
 *   the BOS token, so the result is `" " + that` for non-empty `t`.
 * - BPE `qwen2` (clean_spaces off): `decode(encode(t)) == wf(t)`.
 * - BPE `gpt-2`, `llama3` (clean_spaces on): `decode(encode(t)) == cleanSpaces(wf(t))`.
 */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- no import map entry yet; see the integrator note
import fc from "npm:fast-check@4";
import { buildTestVocab, cleanSpaces, createTokenizer, type Tokenizer } from "./mod.ts";
import { textArb } from "./fixtures_test_util.ts";

const wf = (t: string): string => t.toWellFormed();
const valid = (tok: Tokenizer, ids: number[]): boolean =>
  ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize);

for (const size of [300, 512, 1000]) {
  const spm = createTokenizer(buildTestVocab("llama", { size }));
  Deno.test(`round trip: SPM test vocab (${size}) returns the text, ▁ read as space`, () => {
    fc.assert(
      fc.property(textArb, (t) => {
        const ids = spm.encode(t, { addBos: false });
        assert.ok(valid(spm, ids));
        assert.equal(spm.decode(ids), wf(t).replaceAll("\u2581", " "));
      }),
      { numRuns: 300 },
    );
  });

  for (const pre of ["qwen2", "gpt-2", "llama3"]) {
    const bpe = createTokenizer(buildTestVocab("gpt2", { size, pre }));
    Deno.test(`round trip: gpt2 test vocab (${pre}, ${size})`, () => {
      fc.assert(
        fc.property(textArb, (t) => {
          const ids = bpe.encode(t);
          assert.ok(valid(bpe, ids));
          const expected = bpe.cleanSpaces ? cleanSpaces(wf(t)) : wf(t);
          assert.equal(bpe.decode(ids), expected);
        }),
        { numRuns: 300 },
      );
    });
  }
}

Deno.test("round trip: SPM with BOS keeps the prefix space (llama_detokenize)", () => {
  const spm = createTokenizer(buildTestVocab("llama"));
  fc.assert(
    fc.property(textArb, (t) => {
      const ids = spm.encode(t);
      assert.equal(ids[0], spm.bosId);
      const body = wf(t).replaceAll("\u2581", " ");
      const expected = t === "" ? "" : " " + body;
      assert.equal(spm.decode(ids), expected);
      assert.equal(spm.decode(ids, { removeSpecial: true }), expected);
      assert.equal(spm.decode(ids.slice(1)), body);
    }),
  );
});

Deno.test("round trip: parsed special tokens render back with special = true (qwen2)", () => {
  const bpe = createTokenizer(buildTestVocab("gpt2"));
  fc.assert(
    fc.property(
      textArb,
      fc.constantFrom("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
      (t, sp) => {
        const text = t + sp + t;
        const ids = bpe.encode(text, { parseSpecial: true });
        assert.ok(ids.includes(bpe.encode(sp, { parseSpecial: true })[0]));
        assert.equal(bpe.decode(ids, { special: true }), wf(text));
        assert.equal(bpe.decode(ids), wf(text).replace(/<\|(?:endoftext|im_start|im_end)\|>/g, ""));
      },
    ),
  );
});

Deno.test("encoding speed: 10 KB of text in well under 100 ms on every test vocab", () => {
  const text = (
    "Mixture-of-experts routes each token to a few experts. 混合专家 🙂 café, naïve; " +
    "def f(x):\n    return x ** 2  # 1234567\n"
  ).repeat(120).slice(0, 10240);
  const toks = [
    createTokenizer(buildTestVocab("llama")),
    createTokenizer(buildTestVocab("gpt2", { pre: "qwen2" })),
    createTokenizer(buildTestVocab("gpt2", { pre: "gpt-2" })),
    createTokenizer(buildTestVocab("gpt2", { pre: "llama3" })),
  ];
  for (const tok of toks) {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      tok.encode(text);
      best = Math.min(best, performance.now() - t0);
    }
    assert.ok(best < 100, `${tok.model}/${tok.pre}: ${best.toFixed(1)} ms`);
  }
});
