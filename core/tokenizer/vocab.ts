/**
 * Validates a {@link VocabSpec} and builds the internal vocabulary tables the way
 * llama.cpp's `llama_vocab::impl::load` does (defaults, attributes, special-token
 * detection by text, end-of-generation set, special-token cache).
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { type PreTokenizer, resolvePre } from "./pretokenize.ts";
import { TokenAttr, TokenType, type VocabSpec } from "./types.ts";
import { utf8Length } from "./unicode.ts";

/** Internal, validated vocabulary. */
export interface Vocab {
  model: "llama" | "gpt2";
  pre: PreTokenizer | null;
  texts: string[];
  attrs: Uint16Array;
  scores: Float32Array;
  tokenToId: Map<string, number>;
  /** BPE merge ranks keyed by `left + " " + right`. */
  ranks: Map<string, number>;
  bosId: number | null;
  eosId: number | null;
  eotId: number | null;
  unkId: number | null;
  padId: number | null;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  cleanSpaces: boolean;
  ignoreMerges: boolean;
  eog: Set<number>;
  /** CONTROL / USER_DEFINED / UNKNOWN ids, longest UTF-8 text first (ties: lower id). */
  specialCache: number[];
}

const TYPE_TO_ATTR: Record<number, number> = {
  [TokenType.UNKNOWN]: TokenAttr.UNKNOWN,
  [TokenType.UNUSED]: TokenAttr.UNUSED,
  [TokenType.NORMAL]: TokenAttr.NORMAL,
  [TokenType.CONTROL]: TokenAttr.CONTROL,
  [TokenType.USER_DEFINED]: TokenAttr.USER_DEFINED,
  [TokenType.BYTE]: TokenAttr.BYTE,
};

// Texts llama.cpp (src/llama-vocab.cpp, load) recognises as EOT / EOM / FIM / EOG tokens.
const EOT_TEXTS = [
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "<｜end▁of▁sentence｜>",
  "<end_of_utterance>",
];
const EOM_TEXTS = ["<|eom_id|>"];
const FIM_PRE = [
  "<|fim_prefix|>",
  "<fim-prefix>",
  "<fim_prefix>",
  "<｜fim▁begin｜>",
  "<PRE>",
  "▁<PRE>",
  "<|code_prefix|>",
  "<|prefix|>",
];
const FIM_SUF = [
  "<|fim_suffix|>",
  "<fim-suffix>",
  "<fim_suffix>",
  "<｜fim▁hole｜>",
  "<SUF>",
  "▁<SUF>",
  "<|code_suffix|>",
  "<|suffix|>",
];
const FIM_MID = [
  "<|fim_middle|>",
  "<fim-middle>",
  "<fim_middle>",
  "<｜fim▁end｜>",
  "<MID>",
  "▁<MID>",
  "<|code_middle|>",
  "<|middle|>",
];
const FIM_PAD = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP = ["<|file_sep|>"];
const EOG_TEXTS = [
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
];
const ALWAYS_RENDER = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

function fail(code: string, message: string, details: Record<string, unknown> = {}): never {
  throw new TokenizerError(code, message, details);
}

function checkArrayLength(name: string, arr: ArrayLike<number> | undefined, n: number): void {
  if (arr === undefined) return;
  if (typeof arr !== "object" || typeof arr.length !== "number") {
    fail(`bad_${name}`, `${name} must be an array of numbers`, { field: name });
  }
  if (arr.length < n) {
    fail(`bad_${name}`, `${name} has ${arr.length} entries but the vocabulary has ${n} tokens`, {
      field: name,
      length: arr.length,
      nTokens: n,
    });
  }
}

function checkId(field: string, id: number | undefined, n: number): number | undefined {
  if (id === undefined) return undefined;
  if (!Number.isInteger(id) || id < 0 || id >= n) {
    fail("bad_token_id", `${field} = ${id} is not a token id (vocabulary has ${n} tokens)`, {
      field,
      value: id,
      nTokens: n,
    });
  }
  return id;
}

/** Lowest id among the given texts that exist in the vocabulary, or null. */
function findFirst(tokenToId: Map<string, number>, texts: readonly string[]): number | null {
  let best: number | null = null;
  for (const t of texts) {
    const id = tokenToId.get(t);
    if (id !== undefined && (best === null || id < best)) best = id;
  }
  return best;
}

function parseMerges(merges: unknown): Map<string, number> {
  if (!Array.isArray(merges)) {
    fail("missing_merges", 'tokenizer.ggml.merges is required for model "gpt2"', {
      field: "merges",
    });
  }
  // llama.cpp splits each merge at the first ' ' after index 0 into (left, right); a merge
  // without one becomes ("", "") and can never apply. Byte-level symbols contain no ' ',
  // so "left right" itself is a collision-free key for the pair.
  const ranks = new Map<string, number>();
  for (let i = 0; i < merges.length; i++) {
    const m = merges[i];
    if (typeof m !== "string") {
      fail("bad_merges", `merges[${i}] is not a string`, { field: "merges", index: i });
    }
    if (m.indexOf(" ", 1) > 0 && !ranks.has(m)) ranks.set(m, i); // first occurrence wins
  }
  return ranks;
}

/**
 * Validates `spec` and builds the vocabulary.
 * @throws TokenizerError on an unknown model or pre, an empty or malformed token list,
 *   duplicate tokens, short score/type arrays, missing merges, out-of-range ids.
 */
export function loadVocab(spec: VocabSpec): Vocab {
  if (spec === null || typeof spec !== "object") fail("bad_spec", "vocab spec must be an object");
  if (spec.model !== "llama" && spec.model !== "gpt2") {
    fail(
      "unknown_model",
      `tokenizer.ggml.model "${String(spec.model)}" is not supported (llama, gpt2)`,
      {
        field: "model",
        value: spec.model,
      },
    );
  }
  if (!Array.isArray(spec.tokens)) {
    fail("bad_tokens", "tokens must be an array of strings", { field: "tokens" });
  }
  const n = spec.tokens.length;
  if (n === 0) fail("empty_vocab", "the vocabulary has no tokens", { field: "tokens" });
  checkArrayLength("scores", spec.scores, n);
  checkArrayLength("token_types", spec.tokenTypes, n);

  const texts = new Array<string>(n);
  const tokenToId = new Map<string, number>();
  const attrs = new Uint16Array(n);
  const scores = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let t = spec.tokens[i];
    if (typeof t !== "string") {
      fail("bad_tokens", `tokens[${i}] is not a string`, { field: "tokens", index: i });
    }
    if (t === "") t = `[EMPTY_${i}]`; // llama.cpp renames empty tokens
    const prev = tokenToId.get(t);
    if (prev !== undefined) {
      fail("duplicate_token", `duplicate token ${JSON.stringify(t)} at ids ${prev} and ${i}`, {
        field: "tokens",
        text: t,
        ids: [prev, i],
      });
    }
    tokenToId.set(t, i);
    texts[i] = t;
    if (spec.scores !== undefined) {
      const s = spec.scores[i];
      if (typeof s !== "number" || Number.isNaN(s)) {
        fail("bad_scores", `scores[${i}] is not a number`, { field: "scores", index: i });
      }
      scores[i] = s;
    }
    if (spec.tokenTypes !== undefined) {
      const ty = spec.tokenTypes[i];
      if (!Number.isInteger(ty)) {
        fail("bad_token_types", `tokenTypes[${i}] is not an integer`, { index: i });
      }
      attrs[i] = TYPE_TO_ATTR[ty] ?? TokenAttr.UNDEFINED;
    } else {
      attrs[i] = TokenAttr.NORMAL;
    }
  }

  const spm = spec.model === "llama";
  const pre = spm ? null : resolvePre(spec.pre);
  const ranks = spm ? new Map<string, number>() : parseMerges(spec.merges);

  // Defaults (disabled when out of range), then the given ids (which must be in range).
  const dflt = (id: number): number | null => (id < n ? id : null);
  const given = (field: string, id: number | undefined, d: number | null): number | null =>
    checkId(field, id, n) ?? d;
  const bosId = given("bosId", spec.bosId, dflt(spm ? 1 : 11));
  const eosId = given("eosId", spec.eosId, dflt(spm ? 2 : 11));
  const unkId = given("unkId", spec.unkId, spm ? dflt(0) : null);
  const padId = given("padId", spec.padId, null);
  let eotId = given("eotId", spec.eotId, null);

  const addBos = spec.addBos ?? (spm ? true : pre?.addBos ?? false);
  const addEos = spec.addEos ?? false;
  if (addBos && bosId === null) {
    fail("missing_bos", "add_bos_token is true but there is no BOS token");
  }
  if (addEos && eosId === null) {
    fail("missing_eos", "add_eos_token is true but there is no EOS token");
  }

  // Special tokens recognised by text: they become CONTROL, some join the EOG set.
  const markControl = (id: number | null): void => {
    if (id !== null) attrs[id] |= TokenAttr.CONTROL;
  };
  if (eotId === null) markControl(eotId = findFirst(tokenToId, EOT_TEXTS));
  const eomId = findFirst(tokenToId, EOM_TEXTS);
  markControl(eomId);
  for (const list of [FIM_PRE, FIM_SUF, FIM_MID]) markControl(findFirst(tokenToId, list));
  const eog = new Set<number>();
  for (const list of [FIM_PAD, FIM_REP, FIM_SEP]) {
    const id = findFirst(tokenToId, list);
    markControl(id);
    if (id !== null) eog.add(id);
  }
  for (const t of EOG_TEXTS) {
    const id = tokenToId.get(t);
    if (id !== undefined) {
      eog.add(id);
      markControl(id);
    }
  }
  for (const t of ALWAYS_RENDER) {
    const id = tokenToId.get(t);
    if (id !== undefined) attrs[id] = TokenAttr.USER_DEFINED;
  }
  for (const id of [eosId, eotId, eomId]) if (id !== null) eog.add(id);
  const inEog = (t: string): number | undefined => {
    const id = tokenToId.get(t);
    return id !== undefined && eog.has(id) ? id : undefined;
  };
  const endId = inEog("<|end|>");
  if (
    endId !== undefined &&
    ((inEog("<|return|>") !== undefined &&
      (inEog("<|call|>") ?? inEog("<|calls|>")) !== undefined) ||
      ((inEog("<|call|>") ?? inEog("<|calls|>")) !== undefined && inEog("<|flush|>") !== undefined))
  ) {
    eog.delete(endId);
    attrs[endId] = TokenAttr.USER_DEFINED;
  }
  const sId = inEog("</s>");
  if (sId !== undefined && inEog("<|tool_response>") !== undefined) {
    eog.delete(sId);
    attrs[sId] = TokenAttr.NORMAL;
  }

  const specialMask = TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN;
  const specialCache: number[] = [];
  for (let id = 0; id < n; id++) if (attrs[id] & specialMask) specialCache.push(id);
  const lens = new Map(specialCache.map((id) => [id, utf8Length(texts[id])]));
  specialCache.sort((a, b) => lens.get(b)! - lens.get(a)! || a - b);

  return {
    model: spec.model,
    pre,
    texts,
    attrs,
    scores,
    tokenToId,
    ranks,
    bosId,
    eosId,
    eotId,
    unkId,
    padId,
    addBos,
    addEos,
    addSpacePrefix: spec.addSpacePrefix ?? spm,
    cleanSpaces: pre?.cleanSpaces ?? false,
    ignoreMerges: pre?.ignoreMerges ?? false,
    eog,
    specialCache,
  };
}
