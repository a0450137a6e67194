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

import type { Backend, Slot } from "../backend/backend.ts";
import { PluginError, StoreError } from "../errors.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { MoeLayer, RouteObserver } from "../moe/moe_layer.ts";
import type { ExpertLocation } from "../model/weights.ts";
import type { ByteSource } from "./byte_source.ts";
import {
  type CachePolicy,
  createRecencyPolicy,
  type LoadReason,
  pickVictim,
} from "./cache_policy.ts";
import { type ExpertBytesHook, expertLayout, expertViews } from "./expert_loader.ts";
import {
  checkManifestFits,
  type ExpertManifest,
  type ExpertRef,
  readExpertBytes,
  sha256Hex,
} from "./expert_manifest.ts";
import type { ExpertStore, ExpertStoreStats, LayerStoreStats } from "./expert_store.ts";
import type { PrefetchContext, Prefetcher, PrefetchHint } from "./prefetch.ts";
import { emptyLayerStats, totalStats } from "./store_stats.ts";

/** Options of the streaming store. */
export interface StreamingStoreOptions {
  /** Bytes of backend slots experts may hold (pinned ones included). */
  expertBudgetBytes: number;
  /** Eviction policy (default: the built-in least-recently-used one). */
  policy?: CachePolicy;
  /** Loads experts ahead of use (default: none). */
  prefetcher?: Prefetcher;
  /** Per-expert SHA-256 (checked on every load) and pinned experts. */
  manifest?: ExpertManifest;
  /** Experts to keep resident always, besides the manifest's. */
  pinned?: readonly ExpertRef[];
  /** Most prefetch loads in flight at once (default `2 · nExpertUsed`). */
  maxPrefetchInflight?: number;
  /** Told every `ensure` step (layer, keys `layer·nExpert+index`), e.g. to record a trace for Belady. */
  onStep?: (layer: number, keys: readonly number[]) => void;
  /** Told when a prefetch fails (the next demand load retries and reports). */
  onPrefetchError?: (error: Error) => void;
}

/** What the store is built from (`StoreContext` of `loadModel` fits). */
export interface StreamingStoreContext {
  /** Backend holding the slots. */
  readonly backend: Backend;
  /** Where expert bytes come from. */
  readonly source: ByteSource;
  /** `locations[l][e]` (empty for dense layers). */
  readonly locations: readonly (readonly ExpertLocation[])[];
  /** Checks or transforms expert bytes before upload (after the integrity check). */
  readonly expertBytes?: ExpertBytesHook;
  /** Model sizes. */
  readonly hp: {
    readonly nLayer: number;
    readonly nExpert: number;
    readonly nExpertUsed: number;
    readonly nEmbd: number;
  };
}

interface Entry {
  readonly key: number;
  readonly loc: ExpertLocation;
  readonly slot: Slot;
  readonly reason: LoadReason;
  ready: boolean;
  weights: ExpertWeights | null;
  promise: Promise<void> | null;
  abort: AbortController | null;
  cancelled: boolean;
  /** Ensure calls waiting on the load. */
  waiters: number;
  /** Loaded by prefetch and not used since. */
  unused: boolean;
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
  readonly #evictable: number;
  readonly #hashes: ExpertManifest["experts"] | null;
  readonly #entries = new Map<number, Entry>();
  readonly #pinned = new Map<number, Entry>();
  readonly #free = new Map<number, Slot[]>();
  readonly #protect = new Map<number, number>();
  readonly #stats: LayerStoreStats[];
  readonly #soon = new Set<number>();
  #soonLayer = -1;
  #hints: PrefetchHint[] = [];
  #allocated = 0;
  #inflightPrefetch = 0;
  #lastDone: number[] | null = null;
  #seq = 0;
  #attached = false;
  #disposed = false;

  private constructor(
    ctx: StreamingStoreContext,
    opts: StreamingStoreOptions,
    pinnedBytes: number,
    maxBytes: number,
  ) {
    this.#ctx = ctx;
    this.#opts = opts;
    this.#nExpert = Math.max(ctx.hp.nExpert, ...ctx.locations.map((l) => l.length));
    this.budgetBytes = opts.expertBudgetBytes;
    this.#evictable = opts.expertBudgetBytes - pinnedBytes;
    this.capacity = Math.floor(this.#evictable / maxBytes);
    this.policy = opts.policy ?? createRecencyPolicy();
    this.prefetcher = opts.prefetcher ?? null;
    this.#hashes = opts.manifest?.experts ?? null;
    this.#stats = ctx.locations.map((_, l) => emptyLayerStats(l));
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
    const budget = opts.expertBudgetBytes;
    if (!Number.isSafeInteger(budget) || budget <= 0) {
      throw new StoreError(
        "bad_budget",
        `Cannot stream experts: budget must be a positive byte count: received ${budget}`,
      );
    }
    if (opts.manifest) checkManifestFits(opts.manifest, ctx.source, ctx.locations);
    const refs = [...(opts.manifest?.pinned ?? []), ...(opts.pinned ?? [])];
    const pinnedLocs = new Map<string, ExpertLocation>();
    for (const r of refs) {
      const loc = ctx.locations[r.layer]?.[r.index];
      if (!loc) {
        throw new StoreError(
          "no_expert",
          `Cannot pin expert ${r.index} of layer ${r.layer}: no such expert`,
          { ...r },
        );
      }
      pinnedLocs.set(`${r.layer}:${r.index}`, loc);
    }
    const pinnedBytes = [...pinnedLocs.values()].reduce((a, l) => a + l.bytes, 0);
    const all = ctx.locations.flat();
    const maxBytes = all.reduce((m, l) => Math.max(m, l.bytes), 0);
    const k = ctx.hp.nExpertUsed || 1;
    const need = pinnedBytes + k * maxBytes;
    if (all.length > 0 && budget < need) {
      throw new StoreError(
        "budget_too_small",
        `Cannot stream experts: a budget of ${budget} bytes is below one token's need of ${need} bytes ` +
          `(${k} experts of ${maxBytes} bytes for one layer` +
          (pinnedBytes ? ` + ${pinnedBytes} pinned` : "") + ")",
        { budget, need, k, expertBytes: maxBytes, pinnedBytes },
      );
    }
    const store = new StreamingExpertStore(ctx, opts, pinnedBytes, Math.max(1, maxBytes));
    store.policy.init?.({
      nLayer: ctx.locations.length,
      nExpert: store.#nExpert,
      capacity: store.capacity,
    });
    for (const loc of pinnedLocs.values()) await store.#loadPinned(loc);
    return store;
  }

  /** Make `experts` of `layer` resident; sync when all are. */
  ensure(layer: number, experts: ArrayLike<number>, signal?: AbortSignal): Promise<void> | void {
    if (this.#disposed) {
      throw new StoreError("closed", "Cannot ensure experts: the store was disposed");
    }
    const id = ++this.#seq;
    if (this.#lastDone) this.#unprotect(this.#lastDone);
    this.#lastDone = null;
    const keys: number[] = [];
    for (let i = 0; i < experts.length; i++) {
      const key = this.#key(layer, experts[i]);
      if (!keys.includes(key)) keys.push(key);
    }
    this.#opts.onStep?.(layer, keys);
    for (const k of keys) this.#protect.set(k, (this.#protect.get(k) ?? 0) + 1);
    const st = this.#stats[layer];
    const waits: Entry[] = [];
    try {
      for (const key of keys) {
        let en = this.#pinned.get(key) ?? this.#entries.get(key);
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
        } else en = this.#startLoad(key, "demand")!;
        en.waiters++;
        waits.push(en);
      }
    } catch (e) {
      for (const w of waits) w.waiters--;
      this.#unprotect(keys);
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
    const key = layer * this.#nExpert + index;
    const en = this.#pinned.get(key) ?? this.#entries.get(key);
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

  /** Slot bytes in use: `allocated` (evictable area incl. free slots kept for reuse) + `pinned`. */
  memory(): {
    budgetBytes: number;
    allocatedBytes: number;
    pinnedBytes: number;
    resident: number;
    loading: number;
  } {
    let resident = this.#pinned.size, loading = 0;
    for (const e of this.#entries.values()) e.ready ? resident++ : loading++;
    const pinnedBytes = [...this.#pinned.values()].reduce((a, e) => a + e.slot.bytes, 0);
    return {
      budgetBytes: this.budgetBytes,
      allocatedBytes: this.#allocated,
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
    const ctx: PrefetchContext = {
      backend,
      nLayer: hp.nLayer,
      nExpert: this.#nExpert,
      nExpertUsed: hp.nExpertUsed,
      nEmbd: hp.nEmbd,
      layers: layers.map((m) =>
        m ? { layer: m.spec.layer, gateInp: m.spec.gateInp, router: m.spec.router } : null
      ),
    };
    plugin(p, "init", () => p.init?.(ctx));
    const observer: RouteObserver = (layer, token, route, hidden) => {
      if (layer !== this.#soonLayer) {
        this.#soon.clear();
        this.#soonLayer = layer;
      }
      for (const e of route.experts) this.#soon.add(layer * this.#nExpert + e);
      const hints = plugin(p, "observe", () => p.observe(layer, token, route, hidden));
      if (hints) this.#hints.push(...hints);
    };
    for (const m of layers) m?.observers.push(observer);
  }

  /** Cancel loads in flight and free every slot. The store cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const be = this.#ctx.backend;
    for (const e of [...this.#entries.values(), ...this.#pinned.values()]) {
      e.cancelled = true;
      e.abort?.abort();
      be.freeSlot(e.slot);
    }
    for (const list of this.#free.values()) for (const s of list) be.freeSlot(s);
    this.#entries.clear();
    this.#pinned.clear();
    this.#free.clear();
    this.#allocated = 0;
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

  #unprotect(keys: readonly number[]): void {
    for (const k of keys) {
      const n = (this.#protect.get(k) ?? 1) - 1;
      if (n > 0) this.#protect.set(k, n);
      else this.#protect.delete(k);
    }
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
      this.#unprotect(keys);
      throw e;
    } finally {
      for (const w of waits) w.waiters--;
      st.stallMs += performance.now() - t0;
    }
    if (id === this.#seq) this.#lastDone = keys;
    else this.#unprotect(keys);
  }

  #startLoad(key: number, reason: "demand" | "prefetch"): Entry | null {
    const layer = Math.floor(key / this.#nExpert);
    const loc = this.#ctx.locations[layer][key % this.#nExpert];
    const slot = this.#acquire(loc.bytes, reason === "prefetch");
    if (!slot) return null;
    const abort = new AbortController();
    const en: Entry = {
      key,
      loc,
      slot,
      reason,
      ready: false,
      weights: null,
      promise: null,
      abort,
      cancelled: false,
      waiters: 0,
      unused: reason === "prefetch",
    };
    this.#entries.set(key, en);
    en.promise = this.#load(en, abort.signal);
    // waiters get the error through their own handlers; an abandoned load has none
    en.promise.catch(() => {});
    return en;
  }

  async #fetch(loc: ExpertLocation, signal?: AbortSignal): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = await readExpertBytes(this.#ctx.source, loc, signal);
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError(
        "load_failed",
        `Cannot load expert ${loc.index} of layer ${loc.layer} from ${this.#ctx.source.name}: ${
          (e as Error).message
        }`,
        { layer: loc.layer, index: loc.index },
      );
    }
    this.#stats[loc.layer].bytesFetched += bytes.byteLength;
    const want = this.#hashes?.[loc.layer]?.[loc.index];
    if (want !== undefined) {
      const got = await sha256Hex(bytes);
      if (got !== want) {
        throw new StoreError(
          "integrity",
          `Cannot load expert ${loc.index} of layer ${loc.layer} from ${this.#ctx.source.name}: ` +
            `SHA-256 ${got} does not match the manifest's ${want}`,
          { layer: loc.layer, index: loc.index, expected: want, actual: got },
        );
      }
    }
    const hook = this.#ctx.expertBytes;
    if (hook) {
      const lay = expertLayout(loc);
      for (const part of ["gate", "up", "down"] as const) {
        const m = loc[part];
        if (!m) continue;
        const sub = bytes.subarray(lay[part], lay[part] + m.nbytes);
        const out = hook(loc, part, sub);
        if (!out || out === sub) continue;
        if (out.byteLength !== m.nbytes) {
          throw new StoreError(
            "bad_transform",
            `Cannot load expert ${loc.index} of layer ${loc.layer}: the bytes hook returned ${out.byteLength} bytes for '${m.name}', expected ${m.nbytes}`,
          );
        }
        sub.set(out);
      }
    }
    return bytes;
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
      en.weights = expertViews(en.loc, en.slot);
      en.ready = true;
      en.promise = null;
      en.abort = null;
      this.policy.onLoad(en.key, en.reason);
    } catch (e) {
      if (!en.cancelled) {
        this.#entries.delete(en.key);
        this.#toPool(en.slot);
      }
      throw e;
    } finally {
      if (en.reason === "prefetch") this.#inflightPrefetch--;
    }
  }

  async #loadPinned(loc: ExpertLocation): Promise<void> {
    const slot = this.#ctx.backend.allocSlot(loc.bytes);
    const key = loc.layer * this.#nExpert + loc.index;
    const en: Entry = {
      key,
      loc,
      slot,
      reason: "pinned",
      ready: false,
      weights: null,
      promise: null,
      abort: null,
      cancelled: false,
      waiters: 0,
      unused: false,
    };
    this.#pinned.set(key, en);
    this.#ctx.backend.writeSlot(slot, 0, await this.#fetch(loc));
    en.weights = expertViews(loc, slot);
    en.ready = true;
  }

  #toPool(slot: Slot): void {
    const list = this.#free.get(slot.bytes);
    if (list) list.push(slot);
    else this.#free.set(slot.bytes, [slot]);
  }

  /** A slot of `bytes`, freeing room as needed; null when a prefetch would have to take one from compute. */
  #acquire(bytes: number, forPrefetch: boolean): Slot | null {
    for (;;) {
      const pool = this.#free.get(bytes);
      if (pool?.length) return pool.pop()!;
      if (this.#allocated + bytes <= this.#evictable) {
        const slot = this.#ctx.backend.allocSlot(bytes);
        this.#allocated += bytes;
        return slot;
      }
      const other = [...this.#free].find(([, l]) => l.length > 0);
      if (other) {
        this.#ctx.backend.freeSlot(other[1].pop()!);
        this.#allocated -= other[0];
        continue;
      }
      const candidates: number[] = [];
      for (const e of this.#entries.values()) {
        if (!e.ready || this.#protect.has(e.key)) continue;
        if (forPrefetch && (e.unused || this.#soon.has(e.key))) continue;
        candidates.push(e.key);
      }
      if (candidates.length > 0) {
        this.#evict(pickVictim(this.policy, candidates));
        continue;
      }
      if (forPrefetch) return null;
      const steal = [...this.#entries.values()].find((e) => !e.ready && e.waiters === 0);
      if (steal) {
        this.#cancel(steal);
        continue;
      }
      throw new StoreError(
        "budget_exhausted",
        `Cannot load an expert of ${bytes} bytes: all ${this.#evictable} bytes of the budget hold experts in use`,
        { bytes, budget: this.budgetBytes },
      );
    }
  }

  #evict(key: number): void {
    const en = this.#entries.get(key)!;
    this.#entries.delete(key);
    this.#toPool(en.slot);
    this.policy.onEvict(key);
    const st = this.#stats[en.loc.layer];
    st.evictions++;
    if (en.unused) st.wastedPrefetches++;
  }

  #cancel(en: Entry): void {
    en.cancelled = true;
    en.abort?.abort();
    this.#entries.delete(en.key);
    this.#toPool(en.slot);
    if (en.unused) this.#stats[en.loc.layer].wastedPrefetches++;
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
        if (this.#entries.has(key) || this.#pinned.has(key)) continue;
        const en = this.#startLoad(key, "prefetch");
        if (!en) return;
        this.#inflightPrefetch++;
        this.#stats[h.layer].prefetches++;
        en.promise!.catch((err: Error) => {
          if (!(err instanceof StoreError && err.code === "cancelled") && !en.cancelled) {
            this.#opts.onPrefetchError?.(err);
          }
        });
      }
    }
  }
}

function plugin<T>(p: Prefetcher, hook: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PluginError) throw e;
    throw new PluginError(
      "hook_failed",
      `Plugin '${p.name}' failed in prefetch hook '${hook}': ${(e as Error).message}`,
      {
        plugin: p.name,
        hook,
      },
    );
  }
}

function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  const aborted = (): StoreError => new StoreError("aborted", "Cannot ensure experts: aborted");
  if (signal.aborted) return Promise.reject(aborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(aborted());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** `createStore` for `loadModel`: the streaming store with `opts`. */
export function createStreamingStore(
  ctx: StreamingStoreContext,
  opts: StreamingStoreOptions,
): Promise<StreamingExpertStore> {
  return StreamingExpertStore.create(ctx, opts);
}

/** What `loadFromManifest` asks of an expert store (structurally its `ManifestStoreRequest`). */
export interface StreamingStoreRequest {
  /** Byte budget; all expert bytes when absent (plugins without `memory.expertBudgetMb`). */
  readonly budgetBytes?: number;
  /** `[layer, expert]` pairs to keep resident. */
  readonly pinned: readonly (readonly [number, number])[];
  /** Cache policy from a `cache` plugin. */
  readonly policy?: CachePolicy;
  /** Prefetcher from a `prefetch` plugin. */
  readonly prefetcher?: Prefetcher;
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
