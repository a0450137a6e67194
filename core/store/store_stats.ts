/**
 * Per-layer counters of the streaming store and their totals.
 *
 * @module
 */

import type { ExpertStoreStats, LayerStoreStats } from "./expert_store.ts";

/** Fresh zeroed counters for `layer`. */
export function emptyLayerStats(layer: number): LayerStoreStats {
  return {
    layer,
    hits: 0,
    misses: 0,
    evictions: 0,
    prefetches: 0,
    prefetchHits: 0,
    prefetchLate: 0,
    wastedPrefetches: 0,
    bytesFetched: 0,
    stallMs: 0,
    loads: 0,
    readMs: 0,
    verifyMs: 0,
    repackMs: 0,
    packs: 0,
    fallbackHits: 0,
  };
}

/** Totals over layers, with copies of the per-layer counters. */
export function totalStats(layers: readonly LayerStoreStats[]): ExpertStoreStats {
  const t = emptyLayerStats(-1);
  for (const s of layers) {
    t.hits += s.hits;
    t.misses += s.misses;
    t.evictions += s.evictions;
    t.prefetches += s.prefetches;
    t.prefetchHits += s.prefetchHits;
    t.prefetchLate += s.prefetchLate;
    t.wastedPrefetches += s.wastedPrefetches;
    t.bytesFetched += s.bytesFetched;
    t.stallMs += s.stallMs;
    t.loads += s.loads;
    t.readMs += s.readMs;
    t.verifyMs += s.verifyMs;
    t.repackMs += s.repackMs;
    t.packs += s.packs;
    t.fallbackHits += s.fallbackHits;
  }
  const { layer: _, ...rest } = t;
  return { ...rest, perLayer: layers.map((s) => ({ ...s })) };
}

/** Hit rate `hits / (hits + misses)` (1 when nothing was asked). */
export function hitRate(s: Pick<ExpertStoreStats, "hits" | "misses">): number {
  const n = s.hits + s.misses;
  return n === 0 ? 1 : s.hits / n;
}

/**
 * Share of prefetches that were used (on time or late): how often the
 * prefetcher guessed right. 0 when nothing was prefetched.
 */
export function prefetchAccuracy(s: ExpertStoreStats): number {
  const n = s.prefetches ?? 0;
  return n === 0 ? 0 : ((s.prefetchHits ?? 0) + (s.prefetchLate ?? 0)) / n;
}

function snake(s: LayerStoreStats | ExpertStoreStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(s)) {
    if (typeof v === "number") out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  }
  return out;
}

/**
 * Store counters as the CLI's `--json` `"experts"` object: snake_case
 * counters plus `hit_rate`, `prefetch_accuracy` and `per_layer`.
 */
export function statsJson(
  s: ExpertStoreStats,
  extra: Record<string, number> = {},
): Record<string, unknown> {
  return {
    ...snake(s),
    hit_rate: hitRate(s),
    prefetch_accuracy: prefetchAccuracy(s),
    ...extra,
    per_layer: (s.perLayer ?? []).map((l) => ({ ...snake(l), hit_rate: hitRate(l) })),
  };
}
