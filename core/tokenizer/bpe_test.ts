/**
 * Byte-level BPE (`"gpt2"`) encodings hand-derived from llama.cpp's algorithm on
 * {@link tinyBpe}, its pre-tokenizer regexes, and the clean-up of decoded spaces.
 */

import assert from "node:assert/strict";
import { createTokenizer } from "./mod.ts";
import { cleanSpaces } from "./tokenizer.ts";
import { preTokenize, resolvePre } from "./pretokenize.ts";
import { B, tinyBpe } from "./fixtures_test_util.ts";

const tok = createTokenizer(tinyBpe());
const enc = (text: string, parseSpecial = false): number[] =>
  tok.encode(text, { addSpecial: false, parseSpecial });
const split = (pre: string, text: string): string[] => preTokenize(text, resolvePre(pre).regexes);

Deno.test("bpe: lowest rank merges first; ties go to the leftmost pair", () => {
  // a b c: (a,b) rank 2, (b,c) rank 1 → bc; then (a,bc) rank 3 → abc
  assert.deepEqual(enc("abc"), [B.abc]);
  // a a a: (a,a)@0 and (a,a)@1 both rank 0 → @0; (aa,a) has no merge
  assert.deepEqual(enc("aaa"), [B.aa, 0x61]);
  assert.deepEqual(enc("aaaa"), [B.aa, B.aa]);
  // " a" is one word; Ġ a → Ġa (rank 4)
  assert.deepEqual(enc(" a"), [B.Ga]);
  // one word "abcabc": a b c a b c: bc@1, bc@4 (rank 1) → a bc a bc → (a,bc)@0, (a,bc)@3 rank 3 → abc abc
  assert.deepEqual(enc("abcabc"), [B.abc, B.abc]);
});

Deno.test("bpe: a final symbol that is not a token falls back to one-byte tokens", () => {
  // merge "x y" exists but "xy" is no token: its bytes 'x', 'y' are
  assert.deepEqual(enc("xy"), [0x78, 0x79]);
  // merge "Ġ Ġ" exists but "ĠĠ" is no token; Ġ is two UTF-8 bytes (C4 A0) that have no
  // one-byte tokens, so llama.cpp emits nothing for it
  assert.deepEqual(enc("  "), []);
  assert.deepEqual(enc("a  "), [0x61]);
  // a single space has no merge partner and is its own token Ġ (byte 0x20)
  assert.deepEqual(enc("a "), [0x61, 0x20]);
});

Deno.test("bpe: llama3 ignore_merges emits a whole-word token directly", () => {
  // "ca" is a token without a "c a" merge
  assert.deepEqual(enc("ca"), [0x63, 0x61]);
  const l3 = createTokenizer(tinyBpe({ pre: "llama3", addBos: undefined }));
  assert.equal(l3.addBos, true); // llama3 turns add_bos on unless the key says otherwise
  assert.deepEqual(l3.encode("ca", { addSpecial: false }), [B.ca]);
  assert.deepEqual(l3.encode("ca"), [B.EOT, B.ca]);
  const l3NoBos = createTokenizer(tinyBpe({ pre: "llama-bpe", addBos: false }));
  assert.deepEqual(l3NoBos.encode("ca"), [B.ca]);
});

Deno.test("bpe: special tokens (CONTROL with parseSpecial, USER_DEFINED always)", () => {
  assert.deepEqual(enc("a<|endoftext|>b", true), [0x61, B.EOT, 0x62]);
  assert.equal(enc("a<|endoftext|>b").includes(B.EOT), false);
  assert.deepEqual(enc("<|im_end|><|endoftext|>", true), [B.IM_END, B.EOT]);
  assert.deepEqual(enc("a@@b"), [0x61, B.AT, 0x62]);
  assert.deepEqual(enc("@@@"), [B.AT, 0x40]);
});

Deno.test("bpe: BOS, EOS, EOG and llama.cpp's default ids", () => {
  assert.equal(tok.addBos, false);
  assert.deepEqual(tok.encode("a"), [0x61]);
  assert.deepEqual(tok.encode("a", { addBos: true, addEos: true }), [B.EOT, 0x61, B.EOT]);
  assert.deepEqual(tok.eogIds, [B.EOT, B.IM_END]);
  assert.equal(tok.eotId, B.EOT); // detected by text
  assert.equal(tok.isEog(B.IM_END), true);
  assert.equal(tok.isEog(0x61), false);
  // without ids, llama.cpp uses bos = eos = 11 for BPE vocabularies
  const dflt = createTokenizer(tinyBpe({ bosId: undefined, eosId: undefined, addBos: undefined }));
  assert.equal(dflt.bosId, 11);
  assert.equal(dflt.eosId, 11);
  assert.equal(dflt.addBos, false);
  assert.equal(dflt.isEog(11), true);
});

Deno.test("bpe: decode maps byte-level chars back to bytes", () => {
  assert.equal(tok.decode([B.Ga, B.abc]), " aabc");
  assert.equal(tok.decode([B.EOT, 0x61]), "a");
  assert.equal(tok.decode([B.EOT, 0x61], { special: true }), "<|endoftext|>a");
  assert.equal(tok.decode([B.AT]), "@@");
  assert.equal(tok.decode([0xc3, 0xa9]), "é");
  assert.equal(tok.decode([0xc3]), "\ufffd");
  assert.deepEqual([...tok.tokenBytes(0x20)], [0x20]); // "Ġ"
  assert.equal(tok.tokenText(0x20), "\u0120");
  // a NORMAL token outside the byte-level alphabet renders like llama_decode_text
  const odd = createTokenizer(
    tinyBpe({ tokens: [...tinyBpe().tokens, "a\u20ac"], tokenTypes: undefined }),
  );
  assert.equal(odd.decode([265]), "a[UNK_BYTE_0xe282aca\u20ac]");
  // add_space_prefix (rare for BPE) strips the first piece's space on decode only
  const pfx = createTokenizer(tinyBpe({ addSpacePrefix: true }));
  assert.deepEqual(pfx.encode("a", { addSpecial: false }), [0x61]);
  assert.equal(pfx.decode([B.Ga, B.Ga]), "a a");
});

Deno.test("pre-tokenizers split like llama.cpp's regexes", () => {
  const t = "Hello world's 123  x\n\n y";
  assert.deepEqual(split("qwen2", t), [
    "Hello",
    " world",
    "'s",
    " ",
    "1",
    "2",
    "3",
    " ",
    " x",
    "\n\n",
    " y",
  ]);
  assert.deepEqual(split("llama3", t), [
    "Hello",
    " world",
    "'s",
    " ",
    "123",
    " ",
    " x",
    "\n\n",
    " y",
  ]);
  assert.deepEqual(split("gpt-2", t), ["Hello", " world", "'s", " 123", " ", " x", "\n\n", " y"]);
  assert.deepEqual(split("olmo", t), split("gpt-2", t));
  // contractions: case-insensitive for qwen2/llama3, case-sensitive for gpt-2
  assert.deepEqual(split("qwen2", "IT'S"), ["IT", "'S"]);
  assert.deepEqual(split("gpt-2", "IT'S"), ["IT", "'", "S"]);
  assert.deepEqual(split("llama3", "12345"), ["123", "45"]);
  assert.deepEqual(split("gpt-2", "a\tb"), ["a", "\t", "b"]); // unmatched text is kept
  assert.deepEqual(split("gpt-2", "a  "), ["a", "  "]);
  // default: punctuation first, then gpt-2, then \p{N}+, then 3-digit groups
  assert.deepEqual(split("default", "a+b=1234!"), ["a", "+", "b", "=", "123", "4", "!"]);
  assert.deepEqual(split("", "x y"), ["x", " y"]); // missing pre = default
  // whitespace is Unicode White_Space: U+0085 is, U+FEFF is not
  assert.deepEqual(split("qwen2", "\u0085\u0085x"), ["\u0085", "\u0085x"]);
  assert.deepEqual(split("qwen2", "x\ufeff y"), ["x", "\ufeff", " y"]);
  assert.deepEqual(split("qwen2", "a\r\n\r\nb"), ["a", "\r\n\r\n", "b"]);
  assert.deepEqual(split("qwen2", "你好，世界。"), ["你好", "，世界", "。"]);
  assert.deepEqual(split("qwen2", ""), []);
  // Ling 2.0 (bailingmoe2): llama.cpp's regex differs from qwen2's only in `\s*[\r\n]`, which
  // matches the same runs (cross-checked against llama.cpp's tokenizer on 413 strings)
  for (const s of [t, "a\n \n  b", "x \n\n\n", "IT'S we'll", "\u0085\u0085x", "1 2\r\n\r\n"]) {
    assert.deepEqual(split("bailingmoe2", s), split("qwen2", s));
  }
  assert.deepEqual(split("bailingmoe2", "a\n \n  b"), ["a", "\n \n", " ", " b"]);
});

Deno.test("cleanSpaces mirrors llama.cpp's clean_up_tokenization_spaces", () => {
  assert.equal(cleanSpaces("Hello , world . Yes ! No ?"), "Hello, world. Yes! No?");
  assert.equal(cleanSpaces("  ."), " .");
  assert.equal(cleanSpaces("a ' b"), "a'b");
  assert.equal(cleanSpaces(" ' ' x"), "'' x");
  assert.equal(cleanSpaces("it 's I 'm we 're they 've"), "it's I'm we're they've");
  assert.equal(cleanSpaces("don 't I 'll he 'd"), "don 't I 'll he 'd");
  assert.equal(cleanSpaces(" 's"), "'s");
  assert.equal(cleanSpaces("x '"), "x '");
  // gpt-2 pre turns it on, qwen2 off
  const g = createTokenizer(tinyBpe({ pre: "gpt-2" }));
  assert.equal(g.cleanSpaces, true);
  assert.equal(tok.cleanSpaces, false);
  assert.equal(g.decode(g.encode("a .")), "a.");
  assert.equal(tok.decode(tok.encode("a .")), "a .");
});
