/**
 * `cache-lru`: least-recently-used eviction for the streaming expert store.
 * The recency order lives in an `lru-cache` (npm) sized to every expert of
 * the model, so it never evicts on its own; the store asks for a victim
 * among its evictable candidates and gets the least recently used one.
 *
 * @module
 */

import { LRUCache } from "npm:lru-cache@11";
import type { CachePolicy, CachePolicyInit, LoadReason, PluginFactory } from "../../mod.ts";

/** Options of the LRU policy (the plugin config, defaults filled). */
export interface LruOptions {
  /** Where a prefetched expert enters the order: most recent, or first to go unless used. */
  readonly prefetchAs: "recent" | "old";
}

/** Defaults of `LruOptions`. */
export const LRU_DEFAULTS: LruOptions = { prefetchAs: "recent" };

/** Keys tracked before `init` says how many experts the model has. */
const DEFAULT_KEYS = 1 << 12;

/**
 * A least-recently-used `CachePolicy`.
 *
 * @example
 * ```ts
 * import { createLruPolicy } from "./mod.ts";
 * const lru = createLruPolicy();
 * lru.onLoad(1, "demand");
 * lru.onLoad(2, "demand");
 * lru.onAccess(1, true);
 * console.log(lru.victim([1, 2])); // 2
 * ```
 */
export function createLruPolicy(opts: Partial<LruOptions> = {}): CachePolicy {
  const o: LruOptions = { ...LRU_DEFAULTS, ...opts };
  let order = new LRUCache<number, true>({ max: DEFAULT_KEYS });
  // prefetched and unused, oldest first (only with prefetchAs "old")
  const cold = new Set<number>();
  const touch = (key: number): void => {
    cold.delete(key);
    order.set(key, true);
  };
  return {
    name: "lru",
    init(info: CachePolicyInit): void {
      const max = Math.max(1, info.nLayer * info.nExpert);
      if (max > order.max) {
        const bigger = new LRUCache<number, true>({ max });
        for (const k of order.rkeys()) bigger.set(k, true);
        order = bigger;
      }
    },
    onAccess: touch,
    onLoad(key: number, reason: LoadReason): void {
      if (reason === "prefetch" && o.prefetchAs === "old") {
        order.delete(key);
        cold.add(key);
      } else touch(key);
    },
    onEvict(key: number): void {
      cold.delete(key);
      order.delete(key);
    },
    victim(candidates: readonly number[]): number {
      const set = new Set(candidates);
      for (const k of cold) if (set.has(k)) return k;
      for (const k of order.rkeys()) if (set.has(k)) return k;
      return candidates[0];
    },
  };
}

/** The plugin factory: a `cache` hook building an LRU policy. */
const createPlugin: PluginFactory<Partial<LruOptions>> = (config) => ({
  name: "cache-lru",
  version: "0.1.0",
  hooks: { cache: (): CachePolicy => createLruPolicy(config) },
});

export default createPlugin;
