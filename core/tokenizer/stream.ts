/**
 * Incremental detokenization for streaming generation.
 *
 * @module
 */

import { cleanSpaces } from "./tokenizer.ts";
import type { Tokenizer } from "./types.ts";
import { newUtf8Decoder } from "./unicode.ts";

/** Options of {@link StreamDecoder}. */
export interface StreamDecoderOptions {
  /** Render CONTROL/UNKNOWN token texts (default `false`), as `decode`'s `special`. */
  special?: boolean;
  /**
   * Strip one leading space from the first token's piece (default: the tokenizer's
   * `addSpacePrefix`, which is what `decode` of a whole sequence does).
   *
   * llama.cpp strips this space only at the very start of a full detokenization
   * (`llama_detokenize`: the first token's piece, whatever it renders, spends the strip).
   * Generated tokens continue a prompt, and llama.cpp streams them with
   * `token_to_piece(…, lstrip = 0)`, so a generated `"▁woke"` reads `" woke"`: pass
   * `false` for any stream that continues earlier tokens (`generate` does), or use
   * {@link StreamDecoder.forContinuation}.
   */
  stripLeadingSpace?: boolean;
}

/**
 * Turns token ids, pushed one at a time, into text as soon as it is complete.
 *
 * Incomplete UTF-8 sequences are held until their last byte arrives (a sequence that
 * turns out invalid becomes U+FFFD, as in a one-shot decode). For tokenizers with
 * `cleanSpaces`, text is also held while a later token could still remove a space in
 * it. The concatenation of every `push` result and the final `flush()` equals
 * `tokenizer.decode(ids, { special })` (with `stripLeadingSpace` at its default).
 *
 * @example
 * ```ts
 * import { buildTestVocab, createTokenizer, StreamDecoder } from "./mod.ts";
 * const tok = createTokenizer(buildTestVocab("gpt2"));
 * const dec = new StreamDecoder(tok);
 * let text = "";
 * for (const id of tok.encode("héllo 👋")) text += dec.push(id);
 * text += dec.flush(); // "héllo 👋"
 * ```
 */
export class StreamDecoder {
  readonly #tok: Tokenizer;
  readonly #special: boolean;
  readonly #strip: boolean;
  #utf8 = newUtf8Decoder();
  #first = true;
  /** Complete text not yet emitted because clean-up may still change it. */
  #held = "";

  /**
   * Creates a decoder for one stream of `tokenizer`'s ids.
   * @param tokenizer the tokenizer whose ids will be pushed
   * @param opts rendering options
   */
  constructor(tokenizer: Tokenizer, opts: StreamDecoderOptions = {}) {
    this.#tok = tokenizer;
    this.#special = opts.special ?? false;
    this.#strip = opts.stripLeadingSpace ?? tokenizer.addSpacePrefix;
  }

  /**
   * A decoder for tokens that continue `previous` (e.g. generated tokens after a prompt):
   * llama.cpp's `detokenize(previous ++ ids)` minus `detokenize(previous)`, which for
   * SPM vocabularies keeps the first piece's leading space. With no previous tokens it
   * is a plain decoder (the space is stripped as in `decode`).
   * @param tokenizer the tokenizer whose ids will be pushed
   * @param previous the ids that come before the streamed ones in the same sequence
   * @param opts rendering options (`stripLeadingSpace` is decided by `previous`)
   */
  static forContinuation(
    tokenizer: Tokenizer,
    previous: readonly number[],
    opts: Omit<StreamDecoderOptions, "stripLeadingSpace"> = {},
  ): StreamDecoder {
    return new StreamDecoder(tokenizer, {
      ...opts,
      stripLeadingSpace: previous.length === 0 ? tokenizer.addSpacePrefix : false,
    });
  }

  /**
   * Adds one token and returns the text that became complete (possibly `""`).
   * @throws TokenizerError `bad_token_id` for an id outside the vocabulary.
   */
  push(id: number): string {
    let bytes = this.#tok.tokenBytes(id, { special: this.#special });
    if (this.#first) {
      if (this.#strip && bytes.length > 0 && bytes[0] === 0x20) bytes = bytes.subarray(1);
      this.#first = false;
    }
    const text = this.#utf8.decode(bytes, { stream: true });
    return this.#emit(text, false);
  }

  /** Ends the stream: returns all held text (dangling UTF-8 bytes become U+FFFD) and resets. */
  flush(): string {
    const text = this.#utf8.decode();
    const out = this.#emit(text, true);
    this.reset();
    return out;
  }

  /** Forgets all state, as for a new stream. */
  reset(): void {
    this.#utf8 = newUtf8Decoder();
    this.#first = true;
    this.#held = "";
  }

  #emit(text: string, final: boolean): string {
    if (!this.#tok.cleanSpaces) return text;
    const all = this.#held + text;
    // clean(A + B) = clean(A) + clean(B) when A's last 4 chars hold no space: every
    // rule removes a space depending on at most the 3 chars after it.
    let cut = all.length;
    while (!final && cut > 0) {
      const sp = all.lastIndexOf(" ", cut - 1);
      if (sp < 0 || sp < cut - 4) break;
      cut = sp;
    }
    this.#held = all.slice(cut);
    return cleanSpaces(all.slice(0, cut));
  }
}
