/**
 * Admission control for generations: a fixed number of active slots (the
 * batch scheduler's sequences), a bounded FIFO of waiters behind them, and a
 * FIFO mutex (the runtime's tokenizer queue).
 *
 * @module
 */

/** Frees what `acquire` took; calling it twice is harmless. */
export type Release = () => void;

/** Thrown by {@link Limiter.acquire} when every slot and queue place is taken. */
export class QueueFullError extends Error {
  /** @param message which limit was hit */
  constructor(message: string) {
    super(message);
    this.name = "QueueFullError";
  }
}

interface Waiter {
  grant: (r: Release) => void;
  fail: (e: unknown) => void;
}

/** At most `maxActive` holders; at most `maxQueue` waiters; the rest are refused at once. */
export class Limiter {
  /** Slots. */
  readonly maxActive: number;
  /** Waiting places. */
  readonly maxQueue: number;
  #active = 0;
  readonly #waiters: Waiter[] = [];

  /** @param maxActive concurrent holders (≥ 1); @param maxQueue waiters (≥ 0) */
  constructor(maxActive: number, maxQueue: number) {
    if (!Number.isInteger(maxActive) || maxActive < 1) {
      throw new RangeError(
        `Cannot create limiter: maxActive must be an integer ≥ 1: received ${maxActive}`,
      );
    }
    if (!Number.isInteger(maxQueue) || maxQueue < 0) {
      throw new RangeError(
        `Cannot create limiter: maxQueue must be an integer ≥ 0: received ${maxQueue}`,
      );
    }
    this.maxActive = maxActive;
    this.maxQueue = maxQueue;
  }

  /** Holders now. */
  get active(): number {
    return this.#active;
  }

  /** Waiters now. */
  get queued(): number {
    return this.#waiters.length;
  }

  /**
   * Take a slot, waiting in line when all are busy. Rejects with
   * {@link QueueFullError} when the line is full, or with the signal's reason
   * when it aborts first (the waiter leaves the line).
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#active < this.maxActive) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#waiters.length >= this.maxQueue) {
      return Promise.reject(
        new QueueFullError(
          `all ${this.maxActive} generation slots and ${this.maxQueue} queue places are taken`,
        ),
      );
    }
    return new Promise<Release>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
      };
      const w: Waiter = {
        grant: (r) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(r);
        },
        fail: reject,
      };
      this.#waiters.push(w);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #releaser(): Release {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#waiters.shift();
      // the slot passes straight to the next waiter, so `active` never dips
      if (next) next.grant(this.#releaser());
      else this.#active--;
    };
  }
}

/** A FIFO async mutex: `run` calls `fn` once every earlier caller has finished. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Run `fn` exclusively; its result or error is passed through. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn);
    this.#tail = result.then(() => {}, () => {});
    return result;
  }
}
