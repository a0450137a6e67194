/**
 * The per-sequence half of generation, shared by `generate` (one sequence)
 * and the batch scheduler (many): sampling with the sequence's own options
 * and seed, end-of-generation and stop tokens, stop strings (text that could
 * begin one is held back) and streaming detokenization.
 *
 * @module
 */

import type { Model } from "../model/model.ts";
import { StreamDecoder } from "../tokenizer/mod.ts";
import { Sampler, type SamplingOptions } from "./sampler.ts";

/** One generated token. */
export interface GenerateStep {
  /** Token id. */
  readonly token: number;
  /** Text completed by this token (may be empty while a UTF-8 sequence is incomplete). */
  readonly text: string;
}

/** Why generation ended. */
export type FinishReason = "stop" | "length" | "abort";

/** What one sequence needs besides its prompt. */
export interface ContinuationOptions extends SamplingOptions {
  /** Stop when any of these strings appears in the output (it is not emitted). */
  stop?: readonly string[];
  /** Extra stop token ids (end-of-generation tokens always stop). */
  stopTokens?: readonly number[];
  /** Don't stop on the model's end-of-generation tokens. */
  ignoreEos?: boolean;
}

/** What {@link Continuation.accept} did with one row of logits. */
export interface Accepted {
  /** The step to emit, if any (a stop string cut may leave nothing to emit). */
  readonly step: GenerateStep | null;
  /** The sampled token, or -1 when it ended the generation (end-of-generation, stop token). */
  readonly token: number;
  /** Whether generation stopped (`finish` is then `"stop"`). */
  readonly stopped: boolean;
}

/** The sampling and text state of one generating sequence. */
export class Continuation {
  /** Generated token ids. */
  readonly tokens: number[] = [];
  /** Why it ended (`"length"` until something else happens). */
  finish: FinishReason = "length";
  readonly #model: Model;
  readonly #sampler: Sampler;
  readonly #decoder: StreamDecoder;
  readonly #stopIds: Set<number>;
  readonly #stops: string[];
  readonly #ignoreEos: boolean;
  readonly #history: number[];
  #text = "";
  #emitted = 0;

  /**
   * @param model the model (tokenizer)
   * @param prompt the prompt ids the generated tokens continue
   * @param opts sampling and stop options (validated here: `GenerationError` when bad)
   */
  constructor(model: Model, prompt: readonly number[], opts: ContinuationOptions = {}) {
    this.#model = model;
    this.#sampler = new Sampler(opts);
    this.#stopIds = new Set(opts.stopTokens ?? []);
    this.#stops = (opts.stop ?? []).filter((s) => s.length > 0);
    this.#ignoreEos = opts.ignoreEos ?? false;
    this.#history = [...prompt];
    // the generated tokens continue the prompt: no SPM leading-space strip (llama.cpp streams
    // them with token_to_piece, lstrip 0), so "The little fox" + "▁woke" reads " woke"
    this.#decoder = StreamDecoder.forContinuation(model.tokenizer, prompt);
  }

  /** Generated text so far (stop string removed once found). */
  get text(): string {
    return this.#text;
  }

  /** Sample the next token from `logits` (one row of `nVocab`) and update the text. */
  accept(logits: Float32Array): Accepted {
    const id = this.#sampler.sample(logits, this.#history);
    if ((!this.#ignoreEos && this.#model.tokenizer.isEog(id)) || this.#stopIds.has(id)) {
      this.finish = "stop";
      return { step: null, token: -1, stopped: true };
    }
    this.tokens.push(id);
    this.#history.push(id);
    let text = this.#text + this.#decoder.push(id);
    // hold back text that could be the start of a stop string
    let cut = -1;
    for (const s of this.#stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      text = text.slice(0, cut);
      this.#text = text;
      const step = text.length > this.#emitted
        ? { token: id, text: text.slice(this.#emitted) }
        : null;
      this.#emitted = text.length;
      this.finish = "stop";
      return { step, token: id, stopped: true };
    }
    let safe = text.length;
    for (const s of this.#stops) {
      for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
        if (text.endsWith(s.slice(0, k))) {
          safe = Math.min(safe, text.length - k);
          break;
        }
      }
    }
    this.#text = text;
    const step = { token: id, text: text.slice(this.#emitted, Math.max(this.#emitted, safe)) };
    this.#emitted = Math.max(this.#emitted, safe);
    return { step, token: id, stopped: false };
  }

  /**
   * End the generation (after `length` or `abort`; nothing to do after a stop): flush the
   * decoder and return the held-back text as a last step, if any.
   */
  end(): GenerateStep | null {
    if (this.finish === "stop") return null;
    this.#text += this.#decoder.flush();
    if (this.#text.length <= this.#emitted) return null;
    const step = {
      token: this.tokens[this.tokens.length - 1] ?? -1,
      text: this.#text.slice(this.#emitted),
    };
    this.#emitted = this.#text.length;
    return step;
  }
}
