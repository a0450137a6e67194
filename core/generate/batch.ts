/**
 * Continuous batching: one scheduler advances every active sequence together,
 * one `Transformer.forwardBatch` per step over their new tokens (each with
 * its own KV cache and position), as llama.cpp's server does with one
 * `llama_decode` per step. Decoding is bound by reading weights, so a step
 * over N sequences costs little more than a step over one; the MoE layer
 * groups the batch's tokens by expert, so an expert's weights are read (or
 * streamed) once per step for all the tokens routed to it.
 *
 * - New sequences join at the next step; finished, cancelled or aborted ones
 *   leave at the next step and free their KV cache.
 * - A new prompt is prefilled in chunks (at most `prefillChunk` prompt tokens
 *   per step while others decode, `prefillBurst` while none does; oldest
 *   prompt first), so it never stalls the others' decoding for more than one
 *   chunk, and every prompt progresses (no starvation).
 * - Each sequence samples with its own options, seed and stops
 *   ({@link Continuation}), so its tokens are those of `generate` alone up to
 *   the backend's multi-row summation order (docs/batching.md).
 * - Memory is bounded: at most `maxSequences` KV caches, each of its request's
 *   context; a sequence's undelivered steps are at most its `maxTokens`.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { KvCache } from "../backend/backend.ts";
import { GenerationError } from "../errors.ts";
import type { Model } from "../model/model.ts";
import type { BatchInput, LinearAdapter } from "../model/transformer.ts";
import { Continuation, type ContinuationOptions, type GenerateStep } from "./continuation.ts";
import type { GenerateResult } from "./generate.ts";

/** Options of a {@link BatchScheduler}. */
export interface BatchSchedulerOptions {
  /** Most sequences at once (slots; default 4). {@link BatchScheduler.submit} beyond throws. */
  maxSequences?: number;
  /**
   * Most prompt tokens evaluated per step over all prefilling sequences while some sequence is
   * decoding (default 64): bounds how long a new prompt stalls the others' next token.
   */
  prefillChunk?: number;
  /**
   * Most prompt tokens per step while no sequence is decoding (default 512, at least
   * `prefillChunk`): nobody waits on a token then, so prompts arriving together are prefilled
   * in one pass, where the MoE layer shares each expert's weights among more rows.
   */
  prefillBurst?: number;
  /** Called after every step (metrics, expert-usage flushes). Must not throw. */
  onStep?: (info: StepInfo) => void;
}

/** What one scheduler step did. */
export interface StepInfo {
  /** Sequences in the batch. */
  readonly sequences: number;
  /** Decode rows (one per decoding sequence). */
  readonly decodeRows: number;
  /** Prompt rows (prefill chunks). */
  readonly prefillRows: number;
  /** Wall time of the forward pass, ms. */
  readonly ms: number;
}

/** One sequence to generate. */
export interface SequenceRequest extends ContinuationOptions {
  /** Prompt token ids (BOS included when wanted), at least one. */
  readonly prompt: readonly number[];
  /** Most tokens to generate (a non-negative integer). */
  readonly maxTokens: number;
  /** Context (KV cache) length (default: prompt + max(1, maxTokens)). */
  readonly nCtx?: number;
  /** Aborts the sequence at the next step (its generation ends with `"abort"`). */
  readonly signal?: AbortSignal;
  /**
   * Linear adapters of this sequence only (a named adapter of the manifest), applied after the
   * model's own. Sequences with the same array run in one batched pass; each distinct array gets
   * its own pass over the shared base weights.
   */
  readonly adapters?: readonly LinearAdapter[];
}

/** A submitted sequence: iterate `steps` (one consumer), or `cancel()` it. */
export interface BatchSequence {
  /** Token steps; the return value is the summary. Returning early cancels the sequence. */
  readonly steps: AsyncGenerator<GenerateStep, GenerateResult, void>;
  /** End the sequence at the next step and free its slot. Idempotent. */
  cancel(): void;
  /** Resolves once the sequence has left the batch and its KV cache is freed. */
  readonly finished: Promise<void>;
}

/** Per-sequence state. */
class Seq {
  readonly ids: number[];
  readonly cont: Continuation;
  readonly cache: KvCache;
  readonly nCtx: number;
  readonly maxTokens: number;
  readonly signal: AbortSignal | undefined;
  readonly adapters: readonly LinearAdapter[] | undefined;
  readonly t0 = performance.now();
  t1 = 0;
  /** Tokens in the cache. */
  pos = 0;
  /** Next token to feed once the prompt is in (decode). */
  next = -1;
  /** Rows this sequence has in the current batch. */
  rows = 0;
  cancelled = false;
  done = false;
  readonly queue: GenerateStep[] = [];
  head = 0;
  result: GenerateResult | null = null;
  error: unknown = null;
  hasError = false;
  wake: (() => void) | null = null;
  freed!: () => void;
  readonly finished: Promise<void>;

  constructor(req: SequenceRequest, cont: Continuation, cache: KvCache, nCtx: number) {
    this.ids = [...req.prompt];
    this.cont = cont;
    this.cache = cache;
    this.nCtx = nCtx;
    this.maxTokens = req.maxTokens;
    this.signal = req.signal;
    this.adapters = req.adapters?.length ? req.adapters : undefined;
    this.finished = new Promise((r) => this.freed = r);
  }

  get prefilling(): boolean {
    return this.pos < this.ids.length;
  }

  push(step: GenerateStep): void {
    this.queue.push(step);
    this.notify();
  }

  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}

/** Advances many sequences together, one batched forward pass per step. */
/**
 * Most milliseconds of batch steps between two yields to the event loop's socket poll (a 0 ms
 * timer): the latency added to streamed tokens, at ~2 ms per yield (≤ 10 % of throughput).
 */
const FLUSH_MS = 20;

export class BatchScheduler {
  /** The model. */
  readonly model: Model;
  /** Slot count. */
  readonly maxSequences: number;
  /** Prompt tokens per step while some sequence decodes. */
  readonly prefillChunk: number;
  /** Prompt tokens per step while none decodes. */
  readonly prefillBurst: number;
  readonly #onStep: ((info: StepInfo) => void) | undefined;
  readonly #seqs: Seq[] = [];
  #logits: Float32Array;
  #running = false;
  #steps = 0;

  /** @param model loaded model; @param opts slots, prefill chunk, step observer */
  constructor(model: Model, opts: BatchSchedulerOptions = {}) {
    const maxSequences = opts.maxSequences ?? 4;
    const prefillChunk = opts.prefillChunk ?? 64;
    const prefillBurst = opts.prefillBurst ?? Math.max(512, prefillChunk);
    if (!Number.isInteger(maxSequences) || maxSequences < 1 || maxSequences > 4096) {
      throw new GenerationError(
        "bad_batch",
        `Cannot create batch scheduler: maxSequences must be an integer in [1, 4096]: received ${maxSequences}`,
      );
    }
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1 || prefillChunk > 65536) {
      throw new GenerationError(
        "bad_batch",
        `Cannot create batch scheduler: prefillChunk must be an integer in [1, 65536]: received ${prefillChunk}`,
      );
    }
    if (!Number.isInteger(prefillBurst) || prefillBurst < prefillChunk || prefillBurst > 65536) {
      throw new GenerationError(
        "bad_batch",
        `Cannot create batch scheduler: prefillBurst must be an integer in [prefillChunk, 65536]: received ${prefillBurst}`,
      );
    }
    this.model = model;
    this.maxSequences = maxSequences;
    this.prefillChunk = prefillChunk;
    this.prefillBurst = prefillBurst;
    this.#onStep = opts.onStep;
    this.#logits = new Float32Array(0);
  }

  /** Sequences in the batch (prefilling or decoding, including ones leaving at the next step). */
  get active(): number {
    return this.#seqs.length;
  }

  /** Steps run so far. */
  get stepCount(): number {
    return this.#steps;
  }

  /**
   * Add a sequence; it joins the batch at the next step. Throws `GenerationError` for a bad
   * request (`empty_prompt`, `bad_token`, `bad_max_tokens`, `bad_context`, `context_full`,
   * `context_too_large` beyond the model's memory plan, sampling options) and `batch_full` when every slot is taken.
   */
  submit(req: SequenceRequest): BatchSequence {
    const hp = this.model.hp;
    const { prompt, maxTokens } = req;
    if (!Array.isArray(prompt) || prompt.length === 0) {
      throw new GenerationError("empty_prompt", "Cannot generate: the prompt has no tokens");
    }
    for (let i = 0; i < prompt.length; i++) {
      const t = prompt[i];
      if (!Number.isInteger(t) || t < 0 || t >= hp.nVocab) {
        throw new GenerationError(
          "bad_token",
          `Cannot evaluate token ${t} at index ${i}: vocabulary has ${hp.nVocab}`,
          { index: i, token: t },
        );
      }
    }
    if (!Number.isInteger(maxTokens) || maxTokens < 0) {
      throw new GenerationError(
        "bad_max_tokens",
        `Cannot generate: maxTokens must be a non-negative integer: received ${maxTokens}`,
      );
    }
    const nCtx = req.nCtx ?? prompt.length + Math.max(1, maxTokens);
    if (!Number.isInteger(nCtx) || nCtx < 1 || nCtx > 1 << 20) {
      throw new GenerationError(
        "bad_context",
        `Cannot create session: nCtx must be in [1, 1048576]: received ${nCtx}`,
      );
    }
    const plan = this.model.memoryPlan;
    if (plan && nCtx > plan.ctxLimit) {
      // as Session: the memory plan has room for ctxLimit positions per sequence beside its
      // expert budget (docs/memory.md)
      throw new GenerationError(
        "context_too_large",
        `Cannot add a sequence: a context of ${nCtx} does not fit the model's memory plan ` +
          `(at most ${plan.ctxLimit} beside its expert budget)`,
        { nCtx, plannedCtx: plan.nCtx, ctxLimit: plan.ctxLimit, maxCtx: plan.maxCtx },
      );
    }
    if (prompt.length > nCtx) {
      throw new GenerationError(
        "context_full",
        `Cannot evaluate ${prompt.length} tokens: 0 of ${nCtx} context positions are used`,
        { position: 0, nTokens: prompt.length, nCtx },
      );
    }
    if (this.#seqs.length >= this.maxSequences) {
      throw new GenerationError(
        "batch_full",
        `Cannot add a sequence: all ${this.maxSequences} batch slots are taken`,
        { maxSequences: this.maxSequences },
      );
    }
    const cont = new Continuation(this.model, prompt, req);
    const cache = this.model.backend.createKvCache({
      layers: hp.nLayer,
      nCtx,
      nKvHeads: hp.nHeadKv,
      headDimK: hp.headDimK,
      headDimV: hp.headDimV,
    });
    const seq = new Seq(req, cont, cache, nCtx);
    this.#seqs.push(seq);
    if (!this.#running) {
      this.#running = true;
      this.#loop().catch((e) => {
        // the loop handles errors per step; this is a last resort so no consumer hangs
        for (const s of this.#seqs) this.#fail(s, e);
        this.#seqs.length = 0;
        this.#running = false;
      });
    }
    const cancel = (): void => {
      if (!seq.done) seq.cancelled = true;
    };
    return { steps: this.#iterate(seq), cancel, finished: seq.finished };
  }

  async *#iterate(seq: Seq): AsyncGenerator<GenerateStep, GenerateResult, void> {
    try {
      for (;;) {
        if (seq.head < seq.queue.length) {
          const step = seq.queue[seq.head];
          seq.queue[seq.head++] = undefined as unknown as GenerateStep;
          if (seq.head > 64 && seq.head * 2 > seq.queue.length) {
            seq.queue.splice(0, seq.head);
            seq.head = 0;
          }
          yield step;
          continue;
        }
        if (seq.hasError) throw seq.error;
        if (seq.result) return seq.result;
        await new Promise<void>((r) => seq.wake = r);
      }
    } finally {
      if (!seq.done) seq.cancelled = true;
    }
  }

  async #loop(): Promise<void> {
    const be = this.model.backend;
    const tf = this.model.transformer;
    const nVocab = this.model.hp.nVocab;
    let flushed = performance.now();
    while (this.#seqs.length > 0) {
      // Backend ops are synchronous: let sockets, new requests and cancellations in between
      // steps. setImmediate (~10 µs) does not reach the runtime's socket poll in Deno: streamed
      // tokens then stayed unsent until the loop went idle (a whole completion in one burst at
      // its end, measured by bench/load.ts). A timer does (~2 ms here), so take one whenever
      // FLUSH_MS of steps ran since the last.
      if (performance.now() - flushed >= FLUSH_MS) {
        await new Promise<void>((r) => setTimeout(r, 0));
        flushed = performance.now();
      } else {
        await new Promise<void>((r) => setImmediate(r));
      }
      for (const s of this.#seqs) {
        if (s.cancelled || s.signal?.aborted) this.#end(s, "abort");
      }
      this.#retire(be);
      if (this.#seqs.length === 0) break;
      const inputs: BatchInput[] = [];
      const members: Seq[] = [];
      let decodeRows = 0;
      for (const s of this.#seqs) {
        if (s.prefilling) continue;
        s.rows = 1;
        inputs.push({ cache: s.cache, tokens: Int32Array.of(s.next), startPos: s.pos });
        members.push(s);
        decodeRows++;
      }
      let budget = decodeRows > 0 ? this.prefillChunk : this.prefillBurst;
      for (const s of this.#seqs) {
        if (budget === 0) break;
        if (!s.prefilling) continue;
        const take = Math.min(budget, s.ids.length - s.pos);
        s.rows = take;
        inputs.push({
          cache: s.cache,
          tokens: Int32Array.from(s.ids.slice(s.pos, s.pos + take)),
          startPos: s.pos,
        });
        members.push(s);
        budget -= take;
      }
      if (this.#logits.length < members.length * nVocab) {
        this.#logits = new Float32Array(Math.min(this.maxSequences, 2 * members.length) * nVocab);
      }
      const logits = this.#logits;
      const t = performance.now();
      try {
        await this.#forward(tf, inputs, members, logits);
      } catch (e) {
        for (const s of members) this.#fail(s, e);
        this.#retire(be);
        continue;
      } finally {
        this.#steps++;
      }
      const ms = performance.now() - t;
      for (let j = 0; j < members.length; j++) {
        const s = members[j];
        s.pos += s.rows;
        if (s.prefilling) continue;
        const row = logits.subarray(j * nVocab, (j + 1) * nVocab);
        try {
          this.#advance(s, row);
        } catch (e) {
          this.#fail(s, e);
        }
      }
      this.#retire(be);
      this.#onStep?.({
        sequences: members.length,
        decodeRows,
        prefillRows: inputs.length === 0 ? 0 : inputs.reduce((a, b) => a + b.tokens.length, 0) -
          decodeRows,
        ms,
      });
    }
    this.#running = false;
  }

  /**
   * One pass over `inputs` (stably reordered, with `members`, so sequences with the same adapters
   * are adjacent): one `forwardBatch` per distinct adapter set, with the model's own adapters
   * plus that set, restored afterwards.
   */
  async #forward(
    tf: Model["transformer"],
    inputs: BatchInput[],
    members: Seq[],
    logits: Float32Array,
  ): Promise<void> {
    if (members.every((s) => s.adapters === undefined)) {
      return await tf.forwardBatch(inputs, logits);
    }
    const sets = [...new Set(members.map((s) => s.adapters))];
    const order = members.map((_, i) => i).sort((a, b) =>
      sets.indexOf(members[a].adapters) - sets.indexOf(members[b].adapters) || a - b
    );
    const ins = order.map((i) => inputs[i]), mem = order.map((i) => members[i]);
    inputs.splice(0, inputs.length, ...ins);
    members.splice(0, members.length, ...mem);
    const own = tf.adapters;
    const nVocab = this.model.hp.nVocab;
    try {
      for (let j = 0; j < members.length;) {
        const set = members[j].adapters;
        let k = j;
        while (k < members.length && members[k].adapters === set) k++;
        tf.adapters = set ? [...own, ...set] : own;
        await tf.forwardBatch(inputs.slice(j, k), logits.subarray(j * nVocab, k * nVocab));
        j = k;
      }
    } finally {
      tf.adapters = own;
    }
  }

  /** Sample the next token of `s` from its logits row; end it when it stops. */
  #advance(s: Seq, row: Float32Array): void {
    if (s.t1 === 0) s.t1 = performance.now();
    // a NaN or ±Infinity logit means a poisoned weight, adapter or hyper-parameter upstream
    for (let i = 0; i < row.length; i++) {
      if (row[i] - row[i] !== 0) {
        throw new GenerationError(
          "non_finite_logits",
          `Cannot evaluate: the logit of token id ${i} at position ${s.pos - 1} is ${row[i]} ` +
            `(a weight, adapter or hyper-parameter of the model is not finite)`,
          { position: s.pos - 1, tokenId: i, value: row[i] },
        );
      }
    }
    const cont = s.cont;
    if (cont.tokens.length >= s.maxTokens) return this.#end(s, "length");
    const r = cont.accept(row);
    if (r.step) s.push(r.step);
    if (r.stopped) return this.#end(s, "stop");
    if (cont.tokens.length >= s.maxTokens || s.pos >= s.nCtx) return this.#end(s, "length");
    s.next = r.token;
  }

  /** Finish `s` with `reason` (flushing held-back text); it leaves at the next retire. */
  #end(s: Seq, reason: "stop" | "length" | "abort"): void {
    if (s.done) return;
    s.done = true;
    const cont = s.cont;
    if (reason !== "stop") cont.finish = reason;
    const last = cont.end();
    if (last) s.queue.push(last);
    const t2 = performance.now();
    const t1 = s.t1 || t2;
    const n = cont.tokens.length;
    s.result = {
      promptTokens: s.ids,
      tokens: cont.tokens,
      text: cont.text,
      finishReason: cont.finish,
      timings: {
        prefillMs: t1 - s.t0,
        decodeMs: t2 - t1,
        decodeTokensPerS: n > 1 ? (n - 1) / ((t2 - t1) / 1000) : 0,
      },
    };
    s.notify();
  }

  #fail(s: Seq, e: unknown): void {
    if (s.done) return;
    s.done = true;
    s.error = e;
    s.hasError = true;
    s.notify();
  }

  /** Remove finished sequences and free their caches. */
  #retire(be: Model["backend"]): void {
    let w = 0;
    for (const s of this.#seqs) {
      if (s.done) {
        be.freeKvCache(s.cache);
        s.freed();
      } else this.#seqs[w++] = s;
    }
    this.#seqs.length = w;
  }
}
