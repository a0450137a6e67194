import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import fc from "npm:fast-check@4";
import { GenerationError } from "../errors.ts";
import { argmax, Rng, Sampler } from "./sampler.ts";

const logitsArb = fc.array(fc.float({ min: -30, max: 30, noNaN: true }), {
  minLength: 2,
  maxLength: 50,
});

Deno.test("greedy picks the first maximum", () => {
  assertEquals(new Sampler().sample(new Float32Array([1, 5, 5, 2])), 1);
  fc.assert(fc.property(logitsArb, (v) => {
    const x = new Float32Array(v);
    assertEquals(new Sampler({ temperature: 0 }).sample(new Float32Array(x)), argmax(x));
  }));
});

Deno.test("top-k sampling only returns one of the k best; top-k 1 equals greedy", () => {
  fc.assert(fc.property(logitsArb, fc.integer({ min: 1, max: 5 }), fc.integer(), (v, k, seed) => {
    const x = new Float32Array(v);
    const s = new Sampler({ temperature: 1.5, topK: k, seed });
    const order = [...x.keys()].sort((a, b) => x[b] - x[a] || a - b);
    const id = s.sample(new Float32Array(x));
    assert(order.slice(0, k).includes(id));
    assertEquals(
      new Sampler({ temperature: 1, topK: 1, seed }).sample(new Float32Array(x)),
      order[0],
    );
  }));
});

Deno.test("min-p and top-p keep only plausible tokens", () => {
  const x = new Float32Array([10, 9.5, 0, -5]);
  for (let seed = 0; seed < 50; seed++) {
    assert(new Sampler({ temperature: 1, minP: 0.1, seed }).sample(new Float32Array(x)) <= 1);
    assert(new Sampler({ temperature: 1, topP: 0.5, seed }).sample(new Float32Array(x)) === 0);
  }
});

Deno.test("same seed, same samples; different seeds differ somewhere", () => {
  const x = new Float32Array(64).map((_, i) => Math.sin(i));
  const run = (seed: number) => {
    const s = new Sampler({ temperature: 2, seed });
    return Array.from({ length: 32 }, () => s.sample(new Float32Array(x)));
  };
  assertEquals(run(3), run(3));
  assert(JSON.stringify(run(3)) !== JSON.stringify(run(4)));
});

Deno.test("repetition penalty lowers recent tokens", () => {
  const s = new Sampler({ repetitionPenalty: 2 });
  assertEquals(s.sample(new Float32Array([3, 2.5, 0]), [0]), 1);
});

Deno.test("Rng is uniform-ish in [0,1)", () => {
  const r = new Rng(1);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const v = r.next();
    assert(v >= 0 && v < 1);
    sum += v;
  }
  assert(Math.abs(sum / 10000 - 0.5) < 0.02);
});

Deno.test("bad sampling options are GenerationErrors naming the field", () => {
  for (
    const bad of [{ temperature: -1 }, { topK: 1.5 }, { topP: 0 }, { minP: 2 }, {
      repetitionPenalty: 0,
    }, { seed: 0.5 }]
  ) {
    assertThrows(
      () => new Sampler(bad),
      (e: unknown) => e instanceof GenerationError && e.message.includes(Object.keys(bad)[0]),
    );
  }
});

Deno.test("a temperature so small that logit / T overflows samples greedily, never NaN", () => {
  const x = new Float32Array([1, 3e38, -2, 2e38, 0.5]);
  for (const temperature of [1e-300, Number.MIN_VALUE, 1e-290]) {
    for (let seed = 0; seed < 5; seed++) {
      assertEquals(new Sampler({ temperature, seed }).sample(new Float32Array(x)), 1);
    }
  }
  const y = new Float32Array([-3e38, -3e38, -1e38]);
  assertEquals(new Sampler({ temperature: 1e-300 }).sample(y), 2);
});

Deno.test("NaN logits are refused with GenerationError non_finite_logits when sampling", () => {
  const x = new Float32Array([0.5, NaN, 1]);
  assertThrows(
    () => new Sampler({ temperature: 1 }).sample(x),
    (e: unknown) => e instanceof GenerationError && e.code === "non_finite_logits",
  );
});
