/**
 * `cache-lfu`: least-frequently-used eviction with aging. Each expert keeps a
 * use count (also while not resident, so a popular expert comes back
 * strong); every `agingInterval` accesses all counts are multiplied by
 * `decay`, so popularity from long ago fades. The victim is the candidate
 * with the lowest count, ties to the least recently used.
 *
 * @module
 */

import {
  type CachePolicy,
  type CachePolicyInit,
  PluginError,
  type PluginFactory,
} from "../../mod.ts";

/** Options of the LFU policy (the plugin config, defaults filled). */
export interface LfuOptions {
  /** Factor applied to every count at each aging, in (0, 1]. */
  readonly decay: number;
  /** Accesses between agings; 0 = 8 × the store's capacity. */
  readonly agingInterval: number;
}

/** Defaults of `LfuOptions`. */
export const LFU_DEFAULTS: LfuOptions = { decay: 0.5, agingInterval: 0 };

/**
 * An LFU-with-aging `CachePolicy`.
 *
 * @example
 * ```ts
 * import { createLfuPolicy } from "./mod.ts";
 * const lfu = createLfuPolicy();
 * for (const k of [1, 1, 2]) lfu.onAccess(k, true);
 * console.log(lfu.victim([1, 2])); // 2
 * ```
 */
export function createLfuPolicy(opts: Partial<LfuOptions> = {}): CachePolicy {
  const o: LfuOptions = { ...LFU_DEFAULTS, ...opts };
  if (!(o.decay > 0 && o.decay <= 1)) {
    throw new PluginError(
      "bad_config",
      `plugin 'cache-lfu' (cache): decay must be in (0, 1]: received ${o.decay}`,
      {
        plugin: "cache-lfu",
        hook: "cache",
      },
    );
  }
  if (!Number.isInteger(o.agingInterval) || o.agingInterval < 0) {
    throw new PluginError(
      "bad_config",
      `plugin 'cache-lfu' (cache): agingInterval must be a non-negative integer: received ${o.agingInterval}`,
      { plugin: "cache-lfu", hook: "cache" },
    );
  }
  const count = new Map<number, number>();
  const last = new Map<number, number>();
  let tick = 0;
  let interval = o.agingInterval || 256;
  let sinceAging = 0;
  return {
    name: "lfu",
    init(info: CachePolicyInit): void {
      if (o.agingInterval === 0) interval = Math.max(1, 8 * info.capacity);
    },
    onAccess(key: number): void {
      count.set(key, (count.get(key) ?? 0) + 1);
      last.set(key, tick++);
      if (++sinceAging >= interval && o.decay < 1) {
        sinceAging = 0;
        for (const [k, c] of count) count.set(k, c * o.decay);
      }
    },
    onLoad(key: number): void {
      if (!count.has(key)) count.set(key, 0);
      last.set(key, tick++);
    },
    onEvict(): void {},
    victim(candidates: readonly number[]): number {
      let best = candidates[0];
      let bc = Infinity, bl = Infinity;
      for (const k of candidates) {
        const c = count.get(k) ?? 0, l = last.get(k) ?? -1;
        if (c < bc || (c === bc && l < bl)) {
          best = k;
          bc = c;
          bl = l;
        }
      }
      return best;
    },
  };
}

/** The plugin factory: a `cache` hook building an LFU policy. */
const createPlugin: PluginFactory<Partial<LfuOptions>> = (config) => {
  // validate at load, before any model work
  createLfuPolicy(config);
  return {
    name: "cache-lfu",
    version: "0.1.0",
    hooks: { cache: (): CachePolicy => createLfuPolicy(config) },
  };
};

export default createPlugin;
