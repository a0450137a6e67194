/**
 * KV caches of the WASM backend. Each layer's cache is its own arena
 * allocation, `K [cap][nKv][hdK]` then `V [cap][nKv][hdV]`, f16, where `cap`
 * (the positions allocated) **grows with use** up to the spec's `nCtx`:
 * nothing is allocated at creation, and a call that writes past `cap` moves
 * that layer into a region at least twice as large (old rows copied, new rows
 * zeroed). Growing one layer at a time bounds the transient to one layer's
 * old region; the memory plan (core/model/memory_plan.ts) reserves the full
 * `nCtx` plus that transient, so growth never fails inside a planned budget.
 * Also: the shape checks of an attention call against its cache.
 *
 * @module
 */

import type { AttentionParams, KvCache, KvCacheSpec } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import type { KernelMemory } from "./memory.ts";

/** Positions a layer's cache grows by at least. */
export const KV_GROW_MIN = 32;

/** One layer's region. */
export interface KvLayer {
  /** Address of K (0 while nothing is allocated). */
  off: number;
  /** Positions allocated (K rows; V rows follow at `off + cap·kRowBytes`). */
  cap: number;
}

/** A live cache and where it lives. */
export interface KvEntry {
  /** The handle given out. */
  readonly cache: KvCache;
  /** Per-layer regions. */
  readonly layers: KvLayer[];
  /** Bytes of one position's K (all KV heads). */
  readonly kRowBytes: number;
  /** Bytes of one position's V (all KV heads). */
  readonly vRowBytes: number;
}

/** The backend's KV caches. */
export class KvCaches {
  readonly #mem: KernelMemory;
  readonly #caches = new Map<number, KvEntry>();
  readonly #nextId: () => number;

  /**
   * @param mem the instance's memory
   * @param nextId id source shared with the slots (ids are backend-unique)
   */
  constructor(mem: KernelMemory, nextId: () => number) {
    this.#mem = mem;
    this.#nextId = nextId;
  }

  /** Create an f16 cache; its layers allocate (zeroed) as positions are written. */
  create(spec: KvCacheSpec): KvCache {
    for (const key of ["layers", "nCtx", "nKvHeads", "headDimK", "headDimV"] as const) {
      const v = spec[key];
      if (!Number.isInteger(v) || v <= 0) {
        throw new BackendError(
          "bad_shape",
          `Cannot create KV cache: ${key} must be a positive integer: received ${v}`,
          { [key]: v },
        );
      }
    }
    const kRowBytes = spec.nKvHeads * spec.headDimK * 2;
    const vRowBytes = spec.nKvHeads * spec.headDimV * 2;
    const full = spec.nCtx * (kRowBytes + vRowBytes);
    if (full > this.#mem.arena.maxAllocBytes) {
      throw new BackendError(
        "out_of_memory",
        `Cannot create KV cache: one layer at ${spec.nCtx} positions needs ${full} bytes, past the ` +
          `largest allocation of ${this.#mem.arena.maxAllocBytes}`,
        { bytes: full, maxBytes: this.#mem.arena.maxAllocBytes },
      );
    }
    const cache: KvCache = { id: this.#nextId(), spec: { ...spec } };
    const layers = Array.from({ length: spec.layers }, () => ({ off: 0, cap: 0 }));
    this.#caches.set(cache.id, { cache, layers, kRowBytes, vRowBytes });
    return cache;
  }

  /**
   * Make positions `[0, upto)` of `layer` addressable, growing its region
   * (×2, at least {@linkcode KV_GROW_MIN}, never past `nCtx`). Out-of-range
   * arguments are left for {@linkcode attentionMismatch} to report.
   */
  reserve(e: KvEntry, layer: number, upto: number): void {
    const s = e.cache.spec;
    if (!(Number.isInteger(layer) && layer >= 0 && layer < s.layers)) return;
    if (!(Number.isInteger(upto) && upto >= 0 && upto <= s.nCtx)) return;
    const L = e.layers[layer];
    if (upto <= L.cap) return;
    const cap = Math.min(
      s.nCtx,
      Math.max(upto, 2 * L.cap, KV_GROW_MIN),
    );
    const { kRowBytes: kr, vRowBytes: vr } = e;
    const off = this.#mem.arena.alloc(cap * (kr + vr));
    const u8 = this.#mem.u8;
    if (L.cap > 0) {
      u8.copyWithin(off, L.off, L.off + L.cap * kr);
      u8.copyWithin(off + cap * kr, L.off + L.cap * kr, L.off + L.cap * (kr + vr));
      this.#mem.arena.free(L.off);
    }
    u8.fill(0, off + L.cap * kr, off + cap * kr);
    u8.fill(0, off + cap * kr + L.cap * vr, off + cap * (kr + vr));
    L.off = off;
    L.cap = cap;
  }

  /** Bytes allocated by a cache now (it grows with use up to `nCtx`). */
  allocatedBytes(cache: KvCache): number {
    const e = this.get(cache);
    return e.layers.reduce((a, L) => a + L.cap * (e.kRowBytes + e.vRowBytes), 0);
  }

  /** Free a cache. */
  free(cache: KvCache): void {
    const e = this.get(cache);
    for (const L of e.layers) if (L.cap > 0) this.#mem.arena.free(L.off);
    this.#caches.delete(cache.id);
  }

  /** The live entry of `cache`; throws `bad_cache` otherwise. */
  get(cache: KvCache): KvEntry {
    const e = this.#caches.get(cache.id);
    if (!e) {
      throw new BackendError(
        "bad_cache",
        `Cannot use KV cache ${cache.id}: it is not live in this backend`,
        { cache: cache.id },
      );
    }
    return e;
  }

  /** Forget every cache (the backend was disposed). */
  clear(): void {
    this.#caches.clear();
  }
}

/**
 * Why an attention call does not fit its cache, or null when it does:
 * layer in range, heads/dims matching the cache, GQA ratio whole, positions
 * inside `nCtx`.
 */
export function attentionMismatch(
  e: KvEntry,
  layer: number,
  startPos: number,
  nTokens: number,
  p: AttentionParams,
): string | null {
  const s = e.cache.spec;
  const { nHeads, nKvHeads, headDimK, headDimV } = p;
  if (!(Number.isInteger(layer) && layer >= 0 && layer < s.layers)) {
    return `layer ${layer} outside [0, ${s.layers})`;
  }
  if (nKvHeads !== s.nKvHeads || headDimK !== s.headDimK || headDimV !== s.headDimV) {
    return `params (nKv ${nKvHeads}, hdK ${headDimK}, hdV ${headDimV}) do not match the cache`;
  }
  if (!(nHeads > 0 && nHeads % nKvHeads === 0)) {
    return `nHeads ${nHeads} not a multiple of nKvHeads ${nKvHeads}`;
  }
  if (!(Number.isInteger(startPos) && startPos >= 0 && startPos + nTokens <= s.nCtx)) {
    return `positions [${startPos}, ${startPos + nTokens}) exceed nCtx ${s.nCtx}`;
  }
  return null;
}
