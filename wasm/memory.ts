/**
 * The linear memory of one kernel instance as the backend sees it: the
 * {@linkcode SlotArena} that carves it, typed views that follow its growth,
 * and one reused scratch region carved per call.
 *
 * @module
 */

import { ARENA_ALIGN, SlotArena } from "./arena.ts";

/** Arena, growth-following views and scratch over a `WebAssembly.Memory`. */
export class KernelMemory {
  /** The allocator over the memory. */
  readonly arena: SlotArena;
  readonly #memory: WebAssembly.Memory;
  #gen = -1;
  #u8: Uint8Array = new Uint8Array(0);
  #f32: Float32Array = new Float32Array(0);
  #i32: Int32Array = new Int32Array(0);
  #scratchOff = 0;
  #scratchBytes = 0;

  /**
   * @param memory the instance's memory
   * @param base first byte the arena may hand out (`heap_base()`)
   * @param maxBytes cap on the memory size
   */
  constructor(memory: WebAssembly.Memory, base: number, maxBytes: number) {
    this.#memory = memory;
    this.arena = new SlotArena(memory, base, maxBytes);
  }

  /** Bytes view of the whole memory (re-acquired after growth). */
  get u8(): Uint8Array {
    this.#views();
    return this.#u8;
  }

  /** f32 view of the whole memory (re-acquired after growth). */
  get f32(): Float32Array {
    this.#views();
    return this.#f32;
  }

  /** i32 view of the whole memory (re-acquired after growth). */
  get i32(): Int32Array {
    this.#views();
    return this.#i32;
  }

  /**
   * Carve the reused scratch region into 64-byte-aligned parts of `sizes`
   * bytes; returns their addresses. The region grows (×1.5) when a call needs
   * more; earlier addresses are invalid after the next call.
   */
  scratch(...sizes: number[]): number[] {
    let total = 0;
    for (const s of sizes) total += Math.ceil(s / ARENA_ALIGN) * ARENA_ALIGN;
    if (total > this.#scratchBytes) {
      if (this.#scratchBytes > 0) this.arena.free(this.#scratchOff);
      const want = Math.max(total, Math.ceil(this.#scratchBytes * 1.5), 1 << 16);
      this.#scratchOff = this.arena.alloc(want);
      this.#scratchBytes = want;
    }
    const out: number[] = [];
    let p = this.#scratchOff;
    for (const s of sizes) {
      out.push(p);
      p += Math.ceil(s / ARENA_ALIGN) * ARENA_ALIGN;
    }
    return out;
  }

  /** Drop the views (the backend was disposed). */
  release(): void {
    this.#u8 = new Uint8Array(0);
    this.#f32 = new Float32Array(0);
    this.#i32 = new Int32Array(0);
    this.#gen = -1;
  }

  #views(): void {
    if (this.#gen !== this.arena.generation || this.#u8.length === 0) {
      const buf = this.#memory.buffer;
      this.#u8 = new Uint8Array(buf);
      this.#f32 = new Float32Array(buf);
      this.#i32 = new Int32Array(buf);
      this.#gen = this.arena.generation;
    }
  }
}
