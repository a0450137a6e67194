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
import { StoreError } from "../errors.ts";

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
