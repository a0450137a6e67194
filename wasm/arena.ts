/**
 * A slot arena over a WebAssembly linear memory.
 *
 * Byte ranges `[base, end)` of the memory are handed out as slots. Free space
 * is an address-ordered list of extents; allocation is **best fit** (the
 * smallest free extent that fits, lowest address on ties) and freeing
 * **coalesces** with both neighbours, so an expert store that keeps evicting
 * and loading experts of the same few sizes reuses the exact holes it frees
 * and fragmentation stays bounded. Sizes are rounded up to 64 bytes (cache
 * line and v128 alignment). When no extent fits, the memory grows (in whole
 * 64 KiB pages, at least doubling the arena up to the cap) but never past
 * `maxBytes`.
 *
 * Growing detaches the memory's old `ArrayBuffer`; callers re-acquire views
 * when {@linkcode SlotArena.generation} changes.
 *
 * @module
 */

import { BackendError } from "../core/errors.ts";

/** Alignment and size granule of every allocation. */
export const ARENA_ALIGN = 64;
const PAGE = 65536;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

interface Extent {
  off: number;
  size: number;
}

/** Usage statistics of a {@linkcode SlotArena}. */
export interface ArenaStats {
  /** Bytes in live allocations (rounded sizes). */
  readonly usedBytes: number;
  /** Bytes in free extents inside the arena. */
  readonly freeBytes: number;
  /** Number of free extents (1 = no fragmentation). */
  readonly freeExtents: number;
  /** Largest free extent. */
  readonly largestFree: number;
  /** Total memory size in bytes. */
  readonly memoryBytes: number;
}

/** Best-fit, coalescing allocator over a growable `WebAssembly.Memory`. */
export class SlotArena {
  readonly #memory: WebAssembly.Memory;
  readonly #base: number;
  readonly #maxBytes: number;
  #free: Extent[] = [];
  readonly #live = new Map<number, number>();
  #end: number;
  #used = 0;
  #generation = 0;

  /**
   * @param memory the linear memory to carve
   * @param base first usable byte (e.g. the module's `heap_base()`)
   * @param maxBytes upper bound on the memory size
   */
  constructor(memory: WebAssembly.Memory, base: number, maxBytes: number) {
    this.#memory = memory;
    this.#base = alignUp(base, ARENA_ALIGN);
    this.#maxBytes = Math.floor(Math.min(maxBytes, 65536 * PAGE) / PAGE) * PAGE;
    this.#end = memory.buffer.byteLength;
    if (this.#end > this.#base) this.#free.push({ off: this.#base, size: this.#end - this.#base });
  }

  /** Bumped every time the memory grows (views must be re-acquired). */
  get generation(): number {
    return this.#generation;
  }

  /** Current memory size in bytes. */
  get memoryBytes(): number {
    return this.#memory.buffer.byteLength;
  }

  /** The cap on the memory size. */
  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** Largest single allocation that could ever succeed. */
  get maxAllocBytes(): number {
    return Math.floor((this.#maxBytes - this.#base) / ARENA_ALIGN) * ARENA_ALIGN;
  }

  /** Allocate `bytes` (≥ 1) bytes; returns the 64-byte-aligned offset. */
  alloc(bytes: number): number {
    if (!Number.isInteger(bytes) || bytes < 0) {
      throw new BackendError(
        "bad_size",
        `Cannot allocate slot: size must be a non-negative integer: received ${bytes}`,
        {
          bytes,
        },
      );
    }
    const size = Math.max(ARENA_ALIGN, alignUp(bytes, ARENA_ALIGN));
    let idx = this.#bestFit(size);
    if (idx < 0) {
      this.#grow(size);
      idx = this.#bestFit(size);
      if (idx < 0) throw new Error("arena invariant: grow did not produce a fitting extent");
    }
    const e = this.#free[idx];
    const off = e.off;
    if (e.size === size) this.#free.splice(idx, 1);
    else {
      e.off += size;
      e.size -= size;
    }
    this.#live.set(off, size);
    this.#used += size;
    return off;
  }

  /** Free an allocation made by {@linkcode alloc}. */
  free(off: number): void {
    const size = this.#live.get(off);
    if (size === undefined) {
      throw new BackendError("bad_slot", `Cannot free slot: no live allocation at offset ${off}`, {
        off,
      });
    }
    this.#live.delete(off);
    this.#used -= size;
    this.#insertFree(off, size);
  }

  /** Size (rounded) of the live allocation at `off`, or undefined. */
  sizeOf(off: number): number | undefined {
    return this.#live.get(off);
  }

  /** Usage statistics. */
  stats(): ArenaStats {
    let freeBytes = 0;
    let largest = 0;
    for (const e of this.#free) {
      freeBytes += e.size;
      largest = Math.max(largest, e.size);
    }
    return {
      usedBytes: this.#used,
      freeBytes,
      freeExtents: this.#free.length,
      largestFree: largest,
      memoryBytes: this.memoryBytes,
    };
  }

  #bestFit(size: number): number {
    let best = -1;
    let bestSize = Infinity;
    for (let i = 0; i < this.#free.length; i++) {
      const s = this.#free[i].size;
      if (s >= size && s < bestSize) {
        best = i;
        bestSize = s;
        if (s === size) break;
      }
    }
    return best;
  }

  #insertFree(off: number, size: number): void {
    const f = this.#free;
    // Binary search for the first extent after `off`.
    let lo = 0;
    let hi = f.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (f[mid].off < off) lo = mid + 1;
      else hi = mid;
    }
    const prev = lo > 0 ? f[lo - 1] : undefined;
    const next = lo < f.length ? f[lo] : undefined;
    if (prev && prev.off + prev.size === off) {
      prev.size += size;
      if (next && prev.off + prev.size === next.off) {
        prev.size += next.size;
        f.splice(lo, 1);
      }
    } else if (next && off + size === next.off) {
      next.off = off;
      next.size += size;
    } else {
      f.splice(lo, 0, { off, size });
    }
  }

  #grow(size: number): void {
    const last = this.#free.length > 0 ? this.#free[this.#free.length - 1] : undefined;
    const tailFree = last && last.off + last.size === this.#end ? last.size : 0;
    const need = this.#end + size - tailFree;
    if (need > this.#maxBytes) {
      throw new BackendError(
        "out_of_memory",
        `Cannot allocate slot: ${size} bytes would grow linear memory to ${need} bytes, past the cap of ${this.#maxBytes}`,
        { bytes: size, needBytes: need, maxBytes: this.#maxBytes, ...this.stats() },
      );
    }
    // Grow geometrically (amortised O(1) growth) but never past the cap.
    const target = Math.min(
      this.#maxBytes,
      Math.max(need, this.#end + Math.min(this.#end, 256 << 20)),
    );
    const pages = Math.ceil((target - this.#end) / PAGE);
    const newEnd = this.#end + pages * PAGE;
    try {
      this.#memory.grow(pages);
    } catch (e) {
      throw new BackendError(
        "out_of_memory",
        `Cannot allocate slot: linear memory could not grow to ${newEnd} bytes`,
        {
          bytes: size,
          cause: String(e),
        },
      );
    }
    const oldEnd = this.#end;
    this.#end = newEnd;
    this.#generation++;
    this.#insertFree(oldEnd, newEnd - oldEnd);
  }
}
