/**
 * The streaming expert store: experts load on demand into backend slots
 * under a byte budget; a `CachePolicy` picks victims; a `Prefetcher` may
 * load experts ahead. Rules that keep it correct and live:
 *
 * - the experts of the running `ensure` (and of the previous one, whose
 *   compute may still be running) are never evicted; pinned experts never;
 * - concurrent requests for one expert share one fetch (demand joins a
 *   prefetch in flight);
 * - a demand load never waits for a fetch it does not need: it may cancel an
 *   unneeded prefetch in flight to take its slot, and prefetches are issued
 *   after the demand loads of the same step;
 * - the budget is checked at creation against one token's need (k experts of
 *   a layer), and `maxEnsureExperts` lets the MoE layer split larger batches.
 *
 * A model runs one forward pass at a time (its scratch buffers are shared),
 * and so does its store.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { MoeLayer } from "../moe/moe_layer.ts";
import type { ExpertLocation } from "../model/weights.ts";
import { type CachePolicy, createRecencyPolicy } from "./cache_policy.ts";
import { expertViews, prepareExpert } from "./expert_loader.ts";
import { fetchExpert } from "./expert_fetch.ts";
import type { ExpertStore, ExpertStoreStats, LayerStoreStats } from "./expert_store.ts";
import { attachPrefetcher, type Prefetcher, type PrefetchHint } from "./prefetch.ts";
import { type Entry, newEntry, Residency } from "./residency.ts";
import { abortable, macrotask } from "./async_util.ts";
import { emptyLayerStats, totalStats } from "./store_stats.ts";
import {
  checkBudget,
  type StreamingStoreContext,
  type StreamingStoreOptions,
  type StreamingStoreRequest,
} from "./streaming_options.ts";

/** Macrotask turns `ensure` yields, at most, for loads in flight to land. */
const SETTLE_TURNS = 4;

/** Streams experts into backend slots under a byte budget. */
export class StreamingExpertStore implements ExpertStore {
  /** Budget in bytes. */
  readonly budgetBytes: number;
  /** Experts (of the largest size) that fit beside the pinned ones. */
  readonly capacity: number;
  /** The eviction policy. */
  readonly policy: CachePolicy;
  /** The prefetcher, if any. */
  readonly prefetcher: Prefetcher | null;
  readonly #ctx: StreamingStoreContext;
  readonly #opts: StreamingStoreOptions;
  readonly #nExpert: number;
  readonly #stats: LayerStoreStats[];
  readonly #res: Residency;
  #hints: PrefetchHint[] = [];
  #soonLayer = -1;
  #inflightPrefetch = 0;
  #lastDone: number[] | null = null;
  #seq = 0;
  #attached = false;
  #disposed = false;

  private constructor(
    ctx: StreamingStoreContext,
    opts: StreamingStoreOptions,
    evictable: number,
    maxBytes: number,
  ) {
    this.#ctx = ctx;
    this.#opts = opts;
    this.#nExpert = Math.max(ctx.hp.nExpert, ...ctx.locations.map((l) => l.length));
    this.budgetBytes = opts.expertBudgetBytes;
    this.capacity = Math.floor(evictable / maxBytes);
    this.policy = opts.policy ?? createRecencyPolicy();
    this.prefetcher = opts.prefetcher ?? null;
    this.#stats = ctx.locations.map((_, l) => emptyLayerStats(l));
    this.#res = new Residency(ctx.backend, evictable, this.policy, this.#stats);
  }

  /**
   * Check the budget against the model and load pinned experts. Throws
   * `StoreError` `"bad_budget"`, `"budget_too_small"` (below what one token
   * needs), `"manifest_mismatch"`, `"integrity"`.
   *
   * @example
   * ```ts ignore
   * const model = await loadModel("big.gguf", { expertBudgetBytes: 256 << 20 });
   * // or, with plugins: hooks.createStore = (ctx) => StreamingExpertStore.create(ctx, { ... })
   * ```
   */
  static async create(
    ctx: StreamingStoreContext,
    opts: StreamingStoreOptions,
  ): Promise<StreamingExpertStore> {
    const plan = checkBudget(ctx, opts);
    const evictable = opts.expertBudgetBytes - plan.pinnedBytes;
    const store = new StreamingExpertStore(ctx, opts, evictable, Math.max(1, plan.maxExpertBytes));
    store.policy.init?.({
      nLayer: ctx.locations.length,
      nExpert: store.#nExpert,
      capacity: store.capacity,
    });
    for (const loc of plan.pinned) await store.#loadPinned(loc);
    return store;
  }

  /** Make `experts` of `layer` resident; sync when all are. */
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> | void {
    if (this.#disposed) {
      throw new StoreError("closed", "Cannot ensure experts: the store was disposed");
    }
    if (this.#loading(layer, experts)) return this.#settle(layer, experts, signal);
    return this.#ensureNow(layer, experts, signal);
  }

  /** Whether a requested expert is loading (its bytes may have arrived while we computed). */
  #loading(layer: number, experts: ArrayLike<number>): boolean {
    for (let i = 0; i < experts.length; i++) {
      if (this.#res.entries.get(layer * this.#nExpert + experts[i])?.ready === false) return true;
    }
    return false;
  }

  /**
   * The single JS thread applies finished reads only when it yields: give it
   * a few macrotask turns (~30 µs each, counted as stall) so loads whose bytes
   * arrived during compute land before residency is checked.
   */
  async #settle(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> {
    const t0 = performance.now();
    for (let i = 0; i < SETTLE_TURNS && this.#loading(layer, experts); i++) await macrotask();
    this.#stats[layer].stallMs += performance.now() - t0;
    return await this.#ensureNow(layer, experts, signal);
  }

  #ensureNow(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): Promise<void> | void {
    const id = ++this.#seq;
    const res = this.#res;
    // the previous step's compute is over once the next step asks
    if (this.#lastDone) res.unprotect(this.#lastDone);
    this.#lastDone = null;
    const keys: number[] = [];
    for (let i = 0; i < experts.length; i++) {
      const key = this.#key(layer, experts[i]);
      if (!keys.includes(key)) keys.push(key);
    }
    this.#opts.onStep?.(layer, keys);
    res.protect(keys);
    const st = this.#stats[layer];
    const waits: Entry[] = [];
    try {
      for (const key of keys) {
        let en = res.get(key);
        if (en?.ready) {
          st.hits++;
          if (en.unused) st.prefetchHits++;
          en.unused = false;
          if (en.reason !== "pinned") this.policy.onAccess(key, true);
          continue;
        }
        st.misses++;
        this.policy.onAccess(key, false);
        if (en) {
          if (en.unused) st.prefetchLate++;
          en.unused = false;
        } else en = this.#startLoad(key, false)!;
        en.waiters++;
        waits.push(en);
      }
    } catch (e) {
      for (const w of waits) w.waiters--;
      res.unprotect(keys);
      throw e;
    }
    this.#flushHints();
    if (waits.length === 0) {
      this.#lastDone = keys;
      return;
    }
    return this.#wait(id, keys, waits, st, signal);
  }

  /** Weights of a resident expert; `StoreError` `"not_resident"` otherwise. */
  weights(layer: number, index: number): ExpertWeights {
    const en = this.#res.get(layer * this.#nExpert + index);
    if (!en?.weights) {
      throw new StoreError(
        "not_resident",
        `Cannot use expert ${index} of layer ${layer}: it is not resident`,
        {
          layer,
          index,
        },
      );
    }
    return en.weights;
  }

  /** Totals and per-layer counters. */
  stats(): ExpertStoreStats {
    return totalStats(this.#stats);
  }

  /** Experts the budget holds at once, so the MoE layer splits bigger batches. */
  maxEnsureExperts(_layer: number): number {
    return this.capacity;
  }

  /** Slot bytes in use: `allocatedBytes` (evictable area, pooled slots included) + `pinnedBytes`. */
  memory(): {
    budgetBytes: number;
    allocatedBytes: number;
    pinnedBytes: number;
    resident: number;
    loading: number;
  } {
    const res = this.#res;
    let resident = res.pinned.size, loading = 0;
    for (const e of res.entries.values()) e.ready ? resident++ : loading++;
    const pinnedBytes = [...res.pinned.values()].reduce((a, e) => a + e.slot.bytes, 0);
    return {
      budgetBytes: this.budgetBytes,
      allocatedBytes: res.allocatedBytes,
      pinnedBytes,
      resident,
      loading,
    };
  }

  /** Start loading experts of `layer` ahead of use, as room allows. Never evicts what a step needs. */
  prefetch(layer: number, experts: ArrayLike<number>): void {
    this.#hints.push({ layer, experts });
    this.#flushHints();
  }

  /** Hook the prefetcher onto the model's MoE layers (called by `loadModel`). */
  attach(layers: readonly (MoeLayer | null)[]): void {
    const p = this.prefetcher;
    if (!p || this.#attached) return;
    this.#attached = true;
    const { backend, hp } = this.#ctx;
    const base = {
      backend,
      nLayer: hp.nLayer,
      nExpert: this.#nExpert,
      nExpertUsed: hp.nExpertUsed,
      nEmbd: hp.nEmbd,
    };
    const soon = this.#res.soon;
    attachPrefetcher(p, layers, base, (layer, experts) => {
      if (layer !== this.#soonLayer) {
        soon.clear();
        this.#soonLayer = layer;
      }
      for (const e of experts) soon.add(layer * this.#nExpert + e);
    }, (hints) => this.#hints.push(...hints));
  }

  /** Cancel loads in flight and free every slot. The store cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#res.dispose();
  }

  #key(layer: number, index: number): number {
    if (!this.#ctx.locations[layer]?.[index]) {
      throw new StoreError(
        "no_expert",
        `Cannot ensure expert ${index} of layer ${layer}: no such expert`,
        {
          layer,
          index,
        },
      );
    }
    return layer * this.#nExpert + index;
  }

  async #wait(
    id: number,
    keys: number[],
    waits: Entry[],
    st: LayerStoreStats,
    signal?: AbortSignal,
  ): Promise<void> {
    const t0 = performance.now();
    try {
      await abortable(Promise.all(waits.map((w) => w.promise!)), signal);
    } catch (e) {
      this.#res.unprotect(keys);
      throw e;
    } finally {
      for (const w of waits) w.waiters--;
      st.stallMs += performance.now() - t0;
    }
    if (id === this.#seq) this.#lastDone = keys;
    else this.#res.unprotect(keys);
  }

  #fetch(loc: ExpertLocation, signal?: AbortSignal): Promise<Uint8Array> {
    return fetchExpert(
      {
        source: this.#ctx.source,
        expertBytes: this.#ctx.expertBytes,
        sha256: this.#opts.manifest?.experts[loc.layer]?.[loc.index],
        onBytes: (n) => this.#stats[loc.layer].bytesFetched += n,
      },
      loc,
      signal,
    );
  }

  #startLoad(key: number, prefetch: boolean): Entry | null {
    const loc = this.#ctx.locations[Math.floor(key / this.#nExpert)][key % this.#nExpert];
    const slot = this.#res.acquire(loc.bytes, prefetch);
    if (!slot) return null;
    const en = newEntry(key, loc, slot, prefetch ? "prefetch" : "demand");
    this.#res.entries.set(key, en);
    en.promise = this.#load(en, en.abort!.signal);
    // waiters get the error through their own handlers; an abandoned load has none
    en.promise.catch(() => {});
    return en;
  }

  async #load(en: Entry, signal: AbortSignal): Promise<void> {
    try {
      const bytes = await this.#fetch(en.loc, signal);
      if (en.cancelled) {
        throw new StoreError(
          "cancelled",
          `Load of expert ${en.loc.index} of layer ${en.loc.layer} was cancelled`,
        );
      }
      this.#ctx.backend.writeSlot(en.slot, 0, bytes);
      en.weights = prepareExpert(this.#ctx.backend, expertViews(en.loc, en.slot));
      en.ready = true;
      en.promise = null;
      en.abort = null;
      this.policy.onLoad(en.key, en.reason);
    } catch (e) {
      if (!en.cancelled) {
        this.#res.entries.delete(en.key);
        this.#res.release(en.slot);
      }
      throw e;
    } finally {
      if (en.reason === "prefetch") this.#inflightPrefetch--;
    }
  }

  async #loadPinned(loc: ExpertLocation): Promise<void> {
    const slot = this.#ctx.backend.allocSlot(loc.bytes);
    const key = loc.layer * this.#nExpert + loc.index;
    const en = newEntry(key, loc, slot, "pinned");
    this.#res.pinned.set(key, en);
    this.#ctx.backend.writeSlot(slot, 0, await this.#fetch(loc));
    en.weights = prepareExpert(this.#ctx.backend, expertViews(loc, slot));
    en.ready = true;
  }

  #flushHints(): void {
    const hints = this.#hints;
    if (hints.length === 0) return;
    this.#hints = [];
    const max = this.#opts.maxPrefetchInflight ?? 2 * (this.#ctx.hp.nExpertUsed || 1);
    for (const h of hints) {
      const locs = this.#ctx.locations[h.layer];
      if (!locs) continue;
      for (let i = 0; i < h.experts.length; i++) {
        if (this.#inflightPrefetch >= max) return;
        const e = h.experts[i];
        if (!locs[e]) continue;
        const key = h.layer * this.#nExpert + e;
        if (this.#res.get(key)) continue;
        const en = this.#startLoad(key, true);
        if (!en) return;
        this.#inflightPrefetch++;
        this.#stats[h.layer].prefetches++;
        en.promise!.catch((err: Error) => {
          if (!en.cancelled) this.#opts.onPrefetchError?.(err);
        });
      }
    }
  }
}

/** `createStore` for `loadModel`: the streaming store with `opts`. */
export function createStreamingStore(
  ctx: StreamingStoreContext,
  opts: StreamingStoreOptions,
): Promise<StreamingExpertStore> {
  return StreamingExpertStore.create(ctx, opts);
}

/** A `createStore` for `loadFromManifest`: the streaming store for a manifest's request. */
export function streamingStoreFromRequest(
  ctx: StreamingStoreContext,
  req: StreamingStoreRequest,
): Promise<StreamingExpertStore> {
  const all = ctx.locations.reduce((a, l) => a + l.reduce((b, e) => b + e.bytes, 0), 0);
  return StreamingExpertStore.create(ctx, {
    expertBudgetBytes: req.budgetBytes ?? all,
    pinned: req.pinned.map(([layer, index]) => ({ layer, index })),
    policy: req.policy,
    prefetcher: req.prefetcher,
  });
}

export type { StreamingStoreContext, StreamingStoreOptions, StreamingStoreRequest };
