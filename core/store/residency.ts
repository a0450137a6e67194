/**
 * The residency table of the streaming store: which expert occupies which
 * backend slot, the slot pool under the byte budget, protection of experts
 * a running step needs, and the eviction/cancellation rules that make room.
 *
 * @module
 */

import type { Backend, Slot } from "../backend/backend.ts";
import { BackendError, StoreError } from "../errors.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { ExpertLocation } from "./expert_location.ts";
import { type CachePolicy, type LoadReason, pickVictim } from "./cache_policy.ts";
import type { LayerStoreStats } from "./expert_store.ts";

/** One expert that is resident or loading. */
export interface Entry {
  /** `layer · nExpert + index`. */
  readonly key: number;
  /** Where its bytes are. */
  readonly loc: ExpertLocation;
  /** The slot it occupies (reserved while loading). */
  readonly slot: Slot;
  /** Why it was loaded. */
  readonly reason: LoadReason;
  /** Bytes are in the slot. */
  ready: boolean;
  /** Views once ready. */
  weights: ExpertWeights | null;
  /** The load in flight. */
  promise: Promise<void> | null;
  /** Cancels the load's reads. */
  abort: AbortController | null;
  /** The load was cancelled and its slot given away: it must not write. */
  cancelled: boolean;
  /** `ensure` calls waiting on the load. */
  waiters: number;
  /** Loaded by prefetch and not used since. */
  unused: boolean;
  /** Store step (`ensure` sequence number) of its last use; -1 before any. */
  lastUse: number;
  /**
   * Reads writing straight into `slot` (in-place loads), until they are all
   * over; null otherwise. A slot with writes in flight is never reused.
   */
  io: Promise<unknown> | null;
  /**
   * Integrity comparisons deferred to first use (a prefetched re-read): run
   * before its bytes are used or repacked; returns ms, throws on a mismatch.
   */
  verify: (() => number) | null;
  /** Raises a queued off-thread background load to demand (a step waits for it); null otherwise. */
  urgent: (() => void) | null;
}

/** A fresh entry for `loc` in `slot`, not yet ready. */
export function newEntry(key: number, loc: ExpertLocation, slot: Slot, reason: LoadReason): Entry {
  return {
    key,
    loc,
    slot,
    reason,
    ready: false,
    weights: null,
    promise: null,
    abort: reason === "pinned" ? null : new AbortController(),
    cancelled: false,
    waiters: 0,
    unused: reason === "prefetch",
    lastUse: -1,
    io: null,
    verify: null,
    urgent: null,
  };
}

/** Slots, entries and protection under one byte budget. */
export class Residency {
  /** Evictable (and loading) entries by key. */
  readonly entries: Map<number, Entry> = new Map();
  /** Pinned entries by key (outside the evictable budget). */
  readonly pinned: Map<number, Entry> = new Map();
  /** Keys a running step needs (count of steps). */
  readonly #protect = new Map<number, number>();
  /** Keys routed at the layer being computed: prefetches may not evict them. */
  readonly soon: Set<number> = new Set();
  /**
   * A prefetch never evicts an expert used at this store step or later (the
   * store sets it to one token's worth of steps back: a guess must not push
   * out what the next token will likely reuse).
   */
  prefetchSpareFrom = Infinity;
  readonly #free = new Map<number, Slot[]>();
  readonly #backend: Backend;
  #evictable: number;
  readonly #policy: CachePolicy;
  readonly #stats: readonly LayerStoreStats[];
  #allocated = 0;
  /** Bytes of cancelled loads' slots still being written (above the budget until freed). */
  #quarantined = 0;
  #disposed = false;

  /**
   * @param backend owner of the slots
   * @param evictableBytes budget for non-pinned experts (free pooled slots included)
   * @param policy asked for victims
   * @param stats per-layer counters to update
   */
  constructor(
    backend: Backend,
    evictableBytes: number,
    policy: CachePolicy,
    stats: readonly LayerStoreStats[],
  ) {
    this.#backend = backend;
    this.#evictable = evictableBytes;
    this.#policy = policy;
    this.#stats = stats;
  }

  /** The entry of `key` (pinned first), if any. */
  get(key: number): Entry | undefined {
    return this.pinned.get(key) ?? this.entries.get(key);
  }

  /** Bytes of slots held in the evictable area (resident, loading, pooled). */
  get allocatedBytes(): number {
    return this.#allocated;
  }

  /** Protect `keys` for one more step. */
  protect(keys: readonly number[]): void {
    for (const k of keys) this.#protect.set(k, (this.#protect.get(k) ?? 0) + 1);
  }

  /** Drop one step's protection of `keys`. */
  unprotect(keys: readonly number[]): void {
    for (const k of keys) {
      const n = (this.#protect.get(k) ?? 1) - 1;
      if (n > 0) this.#protect.set(k, n);
      else this.#protect.delete(k);
    }
  }

  /**
   * Fill the pool with up to `count` slots of `bytes` within the budget and
   * write every byte of them (`slotBytes` views, zeros), so later loads read
   * into pages already mapped. All or nothing: when the backend runs out of
   * memory first, the slots it made are freed again (loads then allocate on
   * demand and the budget shrinks to what the heap holds, as without it).
   * Returns the slots made. Only on backends with `slotBytes` (else 0).
   */
  prefault(bytes: number, count: number): number {
    const be = this.#backend;
    if (typeof be.slotBytes !== "function" || !(bytes > 0)) return 0;
    const made: Slot[] = [];
    while (made.length < count && this.#allocated + bytes <= this.#evictable) {
      let slot: Slot;
      try {
        slot = be.allocSlot(bytes, { lazyPrepare: true });
      } catch (e) {
        if (!(e instanceof BackendError && e.code === "out_of_memory")) throw e;
        for (const s of made) be.freeSlot(s);
        this.#allocated -= made.length * bytes;
        return 0;
      }
      this.#allocated += bytes;
      made.push(slot);
      // a fresh view per slot: an allocation may have grown (and detached) the memory
      be.slotBytes(slot, 0, bytes).fill(0);
    }
    for (const s of made) this.release(s);
    return made.length;
  }

  /** Return a slot to the pool. */
  release(slot: Slot): void {
    const list = this.#free.get(slot.bytes);
    if (list) list.push(slot);
    else this.#free.set(slot.bytes, [slot]);
  }

  /**
   * A slot of `bytes`: a pooled one, a new one within budget, or one made free
   * by evicting a victim the policy picks among unprotected resident experts.
   * A demand load may also cancel a load that nobody waits for and the
   * running step does not need. A prefetch gets
   * null instead of evicting protected, routed or unused-prefetched experts.
   * Throws `StoreError` `"budget_exhausted"` when every byte is in use.
   *
   * `replace` (prefetches only): the prefetch guesses the next step of
   * `replace.layer`, so an expert of that layer outside `replace.keep` (the
   * guess) may be evicted even when the last token used it: that step is
   * exactly its next chance of reuse, and the guess says it will not come.
   */
  acquire(
    bytes: number,
    forPrefetch: boolean,
    replace?: { readonly layer: number; readonly keep: ReadonlySet<number> },
  ): Slot | null {
    for (;;) {
      const pool = this.#free.get(bytes);
      if (pool?.length) return pool.pop()!;
      if (this.#allocated + bytes <= this.#evictable + this.#quarantined) {
        try {
          // streamed experts are packed only once they prove hot (the store's `packAfterUses`)
          const slot = this.#backend.allocSlot(bytes, { lazyPrepare: true });
          this.#allocated += bytes;
          return slot;
        } catch (e) {
          // the backend heap is full before the budget is: the budget shrinks to what is held
          // and the store evicts instead of failing (when nothing is held, the error stands)
          if (!(e instanceof BackendError && e.code === "out_of_memory") || this.#allocated === 0) {
            throw e;
          }
          this.#evictable = this.#allocated;
          continue;
        }
      }
      const other = [...this.#free].find(([, l]) => l.length > 0);
      if (other) {
        this.#backend.freeSlot(other[1].pop()!);
        this.#allocated -= other[0];
        continue;
      }
      const candidates: number[] = [];
      for (const e of this.entries.values()) {
        if (!e.ready || this.#protect.has(e.key)) continue;
        if (forPrefetch) {
          if (this.soon.has(e.key)) continue;
          const sameLayer = replace !== undefined && e.loc.layer === replace.layer &&
            !replace.keep.has(e.key);
          if (!sameLayer && (e.unused || e.lastUse >= this.prefetchSpareFrom)) continue;
        }
        candidates.push(e.key);
      }
      if (candidates.length > 0) {
        this.evict(pickVictim(this.#policy, candidates));
        continue;
      }
      if (forPrefetch) return null;
      const idle = [...this.entries.values()].find((e) =>
        !e.ready && e.waiters === 0 && !this.#protect.has(e.key)
      );
      if (idle) {
        this.cancel(idle);
        continue;
      }
      throw new StoreError(
        "budget_exhausted",
        `Cannot load an expert of ${bytes} bytes: all ${this.#evictable} bytes of the budget hold experts in use`,
        { bytes, evictableBytes: this.#evictable },
      );
    }
  }

  /** Evict a resident expert; its slot goes to the pool. */
  evict(key: number): void {
    const en = this.entries.get(key)!;
    this.entries.delete(key);
    this.release(en.slot);
    this.#policy.onEvict(key);
    const st = this.#stats[en.loc.layer];
    st.evictions++;
    if (en.unused) st.wastedPrefetches++;
  }

  /**
   * Cancel a load in flight and give its slot back (its late bytes are
   * dropped). A slot that reads still write into (an in-place load: a file
   * read cannot be stopped) is quarantined instead: it stays allocated,
   * the budget lends its bytes to a new slot meanwhile, and it is freed once
   * its writes are over (the budget is exceeded by at most those slots, for
   * the length of one read).
   */
  cancel(en: Entry): void {
    en.cancelled = true;
    en.abort?.abort();
    this.entries.delete(en.key);
    if (en.unused) this.#stats[en.loc.layer].wastedPrefetches++;
    if (!en.io) {
      this.release(en.slot);
      return;
    }
    const bytes = en.slot.bytes;
    this.#quarantined += bytes;
    const free = (): void => {
      this.#quarantined -= bytes;
      if (!this.#disposed) this.#allocated -= bytes;
      this.#freeLate(en.slot);
    };
    en.io.then(free, free);
  }

  /** Free a slot whose writes just ended (the backend may be disposed by then). */
  #freeLate(slot: Slot): void {
    try {
      this.#backend.freeSlot(slot);
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
    }
  }

  /** Cancel everything and free every slot (slots still being written once their writes end). */
  dispose(): void {
    this.#disposed = true;
    for (const e of [...this.entries.values(), ...this.pinned.values()]) {
      e.cancelled = true;
      e.abort?.abort();
      if (e.io) {
        const free = (): void => this.#freeLate(e.slot);
        e.io.then(free, free);
      } else this.#backend.freeSlot(e.slot);
    }
    for (const list of this.#free.values()) for (const s of list) this.#backend.freeSlot(s);
    this.entries.clear();
    this.pinned.clear();
    this.#free.clear();
    this.#allocated = 0;
  }
}
