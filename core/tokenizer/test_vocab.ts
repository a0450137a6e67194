/**
 * Deterministic small vocabularies for generated test models, and their GGUF metadata
 * entries. Both kinds load in llama.cpp: unique tokens, f32 scores, i32 token types,
 * in-range special ids, and (gpt2) merges whose results are all tokens and a `pre`
 * llama.cpp knows.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { buildCorpus, trainBpe } from "./bpe_train.ts";
import { preTokenize, resolvePre } from "./pretokenize.ts";
import { TokenType, type VocabSpec } from "./types.ts";
import { BYTE_TO_CHAR, byteEncode } from "./unicode.ts";
import { loadVocab } from "./vocab.ts";

/** Options of {@link buildTestVocab}. */
export interface TestVocabOptions {
  /** Exact number of tokens (default 512; at least 260 for llama, 259 for gpt2). */
  size?: number;
  /** gpt2 only: `tokenizer.ggml.pre` (default `"qwen2"`; e.g. `"gpt-2"`, `"olmo"`, `"llama3"`). */
  pre?: string;
}

/** Special tokens of the gpt2 test vocabulary (CONTROL, placed last). */
export const GPT2_TEST_SPECIALS: readonly string[] = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
];

const SPM_FIXED = 3 + 256; // <unk> <s> </s> + byte tokens
const cache = new Map<string, VocabSpec>();

function countWords(words: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const w of words) m.set(w, (m.get(w) ?? 0) + 1);
  return m;
}

/**
 * An SPM (`llama`) vocabulary from learned pieces: `<unk>`, `<s>`, `</s>`, the
 * 256 `<0xXX>` byte tokens llama.cpp requires, then `pieces` in priority order
 * (score `-i`, as SentencePiece's BPE ranks earlier merges higher).
 */
export function spmVocabFromPieces(pieces: readonly string[]): VocabSpec {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
  }
  const scores: number[] = new Array(SPM_FIXED).fill(0);
  pieces.forEach((p, i) => {
    tokens.push(p);
    types.push(TokenType.NORMAL);
    scores.push(-i);
  });
  return {
    model: "llama",
    tokens,
    scores: Float32Array.from(scores),
    tokenTypes: Int32Array.from(types),
    bosId: 1,
    eosId: 2,
    unkId: 0,
    addBos: true,
    addEos: false,
    addSpacePrefix: true,
  };
}

function buildLlama(size: number): VocabSpec {
  if (size < SPM_FIXED + 1) {
    throw new TokenizerError(
      "bad_size",
      `llama test vocab needs at least ${SPM_FIXED + 1} tokens`,
      {
        size,
      },
    );
  }
  const budget = size - SPM_FIXED;
  const corpus = buildCorpus();
  const words = countWords(corpus.split(" ").filter((w) => w !== "").map((w) => "\u2581" + w));
  // alphabet: "▁" first, then chars by frequency (ties: code point order)
  const freq = new Map<string, number>();
  for (const [w, c] of words) for (const ch of w) freq.set(ch, (freq.get(ch) ?? 0) + c);
  const chars = [...freq.keys()].filter((c) => c !== "\u2581" && c !== "<" && c !== ">")
    .sort((a, b) => freq.get(b)! - freq.get(a)! || (a < b ? -1 : 1));
  const alphabet = ["\u2581", ...chars.slice(0, Math.max(0, Math.floor(budget / 3) - 1))];
  const pieces = [...alphabet];
  const trained = trainBpe(words, (w) => [...w], budget - pieces.length, new Set(pieces));
  pieces.push(...trained.tokens);
  const taken = new Set(pieces);
  for (let i = 0; pieces.length < budget; i++) { // corpus exhausted: unreachable fillers
    if (!taken.has(`\u2581zz${i}`)) pieces.push(`\u2581zz${i}`);
  }
  return spmVocabFromPieces(pieces);
}

function buildGpt2(size: number, pre: string): VocabSpec {
  const nSpecial = GPT2_TEST_SPECIALS.length;
  if (size < 256 + nSpecial) {
    throw new TokenizerError(
      "bad_size",
      `gpt2 test vocab needs at least ${256 + nSpecial} tokens`,
      {
        size,
      },
    );
  }
  const regexes = resolvePre(pre).regexes;
  const base = [...BYTE_TO_CHAR];
  const words = countWords(preTokenize(buildCorpus(), regexes).map(byteEncode));
  const maxNew = size - 256 - nSpecial;
  const trained = trainBpe(words, (w) => [...w], maxNew, new Set(base));
  const tokens = [...base, ...trained.tokens];
  const merges = trained.merges.map(([a, b]) => `${a} ${b}`);
  const taken = new Set(tokens);
  for (let i = 0; tokens.length < size - nSpecial; i++) { // corpus exhausted: "Ġzz<i>" fillers
    if (!taken.has(`\u0120zz${i}`)) tokens.push(`\u0120zz${i}`);
  }
  const eot = tokens.length;
  tokens.push(...GPT2_TEST_SPECIALS);
  const types = tokens.map((_, i) => (i >= eot ? TokenType.CONTROL : TokenType.NORMAL));
  return {
    model: "gpt2",
    pre,
    tokens,
    tokenTypes: Int32Array.from(types),
    merges,
    bosId: eot,
    eosId: eot,
    padId: eot,
    addBos: false,
    addEos: false,
  };
}

function copySpec(s: VocabSpec): VocabSpec {
  return {
    ...s,
    tokens: [...s.tokens],
    scores: s.scores === undefined ? undefined : Float32Array.from(s.scores),
    tokenTypes: s.tokenTypes === undefined ? undefined : Int32Array.from(s.tokenTypes),
    merges: s.merges === undefined ? undefined : [...s.merges],
  };
}

/**
 * A deterministic small vocabulary of exactly `opts.size` tokens (default 512).
 *
 * - `"llama"` (SPM): `<unk>` (UNKNOWN), `<s>`, `</s>` (CONTROL), `<0x00>`..`<0xFF>`
 *   (BYTE, ids 3..258), then NORMAL pieces: `"▁"`, frequent characters, and pieces
 *   learned by BPE on a generated English-like corpus, with descending scores.
 *   bos=1, eos=2, unk=0, add_bos, add_space_prefix.
 * - `"gpt2"` (byte-level BPE): the 256 byte-level characters (id = byte value), then
 *   learned merge results, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`
 *   (CONTROL); every merge `"a b"` has `"ab"` in the vocabulary.
 *   bos = eos = pad = `<|endoftext|>`, no add_bos; `pre` defaults to `"qwen2"`.
 *
 * Every string round-trips through either kind (byte fallback / byte-level alphabet).
 * @throws TokenizerError `bad_size` when the size is too small or not an integer.
 */
export function buildTestVocab(kind: "llama" | "gpt2", opts: TestVocabOptions = {}): VocabSpec {
  const size = opts.size ?? 512;
  if (!Number.isInteger(size) || size > 65536) {
    throw new TokenizerError(
      "bad_size",
      `test vocab size must be an integer up to 65536, got ${size}`,
      {
        size,
      },
    );
  }
  if (kind !== "llama" && kind !== "gpt2") {
    throw new TokenizerError("unknown_model", `unknown test vocab kind "${String(kind)}"`);
  }
  const pre = kind === "gpt2" ? opts.pre ?? "qwen2" : "";
  const key = `${kind}/${size}/${pre}`;
  let spec = cache.get(key);
  if (spec === undefined) {
    spec = kind === "llama" ? buildLlama(size) : buildGpt2(size, pre);
    cache.set(key, spec);
  }
  return copySpec(spec);
}

/** A GGUF metadata value in a writer-neutral shape. */
export type GgufKeyValue =
  | { type: "string"; value: string }
  | { type: "u32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "f32[]"; value: Float32Array }
  | { type: "i32[]"; value: Int32Array }
  | { type: "string[]"; value: string[] };

/**
 * The `tokenizer.ggml.*` GGUF metadata entries describing `spec`, in a writer-neutral
 * shape. Only fields present in `spec` are written (llama.cpp applies its defaults to
 * the rest).
 * @throws TokenizerError when `spec` would not load (it is validated first).
 */
export function vocabToGgufKeys(spec: VocabSpec): [string, GgufKeyValue][] {
  loadVocab(spec);
  const k = (name: string): string => `tokenizer.ggml.${name}`;
  const out: [string, GgufKeyValue][] = [[k("model"), { type: "string", value: spec.model }]];
  if (spec.pre !== undefined && spec.pre !== "") {
    out.push([k("pre"), { type: "string", value: spec.pre }]);
  }
  out.push([k("tokens"), { type: "string[]", value: [...spec.tokens] }]);
  if (spec.scores !== undefined) {
    out.push([k("scores"), { type: "f32[]", value: Float32Array.from(spec.scores) }]);
  }
  if (spec.tokenTypes !== undefined) {
    out.push([k("token_type"), { type: "i32[]", value: Int32Array.from(spec.tokenTypes) }]);
  }
  if (spec.merges !== undefined) {
    out.push([k("merges"), { type: "string[]", value: [...spec.merges] }]);
  }
  const ids: [string, number | undefined][] = [
    ["bos_token_id", spec.bosId],
    ["eos_token_id", spec.eosId],
    ["eot_token_id", spec.eotId],
    ["unknown_token_id", spec.unkId],
    ["padding_token_id", spec.padId],
  ];
  for (const [name, id] of ids) {
    if (id !== undefined) out.push([k(name), { type: "u32", value: id }]);
  }
  const flags: [string, boolean | undefined][] = [
    ["add_bos_token", spec.addBos],
    ["add_eos_token", spec.addEos],
    ["add_space_prefix", spec.addSpacePrefix],
  ];
  for (const [name, v] of flags) {
    if (v !== undefined) out.push([k(name), { type: "bool", value: v }]);
  }
  return out;
}
