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
import type { Slot } from "../backend/backend.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { MoeLayer } from "../moe/moe_layer.ts";
import type { ExpertLocation } from "./expert_location.ts";
import { type CachePolicy, createRecencyPolicy } from "./cache_policy.ts";
import { expertLayout, expertViews, prepareExpert } from "./expert_loader.ts";
import { type FetchedExpert, fetchExpert, fetchExpertBatch } from "./expert_fetch.ts";
import {
  canLoadInPlace,
  type InPlaceTiming,
  readExpertInPlace,
  trustedFile,
} from "./in_place_load.ts";
import { type LoadWorker, sharedLoadWorker } from "./load_worker.ts";
import { loadFallbackCopies, type ResidentCopies } from "./fallback_copies.ts";
import type {
  ExpertArrivals,
  ExpertStore,
  ExpertStoreStats,
  LayerStoreStats,
} from "./expert_store.ts";
import { attachPrefetcher, type Prefetcher, type PrefetchHint } from "./prefetch.ts";
import { type Entry, newEntry, Residency } from "./residency.ts";
import { abortable, macrotask } from "./async_util.ts";
import { emptyLayerStats, totalStats } from "./store_stats.ts";
import {
  type BackgroundLoadPolicy,
  checkBudget,
  DEFAULT_BACKGROUND_LOADS,
  DEFAULT_CRITICAL_WEIGHT,
  type ExpertFallback,
  FREQUENCY_DECAY,
  type StreamingStoreContext,
  type StreamingStoreOptions,
  type StreamingStoreRequest,
} from "./streaming_options.ts";

/** Macrotask turns `ensure` yields, at most, for loads in flight to land. */
const SETTLE_TURNS = 4;

/** `packAfterUses` of backends without `repackAfterUses` (and `"auto"` while a layer's loads are not reused enough): the third use. */
const PACK_AFTER_USES = 3;

/**
 * `"auto"` repacks at load once a layer's loaded experts are used at least
 * this many times per load on average: a repack costs about one
 * standard-layout matvec and the packed matvec is 2.3–2.8× faster, so it
 * pays from 1.6–1.8 uses on (`bench/streaming_pack.ts`, docs/streaming.md).
 */
const AUTO_PACK_USES_PER_LOAD = 1.8;

/** Loads of a layer before `"auto"` trusts its uses-per-load average. */
const AUTO_PACK_MIN_LOADS = 8;

/** Uses of a loaded expert, and whether it is repacked yet. */
interface UseCount {
  uses: number;
  /** Repack on this use (`packAfterUses`, else the backend's `repackAfterUses`). */
  after: number;
  packed: boolean;
  /** Matrices repacked so far (idle-time repacking goes one matrix at a time). */
  parts: number;
}

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
  /** The first layer with experts (where a forward pass's store steps begin). */
  readonly #firstMoeLayer: number;
  #lastDone: number[] | null = null;
  readonly #use = new WeakMap<Entry, UseCount>();
  readonly #packAfter: number | "auto";
  readonly #moeLayers: number;
  /** Keys computed with their fallback copy in the running step. */
  readonly #fallbackNow = new Set<number>();
  /** Largest gate weight per key in the running step of its layer (from route observers). */
  readonly #gate: Float32Array;
  /** Largest share of its token's routed weight per key in the running step (`w / Σ w`). */
  readonly #share: Float32Array;
  /** Decayed routing count per key (`FREQUENCY_DECAY` per token of its layer) and the layer clock it was last updated at. */
  readonly #freq: Float32Array;
  readonly #freqAt: Float64Array;
  /** Tokens routed per layer (the clock of `#freq`). */
  readonly #clock: Float64Array;
  /** Background full-precision loads queued in the running forward pass. */
  #passLoads = 0;
  #seq = 0;
  #attached = false;
  #disposed = false;
  #copies: ResidentCopies | null = null;
  /** Whether misses are read straight into their slots. */
  readonly #inPlace: boolean;
  /** Reads redone because the slot view was detached by memory growth. */
  #detachedReads = 0;
  /** Experts repacked while a step waited for its loads. */
  #idlePacks = 0;
  /** The off-thread load worker: undefined until the first in-place load decides, null when unused. */
  #worker: Promise<LoadWorker | null> | undefined;
  /** Loads done on the load worker. */
  #offThreadLoads = 0;
  /** Keys of experts checked at a load (`verifyOnce`: later loads of them skip the hashes). */
  readonly #checked = new Set<number>();
  /** Loads read without hashing under `verifyOnce`. */
  #trustedLoads = 0;
  /** Slots allocated and touched when the store was created (`prefaultSlots`). */
  #prefaulted = 0;

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
    const pa = opts.packAfterUses ?? PACK_AFTER_USES;
    if (pa !== "auto" && !(pa >= 1)) {
      throw new StoreError(
        "bad_option",
        `Cannot stream experts: packAfterUses must be "auto" or ≥ 1 (Infinity: never): received ${pa}`,
      );
    }
    this.#packAfter = pa;
    checkBackgroundLoads(opts.fallback?.backgroundLoads);
    const nKeys = ctx.locations.length * this.#nExpert;
    this.#gate = new Float32Array(nKeys).fill(NaN);
    this.#share = new Float32Array(nKeys).fill(NaN);
    this.#freq = new Float32Array(nKeys);
    this.#freqAt = new Float64Array(nKeys);
    this.#clock = new Float64Array(ctx.locations.length);
    this.#moeLayers = Math.max(1, ctx.locations.filter((l) => l.length > 0).length);
    this.#firstMoeLayer = ctx.locations.findIndex((l) => l.length > 0);
    this.#inPlace = opts.readInPlace !== false && canLoadInPlace(ctx.backend, ctx.expertBytes);
  }

  /** Whether misses are read straight into their slots (`readInPlace` and a backend with slot views). */
  get readsInPlace(): boolean {
    return this.#inPlace;
  }

  /** Experts repacked (part of `stats().packs`) in time a step spent waiting for its loads. */
  get idlePacks(): number {
    return this.#idlePacks;
  }

  /** Loads read and hashed on the load worker (`offThreadLoads`), part of `stats().loads`. */
  get offThreadLoads(): number {
    return this.#offThreadLoads;
  }

  /** Slots allocated and touched when the store was created (`prefaultSlots`, default on). */
  get prefaultedSlots(): number {
    return this.#prefaulted;
  }

  /** Loads of experts checked before, read again without hashing (`verifyOnce`). */
  get trustedLoads(): number {
    return this.#trustedLoads;
  }

  /** Reads redone because memory growth detached the slot view while they were in flight. */
  get detachedReads(): number {
    return this.#detachedReads;
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
    let copies: ResidentCopies | null = null;
    if (!opts.fallback && opts.fallbackCopies) {
      copies = await loadFallbackCopies(
        ctx.backend,
        ctx.source,
        ctx.locations,
        opts.fallbackCopies,
      );
      opts = { ...opts, fallback: copies };
    }
    const store = new StreamingExpertStore(ctx, opts, evictable, Math.max(1, plan.maxExpertBytes));
    store.#copies = copies;
    store.policy.init?.({
      nLayer: ctx.locations.length,
      nExpert: store.#nExpert,
      capacity: store.capacity,
    });
    for (const loc of plan.pinned) await store.#loadPinned(loc);
    if (opts.prefaultSlots !== false) {
      const unpinned = ctx.locations.reduce((a, l) => a + l.length, 0) - plan.pinned.length;
      store.#prefaulted = store.#res.prefault(plan.maxExpertBytes, unpinned);
    }
    return store;
  }

  /** Make `experts` of `layer` resident; sync when all are. */
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> | void {
    if (this.#disposed) {
      throw new StoreError("closed", "Cannot ensure experts: the store was disposed");
    }
    if (this.#loading(layer, experts) || this.#passTurn(layer)) {
      return this.#settle(layer, experts, signal);
    }
    return this.#ensureNow(layer, experts, signal);
  }

  /**
   * Like `ensure`, per expert: nothing when every expert is resident (or
   * served by its fallback copy), else which are usable now and, through
   * `next()`, each of the others as its own load lands (so the MoE layer
   * computes it while the rest still load). With `perExpertReady: false`
   * every missed expert arrives once all of them have (the step waits for
   * all its loads, as `ensure`).
   */
  ensureEach(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): ExpertArrivals | Promise<ExpertArrivals | void> | void {
    if (this.#disposed) {
      throw new StoreError("closed", "Cannot ensure experts: the store was disposed");
    }
    if (this.#opts.perExpertReady === false) {
      const p = this.ensure(layer, experts, signal);
      if (!p) return;
      // a caller that stops before next() must not leave the rejection unhandled
      p.catch(() => {});
      // every expert arrives once all loads of the step have landed
      const pos = Array.from({ length: experts.length }, (_, i) => i);
      return {
        ready: [],
        pending: pos.length,
        next: async () => {
          await p;
          const i = pos.shift();
          if (i === undefined) {
            throw new StoreError(
              "bad_option",
              `Cannot wait for another expert of layer ${layer}: every one of this step arrived`,
            );
          }
          return i;
        },
      };
    }
    if (this.#loading(layer, experts) || this.#passTurn(layer)) {
      return this.#settleEach(layer, experts, signal);
    }
    return this.#stepEach(layer, experts, signal);
  }

  /** `ensureEach` once loads whose bytes arrived during compute had a few turns to land. */
  async #settleEach(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): Promise<ExpertArrivals | void> {
    const t0 = performance.now();
    let i = 0;
    do await macrotask(); while (++i < SETTLE_TURNS && this.#loading(layer, experts));
    this.#stats[layer].stallMs += performance.now() - t0;
    return this.#stepEach(layer, experts, signal);
  }

  #stepEach(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): ExpertArrivals | void {
    const waits: Entry[] = [];
    const r = this.#step(layer, experts, waits);
    if (r === null) return;
    return this.#arrivals(r.id, r.keys, waits, experts, layer, signal);
  }

  /**
   * Whether this step yields one macrotask turn before it starts: the first
   * MoE layer of a forward pass while prefetches or background loads are in
   * flight. Steps served by resident experts and fallback copies never wait
   * for I/O, so without it a finished read of such a load is applied only
   * when some later step waits (seen: background loads of the fallback
   * rows landing 35–350 ms after their bytes arrived, docs/streaming.md
   * session 8). One turn per token (~10 µs, counted as stall).
   */
  #passTurn(layer: number): boolean {
    return layer === this.#firstMoeLayer && this.#inflightPrefetch > 0;
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
   * a few macrotask turns (`setImmediate`, ~10 µs each, counted as stall) so loads whose bytes
   * arrived during compute land before residency is checked.
   */
  async #settle(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> {
    const t0 = performance.now();
    let i = 0;
    do await macrotask(); while (++i < SETTLE_TURNS && this.#loading(layer, experts));
    this.#stats[layer].stallMs += performance.now() - t0;
    return await this.#ensureNow(layer, experts, signal);
  }

  #ensureNow(
    layer: number,
    experts: ArrayLike<number>,
    signal?: AbortSignal,
  ): Promise<void> | void {
    const waits: Entry[] = [];
    const r = this.#step(layer, experts, waits);
    if (r === null) return;
    return this.#wait(r.id, r.keys, waits, this.#stats[layer], signal);
  }

  /**
   * Begin one store step: count hits and misses, start the missing loads
   * and flush prefetch hints. Fills `waits` with the loads the step must
   * wait for; null when there are none (the step is over for protection
   * once the next one starts).
   */
  #step(
    layer: number,
    experts: ArrayLike<number>,
    waits: Entry[],
  ): { id: number; keys: number[] } | null {
    const id = ++this.#seq;
    const res = this.#res;
    // the previous step's compute is over once the next step asks
    if (this.#lastDone) res.unprotect(this.#lastDone);
    this.#lastDone = null;
    this.#fallbackNow.clear();
    const fb = this.#opts.fallback;
    const keys: number[] = [];
    for (let i = 0; i < experts.length; i++) {
      const key = this.#key(layer, experts[i]);
      if (!keys.includes(key)) keys.push(key);
    }
    this.#opts.onStep?.(layer, keys);
    res.protect(keys);
    const st = this.#stats[layer];
    const fresh: Entry[] = [];
    try {
      for (const key of keys) {
        let en = res.get(key);
        if (en) en.lastUse = id;
        if (en?.ready) {
          st.hits++;
          if (en.unused) st.prefetchHits++;
          en.unused = false;
          if (en.reason !== "pinned") {
            this.policy.onAccess(key, true);
            this.#used(en, st);
          }
          continue;
        }
        st.misses++;
        this.policy.onAccess(key, false);
        if (en?.unused) st.prefetchLate++;
        if (fb && this.#useFallback(key, fb)) {
          // computed with the resident low-bit copy; full precision loads for later tokens
          st.fallbackHits++;
          this.#fallbackNow.add(key);
          if (!en && this.#loadBehind(key, fb)) {
            this.#hints.push({ layer, experts: [key % this.#nExpert] });
          }
          continue;
        }
        if (en) {
          en.unused = false;
          en.urgent?.();
        } else {
          en = this.#newLoad(key, false)!;
          en.lastUse = id;
          fresh.push(en);
        }
        en.waiters++;
        waits.push(en);
      }
      this.#begin(fresh);
    } catch (e) {
      for (const w of waits) w.waiters--;
      for (const en of fresh) {
        if (en.promise) continue;
        res.entries.delete(en.key);
        res.release(en.slot);
      }
      res.unprotect(keys);
      throw e;
    }
    this.#flushHints();
    if (waits.length === 0) {
      this.#lastDone = keys;
      return null;
    }
    return { id, keys };
  }

  /**
   * The arrivals of one step: positions of `experts` usable now, then each
   * waited expert as its load lands. Time spent in `next()` is the step's
   * stall. Once the last one arrived (or, if the caller stops taking
   * arrivals, once every load settled), protection is handed on as `#wait`
   * does.
   */
  #arrivals(
    id: number,
    keys: number[],
    waits: Entry[],
    experts: ArrayLike<number>,
    layer: number,
    signal?: AbortSignal,
  ): ExpertArrivals {
    const st = this.#stats[layer];
    const ready: number[] = [];
    /** Position in the request of each waited entry (the first position of its key). */
    const pos = new Array<number>(waits.length).fill(-1);
    const seen = new Set<number>();
    for (let i = 0; i < experts.length; i++) {
      const key = layer * this.#nExpert + experts[i];
      if (seen.has(key)) continue;
      seen.add(key);
      const j = waits.findIndex((w) => w.key === key);
      if (j >= 0) pos[j] = i;
      else ready.push(i);
    }
    const proms = waits.map((en, j) => en.promise!.then(() => j));
    let over = false;
    const finish = (ok: boolean): void => {
      if (over) return;
      over = true;
      for (const en of waits) en.waiters--;
      if (ok && id === this.#seq) this.#lastDone = keys;
      else this.#res.unprotect(keys);
    };
    // also when the caller stops taking arrivals (an error in compute, an abort)
    Promise.allSettled(proms).then((rs) => finish(rs.every((r) => r.status === "fulfilled")));
    const landed = new Set<number>();
    const next = async (): Promise<number> => {
      const open = proms.filter((_, j) => !landed.has(j));
      if (open.length === 0) {
        throw new StoreError(
          "bad_option",
          `Cannot wait for another expert of layer ${layer}: every one of this step arrived`,
        );
      }
      const t0 = performance.now();
      let packMs = 0;
      try {
        const race = Promise.race(open);
        packMs = await this.#packWhile(race, keys, st, signal);
        const j = await abortable(race, signal);
        landed.add(j);
        // the last arrival hands the step's protection on before the caller can start the next step
        if (landed.size === waits.length) finish(true);
        return pos[j];
      } finally {
        st.stallMs += performance.now() - t0 - packMs;
      }
    };
    return { ready, pending: waits.length, next };
  }

  /**
   * Weights of a resident expert (its fallback copy when the running step
   * chose it); `StoreError` `"not_resident"` otherwise.
   */
  weights(layer: number, index: number): ExpertWeights {
    const key = layer * this.#nExpert + index;
    if (this.#fallbackNow.has(key)) {
      const w = this.#opts.fallback?.weights(layer, index);
      if (w) return w;
    }
    const en = this.#res.get(key);
    if (en?.verify) this.#verified(en);
    if (!en?.ready || !en.weights) {
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
    fallbackBytes: number;
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
      fallbackBytes: this.#copies?.bytes ?? 0,
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
    if (this.#attached) return;
    this.#attached = true;
    if (this.#opts.fallback) this.#observeGates(layers);
    const p = this.prefetcher;
    if (!p) return;
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
    this.#copies?.dispose();
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
    let packMs = 0;
    try {
      const all = Promise.all(waits.map((w) => w.promise!));
      packMs = await this.#packWhile(all, keys, st, signal);
      await abortable(all, signal);
    } catch (e) {
      this.#res.unprotect(keys);
      throw e;
    } finally {
      for (const w of waits) w.waiters--;
      st.stallMs += performance.now() - t0 - packMs;
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

  /** Whether a miss of `key` is computed with its fallback copy (not critical by gate weight). */
  #useFallback(key: number, fb: ExpertFallback): boolean {
    const layer = Math.floor(key / this.#nExpert);
    if (!fb.weights(layer, key % this.#nExpert)) return false;
    const critical = fb.criticalWeight ?? DEFAULT_CRITICAL_WEIGHT;
    if (critical === Infinity) return true;
    const g = this.#gate[key];
    // without a gate weight (no observer ran), every miss counts as critical
    return !Number.isNaN(g) && g < critical;
  }

  /**
   * Whether a fallback use of `key` (a miss computed with its copy, not
   * resident nor loading) queues a background load of full precision:
   * `loadOnFallback`, then `backgroundLoads` (gate weight share or routing
   * frequency, at most `maxPerToken` per forward pass).
   */
  #loadBehind(key: number, fb: ExpertFallback): boolean {
    if (fb.loadOnFallback === false) return false;
    const p = fb.backgroundLoads ?? DEFAULT_BACKGROUND_LOADS;
    const k = this.#ctx.hp.nExpertUsed || 1;
    if (this.#passLoads >= (p.maxPerToken ?? k)) return false;
    const minWeight = p.minWeight ?? DEFAULT_BACKGROUND_LOADS.minWeight!;
    const minFreq = p.minFrequency ?? DEFAULT_BACKGROUND_LOADS.minFrequency!;
    const layer = Math.floor(key / this.#nExpert);
    const share = this.#share[key];
    // without a gate weight (no observer ran) only a threshold of 0 passes by weight
    let take = minWeight <= 0 || share >= minWeight;
    if (!take && minFreq !== Infinity) {
      const f = this.#freq[key] * FREQUENCY_DECAY ** (this.#clock[layer] - this.#freqAt[key]);
      take = f * (1 - FREQUENCY_DECAY) >= minFreq * k / this.#nExpert;
    }
    if (take) this.#passLoads++;
    return take;
  }

  /**
   * Record per layer step the largest gate weight and weight share of each
   * routed expert, and its decayed routing count (for `fallback`).
   */
  #observeGates(layers: readonly (MoeLayer | null)[]): void {
    const gate = this.#gate, share = this.#share, n = this.#nExpert;
    const freq = this.#freq, at = this.#freqAt, clock = this.#clock;
    const first = layers.findIndex((l) => l !== null);
    for (const layer of layers) {
      layer?.observers.push((l, t, r) => {
        if (t === 0) {
          gate.fill(NaN, l * n, (l + 1) * n);
          share.fill(NaN, l * n, (l + 1) * n);
          // a new forward pass: its background loads start from none
          if (l === first) this.#passLoads = 0;
        }
        const now = ++clock[l];
        let sum = 0;
        for (let j = 0; j < r.weights.length; j++) sum += r.weights[j];
        for (let j = 0; j < r.experts.length; j++) {
          const k = l * n + r.experts[j];
          const w = r.weights[j];
          if (!(gate[k] >= w)) gate[k] = w;
          const sh = sum > 0 ? w / sum : 0;
          if (!(share[k] >= sh)) share[k] = sh;
          freq[k] = freq[k] * FREQUENCY_DECAY ** (now - at[k]) + 1;
          at[k] = now;
        }
      });
    }
  }

  /**
   * Run the integrity comparisons deferred to first use; on a mismatch the
   * expert is dropped (a retry reads it again) and `StoreError`
   * `"integrity"` propagates to the step using it.
   */
  #verified(en: Entry): void {
    const check = en.verify;
    if (!check) return;
    en.verify = null;
    try {
      this.#stats[en.loc.layer].verifyMs += check();
      if (this.#opts.verifyOnce === true) this.#checked.add(en.key);
    } catch (e) {
      if (this.#res.entries.get(en.key) === en) this.#res.evict(en.key);
      throw e;
    }
  }

  /**
   * With `packAfterUses: "auto"`, repack this step's resident experts a
   * matrix at a time (`#packIdle`) until `pending` settles, the signal
   * aborts or nothing is left: time the JS thread would idle waiting for
   * loads. Returns the ms spent repacking (not counted as stall).
   */
  async #packWhile(
    pending: Promise<unknown>,
    keys: readonly number[],
    st: LayerStoreStats,
    signal?: AbortSignal,
  ): Promise<number> {
    // handled here from the start: the caller awaits `pending` only after this returns
    let settled = false;
    pending.then(() => settled = true, () => settled = true);
    if (this.#packAfter !== "auto") return 0;
    let packMs = 0;
    while (!settled && !signal?.aborted) {
      const p0 = performance.now();
      const more = this.#packIdle(keys, st);
      packMs += performance.now() - p0;
      if (!more) break;
      await macrotask();
    }
    return packMs;
  }

  /**
   * Repack one matrix of a resident, checked, not yet repacked expert of
   * this step (`keys`) while the step waits for its loads: time the JS
   * thread would otherwise idle, for an expert about to be computed.
   * Returns whether it repacked one.
   */
  #packIdle(keys: readonly number[], st: LayerStoreStats): boolean {
    const backend = this.#ctx.backend;
    if (!backend.prepareWeights) return false;
    for (const key of keys) {
      const en = this.#res.entries.get(key);
      if (!en?.ready || !en.weights || en.verify) continue;
      const u = this.#use.get(en);
      if (!u || u.packed) continue;
      const w = en.weights;
      const views = w.gate ? [w.gate, w.up, w.down] : [w.up, w.down];
      const t0 = performance.now();
      backend.prepareWeights(views[u.parts++]);
      if (u.parts >= views.length) {
        u.packed = true;
        st.packs++;
        this.#idlePacks++;
      }
      st.repackMs += performance.now() - t0;
      return true;
    }
    return false;
  }

  /** Whether a load of `layer` is repacked as it lands (`packAfterUses` 1, or `"auto"` on reuse). */
  #packAtLoad(layer: number): boolean {
    const pa = this.#packAfter;
    if (pa !== "auto") return pa <= 1;
    const st = this.#stats[layer];
    const loads = st.loads ?? 0;
    if (loads < AUTO_PACK_MIN_LOADS) return false;
    const uses = st.hits + st.misses - (st.fallbackHits ?? 0);
    return uses / loads >= AUTO_PACK_USES_PER_LOAD;
  }

  /**
   * The use on which `loc` is repacked: `packAfterUses` when set (`"auto"`:
   * the third use, when not repacked at load), else the smallest of the
   * backend's `repackAfterUses` over its matrices (the third use without).
   */
  #repackAfter(loc: ExpertLocation): number {
    const pa = this.#packAfter;
    if (pa === "auto") return PACK_AFTER_USES;
    if (this.#opts.packAfterUses !== undefined) return pa;
    const be = this.#ctx.backend;
    if (typeof be.repackAfterUses !== "function") return PACK_AFTER_USES;
    let n = Infinity;
    for (const m of [loc.gate, loc.up, loc.down]) {
      if (m) n = Math.min(n, be.repackAfterUses(m.type));
    }
    return n >= 1 ? n : PACK_AFTER_USES;
  }

  /** Count a use of a loaded expert; repack it once it reaches its `#repackAfter` use. */
  #used(en: Entry, st: LayerStoreStats): void {
    const u = this.#use.get(en);
    if (!u || u.packed || ++u.uses < u.after || !en.weights) return;
    this.#verified(en);
    const t0 = performance.now();
    prepareExpert(this.#ctx.backend, en.weights);
    st.repackMs += performance.now() - t0;
    st.packs++;
    u.packed = true;
  }

  /** A new entry with a slot for `key`, its fetch not started (`#begin`); null when a prefetch finds no room. */
  #newLoad(
    key: number,
    prefetch: boolean,
    replace?: { readonly layer: number; readonly keep: ReadonlySet<number> },
  ): Entry | null {
    const loc = this.#ctx.locations[Math.floor(key / this.#nExpert)][key % this.#nExpert];
    const slot = this.#res.acquire(loc.bytes, prefetch, replace);
    if (!slot) return null;
    const en = newEntry(key, loc, slot, prefetch ? "prefetch" : "demand");
    this.#res.entries.set(key, en);
    return en;
  }

  /**
   * Start the fetches of `ens` (one layer's misses or prefetches) as one
   * batch of coalesced reads; the batch's reads are aborted once every one
   * of its loads is.
   */
  #begin(ens: Entry[]): void {
    if (ens.length === 0) return;
    if (this.#inPlace) {
      // one expert's reads after another's: the first lands (and is computed) while the next reads
      const stagger = this.#opts.staggerLoads === true;
      let prev: Promise<void> | null = null;
      for (const en of ens) {
        let over!: () => void;
        const readsOver = new Promise<void>((r) => over = r);
        en.promise = this.#loadInPlace(en, stagger ? prev : null, over);
        en.promise.catch(() => {});
        prev = readsOver;
      }
      return;
    }
    const ctl = new AbortController();
    let left = ens.length;
    for (const en of ens) {
      en.abort!.signal.addEventListener("abort", () => {
        if (--left === 0) ctl.abort();
      }, { once: true });
    }
    const man = this.#opts.manifest;
    const got = fetchExpertBatch(
      {
        source: this.#ctx.source,
        expertBytes: this.#ctx.expertBytes,
        sha256s: man ? ens.map((en) => man.experts[en.loc.layer]?.[en.loc.index]) : undefined,
      },
      ens.map((en) => en.loc),
      ctl.signal,
    );
    ens.forEach((en, i) => {
      en.promise = this.#load(en, got[i]);
      // waiters get the error through their own handlers; an abandoned load has none
      en.promise.catch(() => {});
    });
  }

  /**
   * Read `en` straight into its slot (after the reads of `after`, when
   * given); its slot is never reused before the reads are over. Calls
   * `over` once its reads are over (or will never start).
   */
  async #loadInPlace(
    en: Entry,
    after: Promise<void> | null,
    over: () => void,
  ): Promise<void> {
    const loc = en.loc;
    let worker: LoadWorker | null;
    try {
      if (after) await after;
      worker = await this.#loadWorker(en.slot);
      // cancelled while queued: its slot went back at once (no reads were in flight)
      if (en.cancelled) {
        over();
        throw new StoreError(
          "cancelled",
          `Load of expert ${loc.index} of layer ${loc.layer} was cancelled`,
        );
      }
    } catch (e) {
      if (en.reason === "prefetch") this.#inflightPrefetch--;
      throw e;
    }
    const sha256 = this.#opts.manifest?.experts[loc.layer]?.[loc.index];
    const trusted = this.#opts.verifyOnce === true && this.#checked.has(en.key) &&
      trustedFile(this.#ctx.source) !== null;
    const io = readExpertInPlace(
      {
        source: this.#ctx.source,
        backend: this.#ctx.backend,
        sha256,
        trusted,
        onDetached: () => this.#detachedReads++,
        // a prefetch may never be used: compare re-reads at first use (before any repack)
        deferRereads: en.reason === "prefetch" && this.#packAfter !== 1,
        worker,
        // a prefetch someone waits for already (a step asked meanwhile) is a demand
        urgent: en.reason !== "prefetch" || en.waiters > 0,
        onTicket: (t) => en.urgent = t.urgent,
      },
      loc,
      en.slot,
      en.abort!.signal,
    );
    en.io = io;
    try {
      let t: InPlaceTiming;
      try {
        t = await io;
      } finally {
        en.io = null;
        over();
      }
      if (en.cancelled) {
        throw new StoreError(
          "cancelled",
          `Load of expert ${loc.index} of layer ${loc.layer} was cancelled`,
        );
      }
      const st = this.#stats[loc.layer];
      st.bytesFetched += loc.bytes;
      if (t.offThread) this.#offThreadLoads++;
      if (trusted) this.#trustedLoads++;
      en.urgent = null;
      en.verify = t.verify;
      // checked now, or (deferred re-read comparisons) before its first use
      if (this.#opts.verifyOnce === true && t.verify === null) this.#checked.add(en.key);
      this.#landed(en, t.readMs, t.verifyMs, performance.now());
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

  /**
   * The load worker when in-place loads can use it (`offThreadLoads` not
   * false, slot views over shared memory), else null; decided once, at the
   * first in-place load.
   */
  #loadWorker(slot: Slot): Promise<LoadWorker | null> {
    if (this.#worker === undefined) {
      const view = this.#ctx.backend.slotBytes?.(slot, 0, 0);
      this.#worker = this.#opts.offThreadLoads === true && view?.buffer instanceof SharedArrayBuffer
        ? sharedLoadWorker().then((w) => w.alive ? w : null)
        : Promise.resolve(null);
    }
    return this.#worker;
  }

  /** Bytes of `en` are in its slot (copy started at `t0`): views, optional repack, counters, ready. */
  #landed(en: Entry, readMs: number, verifyMs: number, t0: number): void {
    const st = this.#stats[en.loc.layer];
    const backend = this.#ctx.backend;
    en.weights = expertViews(en.loc, en.slot);
    // bytes whose check is deferred to first use are not repacked before it
    const packed = en.verify === null && this.#packAtLoad(en.loc.layer);
    if (packed) {
      prepareExpert(backend, en.weights);
      st.packs++;
    }
    this.#use.set(en, { uses: 0, after: this.#repackAfter(en.loc), packed, parts: packed ? 3 : 0 });
    st.repackMs += performance.now() - t0;
    st.readMs += readMs;
    st.verifyMs += verifyMs;
    st.loads++;
    en.ready = true;
    en.promise = null;
    en.abort = null;
    this.policy.onLoad(en.key, en.reason);
    // the demand that loaded it is its first use
    if (en.reason === "demand") this.#used(en, st);
  }

  async #load(en: Entry, fetched: Promise<FetchedExpert>): Promise<void> {
    try {
      const f = await abortable(fetched, en.abort!.signal);
      if (en.cancelled) {
        throw new StoreError(
          "cancelled",
          `Load of expert ${en.loc.index} of layer ${en.loc.layer} was cancelled`,
        );
      }
      const st = this.#stats[en.loc.layer];
      const t0 = performance.now();
      const lay = expertLayout(en.loc);
      const backend = this.#ctx.backend;
      let n = 0;
      for (const p of ["gate", "up", "down"] as const) {
        const b = f.parts[p];
        if (!b) continue;
        backend.writeSlot(en.slot, lay[p], b);
        n += b.byteLength;
      }
      st.bytesFetched += n;
      this.#landed(en, f.readMs, f.verifyMs, t0);
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
    if (hints.length === 0 || this.#disposed) return;
    this.#hints = [];
    // spare what the last token used (one step per MoE layer)
    this.#res.prefetchSpareFrom = this.#seq - this.#moeLayers + 1;
    const max = this.#opts.maxPrefetchInflight ?? 2 * (this.#ctx.hp.nExpertUsed || 1);
    let batch: Entry[] = [];
    const start = (): void => {
      this.#begin(batch);
      for (const en of batch) {
        en.promise!.catch((err: Error) => {
          if (!en.cancelled) this.#opts.onPrefetchError?.(err);
        });
      }
      batch = [];
    };
    try {
      const sameLayer = this.#opts.prefetchReplacesLayer === true;
      for (const h of hints) {
        const locs = this.#ctx.locations[h.layer];
        if (!locs) continue;
        let replace: { layer: number; keep: Set<number> } | undefined;
        if (sameLayer) {
          const keep = new Set<number>();
          for (let i = 0; i < h.experts.length; i++) {
            keep.add(h.layer * this.#nExpert + h.experts[i]);
          }
          replace = { layer: h.layer, keep };
        }
        for (let i = 0; i < h.experts.length; i++) {
          if (this.#inflightPrefetch >= max) return;
          const e = h.experts[i];
          if (!locs[e]) continue;
          const key = h.layer * this.#nExpert + e;
          if (this.#res.get(key)) continue;
          const en = this.#newLoad(key, true, replace);
          if (!en) return;
          batch.push(en);
          this.#inflightPrefetch++;
          this.#stats[h.layer].prefetches++;
        }
        start();
      }
    } finally {
      start();
    }
  }
}

/** Throws `StoreError` `"bad_option"` unless every threshold of `p` is a number ≥ 0 (`Infinity` allowed). */
function checkBackgroundLoads(p: BackgroundLoadPolicy | undefined): void {
  if (!p) return;
  for (const k of ["minWeight", "minFrequency", "maxPerToken"] as const) {
    const v = p[k];
    if (v !== undefined && !(typeof v === "number" && v >= 0)) {
      throw new StoreError(
        "bad_option",
        `Cannot stream experts: backgroundLoads.${k} must be a number ≥ 0 (Infinity allowed): received ${v}`,
        { option: k, value: String(v) },
      );
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
    fallbackCopies: req.fallbackCopies,
  });
}

export type { ExpertFallback, StreamingStoreContext, StreamingStoreOptions, StreamingStoreRequest };
