/**
 * Tiny hand-made vocabularies shared by the tokenizer tests. Expected encodings in the
 * tests are derived by hand from llama.cpp's algorithm on these vocabularies (and were
 * cross-checked against llama.cpp through node-llama-cpp when this suite was written).
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- no import map entry yet; see the integrator note
import fc from "npm:fast-check@4";
import { TokenType, type VocabSpec } from "./types.ts";
import { BYTE_TO_CHAR } from "./unicode.ts";

/** SPM byte token id of byte `b` in {@link tinySpm}: 3 + b. */
export const spmByte = (b: number): number => 3 + b;

/** Ids of the NORMAL / USER_DEFINED pieces of {@link tinySpm}. */
export const S = {
  SP: 259, // "▁"
  a: 260,
  b: 261,
  c: 262,
  ab: 263,
  bc: 264,
  abc: 265,
  SPa: 266, // "▁a"
  aa: 267,
  SPabc: 268, // "▁abc"
  AT: 269, // "@@" (USER_DEFINED)
} as const;

/**
 * SPM vocabulary: `<unk>` `<s>` `</s>`, 256 byte tokens, then
 * `▁ a b c` (score -100), `ab` -3, `bc` -2, `abc` -1, `▁a` -4, `aa` -5, `▁abc` -0.5,
 * and the USER_DEFINED token `@@`.
 */
export function tinySpm(overrides: Partial<VocabSpec> = {}): VocabSpec {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  const scores: number[] = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
    scores.push(0);
  }
  const pieces: [string, number, number][] = [
    ["\u2581", -100, TokenType.NORMAL],
    ["a", -100, TokenType.NORMAL],
    ["b", -100, TokenType.NORMAL],
    ["c", -100, TokenType.NORMAL],
    ["ab", -3, TokenType.NORMAL],
    ["bc", -2, TokenType.NORMAL],
    ["abc", -1, TokenType.NORMAL],
    ["\u2581a", -4, TokenType.NORMAL],
    ["aa", -5, TokenType.NORMAL],
    ["\u2581abc", -0.5, TokenType.NORMAL],
    ["@@", 0, TokenType.USER_DEFINED],
  ];
  for (const [t, s, ty] of pieces) {
    tokens.push(t);
    scores.push(s);
    types.push(ty);
  }
  return { model: "llama", tokens, scores, tokenTypes: types, ...overrides };
}

/** Ids of the merged / special tokens of {@link tinyBpe} (bytes are id = byte value). */
export const B = {
  ab: 256,
  bc: 257,
  abc: 258,
  Ga: 259, // "Ġa"
  aa: 260,
  ca: 261,
  EOT: 262, // "<|endoftext|>" CONTROL
  IM_END: 263, // "<|im_end|>" CONTROL
  AT: 264, // "@@" USER_DEFINED
} as const;

/** Merges of {@link tinyBpe}, rank = index. `x y` and `Ġ Ġ` have no token on purpose. */
export const TINY_MERGES: readonly string[] = [
  "a a",
  "b c",
  "a b",
  "a bc",
  "\u0120 a",
  "x y",
  "ab c",
  "\u0120 \u0120",
];

/**
 * Byte-level BPE vocabulary: the 256 byte chars (id = byte), `ab bc abc Ġa aa ca`,
 * `<|endoftext|>`, `<|im_end|>` (CONTROL) and `@@` (USER_DEFINED); bos = eos =
 * `<|endoftext|>`.
 */
export function tinyBpe(overrides: Partial<VocabSpec> = {}): VocabSpec {
  const tokens = [...BYTE_TO_CHAR, "ab", "bc", "abc", "\u0120a", "aa", "ca"];
  const types = tokens.map(() => TokenType.NORMAL as number);
  tokens.push("<|endoftext|>", "<|im_end|>", "@@");
  types.push(TokenType.CONTROL, TokenType.CONTROL, TokenType.USER_DEFINED);
  return {
    model: "gpt2",
    pre: "qwen2",
    tokens,
    tokenTypes: types,
    merges: [...TINY_MERGES],
    bosId: B.EOT,
    eosId: B.EOT,
    addBos: false,
    ...overrides,
  };
}

/** Arbitrary strings biased towards what tokenizers find hard. */
export const textArb: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: "binary", maxLength: 64 }),
  fc.string({ unit: "grapheme", maxLength: 64 }),
  fc.string({
    unit: fc.constantFrom(
      " ",
      "  ",
      "\n",
      "\r\n",
      "\t",
      "\u00a0",
      "\u3000",
      "\u0085",
      "\ufeff",
      "\u2581",
      "\u0000",
      "a",
      "the",
      "er",
      "ka",
      "'s",
      "'RE",
      ",",
      ".",
      "?",
      "'",
      "1",
      "234",
      "é",
      "你好",
      "🙂",
      "👩‍👩‍👧",
      "<s>",
      "</s>",
      "<|endoftext|>",
      "\ud800",
    ),
    maxLength: 24,
  }),
);
