/**
 * A serving runtime: one loaded model, a name for it, admission control
 * (slots + bounded queue) and continuous batching: every active generation
 * advances in one batched forward pass per step (`core/generate/batch.ts`),
 * so N concurrent streams share each step's weight reads instead of taking
 * turns. New requests join at the next step, finished or disconnected ones
 * leave at the next step, and a new prompt is prefilled in chunks so it does
 * not stall the others' decoding. The scheduler is the only caller of the
 * model's forward pass, which shares scratch buffers and is not re-entrant.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { BatchScheduler, type BatchSequence } from "../core/generate/batch.ts";
import type { GenerateResult, GenerateStep } from "../core/generate/generate.ts";
import type { Model } from "../core/model/model.ts";
import type { LinearAdapter } from "../core/model/transformer.ts";
import { ServeError } from "./errors.ts";
import { ExpertUsage } from "./expert_usage.ts";
import { Limiter, Mutex, QueueFullError, type Release } from "./limiter.ts";
import { type GenerationOutcome, RuntimeStats } from "./stats.ts";

/** Options of {@link createRuntime}. */
export interface RuntimeOptions {
  /** Model id shown by `/v1/models` and required in requests (default `"moe-edge"`). */
  name?: string;
  /** Generations decoding at once, batched into one forward pass per step (default 4). */
  maxConcurrent?: number;
  /**
   * Most prompt tokens evaluated per step across new requests while others decode (default 64):
   * a long prompt is prefilled over several steps while the other generations keep decoding.
   */
  prefillChunk?: number;
  /** Most prompt tokens per step while no generation is decoding (default 512). */
  prefillBurst?: number;
  /** Requests waiting for a slot before new ones get 429 (default 64). */
  maxQueue?: number;
  /** Largest context (prompt + completion) of one request (default min(training context, 2048)). */
  nCtx?: number;
  /**
   * Named adapters (a manifest's `adapters`): served as models `<name>:<adapter>`, each request's
   * generation runs with the adapter it picked, over the same base weights.
   */
  adapters?: ReadonlyMap<string, readonly LinearAdapter[]>;
}

/** One admitted generation request, already tokenized. */
export interface RunRequest {
  /** Prompt token ids (BOS included when wanted). */
  prompt: readonly number[];
  /** Most tokens to generate. */
  maxTokens: number;
  /** Stop strings. */
  stop?: readonly string[];
  /** Sampling temperature (0 = greedy). */
  temperature?: number;
  /** Nucleus sampling mass. */
  topP?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Drop tokens below minP · the top probability (0 = off). */
  minP?: number;
  /** llama.cpp's repetition penalty (1 = off). */
  repetitionPenalty?: number;
  /** OpenAI's frequency penalty (0 = off). */
  frequencyPenalty?: number;
  /** OpenAI's presence penalty (0 = off). */
  presencePenalty?: number;
  /** Added to the logits of these token ids. */
  logitBias?: ReadonlyMap<number, number>;
  /** PRNG seed. */
  seed?: number;
  /** Do not stop at end-of-generation tokens. */
  ignoreEos?: boolean;
  /** Aborts the generation (client gone or deadline); a `TimeoutError` reason counts as a timeout. */
  signal?: AbortSignal;
  /** Named adapter to generate with ({@link ModelRuntime.resolveModel}); null or absent = the base model. */
  adapter?: string | null;
}

/** A generation holding a slot: iterate `steps`, then always `close()`. */
export interface Generation {
  /** Token steps; the return value is the summary. */
  readonly steps: AsyncGenerator<GenerateStep, GenerateResult, void>;
  /** Stop early if still running and free the slot. Idempotent. */
  close(): Promise<void>;
}

/** A loaded model ready to serve. */
export class ModelRuntime {
  /** Model id. */
  readonly name: string;
  /** The model. */
  readonly model: Model;
  /** Unix seconds when the runtime was created. */
  readonly created: number;
  /** Largest context of one request. */
  readonly nCtx: number;
  /** Per-layer expert usage. */
  readonly experts: ExpertUsage;
  /** Token and generation counters. */
  readonly stats: RuntimeStats = new RuntimeStats();
  readonly #limiter: Limiter;
  readonly #batch: BatchScheduler;
  readonly #tokenize = new Mutex();
  #maxTokenChars = 0;
  readonly #adapters: ReadonlyMap<string, readonly LinearAdapter[]>;
  /** Generation requests per adapter (`""` = the base model), for `/metrics`. */
  readonly adapterRequests: Map<string, number> = new Map();

  /** Use {@link createRuntime}. */
  constructor(model: Model, opts: RuntimeOptions = {}) {
    this.model = model;
    this.name = opts.name ?? "moe-edge";
    this.created = Math.floor(Date.now() / 1000);
    this.nCtx = opts.nCtx ?? Math.min(model.hp.nCtxTrain, 2048);
    if (!Number.isInteger(this.nCtx) || this.nCtx < 2) {
      throw new RangeError(
        `Cannot create runtime: nCtx must be an integer ≥ 2: received ${opts.nCtx}`,
      );
    }
    this.#adapters = new Map(opts.adapters ?? []);
    this.adapterRequests.set("", 0);
    for (const a of this.#adapters.keys()) this.adapterRequests.set(a, 0);
    this.#limiter = new Limiter(opts.maxConcurrent ?? 4, opts.maxQueue ?? 64);
    this.experts = new ExpertUsage(model);
    this.#batch = new BatchScheduler(model, {
      maxSequences: this.#limiter.maxActive,
      prefillChunk: opts.prefillChunk ?? 64,
      prefillBurst: opts.prefillBurst,
      onStep: () => this.experts.flush(),
    });
  }

  /** Names of the adapters, in manifest order. */
  get adapterNames(): string[] {
    return [...this.#adapters.keys()];
  }

  /** Every model id this runtime serves: its name, then `<name>:<adapter>` per adapter. */
  get modelIds(): string[] {
    return [this.name, ...this.adapterNames.map((a) => `${this.name}:${a}`)];
  }

  /**
   * The adapter a request's `model` picks: null for the base model (or no `model`), the adapter's
   * name for `<name>:<adapter>`. Throws `ServeError` `"model_not_found"` (404) for anything else.
   */
  resolveModel(model: string | null): string | null {
    if (model === null || model === this.name) return null;
    const pre = `${this.name}:`;
    if (model.startsWith(pre) && this.#adapters.has(model.slice(pre.length))) {
      return model.slice(pre.length);
    }
    const known = this.modelIds.map((m) => `'${m}'`).join(", ");
    throw new ServeError(
      "model_not_found",
      `The model '${model}' does not exist; this server serves ${known}`,
      { param: "model" },
    );
  }

  /** Generations decoding now. */
  get active(): number {
    return this.#limiter.active;
  }

  /** Batched forward passes (scheduler steps) run so far. */
  get batchSteps(): number {
    return this.#batch.stepCount;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#limiter.queued;
  }

  /** Slot count. */
  get maxConcurrent(): number {
    return this.#limiter.maxActive;
  }

  /** Queue capacity. */
  get maxQueue(): number {
    return this.#limiter.maxQueue;
  }

  /**
   * Wait for a slot, then return the generation. Throws `ServeError`
   * `"queue_full"` (with a retry estimate) when the queue is full, or the
   * signal's reason when it aborts while waiting.
   */
  async start(req: RunRequest): Promise<Generation> {
    const t0 = performance.now();
    const adapter = req.adapter ?? null;
    const adapters = adapter === null ? undefined : this.#adapters.get(adapter);
    if (adapter !== null && !adapters) this.resolveModel(`${this.name}:${adapter}`); // throws 404
    const key = adapter ?? "";
    this.adapterRequests.set(key, (this.adapterRequests.get(key) ?? 0) + 1);
    let release: Release;
    try {
      release = await this.#limiter.acquire(req.signal);
    } catch (e) {
      if (!(e instanceof QueueFullError)) throw e;
      this.stats.reject();
      const retryAfter = Math.max(
        1,
        (this.stats.meanGenerationS * (this.queued + 1)) / this.maxConcurrent,
      );
      throw new ServeError("queue_full", `Cannot start generation: ${e.message}; retry later`, {
        retryAfter,
      });
    }
    let seq: BatchSequence;
    try {
      seq = this.#batch.submit({
        prompt: req.prompt,
        maxTokens: req.maxTokens,
        stop: req.stop,
        temperature: req.temperature,
        topP: req.topP,
        topK: req.topK,
        minP: req.minP,
        repetitionPenalty: req.repetitionPenalty,
        frequencyPenalty: req.frequencyPenalty,
        presencePenalty: req.presencePenalty,
        logitBias: req.logitBias,
        seed: req.seed,
        ignoreEos: req.ignoreEos,
        signal: req.signal,
        nCtx: Math.min(this.nCtx, req.prompt.length + Math.max(1, req.maxTokens)),
        adapters,
      });
    } catch (e) {
      // a bad request: reported by the first step, as a generation error
      release();
      this.stats.addPrompt(req.prompt.length);
      this.stats.finish("error", (performance.now() - t0) / 1000);
      // deno-lint-ignore require-yield
      const steps = (async function* (): AsyncGenerator<GenerateStep, GenerateResult, void> {
        throw e;
      })();
      return { steps, close: async () => void await steps.return(undefined as never) };
    }
    this.stats.addPrompt(req.prompt.length);
    let recorded = false;
    const record = (outcome: GenerationOutcome): void => {
      if (recorded) return;
      recorded = true;
      this.stats.finish(outcome, (performance.now() - t0) / 1000);
    };
    // the slot is free once the sequence has left the batch (its KV cache freed), whether it
    // finished, was aborted, or was closed, even when nobody reads its steps any more
    const freed = seq.finished.then(() => release());
    const cleanup = (): Promise<void> => {
      seq.cancel();
      return freed;
    };
    const steps = this.#steps(seq.steps, req.signal, record, t0, cleanup);
    const close = async (): Promise<void> => {
      // runs the wrapper's `finally` when it is suspended; a no-op when it never started or already ended
      await steps.return(undefined as unknown as GenerateResult);
      record("abort");
      await cleanup();
    };
    return { steps, close };
  }

  async *#steps(
    inner: AsyncGenerator<GenerateStep, GenerateResult, void>,
    signal: AbortSignal | undefined,
    record: (outcome: GenerationOutcome) => void,
    t0: number,
    cleanup: () => Promise<void>,
  ): AsyncGenerator<GenerateStep, GenerateResult, void> {
    let outcome: GenerationOutcome = "abort";
    let counted = 0;
    try {
      for (;;) {
        // an abort before the first token is reported as the signal's reason
        if (counted === 0) signal?.throwIfAborted();
        const r = await inner.next();
        if (r.done) {
          const res = r.value;
          this.stats.addTokens(res.tokens.length - counted);
          outcome = res.finishReason === "abort" ? abortOutcome(signal) : res.finishReason;
          return res;
        }
        if (counted === 0) this.stats.observeTtft((performance.now() - t0) / 1000);
        this.stats.addTokens(1);
        counted++;
        yield r.value;
      }
    } catch (e) {
      outcome = signal?.aborted ? abortOutcome(signal) : "error";
      throw e;
    } finally {
      record(outcome);
      await inner.return(undefined as unknown as GenerateResult);
      await cleanup();
    }
  }

  /** Tokenize `text` with the model's tokenizer, matching special-token texts. */
  encode(text: string, addBos?: boolean): number[] {
    const tok = this.model.tokenizer;
    return tok.encode(text, { addBos: addBos ?? tok.addBos, parseSpecial: true });
  }

  /**
   * The most UTF-16 code units of input one token can stand for: the longest
   * token text (SentencePiece's `▁` stands for one space, a byte-level BPE
   * character for one byte, a byte token `<0xAB>` for one byte, an unknown
   * token for one character), at least 2. So a text of n code units has at
   * least ⌊n / maxTokenChars⌋ tokens — known before tokenizing it.
   */
  get maxTokenChars(): number {
    if (this.#maxTokenChars === 0) {
      const tok = this.model.tokenizer;
      let m = 2;
      for (let id = 0; id < tok.vocabSize; id++) m = Math.max(m, tok.tokenText(id).length);
      this.#maxTokenChars = m;
    }
    return this.#maxTokenChars;
  }

  /** A lower bound on the token count of `text` (see {@link maxTokenChars}); does not tokenize. */
  minTokens(text: string): number {
    return Math.floor(text.length / this.maxTokenChars);
  }

  /**
   * {@link encode} taking turns: one tokenization at a time, each after the
   * event loop has polled I/O, so concurrent large prompts cannot stall other
   * requests for longer than one tokenization. Rejects with the signal's
   * reason when it aborts while waiting.
   */
  encodeQueued(text: string, addBos?: boolean, signal?: AbortSignal): Promise<number[]> {
    return this.#tokenize.run(async () => {
      await yieldToEventLoop();
      signal?.throwIfAborted();
      return this.encode(text, addBos);
    });
  }

  /** Stop observing the model (the model itself stays loaded). */
  close(): void {
    this.experts.detach();
  }
}

/** Resolve after pending I/O has been polled (a macrotask, without timer clamping). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function abortOutcome(signal: AbortSignal | undefined): GenerationOutcome {
  const r: unknown = signal?.reason;
  return r instanceof DOMException && r.name === "TimeoutError" ? "timeout" : "abort";
}

/**
 * Wrap a loaded model for serving.
 *
 * @example
 * ```ts ignore
 * const runtime = createRuntime(await loadModel("model.gguf"), { name: "mixtral", maxConcurrent: 2 });
 * Deno.serve(createApp(runtime).fetch);
 * ```
 */
export function createRuntime(model: Model, opts: RuntimeOptions = {}): ModelRuntime {
  return new ModelRuntime(model, opts);
}
