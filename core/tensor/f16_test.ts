import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  bf16ToF32,
  bitsToF32,
  F16_TO_F32,
  f16BitsToF32Slow,
  f16ToF32,
  f32BitsToBf16,
  f32BitsToF16,
  f32ToBf16,
  f32ToBits,
  f32ToF16,
  roundToF16,
} from "./f16.ts";

Deno.test("f16: Math.f16round / Float16Array exist in this V8", () => {
  assert.equal(typeof Math.f16round, "function");
  assert.equal(typeof Float16Array, "function");
});

Deno.test("f16: table matches slow decode for every non-NaN pattern", () => {
  for (let h = 0; h < 65536; h++) {
    const v = F16_TO_F32[h];
    if (((h >>> 10) & 31) === 31 && (h & 0x3ff) !== 0) {
      assert.ok(Number.isNaN(v));
      continue;
    }
    assert.ok(Object.is(v, f16BitsToF32Slow(h)), `h=${h.toString(16)}`);
  }
});

Deno.test("f16: decode → encode round-trips every non-NaN pattern (fast and integer paths)", () => {
  for (let h = 0; h < 65536; h++) {
    if (((h >>> 10) & 31) === 31 && (h & 0x3ff) !== 0) continue;
    const v = f16ToF32(h);
    assert.equal(f32ToF16(v), h);
    assert.equal(f32BitsToF16(f32ToBits(v)), h);
  }
});

Deno.test("f16: fast path (Float16Array store) equals the bit-exact integer RNE, all f32 bits", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
      const x = bitsToF32(bits);
      assert.equal(f32ToF16(x), f32BitsToF16(bits));
    }),
    { numRuns: 20000 },
  );
  // dense sweep around the fp16 range, including every subnormal and overflow boundary
  for (let e = 0x30000000; e < 0x48000000; e += 0x1337) {
    for (const bits of [e, (e | 0x80000000) >>> 0]) {
      assert.equal(f32ToF16(bitsToF32(bits)), f32BitsToF16(bits), `bits=${bits.toString(16)}`);
    }
  }
});

Deno.test("f16: Math.f16round agrees with RNE on f32 inputs", () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true }), (x) => {
      assert.ok(Object.is(Math.f16round(x), roundToF16(x)));
    }),
    { numRuns: 5000 },
  );
});

Deno.test("f16: edge cases", () => {
  assert.equal(f32ToF16(0), 0x0000);
  assert.equal(f32ToF16(-0), 0x8000);
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65519.99), 0x7bff); // below the midpoint
  assert.equal(f32ToF16(65520), 0x7c00); // midpoint ties to even → inf
  assert.equal(f32ToF16(1e9), 0x7c00);
  assert.equal(f32ToF16(-1e9), 0xfc00);
  assert.equal(f32ToF16(Infinity), 0x7c00);
  assert.equal(f32ToF16(-Infinity), 0xfc00);
  assert.equal(f32ToF16(NaN), 0x7e00);
  assert.equal(f32BitsToF16(0xffc00000), 0xfe00); // negative NaN keeps its sign
  assert.equal(f32BitsToF16(0x7f800001), 0x7e00); // signalling NaN → 0x7E00
  // subnormals
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(2 ** -25), 0x0000); // tie → even (0)
  assert.equal(f32ToF16(1.5 * 2 ** -24), 0x0002); // tie between 1 and 2 → even (2)
  assert.equal(f32ToF16(2.5 * 2 ** -24), 0x0002); // tie between 2 and 3 → even (2)
  assert.equal(f32ToF16(2 ** -25 * 1.0000001), 0x0001);
  assert.equal(f32ToF16(-(2 ** -24)), 0x8001);
  assert.equal(f32ToF16(1023 * 2 ** -24), 0x03ff);
  assert.equal(f32ToF16(2 ** -14), 0x0400);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x03ff), 1023 * 2 ** -24);
  // normal ties: 1 + 2^-11 is halfway between 1 and 1+2^-10 → even (1)
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // halfway 1+2^-10 / 1+2^-9 → even
  assert.equal(f32ToF16(2049), 0x6800); // 2048 and 2050 are representable; tie → 2048
  assert.equal(f32ToF16(2051), 0x6802); // tie → 2052
});

Deno.test("bf16: edge cases and RNE", () => {
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(f32ToBf16(-0), 0x8000);
  assert.equal(f32ToBf16(0), 0);
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(f32ToBf16(Infinity), 0x7f80);
  assert.equal(f32ToBf16(-Infinity), 0xff80);
  assert.equal(f32BitsToBf16(0x7f800001), 0x7fc0); // sNaN → (u>>16)|64
  assert.equal(f32BitsToBf16(0xffc00000), 0xffc0);
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  // ties: 1 + 2^-8 is halfway between 1 and 1+2^-7 → even (1)
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80);
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(f32ToBf16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  // overflow to inf: max f32 rounds up
  assert.equal(f32BitsToBf16(0x7f7fffff), 0x7f80);
  // f32 subnormals are rounded, not flushed
  assert.equal(f32BitsToBf16(0x00018000), 0x0002);
  assert.equal(f32BitsToBf16(0x00008000), 0x0000);
});

Deno.test("bf16: RNE property against a BigInt-free reference", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
      const got = f32BitsToBf16(bits);
      const x = bitsToF32(bits);
      if (Number.isNaN(x)) {
        assert.ok(Number.isNaN(bf16ToF32(got)));
        return;
      }
      // reference: the nearest bf16 value, ties to an even last bit
      const lo = (bits >>> 16) & 0xffff;
      const rem = bits & 0xffff;
      const want = rem > 0x8000 || (rem === 0x8000 && (lo & 1) === 1) ? lo + 1 : lo;
      assert.equal(got, want & 0xffff);
    }),
    { numRuns: 20000 },
  );
});
