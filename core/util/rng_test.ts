import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { mulberry32, Rng } from "./rng.ts";
import { Rng as SamplerRng } from "../generate/sampler.ts";
import { prng } from "../tokenizer/bpe_train.ts";

// The streams below were produced by the generators' previous homes (the sampler's Rng and
// bpe_train's prng, before they were folded into this module): synthetic models, the test
// vocabularies and sampling depend on them staying bit-identical.
Deno.test("Rng (sfc32) keeps its stream", () => {
  const r = new Rng(42);
  assert.deepEqual([r.next(), r.next(), r.next()], [
    0.6642114536371082,
    0.9630267398897558,
    0.262362563284114,
  ]);
  const z = new Rng(0);
  assert.deepEqual([z.next(), z.next()], [0.011128023499622941, 0.5714294023346156]);
  assert.equal(SamplerRng, Rng, "the sampler re-exports the one generator");
});

Deno.test("mulberry32 keeps its stream", () => {
  const p = mulberry32(42);
  assert.deepEqual([p(), p(), p()], [0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  const q = mulberry32(0xffffffff);
  assert.deepEqual([q(), q()], [0.8964226141106337, 0.189478256739676]);
  assert.equal(prng, mulberry32, "bpe_train's prng is this generator");
});

Deno.test("both generators: same seed same stream, values in [0, 1), seed taken mod 2^32", () => {
  fc.assert(fc.property(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), (seed) => {
    const a = new Rng(seed), b = new Rng(seed >>> 0);
    const m = mulberry32(seed), n = mulberry32(seed >>> 0);
    for (let i = 0; i < 32; i++) {
      const x = a.next(), y = m();
      assert.equal(x, b.next());
      assert.equal(y, n());
      assert.ok(x >= 0 && x < 1 && y >= 0 && y < 1);
    }
  }));
});
