/**
 * Public types of the tokenizer package: the plain-object vocabulary description
 * (`VocabSpec`), the `Tokenizer` interface and the GGUF token-type / attribute
 * constants.
 *
 * @module
 */

/**
 * A vocabulary as stored in GGUF metadata (`tokenizer.ggml.*`), as a plain object.
 * Arrays are indexed by token id.
 */
export interface VocabSpec {
  /** `tokenizer.ggml.model`: `"llama"` (SentencePiece BPE) or `"gpt2"` (byte-level BPE). */
  model: "llama" | "gpt2";
  /** `tokenizer.ggml.pre`: the BPE pre-tokenizer name (ignored for `"llama"`). */
  pre?: string;
  /** `tokenizer.ggml.tokens`: token texts, one per id. */
  tokens: string[];
  /** `tokenizer.ggml.scores`: merge priority of each token (SPM); rounded to f32. */
  scores?: Float32Array | number[];
  /** `tokenizer.ggml.token_type`: GGUF token types (see {@link TokenType}). */
  tokenTypes?: Int32Array | number[];
  /** `tokenizer.ggml.merges`: `"left right"` pairs; rank = index. Required for `"gpt2"`. */
  merges?: string[];
  /** `tokenizer.ggml.bos_token_id`. */
  bosId?: number;
  /** `tokenizer.ggml.eos_token_id`. */
  eosId?: number;
  /** `tokenizer.ggml.eot_token_id`. */
  eotId?: number;
  /** `tokenizer.ggml.unknown_token_id`. */
  unkId?: number;
  /** `tokenizer.ggml.padding_token_id`. */
  padId?: number;
  /** `tokenizer.ggml.add_bos_token`. */
  addBos?: boolean;
  /** `tokenizer.ggml.add_eos_token`. */
  addEos?: boolean;
  /** `tokenizer.ggml.add_space_prefix`. */
  addSpacePrefix?: boolean;
}

/** GGUF `tokenizer.ggml.token_type` values (llama.cpp `enum llama_token_type`). */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Token attribute bits (llama.cpp `enum llama_token_attr`). */
export const TokenAttr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
} as const;

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * llama.cpp's `add_special` (default `true`): add BOS/EOS as the vocabulary asks
   * (`addBos`/`addEos` of the tokenizer).
   */
  addSpecial?: boolean;
  /** Force BOS on or off (default: `addSpecial && tokenizer.addBos`). */
  addBos?: boolean;
  /** Force EOS on or off (default: `addSpecial && tokenizer.addEos`). */
  addEos?: boolean;
  /**
   * llama.cpp's `parse_special` (default `false`): match CONTROL and UNKNOWN token
   * texts in the input. USER_DEFINED tokens are always matched.
   */
  parseSpecial?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** llama.cpp's `unparse_special` (default `false`): render CONTROL/UNKNOWN token texts. */
  special?: boolean;
  /**
   * llama.cpp's `remove_special` (default `false`): drop a leading BOS (when the vocab
   * adds BOS) and a trailing EOS (when it adds EOS).
   */
  removeSpecial?: boolean;
}

/** A tokenizer built from a {@link VocabSpec}; behaves like llama.cpp's `llama_vocab`. */
export interface Tokenizer {
  /** `"llama"` or `"gpt2"`. */
  readonly model: "llama" | "gpt2";
  /** The BPE pre-tokenizer in use (`"default"` when none was given; `null` for SPM). */
  readonly pre: string | null;
  /** Number of tokens. */
  readonly vocabSize: number;
  /** BOS id, or null. */
  readonly bosId: number | null;
  /** EOS id, or null. */
  readonly eosId: number | null;
  /** EOT id (given or detected from the token texts), or null. */
  readonly eotId: number | null;
  /** UNK id, or null. */
  readonly unkId: number | null;
  /** PAD id, or null. */
  readonly padId: number | null;
  /** Whether `encode` adds BOS by default. */
  readonly addBos: boolean;
  /** Whether `encode` adds EOS by default. */
  readonly addEos: boolean;
  /** SPM space prefix: a space is prepended on encode and stripped from the first piece on decode. */
  readonly addSpacePrefix: boolean;
  /** llama.cpp `clean_spaces`: decode removes spaces before `?!.,` and some contractions. */
  readonly cleanSpaces: boolean;
  /** Every end-of-generation id, ascending. */
  readonly eogIds: readonly number[];
  /** Text to token ids. */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Token ids to text (llama.cpp `llama_detokenize`). */
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  /** Raw bytes of one token's piece (llama.cpp `token_to_piece`, no space stripping). */
  tokenBytes(id: number, opts?: { special?: boolean }): Uint8Array;
  /** Whether `id` ends generation (EOS, EOT, and the tokens llama.cpp recognises by text). */
  isEog(id: number): boolean;
  /** The vocabulary text of a token (e.g. `"▁the"`, `"Ġthe"`, `"<0x0A>"`). */
  tokenText(id: number): string;
  /** The token attribute bits (see {@link TokenAttr}). */
  tokenAttr(id: number): number;
}
