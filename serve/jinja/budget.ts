/**
 * The resource budget of one template render: evaluation steps (work), the
 * units of memory the render allocates in all (cumulative, so it also bounds
 * the peak), and a wall-clock deadline. The renderer and every built-in
 * charge the budget before or right after they do work proportional to the
 * size of their operands, so a template from a model file cannot spend
 * unbounded time or memory on one request, however it nests loops and
 * filters. Exceeding any bound throws `ChatTemplateError` `"template_limit"`.
 *
 * Units: a string of n characters costs 2n (UTF-16), an array or object of
 * n entries costs 8n.
 *
 * @module
 */

import { ChatTemplateError } from "./lexer.ts";

/** Bounds of one render. */
export interface BudgetLimits {
  /** Most evaluation steps (expression nodes plus elements visited by built-ins). */
  maxSteps: number;
  /** Most memory units allocated in all (strings 2/char, arrays 8/entry). */
  maxAllocated: number;
  /** Most milliseconds of wall time (checked every few thousand steps). */
  maxMs: number;
}

/** Which bound a {@link BudgetError} hit. */
export type BudgetKind = "steps" | "memory" | "time" | "output" | "iterations" | "depth";

/** A render went over one of its bounds. */
export class BudgetError extends ChatTemplateError {
  /** The bound that was hit. */
  readonly kind: BudgetKind;

  /** @param kind the bound; @param message what happened */
  constructor(kind: BudgetKind, message: string) {
    super("template_limit", message, { bound: kind });
    this.kind = kind;
  }
}

const CHECK_EVERY = 2048;

/** The running account of one render. */
export class Budget {
  /** The bounds. */
  readonly limits: BudgetLimits;
  #steps = 0;
  #allocated = 0;
  #nextCheck = CHECK_EVERY;
  readonly #deadline: number;

  /** @param limits the bounds; the clock starts now */
  constructor(limits: BudgetLimits) {
    this.limits = limits;
    this.#deadline = performance.now() + limits.maxMs;
  }

  /** Steps spent so far. */
  get steps(): number {
    return this.#steps;
  }

  /** Units allocated so far. */
  get allocated(): number {
    return this.#allocated;
  }

  /** Spend `n` steps of work. */
  step(n = 1): void {
    this.#steps += n;
    if (this.#steps > this.limits.maxSteps) {
      throw new BudgetError(
        "steps",
        `Cannot render chat template: more than ${this.limits.maxSteps} evaluation steps`,
      );
    }
    if (this.#steps >= this.#nextCheck) {
      this.#nextCheck = this.#steps + CHECK_EVERY;
      if (performance.now() > this.#deadline) {
        throw new BudgetError(
          "time",
          `Cannot render chat template: it ran longer than ${this.limits.maxMs} ms`,
        );
      }
    }
  }

  /** Account for `units` of memory (before allocating whenever the size is known in advance). */
  alloc(units: number): void {
    this.#allocated += units;
    if (!(this.#allocated <= this.limits.maxAllocated)) {
      throw new BudgetError(
        "memory",
        `Cannot render chat template: it allocates more than ${this.limits.maxAllocated} units ` +
          `(~${Math.round(this.limits.maxAllocated / (1 << 20))} MiB)`,
      );
    }
    // allocation is work too: copying n units takes time proportional to n
    this.step(Math.ceil(units / 64));
  }
}

let current: Budget | null = null;

/** Run `fn` with `budget` as the account that {@link step} and {@link alloc} charge. */
export function withBudget<T>(budget: Budget, fn: () => T): T {
  const prev = current;
  current = budget;
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/** Charge `n` steps to the current render (no-op outside a render). */
export function step(n = 1): void {
  current?.step(n);
}

/** Charge `units` of memory to the current render (no-op outside a render). */
export function alloc(units: number): void {
  current?.alloc(units);
}

/** Charge a string of `chars` characters. */
export function allocString(chars: number): void {
  current?.alloc(2 * chars);
}

/** Charge an array of `n` entries. */
export function allocArray(n: number): void {
  current?.alloc(8 * n);
}

/** Charge the shallow size of a value just produced (string or array/object). */
export function allocValue(v: unknown): void {
  if (current === null) return;
  if (typeof v === "string") current.alloc(2 * v.length);
  else if (Array.isArray(v)) current.alloc(8 * v.length);
}
