import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { Route, Router } from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  tempDir,
} from "../../core/plugin/plugin_test_util.ts";
import { TOP_P_DEFAULTS, type TopPOptions, topPRoute, tsallisEntropy } from "./mod.ts";

/** Softmax in f64 and the descending order (ties to the lower index), computed independently. */
function sortedProbs(logits: Float32Array): { p: number[]; order: number[] } {
  const m = Math.max(...logits);
  const e = [...logits].map((l) => Math.exp(l - m));
  const s = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / s);
  const order = p.map((_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  return { p, order };
}

/** Dynamic_MoE (docs/specs-lora-moe.md §3): prefix up to the first cumulative sum > P; raw probabilities. */
function refDynamicMoe(logits: Float32Array, P: number): Route {
  const { p, order } = sortedProbs(logits);
  let c = 0, keep = order.length;
  for (let j = 0; j < order.length; j++) {
    c += p[order[j]];
    if (c > P) {
      keep = j + 1;
      break;
    }
  }
  const experts = Int32Array.from(order.slice(0, keep));
  return { experts, weights: Float32Array.from(experts, (e) => p[e]) };
}

const logitsArb = fc.integer({ min: 1, max: 12 }).chain((n) =>
  fc.float32Array({
    minLength: n,
    maxLength: n,
    min: -8,
    max: 8,
    noNaN: true,
    noDefaultInfinity: true,
  })
);

Deno.test("route-top-p: dynamic-moe keeps the smallest prefix whose mass exceeds p, raw weights", () => {
  fc.assert(
    fc.property(logitsArb, fc.double({ min: 0.01, max: 0.99, noNaN: true }), (logits, p) => {
      const r = topPRoute(logits, { ...TOP_P_DEFAULTS, p });
      const ref = refDynamicMoe(logits, p);
      const mass = [...r.weights].reduce((a, b) => a + b, 0);
      // the kept set exceeds p (or is everything) and dropping its last expert would not
      assert.ok(mass > p - 1e-6 || r.experts.length === logits.length);
      assert.ok(mass - r.weights[r.weights.length - 1] <= p + 1e-6);
      // same experts as the reference unless rounding could decide: a cumulative sum on p, or near-tied probabilities
      const { p: probs, order } = sortedProbs(logits);
      const tie = order.some((e, j) => j > 0 && probs[order[j - 1]] - probs[e] < 1e-6);
      if (
        !tie && Math.abs(mass - p) > 1e-5 &&
        Math.abs(mass - r.weights[r.weights.length - 1] - p) > 1e-5
      ) {
        assert.deepEqual([...r.experts], [...ref.experts]);
      }
      for (let j = 0; j < r.experts.length; j++) {
        assertClose([r.weights[j]], [ref.weights[j]], 1e-6, "weight");
      }
    }),
  );
});

Deno.test("route-top-p: minK/maxK bound the count; renormalize sums to 1; dynmole keeps mass ≤ p", () => {
  fc.assert(
    fc.property(
      logitsArb,
      fc.double({ min: 0.05, max: 0.95, noNaN: true }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 0, max: 4 }),
      fc.boolean(),
      (logits, p, minK, extra, renormalize) => {
        const n = logits.length;
        const o: TopPOptions = { ...TOP_P_DEFAULTS, p, minK, maxK: minK + extra, renormalize };
        for (const rule of ["dynamic-moe", "dynmole"] as const) {
          const r = topPRoute(logits, { ...o, rule });
          assert.ok(
            r.experts.length >= Math.min(minK, n) && r.experts.length <= Math.min(minK + extra, n),
          );
          assert.equal(new Set(r.experts).size, r.experts.length);
          const sum = [...r.weights].reduce((a, b) => a + b, 0);
          if (renormalize) assert.ok(Math.abs(sum - 1) < 1e-5);
          if (rule === "dynmole" && !renormalize && r.experts.length > minK) {
            assert.ok(sum <= p + 1e-6);
          }
        }
      },
    ),
  );
});

Deno.test("route-top-p: dynmole broadcasts to every expert above the entropy threshold", () => {
  const flat = new Float32Array(8).fill(0.1);
  assert.ok(tsallisEntropy(new Float32Array(8).fill(1 / 8), 1.1, 1e-5) > 0.99);
  const o: TopPOptions = { ...TOP_P_DEFAULTS, rule: "dynmole", p: 0.3, entropyThreshold: 0.9 };
  assert.equal(topPRoute(flat, o).experts.length, 8);
  assert.equal(topPRoute(flat, { ...o, entropyThreshold: 1 }).experts.length, 2); // 0.125, 0.25 ≤ 0.3
  const peaked = Float32Array.from([9, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(topPRoute(peaked, { ...o, minK: 1 }).experts.length, 1);
  // Shannon form and its normalisation
  assertClose([tsallisEntropy(Float32Array.from([0.5, 0.5]), 1, 0)], [1], 1e-12);
  assertClose([tsallisEntropy(Float32Array.from([0.5, 0.5]), 2, 0)], [1], 1e-12);
  // P ≥ 1: every expert, as Dynamic_MoE's argmax-of-all-false edge case
  assert.equal(topPRoute(peaked, { ...TOP_P_DEFAULTS, p: 1 }).experts.length, 8);
});

Deno.test("route-top-p: the model's outputs equal a model routed by the reference rule", async () => {
  const dir = await tempDir();
  try {
    const p = 0.5;
    const { model } = await loadWithPlugins(dir, [{ use: "route-top-p", config: { p } }]);
    const sizes = new Set<number>();
    for (const l of model.transformer.moe) {
      l?.observers.push((_l, _t, r) => sizes.add(r.experts.length));
    }
    const got = await logitsOf(model);
    const ref: Router = { name: "ref", route: (logits) => refDynamicMoe(logits, p) };
    const want = await logitsOf(await loadTestModel({ wrapRouter: () => ref }));
    assertClose(got, want, 1e-5, "logits");
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-3, "logits vs top-2 routing");
    assert.ok(sizes.size >= 2, `expected a varying number of experts per token, saw ${[...sizes]}`);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("route-top-p: layers limits the override; maxK < minK is a typed config error", async () => {
  const dir = await tempDir();
  try {
    const { model } = await loadWithPlugins(dir, [{
      use: "route-top-p",
      config: { p: 0.5, layers: [1] },
    }]);
    assert.equal(model.transformer.moe[0]!.spec.router.name, "topk");
    assert.match(model.transformer.moe[1]!.spec.router.name, /top-p/);
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "route-top-p", config: { minK: 3, maxK: 2 } }]),
      (e: Error) =>
        e.name === "PluginError" && /maxK/.test(e.message) && /route-top-p/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});
