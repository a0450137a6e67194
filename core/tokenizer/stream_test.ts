/** StreamDecoder: incremental output equals one-shot `decode`. */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- no import map entry yet; see the integrator note
import fc from "npm:fast-check@4";
import { buildTestVocab, createTokenizer, StreamDecoder, type Tokenizer } from "./mod.ts";
import { TokenizerError } from "../errors.ts";
import { B, S, spmByte, textArb, tinyBpe, tinySpm } from "./fixtures_test_util.ts";

function streamAll(
  tok: Tokenizer,
  ids: number[],
  special = false,
): { parts: string[]; text: string } {
  const dec = new StreamDecoder(tok, { special });
  const parts = ids.map((id) => dec.push(id));
  parts.push(dec.flush());
  return { parts, text: parts.join("") };
}

const toks: [string, Tokenizer][] = [
  ["llama", createTokenizer(buildTestVocab("llama"))],
  ["gpt2/qwen2", createTokenizer(buildTestVocab("gpt2", { pre: "qwen2" }))],
  ["gpt2/gpt-2", createTokenizer(buildTestVocab("gpt2", { pre: "gpt-2" }))],
  ["gpt2/llama3", createTokenizer(buildTestVocab("gpt2", { pre: "llama3" }))],
];

for (const [name, tok] of toks) {
  Deno.test(`stream: encoded text streams to the one-shot decode (${name})`, () => {
    fc.assert(
      fc.property(textArb, fc.boolean(), (t, special) => {
        const ids = tok.encode(t, { parseSpecial: special });
        assert.equal(streamAll(tok, ids, special).text, tok.decode(ids, { special }));
      }),
      { numRuns: 300 },
    );
  });

  Deno.test(`stream: arbitrary id sequences (split UTF-8, specials) match decode (${name})`, () => {
    const id = fc.integer({ min: 0, max: tok.vocabSize - 1 });
    fc.assert(
      fc.property(fc.array(id, { maxLength: 24 }), fc.boolean(), (ids, special) => {
        assert.equal(streamAll(tok, ids, special).text, tok.decode(ids, { special }));
      }),
      { numRuns: 300 },
    );
  });
}

Deno.test("stream: multi-byte characters are held until complete", () => {
  const tok = createTokenizer(tinySpm());
  const dec = new StreamDecoder(tok);
  assert.equal(dec.push(S.SPa), "a"); // first piece: leading space stripped
  assert.equal(dec.push(spmByte(0xf0)), "");
  assert.equal(dec.push(spmByte(0x9f)), "");
  assert.equal(dec.push(spmByte(0x99)), "");
  assert.equal(dec.push(spmByte(0x82)), "🙂");
  assert.equal(dec.push(S.SPa), " a");
  assert.equal(dec.push(spmByte(0xc3)), "");
  assert.equal(dec.flush(), "\ufffd"); // dangling lead byte
  // an invalid continuation shows up as soon as it is known
  assert.equal(dec.push(spmByte(0xc3)), "");
  assert.equal(dec.push(S.a), "\ufffda");
  // byte-level BPE: "é" as two byte tokens
  const bpe = createTokenizer(tinyBpe());
  const d2 = new StreamDecoder(bpe);
  assert.deepEqual([d2.push(0xc3), d2.push(0xa9), d2.flush()], ["", "é", ""]);
});

Deno.test("stream: leading-space strip and special tokens", () => {
  const tok = createTokenizer(tinySpm());
  const d = new StreamDecoder(tok);
  assert.equal(d.push(1), ""); // BOS renders empty and spends the strip
  assert.equal(d.push(S.SPa), " a");
  const cont = new StreamDecoder(tok, { stripLeadingSpace: false }); // continuing a prompt
  assert.equal(cont.push(S.SPa), " a");
  const sp = new StreamDecoder(tok, { special: true });
  assert.equal(sp.push(1) + sp.push(S.SPa) + sp.push(2), "<s> a</s>");
  sp.reset();
  assert.equal(sp.push(S.SPa), "a"); // reset starts a new stream
});

Deno.test("stream: clean_spaces holds a space until the next characters are known", () => {
  const tok = createTokenizer(tinyBpe({ pre: "gpt-2" }));
  const d = new StreamDecoder(tok);
  assert.equal(d.push(0x61), "a");
  assert.equal(d.push(0x20), ""); // a following "." would remove this space
  assert.equal(d.push(0x2e), ""); // held until 4 characters follow the last space
  assert.deepEqual([0x20, 0x62, 0x63, 0x64].map((id) => d.push(id)), ["", "", "", ""]);
  assert.equal(d.push(0x65), ". bcde");
  assert.equal(d.flush(), "");
  const { parts, text } = streamAll(tok, tok.encode("it 's a test , ok ? yes ' no ' ok"));
  assert.equal(text, "it's a test, ok? yes'no'ok");
  assert.ok(parts.length > 1);
});

Deno.test("stream: clean_spaces output equals decode for punctuation/apostrophe soups", () => {
  const tok = createTokenizer(buildTestVocab("gpt2", { pre: "gpt-2" }));
  // test vocab: id b is the byte-level char of byte b
  const byte = fc.constantFrom(..." 'smrev.,?!a\n".split("").map((c) => c.charCodeAt(0)));
  fc.assert(
    fc.property(fc.array(byte, { maxLength: 30 }), (ids) => {
      assert.equal(streamAll(tok, ids).text, tok.decode(ids));
    }),
    { numRuns: 1000 },
  );
});

Deno.test("stream: bad ids are TokenizerErrors", () => {
  const d = new StreamDecoder(createTokenizer(tinyBpe()));
  assert.throws(
    () => d.push(B.AT + 1),
    (e: unknown) => e instanceof TokenizerError && e.code === "bad_token_id",
  );
});

Deno.test("stream: a continuation keeps the first piece's space (llama.cpp token_to_piece)", () => {
  const tok = createTokenizer(tinySpm());
  const cont = StreamDecoder.forContinuation(tok, [1, S.SPa]);
  assert.equal(cont.push(S.SPa) + cont.flush(), " a");
  // with nothing before it, it is a whole-sequence decode: the strip applies
  const fresh = StreamDecoder.forContinuation(tok, []);
  assert.equal(fresh.push(S.SPa) + fresh.flush(), "a");
  // property: decode(p ++ g) = decode(p) + continuation(p, g) when p ends on a UTF-8 boundary
  for (const [name, t] of toks) {
    fc.assert(
      fc.property(textArb, textArb, fc.boolean(), (a, b, special) => {
        const p = t.encode(a, { parseSpecial: special });
        const g = t.encode(b, { parseSpecial: special, addBos: false });
        if (p.length === 0 || t.cleanSpaces) return;
        const d = StreamDecoder.forContinuation(t, p, { special });
        const got = g.map((id) => d.push(id)).join("") + d.flush();
        assert.equal(t.decode(p, { special }) + got, t.decode([...p, ...g], { special }), name);
      }),
      { numRuns: 200 },
    );
  }
});
