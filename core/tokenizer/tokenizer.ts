/**
 * `createTokenizer`: SPM and byte-level BPE tokenizers over a {@link VocabSpec},
 * following llama.cpp's `llama_vocab::impl::tokenize` / `token_to_piece` /
 * `detokenize`.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { bpeTokenize, WordCache } from "./bpe.ts";
import { spmByteTokens, spmTokenize } from "./spm.ts";
import {
  type DecodeOptions,
  type EncodeOptions,
  TokenAttr,
  type Tokenizer,
  type VocabSpec,
} from "./types.ts";
import { byteDecode, decodeUtf8, utf8 } from "./unicode.ts";
import { loadVocab, type Vocab } from "./vocab.ts";

/** A piece of input: raw text, or a special token already matched in it. */
type Fragment = { text: string } | { id: number };

const ATTR_SPECIAL = TokenAttr.UNKNOWN | TokenAttr.CONTROL;
const EMPTY = new Uint8Array(0);

/**
 * llama.cpp `clean_up_tokenization_spaces` (`detokenize`, three passes): drop a space
 * before `?`, `!`, `.` or `,`; turn `" ' "` into `"'"`; drop the space before `'s`,
 * `'m`, `'re`, `'ve`. Only ASCII is involved, so working on the decoded string is the
 * same as working on the bytes.
 */
export function cleanSpaces(text: string): string {
  return text.replace(/ (?=[?!.,])/g, "").replace(/ ' /g, "'").replace(/ (?='(?:[sm]|re|ve))/g, "");
}

/** Splits text around special tokens (llama.cpp `tokenizer_st_partition`). */
function partition(vocab: Vocab, text: string, parseSpecial: boolean): Fragment[] {
  let frags: Fragment[] = [{ text }];
  for (const id of vocab.specialCache) {
    if (!parseSpecial && (vocab.attrs[id] & ATTR_SPECIAL)) continue;
    const st = vocab.texts[id];
    const next: Fragment[] = [];
    for (const f of frags) {
      if (!("text" in f)) {
        next.push(f);
        continue;
      }
      const s = f.text;
      let from = 0;
      for (let at = s.indexOf(st, from); at >= 0; at = s.indexOf(st, from)) {
        if (at > from) next.push({ text: s.slice(from, at) });
        next.push({ id });
        from = at + st.length;
      }
      if (from < s.length) next.push({ text: from === 0 ? s : s.slice(from) });
    }
    frags = next;
  }
  return frags;
}

function checkTokenId(vocab: Vocab, id: number, where: string): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocab.texts.length) {
    throw new TokenizerError(
      "bad_token_id",
      `${where}: ${id} is not a token id (vocabulary has ${vocab.texts.length} tokens)`,
      { id, nTokens: vocab.texts.length },
    );
  }
}

class LlamaTokenizer implements Tokenizer {
  readonly #v: Vocab;
  readonly #pieces: (Uint8Array | undefined)[];
  #byteTokens: Int32Array | null = null;
  readonly #words = new WordCache();
  readonly eogIds: readonly number[];

  constructor(vocab: Vocab) {
    this.#v = vocab;
    this.#pieces = new Array(vocab.texts.length);
    this.eogIds = Object.freeze([...vocab.eog].sort((a, b) => a - b));
  }

  get model(): "llama" | "gpt2" {
    return this.#v.model;
  }
  get pre(): string | null {
    return this.#v.pre?.name ?? null;
  }
  get vocabSize(): number {
    return this.#v.texts.length;
  }
  get bosId(): number | null {
    return this.#v.bosId;
  }
  get eosId(): number | null {
    return this.#v.eosId;
  }
  get eotId(): number | null {
    return this.#v.eotId;
  }
  get unkId(): number | null {
    return this.#v.unkId;
  }
  get padId(): number | null {
    return this.#v.padId;
  }
  get addBos(): boolean {
    return this.#v.addBos;
  }
  get addEos(): boolean {
    return this.#v.addEos;
  }
  get addSpacePrefix(): boolean {
    return this.#v.addSpacePrefix;
  }
  get cleanSpaces(): boolean {
    return this.#v.cleanSpaces;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new TokenizerError("bad_text", "encode: text must be a string", { type: typeof text });
    }
    const v = this.#v;
    const addSpecial = opts.addSpecial ?? true;
    const addBos = opts.addBos ?? (addSpecial && v.addBos);
    const addEos = opts.addEos ?? (addSpecial && v.addEos);
    if (addBos && v.bosId === null) {
      throw new TokenizerError("missing_bos", "encode: BOS requested but the vocabulary has none");
    }
    if (addEos && v.eosId === null) {
      throw new TokenizerError("missing_eos", "encode: EOS requested but the vocabulary has none");
    }
    const wellFormed = text.toWellFormed();
    const frags = wellFormed.length === 0
      ? []
      : partition(v, wellFormed, opts.parseSpecial ?? false);
    const out: number[] = [];
    if (addBos) out.push(v.bosId!);
    if (v.model === "llama") {
      this.#byteTokens ??= spmByteTokens(v);
      let prevSpecial = true; // the first fragment gets the space prefix too
      for (const f of frags) {
        if ("text" in f) {
          const raw = v.addSpacePrefix && prevSpecial ? " " + f.text : f.text;
          spmTokenize(v, this.#byteTokens, raw.replaceAll(" ", "\u2581"), out);
          prevSpecial = false;
        } else {
          out.push(f.id);
          prevSpecial = true;
        }
      }
    } else {
      for (const f of frags) {
        if ("text" in f) bpeTokenize(v, this.#words, f.text, out);
        else out.push(f.id);
      }
    }
    if (addEos) out.push(v.eosId!);
    return out;
  }

  tokenBytes(id: number, opts: { special?: boolean } = {}): Uint8Array {
    return this.#render(id, opts.special ?? false).slice();
  }

  /** The piece as llama.cpp `token_to_piece` renders it (shared, do not mutate). */
  #render(id: number, special: boolean): Uint8Array {
    checkTokenId(this.#v, id, "token id");
    if (!special && (this.#v.attrs[id] & ATTR_SPECIAL)) return EMPTY;
    return this.#piece(id);
  }

  /** Piece with special = true (llama.cpp's token-to-piece cache). */
  #piece(id: number): Uint8Array {
    let p = this.#pieces[id];
    if (p === undefined) {
      const attr = this.#v.attrs[id];
      const text = this.#v.texts[id];
      if (attr & (ATTR_SPECIAL | TokenAttr.USER_DEFINED)) p = utf8(text);
      else if (attr & TokenAttr.NORMAL) {
        p = this.#v.model === "llama" ? utf8(text.replaceAll("\u2581", " ")) : byteDecode(text);
      } else if (attr & TokenAttr.BYTE) {
        // llama.cpp: strtol(text.substr(3, 2), 16)
        const m = /^[0-9a-fA-F]{1,2}/.exec(text.slice(3, 5));
        p = Uint8Array.of(m === null ? 0 : parseInt(m[0], 16));
      } else p = EMPTY; // UNDEFINED / UNUSED render as nothing
      this.#pieces[id] = p;
    }
    return p;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const v = this.#v;
    const special = opts.special ?? false;
    let lo = 0;
    let hi = ids.length;
    let removeSpace = v.addSpacePrefix;
    if (opts.removeSpecial && v.addBos && hi > 0 && ids[0] === v.bosId) {
      removeSpace = false;
      lo++;
    }
    if (opts.removeSpecial && v.addEos && hi > lo && ids[hi - 1] === v.eosId) hi--;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = lo; i < hi; i++) {
      let p = this.#render(ids[i], special);
      if (removeSpace && p.length > 0 && p[0] === 0x20) p = p.subarray(1);
      removeSpace = false;
      parts.push(p);
      total += p.length;
    }
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      bytes.set(p, o);
      o += p.length;
    }
    const text = decodeUtf8(bytes);
    return v.cleanSpaces ? cleanSpaces(text) : text;
  }

  isEog(id: number): boolean {
    return this.#v.eog.has(id);
  }

  tokenText(id: number): string {
    checkTokenId(this.#v, id, "tokenText");
    return this.#v.texts[id];
  }

  tokenAttr(id: number): number {
    checkTokenId(this.#v, id, "tokenAttr");
    return this.#v.attrs[id];
  }
}

/**
 * Builds a tokenizer from GGUF-style vocabulary metadata.
 *
 * @example
 * ```ts
 * import { buildTestVocab, createTokenizer } from "./mod.ts";
 * const tok = createTokenizer(buildTestVocab("llama"));
 * const ids = tok.encode("Hello world");        // [BOS, ...]
 * tok.decode(ids);                               // " Hello world" (BOS keeps the prefix space)
 * tok.decode(tok.encode("Hello world", { addBos: false })); // "Hello world"
 * ```
 * @throws TokenizerError for an unknown model or pre-tokenizer, an empty or malformed
 *   vocabulary, duplicate tokens, missing merges (gpt2), out-of-range special ids.
 */
export function createTokenizer(spec: VocabSpec): Tokenizer {
  return new LlamaTokenizer(loadVocab(spec));
}
