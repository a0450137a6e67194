/**
 * Value parsers and the usage error of the command line. Each parser throws
 * commander's `InvalidArgumentError`, so a bad value reads
 * `error: option '--max-tokens <n>' argument 'abc' is invalid. expected an integer`
 * and exits with {@link EXIT.usage}.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full npm: specifier, so the CLI works without the import map
import { InvalidArgumentError } from "npm:commander@^14.0.3";
import { MoeEdgeError } from "../core/errors.ts";

/** Exit codes of the CLI (documented in README.md, "CLI"). */
export const EXIT = {
  /** Success, including `--help`. */
  ok: 0,
  /** The model or the runtime failed: unreadable/malformed file, budget too small, bad manifest. */
  error: 1,
  /** The command line is wrong: unknown command or option, bad or missing value. */
  usage: 2,
  /** Interrupted with Ctrl-C (128 + SIGINT). */
  interrupted: 130,
} as const;

/** A CLI usage error (exit code {@link EXIT.usage}). */
export class UsageError extends MoeEdgeError {}

/** An integer (negative allowed: `--seed -1`). */
export function parseInteger(v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError(`expected an integer`);
  }
  return n;
}

/** A finite number (negative allowed: `--temperature -1`). */
export function parseNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number`);
  return n;
}

/** A positive integer (`--max-tokens`, `--ctx-size`). */
export function parseCount(v: string): number {
  const n = parseInteger(v);
  if (n < 0) throw new InvalidArgumentError(`expected a non-negative integer`);
  return n;
}

/** A thread count in [1, 64] (`--threads`). */
export function parseThreads(v: string): number {
  const n = parseInteger(v);
  if (n < 1 || n > 64) throw new InvalidArgumentError(`expected an integer from 1 to 64`);
  return n;
}

/** A positive number (`--expert-budget-mb`). */
export function parsePositive(v: string): number {
  const n = parseNumber(v);
  if (n <= 0) throw new InvalidArgumentError(`expected a positive number`);
  return n;
}

/** Token ids: `1,2,3` (spaces allowed). */
export function parseTokenList(v: string): number[] {
  const parts = v.split(",").map((s) => s.trim());
  if (parts.some((s) => !/^\d+$/.test(s) || !Number.isSafeInteger(Number(s)))) {
    throw new InvalidArgumentError(`expected comma-separated token ids such as 1,2,3`);
  }
  return parts.map(Number);
}

/** Collects a repeatable option's values in order. */
export function collect(v: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), v];
}
