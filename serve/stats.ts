/**
 * Counters of a runtime: tokens, generations by outcome, time to first
 * token (a Prometheus-style histogram) and a sliding-window throughput.
 *
 * @module
 */

/** How a generation ended, as counted. */
export type GenerationOutcome = "stop" | "length" | "abort" | "timeout" | "error";

/** Upper bounds (seconds) of the time-to-first-token histogram buckets. */
export const TTFT_BUCKETS: readonly number[] = [
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

const WINDOW_S = 10;

/** Plain-data copy of {@link RuntimeStats}. */
export interface RuntimeStatsSnapshot {
  /** Prompt tokens evaluated. */
  promptTokens: number;
  /** Tokens generated. */
  completionTokens: number;
  /** Generations finished, by outcome. */
  generations: Record<GenerationOutcome, number>;
  /** Requests refused because the queue was full. */
  rejected: number;
  /** Generated tokens per second over the last 10 s. */
  tokensPerSecond: number;
  /** Time-to-first-token histogram: cumulative counts per bucket of {@link TTFT_BUCKETS}. */
  ttft: { buckets: number[]; count: number; sum: number };
  /** Mean duration of finished generations in seconds (0 before the first). */
  meanGenerationS: number;
}

/** Mutable counters; cheap to update from the decode loop. */
export class RuntimeStats {
  #prompt = 0;
  #completion = 0;
  #rejected = 0;
  readonly #outcomes: Record<GenerationOutcome, number> = {
    stop: 0,
    length: 0,
    abort: 0,
    timeout: 0,
    error: 0,
  };
  readonly #ttftBuckets = new Float64Array(TTFT_BUCKETS.length);
  #ttftCount = 0;
  #ttftSum = 0;
  // tokens per whole second, ring of WINDOW_S + 1 entries keyed by epoch second
  readonly #ring = new Float64Array(WINDOW_S + 1);
  readonly #ringSec = new Float64Array(WINDOW_S + 1).fill(-1);
  #genTimeSum = 0;
  #genCount = 0;
  readonly #now: () => number;

  /** @param now clock in milliseconds (tests inject one) */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** A prompt of `n` tokens was admitted. */
  addPrompt(n: number): void {
    this.#prompt += n;
  }

  /** `n` tokens were generated (negative corrects an over-count). */
  addTokens(n: number): void {
    if (n === 0) return;
    this.#completion += n;
    const sec = Math.floor(this.#now() / 1000);
    const i = sec % this.#ring.length;
    if (this.#ringSec[i] !== sec) {
      this.#ringSec[i] = sec;
      this.#ring[i] = 0;
    }
    this.#ring[i] += n;
  }

  /** The first token of a generation arrived `seconds` after the request was admitted to the queue. */
  observeTtft(seconds: number): void {
    this.#ttftCount++;
    this.#ttftSum += seconds;
    for (let b = 0; b < TTFT_BUCKETS.length; b++) {
      if (seconds <= TTFT_BUCKETS[b]) this.#ttftBuckets[b]++;
    }
  }

  /** A generation ended after `seconds`. */
  finish(outcome: GenerationOutcome, seconds: number): void {
    this.#outcomes[outcome]++;
    this.#genTimeSum += seconds;
    this.#genCount++;
  }

  /** A request was refused (queue full). */
  reject(): void {
    this.#rejected++;
  }

  /** Mean generation time in seconds (0 before any finished). */
  get meanGenerationS(): number {
    return this.#genCount ? this.#genTimeSum / this.#genCount : 0;
  }

  /** Generated tokens per second over the last complete seconds of the window. */
  tokensPerSecond(): number {
    const nowMs = this.#now();
    const cur = Math.floor(nowMs / 1000);
    let total = 0;
    for (let i = 0; i < this.#ring.length; i++) {
      const s = this.#ringSec[i];
      if (s >= cur - WINDOW_S && s <= cur) total += this.#ring[i];
    }
    // the current second is partial: divide by the real span covered
    const span = WINDOW_S + (nowMs / 1000 - cur);
    return total / span;
  }

  /** Plain-data copy. */
  snapshot(): RuntimeStatsSnapshot {
    return {
      promptTokens: this.#prompt,
      completionTokens: this.#completion,
      generations: { ...this.#outcomes },
      rejected: this.#rejected,
      tokensPerSecond: this.tokensPerSecond(),
      ttft: { buckets: Array.from(this.#ttftBuckets), count: this.#ttftCount, sum: this.#ttftSum },
      meanGenerationS: this.meanGenerationS,
    };
  }
}
