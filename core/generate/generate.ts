/**
 * Text generation as an async iterable of steps, with sampling, stop
 * tokens, stop strings, a token budget and cancellation.
 *
 * @module
 */

import { GenerationError } from "../errors.ts";
import type { Model } from "../model/model.ts";
import {
  Continuation,
  type ContinuationOptions,
  type FinishReason,
  type GenerateStep,
} from "./continuation.ts";
import { Session } from "./session.ts";

export type { FinishReason, GenerateStep };

/** Options of `generate`. */
export interface GenerateOptions extends ContinuationOptions {
  /** Most tokens to generate (default 128). */
  maxTokens?: number;
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
  const ids = promptTokens(model, prompt, opts.addBos);
  if (ids.length === 0) {
    throw new GenerationError("empty_prompt", "Cannot generate: the prompt has no tokens");
  }
  const cont = new Continuation(model, ids, opts);
  const session = opts.session ?? new Session(model, { nCtx: opts.nCtx });
  const out = cont.tokens;
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
    while (out.length < maxTokens) {
      if (opts.signal?.aborted) {
        cont.finish = "abort";
        break;
      }
      const r = cont.accept(logits);
      if (r.step) yield r.step;
      if (r.stopped) break;
      if (out.length >= maxTokens) break;
      if (session.position >= session.nCtx) {
        cont.finish = "length";
        break;
      }
      logits = await session.eval([r.token], { signal: opts.signal });
    }
    const last = cont.end();
    if (last) yield last;
  } finally {
    if (!opts.session) session.dispose();
  }
  const t2 = performance.now();
  const decodeMs = t2 - t1;
  return {
    promptTokens: ids,
    tokens: out,
    text: cont.text,
    finishReason: cont.finish,
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
