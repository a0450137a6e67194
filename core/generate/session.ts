/**
 * A session: one KV cache plus the tokens evaluated so far.
 *
 * @module
 */

import type { KvCache } from "../backend/backend.ts";
import { GenerationError } from "../errors.ts";
import type { Model } from "../model/model.ts";

/** Options of a session. */
export interface SessionOptions {
  /** Context length (default: the model's, from its memory plan: min(training context, 2048) unless `loadModel`'s `nCtx` says otherwise). */
  nCtx?: number;
}

/** Evaluates tokens incrementally against one KV cache. */
export class Session {
  /** The model. */
  readonly model: Model;
  /** Context length. */
  readonly nCtx: number;
  readonly #cache: KvCache;
  readonly #tokens: number[] = [];
  #logits: Float32Array;
  #ids = new Int32Array(0);
  #out: Float32Array = new Float32Array(0);

  /** @param model loaded model; @param opts session options */
  constructor(model: Model, opts: SessionOptions = {}) {
    const hp = model.hp;
    const nCtx = opts.nCtx ?? model.nCtx ?? Math.min(hp.nCtxTrain, 2048);
    if (!Number.isInteger(nCtx) || nCtx < 1 || nCtx > 1 << 20) {
      throw new GenerationError(
        "bad_context",
        `Cannot create session: nCtx must be in [1, 1048576]: received ${nCtx}`,
      );
    }
    const plan = model.memoryPlan;
    if (plan && nCtx > plan.ctxLimit) {
      // the memory plan has room for ctxLimit positions beside its expert budget: a longer
      // context could run out of memory mid-generation, so it is refused now (docs/memory.md)
      throw new GenerationError(
        "context_too_large",
        `Cannot create session: a context of ${nCtx} does not fit the model's memory plan ` +
          `(at most ${plan.ctxLimit} beside its expert budget; load it with nCtx: ${nCtx} to ` +
          `plan for it, at most ${plan.maxCtx} fits)`,
        { nCtx, plannedCtx: plan.nCtx, ctxLimit: plan.ctxLimit, maxCtx: plan.maxCtx },
      );
    }
    this.model = model;
    this.nCtx = nCtx;
    this.#cache = model.backend.createKvCache({
      layers: hp.nLayer,
      nCtx,
      nKvHeads: hp.nHeadKv,
      headDimK: hp.headDimK,
      headDimV: hp.headDimV,
    });
    this.#logits = new Float32Array(hp.nVocab);
  }

  /** Tokens evaluated so far. */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  /** Next position. */
  get position(): number {
    return this.#tokens.length;
  }

  /**
   * Evaluate `tokens` after the ones already in the cache. Returns the logits
   * of the last token, or of every token (`[n][nVocab]`) with `allLogits`.
   * The returned array is reused by the next call.
   */
  async eval(
    tokens: ArrayLike<number>,
    opts: { allLogits?: boolean; signal?: AbortSignal } = {},
  ): Promise<Float32Array> {
    const n = tokens.length;
    const nVocab = this.model.hp.nVocab;
    if (n === 0) throw new GenerationError("empty_prompt", "Cannot evaluate: no tokens given");
    if (this.position + n > this.nCtx) {
      throw new GenerationError(
        "context_full",
        `Cannot evaluate ${n} tokens: ${this.position} of ${this.nCtx} context positions are used`,
        { position: this.position, nTokens: n, nCtx: this.nCtx },
      );
    }
    if (this.#ids.length !== n) this.#ids = new Int32Array(n);
    const ids = this.#ids;
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
        throw new GenerationError(
          "bad_token",
          `Cannot evaluate token ${t} at index ${i}: vocabulary has ${nVocab}`,
          {
            index: i,
            token: t,
          },
        );
      }
      ids[i] = t;
    }
    const need = opts.allLogits ? n * nVocab : nVocab;
    if (this.#logits.length < need) this.#logits = new Float32Array(need);
    if (this.#out.length !== need || this.#out.buffer !== this.#logits.buffer) {
      this.#out = need === this.#logits.length ? this.#logits : this.#logits.subarray(0, need);
    }
    const out = this.#out;
    await this.model.transformer.forward(
      this.#cache,
      ids,
      this.position,
      out,
      opts.allLogits ?? false,
      opts.signal,
    );
    // A NaN or ±Infinity logit means a poisoned weight, adapter or hyper-parameter upstream;
    // sampling from it would silently emit token 0 forever. Cost: one pass over the logits.
    for (let i = 0; i < out.length; i++) {
      if (out[i] - out[i] !== 0) {
        const row = Math.floor(i / nVocab);
        const at = opts.allLogits ? this.position + row : this.position + n - 1;
        throw new GenerationError(
          "non_finite_logits",
          `Cannot evaluate: the logit of token id ${i % nVocab} at position ${at} is ${out[i]} ` +
            `(a weight, adapter or hyper-parameter of the model is not finite)`,
          { position: at, tokenId: i % nVocab, value: out[i] },
        );
      }
    }
    for (let i = 0; i < n; i++) this.#tokens.push(ids[i]);
    return out;
  }

  /** Forget everything after the first `n` tokens (n = 0 clears). */
  truncate(n = 0): void {
    if (n < this.#tokens.length) this.#tokens.length = Math.max(0, n);
  }

  /** Free the KV cache. */
  dispose(): void {
    this.model.backend.freeKvCache(this.#cache);
  }
}
