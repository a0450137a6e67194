/**
 * Token sampling: greedy, or temperature with top-k, top-p and min-p
 * filtering, a repetition penalty, and a seeded PRNG so runs reproduce.
 *
 * @module
 */

import { GenerationError } from "../errors.ts";
import { Rng } from "../util/rng.ts";

/** Sampling options. Defaults give greedy decoding. */
export interface SamplingOptions {
  /** 0 (default) = greedy argmax. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Keep the smallest set with cumulative probability ≥ p (1 = off). */
  topP?: number;
  /** Drop tokens with probability < minP · max probability (0 = off). */
  minP?: number;
  /** Divide positive / multiply negative logits of recent tokens (1 = off). */
  repetitionPenalty?: number;
  /** How many recent tokens the penalties look at (default 64). */
  repetitionWindow?: number;
  /** Subtract `n · frequencyPenalty` from a token seen n times in the window, in [-2, 2] (0 = off). */
  frequencyPenalty?: number;
  /** Subtract `presencePenalty` from every token seen in the window, in [-2, 2] (0 = off). */
  presencePenalty?: number;
  /** Added to the logits of these token ids before the penalties, each in [-100, 100]. */
  logitBias?: ReadonlyMap<number, number>;
  /** PRNG seed (default 0). */
  seed?: number;
}

/** Index of the largest value; the first maximum wins (llama.cpp greedy). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The sampler's generator (sfc32); it lives in `core/util/rng.ts`, re-exported here. */
export { Rng };

function checkOpt(
  name: string,
  v: number | undefined,
  ok: (v: number) => boolean,
  range: string,
): void {
  if (v !== undefined && !(typeof v === "number" && ok(v))) {
    throw new GenerationError(
      "bad_sampling",
      `Cannot sample: ${name} must be ${range}: received ${v}`,
      {
        field: name,
      },
    );
  }
}

/** Validate sampling options; throws `GenerationError` naming the bad field. */
export function validateSampling(o: SamplingOptions): void {
  checkOpt("temperature", o.temperature, (v) => v >= 0 && v <= 100, "in [0, 100]");
  checkOpt("topK", o.topK, (v) => Number.isInteger(v) && v >= 0, "a non-negative integer");
  checkOpt("topP", o.topP, (v) => v > 0 && v <= 1, "in (0, 1]");
  checkOpt("minP", o.minP, (v) => v >= 0 && v <= 1, "in [0, 1]");
  checkOpt("repetitionPenalty", o.repetitionPenalty, (v) => v > 0 && v <= 10, "in (0, 10]");
  checkOpt("frequencyPenalty", o.frequencyPenalty, (v) => v >= -2 && v <= 2, "in [-2, 2]");
  checkOpt("presencePenalty", o.presencePenalty, (v) => v >= -2 && v <= 2, "in [-2, 2]");
  for (const [id, b] of o.logitBias ?? []) {
    checkOpt("logitBias id", id, (v) => Number.isInteger(v) && v >= 0, "a non-negative integer");
    checkOpt("logitBias value", b, (v) => v >= -100 && v <= 100, "in [-100, 100]");
  }
  checkOpt(
    "repetitionWindow",
    o.repetitionWindow,
    (v) => Number.isInteger(v) && v >= 0,
    "a non-negative integer",
  );
  checkOpt("seed", o.seed, (v) => Number.isInteger(v), "an integer");
}

/** Picks the next token from logits. Reuses its buffers across calls. */
export class Sampler {
  readonly #o: Required<Omit<SamplingOptions, "logitBias">>;
  readonly #bias: ReadonlyMap<number, number>;
  readonly #rng: Rng;
  #order: number[] = [];
  #p = new Float64Array(0);

  /** @param opts sampling options (validated) */
  constructor(opts: SamplingOptions = {}) {
    validateSampling(opts);
    this.#o = {
      temperature: opts.temperature ?? 0,
      topK: opts.topK ?? 0,
      topP: opts.topP ?? 1,
      minP: opts.minP ?? 0,
      repetitionPenalty: opts.repetitionPenalty ?? 1,
      repetitionWindow: opts.repetitionWindow ?? 64,
      frequencyPenalty: opts.frequencyPenalty ?? 0,
      presencePenalty: opts.presencePenalty ?? 0,
      seed: opts.seed ?? 0,
    };
    this.#bias = new Map(opts.logitBias ?? []);
    this.#rng = new Rng(this.#o.seed);
  }

  /**
   * Choose a token. `logits` is modified (bias, penalties); `history` is the
   * tokens so far. Throws `GenerationError` `"bad_sampling"` when a
   * `logitBias` id is outside the vocabulary.
   */
  sample(logits: Float32Array, history: ArrayLike<number> = []): number {
    const o = this.#o;
    for (const [id, b] of this.#bias) {
      if (id >= logits.length) {
        throw new GenerationError(
          "bad_sampling",
          `Cannot sample: logitBias token ${id} is outside the vocabulary of ${logits.length}`,
          { field: "logitBias" },
        );
      }
      logits[id] += b;
    }
    if (o.repetitionPenalty !== 1 || o.frequencyPenalty !== 0 || o.presencePenalty !== 0) {
      // llama.cpp's penalties sampler: counts over the window, then per distinct token
      const counts = new Map<number, number>();
      for (let i = Math.max(0, history.length - o.repetitionWindow); i < history.length; i++) {
        const t = history[i];
        if (t < 0 || t >= logits.length) continue;
        counts.set(t, (counts.get(t) ?? 0) + 1);
      }
      for (const [t, n] of counts) {
        if (o.repetitionPenalty !== 1) {
          logits[t] = logits[t] > 0
            ? logits[t] / o.repetitionPenalty
            : logits[t] * o.repetitionPenalty;
        }
        logits[t] -= n * o.frequencyPenalty + o.presencePenalty;
      }
    }
    if (o.temperature === 0) return argmax(logits);
    const n = logits.length;
    if (this.#p.length < n) this.#p = new Float64Array(n);
    const p = this.#p, order = this.#order;
    order.length = n;
    for (let i = 0; i < n; i++) order[i] = i;
    // descending by logit, ties to the lower id
    order.sort((a, b) => logits[b] - logits[a] || a - b);
    let m = o.topK > 0 ? Math.min(o.topK, n) : n;
    const max = logits[order[0]] / o.temperature;
    let sum = 0;
    for (let i = 0; i < m; i++) {
      p[i] = Math.exp(logits[order[i]] / o.temperature - max);
      sum += p[i];
    }
    if (o.minP > 0) {
      let keep = 1;
      while (keep < m && p[keep] >= o.minP * p[0]) keep++;
      for (let i = keep; i < m; i++) sum -= p[i];
      m = keep;
    }
    if (o.topP < 1) {
      let cum = 0;
      let keep = 0;
      while (keep < m) {
        cum += p[keep++] / sum;
        if (cum >= o.topP) break;
      }
      sum = 0;
      for (let i = 0; i < keep; i++) sum += p[i];
      m = keep;
    }
    if (!(sum > 0 && sum < Infinity)) {
      // NaN logits never get here from a Session (it raises first); refuse them anyway
      if (Number.isNaN(logits[order[0]]) || Number.isNaN(sum)) {
        for (let i = 0; i < n; i++) {
          if (Number.isNaN(logits[i])) {
            throw new GenerationError(
              "non_finite_logits",
              `Cannot sample: the logit of token id ${i} is NaN`,
              { tokenId: i },
            );
          }
        }
      }
      // a temperature so small (or a logit so large) that logit / T overflows: T → 0 is greedy
      return order[0];
    }
    let r = this.#rng.next() * sum;
    for (let i = 0; i < m; i++) {
      r -= p[i];
      if (r < 0) return order[i];
    }
    return order[m - 1];
  }
}
