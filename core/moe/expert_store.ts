/**
 * The expert-store contract (interfaces only): where expert weights live and how they
 * become resident. The MoE layer asks the store to `ensure` the experts a batch routed
 * to, then reads their weight views. The implementations (the resident store, the
 * streaming store) are in `core/store/`, which depends on this folder, not the reverse;
 * `core/store/expert_store.ts` re-exports these types.
 *
 * @module
 */

import type { ExpertWeights } from "./expert.ts";
import type { MoeLayer } from "./moe_layer.ts";

/** Counters of one layer of a streaming store (same meanings as `ExpertStoreStats`). */
export interface LayerStoreStats {
  /** Layer index. */
  layer: number;
  /** Lookups that found the expert resident. */
  hits: number;
  /** Lookups that had to load (or wait for) it. */
  misses: number;
  /** Experts evicted. */
  evictions: number;
  /** Prefetch loads started. */
  prefetches: number;
  /** Hits on prefetched experts (first use after the prefetch). */
  prefetchHits: number;
  /** Uses of a prefetched expert whose load had not finished (counted as misses). */
  prefetchLate: number;
  /** Prefetched experts evicted or cancelled before any use. */
  wastedPrefetches: number;
  /** Bytes read from the source. */
  bytesFetched: number;
  /** Milliseconds compute waited on fetches. */
  stallMs: number;
  /** Expert loads completed (demand and prefetch). */
  loads: number;
  /** Milliseconds of those loads spent reading (wall time of their batched reads, checks excluded). */
  readMs: number;
  /** Milliseconds spent checking their bytes (first-read hashes, manifest SHA-256). */
  verifyMs: number;
  /** Milliseconds spent copying bytes into slots and repacking them. */
  repackMs: number;
  /** Experts repacked for the faster kernels (at load or once hot). */
  packs: number;
  /** Misses served by a resident low-bit copy instead of waiting (`fallback`). */
  fallbackHits: number;
}

/** Counters an expert store reports. */
export interface ExpertStoreStats {
  /** Expert lookups that found the expert resident. */
  hits: number;
  /** Lookups that had to load it. */
  misses: number;
  /** Experts evicted to make room. */
  evictions: number;
  /** Bytes read from the source for experts. */
  bytesFetched: number;
  /** Milliseconds compute waited on fetches. */
  stallMs: number;
  /** Prefetch loads started (streaming stores). */
  prefetches?: number;
  /** Hits on prefetched experts (streaming stores). */
  prefetchHits?: number;
  /** Uses of prefetched experts still loading (streaming stores). */
  prefetchLate?: number;
  /** Prefetched experts dropped unused (streaming stores). */
  wastedPrefetches?: number;
  /** Loads completed (streaming stores; the miss cost breakdown below is over these). */
  loads?: number;
  /** Read time of those loads, ms (streaming stores). */
  readMs?: number;
  /** Check (hash) time of those loads, ms (streaming stores). */
  verifyMs?: number;
  /** Copy-into-slot and repack time, ms (streaming stores). */
  repackMs?: number;
  /** Experts repacked (streaming stores). */
  packs?: number;
  /** Misses served by a low-bit fallback copy (streaming stores with a fallback). */
  fallbackHits?: number;
  /** The same counters per layer (streaming stores). */
  perLayer?: LayerStoreStats[];
}

/**
 * Per-expert readiness of one `ExpertStore.ensureEach` call: which requested
 * experts are usable now, and the others one by one as their loads land, so
 * the MoE layer computes each expert as soon as its own bytes are in.
 */
export interface ExpertArrivals {
  /** Positions (into the request) of the experts usable now, in request order. */
  readonly ready: readonly number[];
  /** Positions still loading when the call returned. */
  readonly pending: number;
  /**
   * Wait until one more loading expert is usable; resolves to its position
   * (each pending position exactly once, in order of arrival). Rejects as
   * `ensure` would (a failed load, an abort); call it `pending` times.
   */
  next(): Promise<number>;
}

/** Supplies resident expert weights to the MoE layers. */
export interface ExpertStore {
  /**
   * Make `experts` of `layer` resident. Returns nothing when they already
   * are (the common, synchronous path), or a promise that resolves once they are.
   */
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> | void;
  /**
   * Like `ensure`, with readiness per expert: nothing when every expert is
   * resident now, else the `ExpertArrivals` of this step (or a promise of
   * them). Optional: the MoE layer uses `ensure` without it.
   */
  ensureEach?(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): ExpertArrivals | Promise<ExpertArrivals | void> | void;
  /** Weights of a resident expert. Throws `StoreError` (`"not_resident"`) otherwise. */
  weights(layer: number, index: number): ExpertWeights;
  /** Counters so far. */
  stats(): ExpertStoreStats;
  /** Most experts of `layer` one `ensure` may name (a budget-bounded store); no limit when absent. */
  maxEnsureExperts?(layer: number): number;
  /** Called once the model's MoE layers exist (to add route observers, e.g. for prefetch). */
  attach?(layers: readonly (MoeLayer | null)[]): void;
  /** Release the store's slots and pending loads. */
  dispose?(): void;
}
