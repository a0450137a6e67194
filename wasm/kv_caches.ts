/**
 * KV caches of the WASM backend: one arena allocation per cache, per layer
 * `K [nCtx][nKv][hdK]` then `V [nCtx][nKv][hdV]`, f16, zeroed at creation;
 * plus the shape checks of an attention call against its cache.
 *
 * @module
 */

import type { AttentionParams, KvCache, KvCacheSpec } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import type { KernelMemory } from "./memory.ts";

/** A live cache and where it lives. */
export interface KvEntry {
  /** The handle given out. */
  readonly cache: KvCache;
  /** Address of layer 0's K. */
  readonly off: number;
  /** Bytes per layer (K then V). */
  readonly layerBytes: number;
  /** Bytes of one layer's K. */
  readonly kBytes: number;
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

  /** Create a zeroed f16 cache. */
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
    const kBytes = spec.nCtx * spec.nKvHeads * spec.headDimK * 2;
    const vBytes = spec.nCtx * spec.nKvHeads * spec.headDimV * 2;
    const layerBytes = kBytes + vBytes;
    const off = this.#mem.arena.alloc(layerBytes * spec.layers);
    this.#mem.u8.fill(0, off, off + layerBytes * spec.layers);
    const cache: KvCache = { id: this.#nextId(), spec: { ...spec } };
    this.#caches.set(cache.id, { cache, off, layerBytes, kBytes });
    return cache;
  }

  /** Free a cache. */
  free(cache: KvCache): void {
    const e = this.get(cache);
    this.#mem.arena.free(e.off);
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
