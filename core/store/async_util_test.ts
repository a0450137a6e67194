/** The store's macrotask yield lets reads that finished during compute land. */

import assert from "node:assert/strict";
import { FileSource } from "../io/byte_source.ts";
import { macrotask } from "./async_util.ts";

Deno.test("macrotask: file reads that finished during synchronous compute are applied within a few turns", async () => {
  const path = await Deno.makeTempFile();
  const n = 1 << 20;
  try {
    await Deno.writeFile(path, new Uint8Array(3 * n).map((_, i) => i % 251));
    const src = await FileSource.open(path);
    // (a MessageChannel turn, the earlier yield, left such reads unapplied after 50 turns in
    // some rounds, depending on what else the event loop held)
    for (let round = 0; round < 8; round++) {
      const dest = new Uint8Array(3 * n);
      let done = false;
      const p = Promise.all(
        [0, 1, 2].map((i) => src.readInto(i * n, dest.subarray(i * n, (i + 1) * n))),
      ).then(() => done = true);
      // the reads run on the I/O pool while this thread computes
      const t0 = performance.now();
      while (performance.now() - t0 < 25) { /* busy */ }
      let turns = 0;
      while (!done && turns < 20) {
        await macrotask();
        turns++;
      }
      assert.ok(done && turns <= 3, `round ${round}: done ${done} after ${turns} turns`);
      assert.equal(dest[2 * n + 7], (2 * n + 7) % 251);
      await p;
    }
    src.close();
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("macrotask: a chain of turns is not clamped like nested timers", async () => {
  const t0 = performance.now();
  for (let i = 0; i < 200; i++) await macrotask();
  // nested setTimeout(0) turns clamp to ≥ 1–4 ms each (200 turns ≥ 200 ms); immediate turns take µs
  assert.ok(performance.now() - t0 < 150, `${(performance.now() - t0).toFixed(1)} ms`);
});
