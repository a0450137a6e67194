import { assert, assertEquals } from "./assert_test_util.ts";
import fc from "npm:fast-check@4";
import { softmaxInPlace, topK, TopKRouter } from "./router.ts";

const f32s = (min: number, max: number) =>
  fc.array(fc.float({ min: -20, max: 20, noNaN: true, noDefaultInfinity: true }), {
    minLength: min,
    maxLength: max,
  });

Deno.test("topK equals a stable descending sort (ties to the lower index)", () => {
  fc.assert(fc.property(f32s(1, 40), fc.integer({ min: 1, max: 40 }), (vals, kRaw) => {
    const x = new Float32Array(vals);
    const k = Math.min(kRaw, x.length);
    const want = [...x.keys()].sort((a, b) => x[b] - x[a] || a - b).slice(0, k);
    assertEquals([...topK(x, k)], want);
  }));
});

Deno.test("topK ties: equal values keep index order", () => {
  assertEquals([...topK(new Float32Array([1, 3, 3, 2, 3]), 3)], [1, 2, 4]);
});

Deno.test("softmax sums to 1 and preserves order", () => {
  fc.assert(fc.property(f32s(1, 64), (vals) => {
    const x = new Float32Array(vals);
    const p = softmaxInPlace(new Float32Array(x), new Float32Array(x.length));
    const s = p.reduce((a, b) => a + b, 0);
    assert(Math.abs(s - 1) < 1e-5, `sum ${s}`);
    for (let i = 0; i < x.length; i++) {
      // ggml's 8-lane body uses a polynomial expf and the tail libm expf: 2 ulp of slack
      for (let j = 0; j < x.length; j++) if (x[i] > x[j]) assert(p[i] >= p[j] * (1 - 2 ** -22));
    }
  }));
});

Deno.test("normalized top-k router: weights sum to 1, experts are the top probabilities", () => {
  fc.assert(fc.property(f32s(2, 32), fc.integer({ min: 1, max: 8 }), (vals, kRaw) => {
    const k = Math.min(kRaw, vals.length);
    const r = new TopKRouter({ k, normalize: true });
    const logits = new Float32Array(vals);
    const route = r.route(new Float32Array(logits), 0);
    // llama.cpp selects on softmax probabilities: logits closer than f32 can resolve tie there
    const probs = softmaxInPlace(new Float32Array(logits), new Float32Array(logits.length));
    assertEquals([...route.experts], [...topK(probs, k)]);
    const s = route.weights.reduce((a, b) => a + b, 0);
    assert(Math.abs(s - 1) < 1e-5, `sum ${s}`);
  }));
});

Deno.test("unnormalized router returns the softmax probabilities of the chosen experts", () => {
  const logits = new Float32Array([0.5, 2, -1, 1]);
  const r = new TopKRouter({ k: 2, normalize: false });
  const route = r.route(new Float32Array(logits), 0);
  const p = softmaxInPlace(new Float32Array(logits), new Float32Array(4));
  assertEquals([...route.experts], [1, 3]);
  assertEquals([...route.weights], [p[1], p[3]]);
});

Deno.test("selection bias changes selection but not the weights", () => {
  const logits = new Float32Array([0, 0.1, 0.2]);
  const r = new TopKRouter({
    k: 1,
    normalize: false,
    gating: "sigmoid",
    selectionBias: new Float32Array([5, 0, 0]),
  });
  const route = r.route(logits, 0);
  assertEquals(route.experts[0], 0);
  assertEquals(route.weights[0], Math.fround(1 / (1 + Math.exp(0))));
});

Deno.test("router rejects k larger than the expert count and non-positive k", () => {
  let threw = false;
  try {
    new TopKRouter({ k: 3, normalize: true }).route(new Float32Array(2), 0);
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw);
  threw = false;
  try {
    new TopKRouter({ k: 0, normalize: true });
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw);
});
