/**
 * Text generation as an async iterable of steps, with sampling, stop
 * tokens, stop strings, a token budget and cancellation.
 *
 * @module
 */

import { GenerationError } from "../errors.ts";
import type { Model } from "../model/model.ts";
import { StreamDecoder } from "../tokenizer/mod.ts";
import { Sampler, type SamplingOptions } from "./sampler.ts";
import { Session } from "./session.ts";

/** Options of `generate`. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 128). */
  maxTokens?: number;
  /** Stop when any of these strings appears in the output (it is not emitted). */
  stop?: readonly string[];
  /** Extra stop token ids (end-of-generation tokens always stop). */
  stopTokens?: readonly number[];
  /** Don't stop on the model's end-of-generation tokens. */
  ignoreEos?: boolean;
  /** Add BOS to a text prompt (default: the tokenizer's `add_bos`). Ignored for token prompts. */
  addBos?: boolean;
  /** Context length of the session. */
  nCtx?: number;
  /** Cancels generation. */
  signal?: AbortSignal;
  /**
   * Reuse an existing session, which stays open. Its cached tokens that begin the prompt are
   * kept and only the rest is evaluated (prompt caching, as llama.cpp's server does): a chat
   * that re-sends its history evaluates only the new turn. The rest of the cache is dropped.
   */
  session?: Session;
}

/** One generated token. */
export interface GenerateStep {
  /** Token id. */
  readonly token: number;
  /** Text completed by this token (may be empty while a UTF-8 sequence is incomplete). */
  readonly text: string;
}

/** Why generation ended. */
export type FinishReason = "stop" | "length" | "abort";

/** Summary after the last step. */
export interface GenerateResult {
  /** Prompt token ids as evaluated. */
  readonly promptTokens: number[];
  /** Generated token ids. */
  readonly tokens: number[];
  /** Generated text (stop string removed). */
  readonly text: string;
  /** Why it ended. */
  readonly finishReason: FinishReason;
  /** Timings in milliseconds. */
  readonly timings: { prefillMs: number; decodeMs: number; decodeTokensPerS: number };
}

/** Tokenize a prompt (text) or validate it (ids). */
export function promptTokens(
  model: Model,
  prompt: string | readonly number[],
  addBos?: boolean,
): number[] {
  if (typeof prompt === "string") {
    return model.tokenizer.encode(prompt, {
      addBos: addBos ?? model.tokenizer.addBos,
      parseSpecial: true,
    });
  }
  if (!Array.isArray(prompt)) {
    throw new GenerationError(
      "bad_prompt",
      "Cannot generate: prompt must be a string or an array of token ids",
    );
  }
  return [...prompt];
}

/**
 * Generate tokens. Iterate for streaming steps; the iterator's return value
 * (or `generateText`) gives the summary.
 *
 * @example
 * ```ts ignore
 * for await (const step of generate(model, "Once upon", { maxTokens: 16 })) {
 *   console.log(step.text);
 * }
 * ```
 */
export async function* generate(
  model: Model,
  prompt: string | readonly number[],
  opts: GenerateOptions = {},
): AsyncGenerator<GenerateStep, GenerateResult, void> {
  const maxTokens = opts.maxTokens ?? 128;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new GenerationError(
      "bad_max_tokens",
      `Cannot generate: maxTokens must be a non-negative integer: received ${maxTokens}`,
    );
  }
  const sampler = new Sampler(opts);
  const ids = promptTokens(model, prompt, opts.addBos);
  if (ids.length === 0) {
    throw new GenerationError("empty_prompt", "Cannot generate: the prompt has no tokens");
  }
  const session = opts.session ?? new Session(model, { nCtx: opts.nCtx });
  const tok = model.tokenizer;
  const stopIds = new Set(opts.stopTokens ?? []);
  const stops = (opts.stop ?? []).filter((s) => s.length > 0);
  // the generated tokens continue the prompt: no SPM leading-space strip (llama.cpp streams
  // them with token_to_piece, lstrip 0), so "The little fox" + "▁woke" reads " woke"
  const decoder = StreamDecoder.forContinuation(tok, ids);
  const out: number[] = [];
  let text = "";
  let emitted = 0;
  let finish: FinishReason = "length";
  const t0 = performance.now();
  let t1 = t0;
  try {
    // keep the cached prefix of the prompt; at least one token is evaluated, for its logits
    let reuse = 0;
    if (opts.session) {
      const have = session.tokens;
      const max = Math.min(have.length, ids.length - 1);
      while (reuse < max && have[reuse] === ids[reuse]) reuse++;
      session.truncate(reuse);
    }
    let logits = await session.eval(reuse ? ids.slice(reuse) : ids, { signal: opts.signal });
    t1 = performance.now();
    const history = [...ids];
    while (out.length < maxTokens) {
      if (opts.signal?.aborted) {
        finish = "abort";
        break;
      }
      const id = sampler.sample(logits, history);
      if ((!opts.ignoreEos && tok.isEog(id)) || stopIds.has(id)) {
        finish = "stop";
        break;
      }
      out.push(id);
      history.push(id);
      text += decoder.push(id);
      // hold back text that could be the start of a stop string
      let cut = -1;
      for (const s of stops) {
        const i = text.indexOf(s);
        if (i >= 0 && (cut < 0 || i < cut)) cut = i;
      }
      if (cut >= 0) {
        text = text.slice(0, cut);
        if (text.length > emitted) yield { token: id, text: text.slice(emitted) };
        emitted = text.length;
        finish = "stop";
        break;
      }
      let safe = text.length;
      for (const s of stops) {
        for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
          if (text.endsWith(s.slice(0, k))) {
            safe = Math.min(safe, text.length - k);
            break;
          }
        }
      }
      yield { token: id, text: text.slice(emitted, Math.max(emitted, safe)) };
      emitted = Math.max(emitted, safe);
      if (out.length >= maxTokens) break;
      if (session.position >= session.nCtx) {
        finish = "length";
        break;
      }
      logits = await session.eval([id], { signal: opts.signal });
    }
    if (finish !== "stop") {
      text += decoder.flush();
      if (text.length > emitted) {
        yield { token: out[out.length - 1] ?? -1, text: text.slice(emitted) };
      }
    }
  } finally {
    if (!opts.session) session.dispose();
  }
  const t2 = performance.now();
  const decodeMs = t2 - t1;
  return {
    promptTokens: ids,
    tokens: out,
    text,
    finishReason: finish,
    timings: {
      prefillMs: t1 - t0,
      decodeMs,
      decodeTokensPerS: out.length > 1 ? (out.length - 1) / (decodeMs / 1000) : 0,
    },
  };
}

/** Run `generate` to completion and return its summary. */
export async function generateText(
  model: Model,
  prompt: string | readonly number[],
  opts: GenerateOptions = {},
): Promise<GenerateResult> {
  const it = generate(model, prompt, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
