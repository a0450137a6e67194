/** hashWide: the WASM SIMD body equals the TypeScript reference; single-lane changes always change it. */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { hashWide, hashWideJs } from "./hash_wide.ts";

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
