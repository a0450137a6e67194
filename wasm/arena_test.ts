/** SlotArena: no overlap, alignment, coalescing, bounded growth, expert churn. */
import { equal as assertEquals, throws as assertThrows } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { BackendError } from "../core/errors.ts";
import { ARENA_ALIGN, SlotArena } from "./arena.ts";

const PAGE = 65536;

Deno.test("arena: random alloc/free never overlaps, stays aligned, and coalesces back to one extent", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.integer({ min: 0, max: 300_000 }), fc.constant(-1)), {
        minLength: 1,
        maxLength: 120,
      }),
      fc.integer(),
      (ops, seed) => {
        const mem = new WebAssembly.Memory({ initial: 1 });
        const arena = new SlotArena(mem, 1000, 64 * 1024 * 1024);
        const live: { off: number; size: number }[] = [];
        let s = seed >>> 0;
        for (const op of ops) {
          if (op < 0 && live.length > 0) {
            s = (s * 1103515245 + 12345) >>> 0;
            const [v] = live.splice(s % live.length, 1);
            arena.free(v.off);
          } else if (op >= 0) {
            const off = arena.alloc(op);
            assertEquals(off % ARENA_ALIGN, 0);
            assertEquals(off >= 1000, true);
            assertEquals(off + op <= mem.buffer.byteLength, true);
            const size = arena.sizeOf(off)!;
            for (const o of live) {
              if (off < o.off + o.size && o.off < off + size) {
                throw new Error(`overlap ${off}+${size} with ${o.off}+${o.size}`);
              }
            }
            live.push({ off, size });
          }
        }
        for (const v of live) arena.free(v.off);
        const st = arena.stats();
        assertEquals(st.usedBytes, 0);
        assertEquals(st.freeExtents, 1);
        assertEquals(st.freeBytes, mem.buffer.byteLength - 1024);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("arena: expert churn (evict/load of mixed sizes) does not grow memory past the working set", () => {
  const mem = new WebAssembly.Memory({ initial: 1 });
  const arena = new SlotArena(mem, 0, 1 << 30);
  const sizes = [3_244_032, 3_244_032, 1_622_016, 811_008]; // a few expert sizes
  const resident: number[] = [];
  let peak = 0;
  let x = 1;
  for (let step = 0; step < 5000; step++) {
    x = (x * 48271) % 2147483647;
    if (resident.length >= 24) arena.free(resident.splice(x % resident.length, 1)[0]);
    resident.push(arena.alloc(sizes[x % sizes.length]));
    peak = Math.max(peak, mem.buffer.byteLength);
  }
  // 24 resident experts of ≤ 3.1 MiB each: memory stays within 2× of the worst-case working set.
  const workingSet = 24 * sizes[0];
  if (peak > 2 * workingSet + (256 << 20)) {
    throw new Error(`memory grew to ${peak} for a ${workingSet}-byte working set`);
  }
  if (arena.stats().memoryBytes > 2 * workingSet + (256 << 20)) {
    throw new Error("fragmentation blew up");
  }
});

Deno.test("arena: growth is bounded by maxBytes and reports out_of_memory", () => {
  const mem = new WebAssembly.Memory({ initial: 1 });
  const arena = new SlotArena(mem, 0, 4 * PAGE);
  const a = arena.alloc(3 * PAGE);
  assertEquals(mem.buffer.byteLength <= 4 * PAGE, true);
  assertThrows(
    () => arena.alloc(2 * PAGE),
    (e: unknown) => e instanceof BackendError && e.code === "out_of_memory",
  );
  arena.free(a);
  arena.alloc(4 * PAGE); // the whole arena fits again after coalescing
  assertEquals(mem.buffer.byteLength, 4 * PAGE);
});

Deno.test("arena: bumps generation on growth; double free is an error", () => {
  const mem = new WebAssembly.Memory({ initial: 1 });
  const arena = new SlotArena(mem, 0, 1 << 26);
  const g0 = arena.generation;
  const a = arena.alloc(10 * PAGE);
  assertEquals(arena.generation > g0, true);
  arena.free(a);
  assertThrows(
    () => arena.free(a),
    (e: unknown) => e instanceof BackendError && e.code === "bad_slot",
  );
  assertThrows(
    () => arena.alloc(-1),
    (e: unknown) => e instanceof BackendError && e.code === "bad_size",
  );
});
