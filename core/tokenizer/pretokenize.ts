/**
 * BPE pre-tokenizers: the regex word splitters llama.cpp uses per
 * `tokenizer.ggml.pre` value (`src/llama-vocab.cpp` `llm_tokenizer_bpe`), written as
 * JS Unicode regexes.
 *
 * Equivalence with llama.cpp (`src/unicode.cpp`): `\s` there is the Unicode
 * White_Space property (the flags table is generated with Python `regex`'s `\s`; the
 * `std::regex` paths map non-ASCII whitespace to `\v`), so it is written
 * `\p{White_Space}` here, not JS `\s` (which adds U+FEFF and lacks U+0085). `\p{L}`,
 * `\p{N}`, `\p{P}` are general categories in both. Text a regex does not match is kept
 * as its own piece, as in `unicode_regex_split_stl` and the custom gpt2/llama3
 * splitters. Each regex of a chain splits the pieces of the previous one independently
 * (lookaheads do not see past a piece). Differences can only come from Unicode
 * versions (llama.cpp's table vs. V8's ICU).
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";

const WS = String.raw`\p{White_Space}`;
const NOT_WS = String.raw`\P{White_Space}`;
const CONTRACTIONS_CI = String.raw`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])`;

/** GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`. */
const GPT2 = String
  .raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${WS}+(?!${NOT_WS})`;

/** Qwen2 / llama3 family; `digits` is `\p{N}` (Qwen2) or `\p{N}{1,3}` (llama3). */
function qwenLike(digits: string): string {
  return CONTRACTIONS_CI + String.raw`|[^\r\n\p{L}\p{N}]?\p{L}+|` + digits +
    String.raw`| ?[^${WS}\p{L}\p{N}]+[\r\n]*|${WS}*[\r\n]+|${WS}+(?!${NOT_WS})|${WS}+`;
}

/** A resolved BPE pre-tokenizer. */
export interface PreTokenizer {
  /** Canonical name (`"default"`, `"gpt-2"`, `"qwen2"`, `"llama3"`, …). */
  readonly name: string;
  /** Regex chain, applied in order. */
  readonly regexes: readonly RegExp[];
  /** llama.cpp `clean_spaces` for this pre type. */
  readonly cleanSpaces: boolean;
  /** llama.cpp `ignore_merges`: a word that is a whole token is emitted as is. */
  readonly ignoreMerges: boolean;
  /** The add_bos default this pre type sets (llama3 sets true), if any. */
  readonly addBos?: boolean;
}

function re(src: string): RegExp {
  return new RegExp(src, "gu");
}

const DEFAULT_CHAIN = [
  String.raw`[\p{P}$+<=>^~|]+`,
  GPT2,
  String.raw`\p{N}+`,
  "[0-9][0-9][0-9]",
];

/** Pre names → (canonical kind, clean_spaces, ignore_merges, add_bos), after llama.cpp. */
const PRE_TABLE: Record<
  string,
  {
    kind: "default" | "gpt-2" | "qwen2" | "llama3";
    clean: boolean;
    ignore?: boolean;
    bos?: boolean;
  }
> = {
  "default": { kind: "default", clean: true },
  "gpt-2": { kind: "gpt-2", clean: true },
  "phi-2": { kind: "gpt-2", clean: true },
  "olmo": { kind: "gpt-2", clean: true },
  "mpt": { kind: "gpt-2", clean: true },
  "qwen2": { kind: "qwen2", clean: false },
  "deepseek-r1-qwen": { kind: "qwen2", clean: false },
  "stablelm2": { kind: "qwen2", clean: true },
  // llama.cpp's BAILINGMOE regex is qwen2's with `\s*[\r\n]` for `\s*[\r\n]+`: the same
  // matches (a greedy `\s*` backs off to the run's last newline either way)
  "bailingmoe": { kind: "qwen2", clean: false },
  "bailingmoe2": { kind: "qwen2", clean: false },
  "llada-moe": { kind: "qwen2", clean: false },
  "llama3": { kind: "llama3", clean: true, ignore: true, bos: true },
  "llama-v3": { kind: "llama3", clean: true, ignore: true, bos: true },
  "llama-bpe": { kind: "llama3", clean: true, ignore: true, bos: true },
  "dbrx": { kind: "llama3", clean: true },
  "smaug-bpe": { kind: "llama3", clean: true },
};

/** The `tokenizer.ggml.pre` values this package supports. */
export const SUPPORTED_PRE: readonly string[] = Object.keys(PRE_TABLE);

/**
 * Resolves a `tokenizer.ggml.pre` value. A missing or empty value means `"default"`
 * (llama.cpp warns and does the same).
 * @throws TokenizerError `unknown_pre` for names this package does not implement.
 */
export function resolvePre(pre: string | undefined): PreTokenizer {
  const name = pre === undefined || pre === "" ? "default" : pre;
  const row = Object.hasOwn(PRE_TABLE, name) ? PRE_TABLE[name] : undefined;
  if (row === undefined) {
    throw new TokenizerError(
      "unknown_pre",
      `tokenizer.ggml.pre "${name}" is not supported (supported: ${SUPPORTED_PRE.join(", ")})`,
      { field: "pre", value: name },
    );
  }
  let sources: string[];
  switch (row.kind) {
    case "default":
      sources = DEFAULT_CHAIN;
      break;
    case "gpt-2":
      sources = [GPT2];
      break;
    case "qwen2":
      sources = [qwenLike(String.raw`\p{N}`)];
      break;
    case "llama3":
      sources = [qwenLike(String.raw`\p{N}{1,3}`)];
      break;
  }
  return {
    name,
    regexes: sources.map(re),
    cleanSpaces: row.clean,
    ignoreMerges: row.ignore ?? false,
    addBos: row.bos,
  };
}

/** Splits `piece` with one regex, keeping unmatched stretches as their own pieces. */
function splitOne(piece: string, regex: RegExp, out: string[]): void {
  regex.lastIndex = 0;
  let last = 0;
  for (let m = regex.exec(piece); m !== null; m = regex.exec(piece)) {
    if (m.index > last) out.push(piece.slice(last, m.index));
    if (m[0].length === 0) { // never happens with the built-in regexes; guards a loop
      regex.lastIndex++;
      continue;
    }
    out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < piece.length) out.push(piece.slice(last));
}

/**
 * Splits text into pre-tokenized words with a regex chain, like llama.cpp's
 * `unicode_regex_split` (before its byte-level encoding).
 */
export function preTokenize(text: string, regexes: readonly RegExp[]): string[] {
  let pieces = text.length === 0 ? [] : [text];
  for (const regex of regexes) {
    const next: string[] = [];
    for (const p of pieces) splitOne(p, regex, next);
    pieces = next;
  }
  return pieces;
}
