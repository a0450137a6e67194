/** hashWide: the WASM SIMD body equals the TypeScript reference; single-lane changes always change it. */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { hashesInPlace, hashInMemory, hashWide, hashWideJs } from "./hash_wide.ts";
import { createWasmBackend } from "../../wasm/backend.ts";

Deno.test("hashWide: WASM SIMD and TypeScript agree on any bytes, length and alignment", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 3 * (1 << 20) + 777 }),
      fc.nat(7),
      fc.integer(),
      (len, off, seed) => {
        const buf = new Uint8Array(len + off);
        let x = seed | 1;
        for (let i = 0; i < buf.length; i += 97) {
          x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) | 1;
          buf[i] = x;
        }
        const v = buf.subarray(off);
        assert.equal(hashWide(v), hashWideJs(v));
        assert.equal(hashWide(v), hashWide(v.slice()), "alignment does not matter");
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("hashWide: a changed byte, word or bit always changes it; length counts", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20_000 }),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      (len, at, flip) => {
        const a = new Uint8Array(len).map((_, i) => (i * 131 + 7) & 255);
        const b = a.slice();
        b[at % len] ^= flip;
        assert.notEqual(hashWide(a), hashWide(b));
        assert.notEqual(hashWide(a), hashWide(a.subarray(0, len - 1)));
        const z = new Uint8Array(len);
        assert.notEqual(hashWide(z), hashWide(new Uint8Array(len + 1)), "trailing zeros count");
      },
    ),
    { numRuns: 300 },
  );
  assert.match(hashWide(new Uint8Array(0)), /^[0-9a-f]{16}$/);
});

Deno.test("hashWide in place over a registered memory: same values at any offset, length; no write outside the state", () => {
  const mem = new WebAssembly.Memory({ initial: 80 });
  const stateAt = 1024;
  const stop = hashInMemory(mem, stateAt);
  try {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: (1 << 20) + 999 }),
        fc.integer({ min: 4096, max: 2 << 20 }),
        fc.integer(),
        (len, at, seed) => {
          const u8 = new Uint8Array(mem.buffer);
          let x = seed | 1;
          for (let i = at; i < at + len; i += 61) {
            x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) | 1;
            u8[i] = x;
          }
          const v = u8.subarray(at, at + len);
          const copy = v.slice();
          const before = u8.slice(0, stateAt);
          assert.equal(hashWide(v), hashWideJs(copy));
          assert.equal(hashWide(v), hashWide(copy), "in place = copied");
          assert.deepEqual(v, copy, "the hashed bytes are not written");
          assert.deepEqual(u8.subarray(0, stateAt), before, "nothing below the state changes");
          if (len > 0) {
            v[(x >>> 0) % len] ^= 1 + (x & 127);
            assert.notEqual(hashWide(v), hashWideJs(copy), "a changed byte changes it in place");
          }
        },
      ),
      { numRuns: 40 },
    );
  } finally {
    stop();
  }
  // unregistered: the copying path, same value
  const v = new Uint8Array(mem.buffer, 8192, 100_000);
  assert.equal(hashWide(v), hashWideJs(v.slice()));
});

Deno.test("hashInMemory: a shared memory or a misaligned state is refused (copying path, same values)", () => {
  const shared = new WebAssembly.Memory({ initial: 40, maximum: 40, shared: true });
  const stop = hashInMemory(shared, 0);
  const v = new Uint8Array(shared.buffer, 64, 300_000);
  v.fill(7);
  assert.equal(hashWide(v), hashWideJs(v.slice()));
  stop();
  const plain = new WebAssembly.Memory({ initial: 40 });
  const stop2 = hashInMemory(plain, 8);
  const w = new Uint8Array(plain.buffer, 64, 300_000).fill(9);
  assert.equal(hashWide(w), hashWideJs(w.slice()));
  stop2();
});

Deno.test("the WASM backend hashes slot views in place while it lives; same values as copied", async () => {
  const be = await createWasmBackend();
  const slot = be.allocSlot(300_000);
  const v = be.slotBytes(slot, 0, 300_000);
  for (let i = 0; i < v.length; i++) v[i] = (i * 131) ^ (i >>> 7);
  assert.ok(hashesInPlace(v));
  assert.equal(hashWide(v), hashWideJs(v.slice()));
  assert.ok(!hashesInPlace(v.slice()), "a copy is not in the memory");
  be.dispose();
  assert.ok(!hashesInPlace(v), "not after dispose");
});
