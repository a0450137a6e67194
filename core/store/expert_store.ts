/**
 * The expert-store contract: where expert weights live and how they become
 * resident. The MoE layer asks the store to `ensure` the experts a batch
 * routed to, then reads their weight views. A resident store holds all
 * experts; the streaming store (see store plugins) loads them on demand
 * under a byte budget.
 *
 * @module
 */

import type { ExpertWeights } from "../moe/expert.ts";
import type { MoeLayer } from "../moe/moe_layer.ts";
import { StoreError } from "../errors.ts";

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

/** Supplies resident expert weights to the MoE layers. */
export interface ExpertStore {
  /**
   * Make `experts` of `layer` resident. Returns nothing when they already
   * are (the common, synchronous path), or a promise that resolves once they are.
   */
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> | void;
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

/** A store that holds every expert resident from load time. */
export class ResidentExpertStore implements ExpertStore {
  readonly #layers: ReadonlyArray<ReadonlyArray<ExpertWeights>>;
  #hits = 0;

  /** @param layers `layers[l][e]` = weights of expert e in layer l (empty for dense layers) */
  constructor(layers: ReadonlyArray<ReadonlyArray<ExpertWeights>>) {
    this.#layers = layers;
  }

  /** Always resident: counts hits only. */
  ensure(_layer: number, experts: ArrayLike<number>): void {
    this.#hits += experts.length;
  }

  /** Weights of expert `index` in `layer`. */
  weights(layer: number, index: number): ExpertWeights {
    const w = this.#layers[layer]?.[index];
    if (!w) {
      throw new StoreError(
        "not_resident",
        `Cannot use expert ${index} of layer ${layer}: no such expert`,
        { layer, index },
      );
    }
    return w;
  }

  /** Hits only; a resident store never misses. */
  stats(): ExpertStoreStats {
    return { hits: this.#hits, misses: 0, evictions: 0, bytesFetched: 0, stallMs: 0 };
  }
}
