/**
 * The resident expert store, which holds every expert from load time; the streaming
 * store (`streaming_store.ts`) loads them on demand under a byte budget. The contract
 * both implement (`ExpertStore`, its stats) is defined beside its consumer in
 * `core/moe/expert_store.ts` and re-exported here.
 *
 * @module
 */

import type { ExpertWeights } from "../moe/expert.ts";
import type { ExpertStore, ExpertStoreStats } from "../moe/expert_store.ts";
import { StoreError } from "../errors.ts";

// The contract sits beside its consumer, the MoE layer (core/moe), so that moe does not
// depend on store; re-exported here for existing imports.
export type {
  ExpertArrivals,
  ExpertStore,
  ExpertStoreStats,
  LayerStoreStats,
} from "../moe/expert_store.ts";

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
