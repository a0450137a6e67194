/**
 * SPM (`"llama"`) encodings hand-derived from llama.cpp's algorithm on {@link tinySpm}.
 * Notation in comments: symbols separated by spaces, `bigram(score)@left`.
 */

import assert from "node:assert/strict";
import { TokenizerError } from "../errors.ts";
import { createTokenizer } from "./mod.ts";
import { B, S, spmByte, tinyBpe, tinySpm } from "./fixtures_test_util.ts";

const tok = createTokenizer(tinySpm());
const enc = (text: string, parseSpecial = false): number[] =>
  tok.encode(text, { addSpecial: false, parseSpecial });

Deno.test("fixtures: the tiny vocabularies have the documented ids", () => {
  const s = tinySpm();
  assert.equal(s.tokens[S.SP], "\u2581");
  assert.equal(s.tokens[S.SPabc], "\u2581abc");
  assert.equal(s.tokens[S.AT], "@@");
  assert.equal(s.tokens[spmByte(0xc3)], "<0xC3>");
  const b = tinyBpe();
  assert.equal(b.tokens[B.ca], "ca");
  assert.equal(b.tokens[B.EOT], "<|endoftext|>");
  assert.equal(b.tokens.length, B.AT + 1);
});

Deno.test("spm: defaults follow llama.cpp (bos 1, eos 2, unk 0, add_bos, space prefix)", () => {
  assert.equal(tok.model, "llama");
  assert.equal(tok.pre, null);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.unkId, 0);
  assert.equal(tok.addBos, true);
  assert.equal(tok.addEos, false);
  assert.equal(tok.addSpacePrefix, true);
  assert.equal(tok.cleanSpaces, false);
  assert.deepEqual(tok.eogIds, [2]); // "</s>" is EOS
});

Deno.test("spm: highest score merges first, merged symbols keep merging", () => {
  // "▁abc": ▁a(-4)@0 ab(-3)@1 bc(-2)@2 → bc; then abc(-1)@1 → abc; then ▁abc(-0.5)@0
  assert.deepEqual(enc("abc"), [S.SPabc]);
  // "▁ab": ▁a(-4)@0 ab(-3)@1 → ab wins; "▁ab" is no token
  assert.deepEqual(enc("ab"), [S.SP, S.ab]);
  // "▁ab▁c": ab(-3) merges; the queued ▁a(-4)@0 is then stale (right side grew)
  assert.deepEqual(enc("ab c"), [S.SP, S.ab, S.SP, S.c]);
  // "▁aaa": ▁a(-4)@0 beats aa(-5)@1, aa(-5)@2; aa@1 is stale, aa@2 merges
  assert.deepEqual(enc("aaa"), [S.SPa, S.aa]);
});

Deno.test("spm: equal scores go to the leftmost bigram", () => {
  const noPrefix = createTokenizer(tinySpm({ addSpacePrefix: false }));
  // "aaa": aa(-5)@0 and aa(-5)@1 tie → @0
  assert.deepEqual(noPrefix.encode("aaa", { addSpecial: false }), [S.aa, S.a]);
  // "aaaa": aa@0 merges, aa@1 is stale, aa@2 merges
  assert.deepEqual(noPrefix.encode("aaaa", { addSpecial: false }), [S.aa, S.aa]);
  // no scores at all: every bigram scores 0, so the leftmost always wins
  const flat = createTokenizer(tinySpm({ scores: undefined }));
  // "▁ab": ▁a@0 beats ab@1
  assert.deepEqual(flat.encode("ab", { addSpecial: false }), [S.SPa, S.b]);
  // "▁abc": ▁a@0, then bc@2, then ▁abc = (▁a, bc)@0
  assert.deepEqual(flat.encode("abc", { addSpecial: false }), [S.SPabc]);
});

Deno.test("spm: unknown characters fall back to <0xXX> byte tokens, one per UTF-8 byte", () => {
  assert.deepEqual(enc("é"), [S.SP, spmByte(0xc3), spmByte(0xa9)]);
  assert.deepEqual(enc("a🙂"), [S.SPa, spmByte(0xf0), spmByte(0x9f), spmByte(0x99), spmByte(0x82)]);
  assert.deepEqual(enc("\n"), [S.SP, spmByte(0x0a)]);
  // a lone surrogate is encoded as U+FFFD (EF BF BD)
  assert.deepEqual(enc("\ud800"), [S.SP, spmByte(0xef), spmByte(0xbf), spmByte(0xbd)]);
});

Deno.test("spm: spaces become ▁ and every raw fragment after a special token gets the prefix", () => {
  assert.deepEqual(enc(" a"), [S.SP, S.SPa]);
  assert.deepEqual(enc("a  a"), [S.SPa, S.SP, S.SPa]);
  assert.deepEqual(enc(""), []);
  // "@@" is USER_DEFINED: split out even without parseSpecial; "b" then gets "▁"
  assert.deepEqual(enc("a@@b"), [S.SPa, S.AT, S.SP, S.b]);
  assert.deepEqual(enc("@@"), [S.AT]);
  const noPrefix = createTokenizer(tinySpm({ addSpacePrefix: false }));
  assert.deepEqual(noPrefix.encode("a@@b", { addSpecial: false }), [S.a, S.AT, S.b]);
});

Deno.test("spm: CONTROL and UNKNOWN texts are parsed only with parseSpecial", () => {
  // "▁<s>a": no bigram is a token; "<", "s", ">" are no tokens → bytes
  assert.deepEqual(enc("<s>a"), [S.SP, spmByte(0x3c), spmByte(0x73), spmByte(0x3e), S.a]);
  assert.deepEqual(enc("<s>a", true), [1, S.SPa]);
  assert.deepEqual(enc("a</s>", true), [S.SPa, 2]);
  assert.deepEqual(enc("<unk>", true), [0]);
  assert.equal(enc("<unk>").includes(0), false);
  // longest special first: "</s>" is not broken up by "<s>"-like matches
  assert.deepEqual(enc("</s><s>", true), [2, 1]);
});

Deno.test("spm: BOS/EOS handling (add_special, overrides)", () => {
  assert.deepEqual(tok.encode("a"), [1, S.SPa]);
  assert.deepEqual(tok.encode(""), [1]);
  assert.deepEqual(tok.encode("a", { addBos: false }), [S.SPa]);
  assert.deepEqual(tok.encode("a", { addEos: true }), [1, S.SPa, 2]);
  assert.deepEqual(tok.encode("a", { addSpecial: false, addBos: true }), [1, S.SPa]);
  // the BOS from the text and the added one are both kept, as in llama.cpp
  assert.deepEqual(tok.encode("<s>a", { parseSpecial: true }), [1, 1, S.SPa]);
  const eos = createTokenizer(tinySpm({ addEos: true, addBos: false }));
  assert.deepEqual(eos.encode("a"), [S.SPa, 2]);
});

Deno.test("spm: decode follows llama_detokenize", () => {
  assert.equal(tok.decode([S.SPa]), "a"); // leading space of the first piece stripped
  assert.equal(tok.decode([S.SPa, S.SPa]), "a a");
  assert.equal(tok.decode([S.SP, S.SP, S.a]), " a"); // only one space is stripped
  assert.equal(tok.decode([1, S.SPa]), " a"); // the strip is spent on BOS
  assert.equal(tok.decode([1, S.SPa], { removeSpecial: true }), " a");
  assert.equal(tok.decode([1, S.SPa, 2], { special: true }), "<s> a</s>");
  assert.equal(tok.decode([0, S.AT]), "@@"); // UNKNOWN hidden, USER_DEFINED shown
  assert.equal(tok.decode([0], { special: true }), "<unk>");
  assert.equal(tok.decode([S.SP, spmByte(0xc3), spmByte(0xa9)]), "é");
  assert.equal(tok.decode([spmByte(0xc3)]), "\ufffd");
  assert.equal(tok.decode([spmByte(0xef), spmByte(0xbb), spmByte(0xbf)]), "\ufeff"); // BOM kept
  assert.equal(tok.decode([]), "");
  const noPrefix = createTokenizer(tinySpm({ addSpacePrefix: false }));
  assert.equal(noPrefix.decode([S.SPa]), " a");
});

Deno.test("spm: tokenBytes, tokenText, tokenAttr, isEog", () => {
  assert.deepEqual([...tok.tokenBytes(S.SPa)], [0x20, 0x61]);
  assert.deepEqual([...tok.tokenBytes(1)], []);
  assert.deepEqual([...tok.tokenBytes(1, { special: true })], [0x3c, 0x73, 0x3e]);
  assert.deepEqual([...tok.tokenBytes(spmByte(0xff))], [0xff]);
  tok.tokenBytes(S.SPa)[0] = 0x41; // a copy: the piece cache is not affected
  assert.equal(tok.decode([S.SP, S.SPa]), " a");
  assert.equal(tok.tokenText(S.SPa), "\u2581a");
  assert.equal(tok.tokenText(spmByte(0x0a)), "<0x0A>");
  assert.equal(tok.tokenAttr(S.AT), 16); // USER_DEFINED
  assert.equal(tok.isEog(2), true);
  assert.equal(tok.isEog(1), false);
  assert.equal(tok.isEog(-1), false);
});

Deno.test("spm: a byte with no fallback token is a TokenizerError", () => {
  const tiny = createTokenizer({ model: "llama", tokens: ["<unk>", "<s>", "</s>", "\u2581", "a"] });
  assert.deepEqual(tiny.encode("a a", { addSpecial: false }), [3, 4, 3, 4]);
  assert.throws(
    () => tiny.encode("é"),
    (e: unknown) => e instanceof TokenizerError && e.code === "no_byte_token",
  );
  // without <0xXX> tokens an ASCII byte may fall back to its one-char token
  const ascii = createTokenizer({
    model: "llama",
    tokens: ["<unk>", "<s>", "</s>", "\u2581", "x"],
  });
  assert.deepEqual(ascii.encode("x", { addSpecial: false }), [3, 4]);
});
