/**
 * Per-layer expert usage and store hits/misses, gathered from the MoE
 * layers' route observers. The store reports only global counters, so each
 * layer's share is the change in `store.stats()` between that layer's first
 * routed token and the next layer's (or the end of the forward pass): exact
 * while forward passes do not overlap, which the runtime's batch scheduler
 * ensures (one batched pass per step).
 *
 * @module
 */

import type { Model } from "../core/model/model.ts";
import type { RouteObserver } from "../core/moe/moe_layer.ts";
import type { ExpertStoreStats } from "../core/store/expert_store.ts";

/** A copy of the counters, plain data for JSON. */
export interface ExpertUsageSnapshot {
  /** Number of transformer layers. */
  nLayer: number;
  /** Experts per MoE layer. */
  nExpert: number;
  /** Experts chosen per token. */
  nExpertUsed: number;
  /** Indices of the layers that have an MoE FFN. */
  moeLayers: number[];
  /** `usage[l][e]`: tokens routed to expert e of layer l (all zero for dense layers). */
  usage: number[][];
  /** `hits[l]`: store lookups of layer l that found the expert resident. */
  hits: number[];
  /** `misses[l]`: store lookups of layer l that had to load. */
  misses: number[];
  /** Tokens routed through any MoE layer (counted at the first one). */
  routedTokens: number;
  /** The store's own global counters. */
  store: ExpertStoreStats;
}

/** Counts routed tokens per (layer, expert) and store hits/misses per layer. */
export class ExpertUsage {
  readonly #model: Model;
  readonly #usage: Float64Array[];
  readonly #hits: Float64Array;
  readonly #misses: Float64Array;
  readonly #moeLayers: number[];
  readonly #observer: RouteObserver;
  #routed = 0;
  #openLayer = -1;
  #base: ExpertStoreStats;

  /** @param model the model whose MoE layers to observe (attached at once) */
  constructor(model: Model) {
    this.#model = model;
    const { nLayer, nExpert } = model.hp;
    this.#usage = Array.from({ length: nLayer }, () => new Float64Array(nExpert));
    this.#hits = new Float64Array(nLayer);
    this.#misses = new Float64Array(nLayer);
    this.#moeLayers = [];
    this.#base = model.store.stats();
    const first = model.transformer.moe.findIndex((m) => m !== null);
    this.#observer = (layer, token, route) => {
      if (token === 0 && layer !== this.#openLayer) {
        this.flush();
        this.#openLayer = layer;
      }
      if (layer === first) this.#routed++;
      const row = this.#usage[layer];
      if (row) { for (const e of route.experts) if (e >= 0 && e < row.length) row[e]++; }
    };
    model.transformer.moe.forEach((m, l) => {
      if (!m) return;
      this.#moeLayers.push(l);
      m.observers.push(this.#observer);
    });
  }

  /**
   * Attribute store counters gathered since the last call to the layer being
   * routed. Call after each forward pass so the last layer gets its share.
   */
  flush(): void {
    const now = this.#model.store.stats();
    if (this.#openLayer >= 0) {
      this.#hits[this.#openLayer] += now.hits - this.#base.hits;
      this.#misses[this.#openLayer] += now.misses - this.#base.misses;
    }
    this.#base = now;
    this.#openLayer = -1;
  }

  /** Plain-data copy of the counters. */
  snapshot(): ExpertUsageSnapshot {
    const hp = this.#model.hp;
    return {
      nLayer: hp.nLayer,
      nExpert: hp.nExpert,
      nExpertUsed: hp.nExpertUsed,
      moeLayers: [...this.#moeLayers],
      usage: this.#usage.map((r) => Array.from(r)),
      hits: Array.from(this.#hits),
      misses: Array.from(this.#misses),
      routedTokens: this.#routed,
      store: this.#model.store.stats(),
    };
  }

  /** Stop observing the model. */
  detach(): void {
    for (const m of this.#model.transformer.moe) {
      if (!m) continue;
      const i = m.observers.indexOf(this.#observer);
      if (i >= 0) m.observers.splice(i, 1);
    }
  }
}
