/**
 * The cache-policy contract of the streaming expert store: a policy is told
 * about accesses, loads and evictions, and asked for a victim among the
 * experts the store may evict. Plugins (`plugins/cache-lru`,
 * `plugins/cache-lfu`) implement it; `createRecencyPolicy` is the built-in
 * default so core works without plugins.
 *
 * Experts are named by a numeric key `layer * nExpert + index` (see
 * `expertKey`), so policies can keep plain maps.
 *
 * @module
 */

import { StoreError } from "../errors.ts";

/** Why an expert was loaded. */
export type LoadReason = "demand" | "prefetch" | "pinned";

/** What a policy learns when the store starts. */
export interface CachePolicyInit {
  /** Layers of the model. */
  readonly nLayer: number;
  /** Experts per layer (keys are `layer * nExpert + index`). */
  readonly nExpert: number;
  /** How many experts fit in the evictable part of the budget. */
  readonly capacity: number;
}

/**
 * Decides which resident expert to evict. All methods are synchronous and
 * called on the store's hot path: keep them O(resident experts) or better.
 *
 * @example
 * ```ts
 * import type { CachePolicy } from "./cache_policy.ts";
 * // FIFO: evict the candidate loaded first.
 * function fifo(): CachePolicy {
 *   const loaded = new Map<number, number>();
 *   let tick = 0;
 *   return {
 *     name: "fifo",
 *     onAccess() {},
 *     onLoad(key) { loaded.set(key, tick++); },
 *     onEvict(key) { loaded.delete(key); },
 *     victim(candidates) {
 *       let best = candidates[0];
 *       for (const k of candidates) if ((loaded.get(k) ?? 0) < (loaded.get(best) ?? 0)) best = k;
 *       return best;
 *     },
 *   };
 * }
 * ```
 */
export interface CachePolicy {
  /** Short name for metrics and errors. */
  readonly name: string;
  /** Called once before any other method. */
  init?(info: CachePolicyInit): void;
  /** An expert was requested by compute; `hit` tells whether it was resident. */
  onAccess(key: number, hit: boolean): void;
  /** An expert became resident. */
  onLoad(key: number, reason: LoadReason): void;
  /** An expert left residency (evicted, or its load was cancelled). */
  onEvict(key: number): void;
  /**
   * Pick the expert to evict among `candidates` (non-empty; all resident,
   * evictable, and not needed by the running step). Must return one of them.
   */
  victim(candidates: readonly number[]): number;
}

/** Creates a policy from its (plugin) configuration. */
export type CachePolicyFactory = (config?: Record<string, unknown>) => CachePolicy;

/** The key of expert `index` of `layer` when layers have `nExpert` experts. */
export function expertKey(layer: number, index: number, nExpert: number): number {
  return layer * nExpert + index;
}

/** Ask `policy` for a victim and check it is one of `candidates`. */
export function pickVictim(policy: CachePolicy, candidates: readonly number[]): number {
  let v: number;
  try {
    v = policy.victim(candidates);
  } catch (e) {
    throw new StoreError(
      "policy_failed",
      `Cannot evict: cache policy '${policy.name}' threw: ${(e as Error).message}`,
      { policy: policy.name },
    );
  }
  if (!candidates.includes(v)) {
    throw new StoreError(
      "bad_victim",
      `Cannot evict: cache policy '${policy.name}' chose ${v}, which is not one of the ${candidates.length} candidates`,
      { policy: policy.name, victim: v },
    );
  }
  return v;
}

/**
 * The built-in least-recently-used policy (a `Map` kept in recency order):
 * the default when no cache plugin is configured.
 */
export function createRecencyPolicy(): CachePolicy {
  const order = new Map<number, true>();
  const touch = (key: number): void => {
    order.delete(key);
    order.set(key, true);
  };
  return {
    name: "recency",
    onAccess: touch,
    onLoad: touch,
    onEvict(key: number): void {
      order.delete(key);
    },
    victim(candidates: readonly number[]): number {
      const set = new Set(candidates);
      for (const k of order.keys()) if (set.has(k)) return k;
      return candidates[0];
    },
  };
}
