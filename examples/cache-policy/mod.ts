/**
 * Example plugin: a cache policy for the streaming expert store. FIFO: the
 * victim is the candidate that became resident first.
 *
 * @module
 */

import type { CachePolicy, LoadReason, PluginFactory } from "../../mod.ts";

/** The config, as validated against manifest.json (defaults filled in). */
export interface FifoConfig {
  /** Start a prefetched expert's clock at its first use instead of its load. */
  readonly keepPrefetched: boolean;
}

/** A first-in, first-out `CachePolicy`. */
export function createFifoPolicy(config: FifoConfig): CachePolicy {
  const since = new Map<number, number>(); // expert key → load tick
  const waiting = new Set<number>(); // prefetched, not used yet
  let tick = 0;
  return {
    name: "fifo",
    onAccess(key: number): void {
      if (waiting.delete(key)) since.set(key, tick++);
    },
    onLoad(key: number, reason: LoadReason): void {
      since.set(key, tick++);
      if (reason === "prefetch" && config.keepPrefetched) waiting.add(key);
    },
    onEvict(key: number): void {
      since.delete(key);
      waiting.delete(key);
    },
    victim(candidates: readonly number[]): number {
      let best = candidates[0];
      for (const k of candidates) if ((since.get(k) ?? -1) < (since.get(best) ?? -1)) best = k;
      return best;
    },
  };
}

/** Build the plugin: a `cache` hook returning the policy. */
const createPlugin: PluginFactory<FifoConfig> = (config) => ({
  name: "cache-fifo",
  version: "0.1.0",
  hooks: { cache: (): CachePolicy => createFifoPolicy(config) },
});

export default createPlugin;
