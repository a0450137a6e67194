/**
 * Offline cache evaluation over a recorded access trace: Belady's MIN (evict
 * the expert whose next use is farthest away; the optimum hit rate of any
 * demand-loading cache for a capacity) and a replay of any `CachePolicy`
 * with the streaming store's rules, so policies can be compared with the
 * optimum on the same trace.
 *
 * A trace is a list of *steps*: the expert keys one `ensure` call needs at
 * once (the experts of one layer for one token in decode). All keys of a step
 * must be resident together, so a step's keys are never evicted for each
 * other; capacity must therefore be at least the largest step.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import { type CachePolicy, pickVictim } from "./cache_policy.ts";

/** Outcome of replaying a trace. */
export interface CacheSimResult {
  /** Accesses that found the expert resident (pinned ones included). */
  readonly hits: number;
  /** Accesses that loaded it. */
  readonly misses: number;
  /** Experts evicted. */
  readonly evictions: number;
  /** `hits / (hits + misses)` (1 for an empty trace). */
  readonly hitRate: number;
}

/** Options of a replay. */
export interface CacheSimOptions {
  /** Keys that are always resident and do not take capacity. */
  readonly pinned?: ReadonlySet<number>;
}

function dedupe(step: readonly number[], pinned: ReadonlySet<number> | undefined): number[] {
  const out: number[] = [];
  for (const k of step) if (!out.includes(k) && !pinned?.has(k)) out.push(k);
  return out;
}

function checkCapacity(steps: readonly number[][], capacity: number): void {
  const need = steps.reduce((m, s) => Math.max(m, s.length), 0);
  if (!Number.isInteger(capacity) || capacity < Math.max(1, need)) {
    throw new StoreError(
      "budget_too_small",
      `Cannot replay trace: capacity ${capacity} is below the ${need} experts one step needs at once`,
      { capacity, need },
    );
  }
}

function result(hits: number, misses: number, evictions: number): CacheSimResult {
  const n = hits + misses;
  return { hits, misses, evictions, hitRate: n === 0 ? 1 : hits / n };
}

/**
 * Belady's MIN over `steps` with room for `capacity` experts: the most hits
 * any demand-loading cache can get on this trace.
 *
 * @example
 * ```ts
 * import { beladySimulate } from "./belady.ts";
 * const r = beladySimulate([[1], [2], [3], [1], [2]], 2);
 * console.log(r.hits); // 1
 * ```
 */
export function beladySimulate(
  steps: readonly (readonly number[])[],
  capacity: number,
  opts: CacheSimOptions = {},
): CacheSimResult {
  const pinned = opts.pinned;
  const clean = steps.map((s) => dedupe(s, pinned));
  checkCapacity(clean, capacity);
  let pinnedHits = 0;
  for (const s of steps) for (const k of new Set(s)) if (pinned?.has(k)) pinnedHits++;
  // next[i][j] = index of the next step after i that uses clean[i][j]
  const next: number[][] = clean.map((s) => new Array<number>(s.length));
  const seen = new Map<number, number>();
  for (let i = clean.length - 1; i >= 0; i--) {
    const s = clean[i];
    for (let j = 0; j < s.length; j++) {
      next[i][j] = seen.get(s[j]) ?? Infinity;
    }
    for (const k of s) seen.set(k, i);
  }
  const nextUse = new Map<number, number>(); // resident key → next step using it
  let hits = pinnedHits, misses = 0, evictions = 0;
  for (let i = 0; i < clean.length; i++) {
    const s = clean[i];
    for (let j = 0; j < s.length; j++) {
      const k = s[j];
      if (nextUse.has(k)) hits++;
      else {
        misses++;
        if (nextUse.size >= capacity) {
          let victim = -1, far = -1;
          for (const [r, n] of nextUse) {
            if (n > far && !s.includes(r)) {
              far = n;
              victim = r;
            }
          }
          nextUse.delete(victim);
          evictions++;
        }
      }
      nextUse.set(k, next[i][j]);
    }
  }
  return result(hits, misses, evictions);
}

/**
 * Replay `steps` through `policy` with room for `capacity` experts, with the
 * streaming store's demand rules (a step's own keys are never candidates).
 */
export function simulatePolicy(
  steps: readonly (readonly number[])[],
  capacity: number,
  policy: CachePolicy,
  opts: CacheSimOptions = {},
): CacheSimResult {
  const pinned = opts.pinned;
  const clean = steps.map((s) => dedupe(s, pinned));
  checkCapacity(clean, capacity);
  let hits = 0, misses = 0, evictions = 0;
  for (const s of steps) for (const k of new Set(s)) if (pinned?.has(k)) hits++;
  const resident = new Set<number>();
  for (const s of clean) {
    for (const k of s) {
      const hit = resident.has(k);
      policy.onAccess(k, hit);
      if (hit) {
        hits++;
        continue;
      }
      misses++;
      if (resident.size >= capacity) {
        const candidates = [...resident].filter((r) => !s.includes(r));
        const v = pickVictim(policy, candidates);
        resident.delete(v);
        policy.onEvict(v);
        evictions++;
      }
      resident.add(k);
      policy.onLoad(k, "demand");
    }
  }
  return result(hits, misses, evictions);
}
