/**
 * The near-tie recorder/forcer of the conformance tests: without forcing it
 * routes exactly as the wrapped router and records a tie exactly when the
 * k-th/(k+1)-th gap is under the tolerance; with forcing it swaps exactly the
 * k-th expert for the (k+1)-th and leaves the weights of the chosen experts
 * as llama.cpp would compute them for that choice.
 */

import { deepStrictEqual, ok as assert, strictEqual, throws } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { HParams } from "../../core/model/hparams.ts";
import { TopKRouter } from "../../core/moe/router.ts";
import { nextDownF32, ROUTER_TIE_TOL, TieControl } from "./route_ties.ts";

const hpWith = (k: number) => ({ nExpertUsed: k }) as unknown as HParams;

/** Distinct f32 logits (n ≥ 2) and a k < n. */
const arbCase = fc
  .uniqueArray(fc.float({ min: -8, max: 8, noNaN: true, noDefaultInfinity: true }), {
    minLength: 2,
    maxLength: 40,
    comparator: (a, b) => Math.fround(a) === Math.fround(b),
  })
  .chain((xs) => fc.record({ xs: fc.constant(xs), k: fc.integer({ min: 1, max: xs.length - 1 }) }));

function sortedDesc(xs: Float32Array): number[] {
  return [...xs.keys()].sort((a, b) => xs[b] - xs[a] || a - b);
}

Deno.test("route ties: unforced routes equal the inner router's and ties are recorded iff gap < tol", () => {
  fc.assert(
    fc.property(arbCase, fc.constantFrom(0.02, 0.5, 4), ({ xs, k }, tol) => {
      const logits = Float32Array.from(xs);
      for (const gating of ["softmax", "softmax_weight"] as const) {
        const inner = new TopKRouter({ k, gating, normalize: false });
        const ref = new TopKRouter({ k, gating, normalize: false }).route(logits.slice(), 3);
        const tc = new TieControl(tol);
        const r = tc.wrap(inner, 3, hpWith(k)).route(logits.slice(), 3);
        deepStrictEqual([...r.experts], [...ref.experts]);
        deepStrictEqual([...r.weights], [...ref.weights]);
        const o = sortedDesc(logits);
        const gap = logits[o[k - 1]] - logits[o[k]];
        strictEqual(tc.ties.length, gap < tol ? 1 : 0);
        if (gap < tol) deepStrictEqual(tc.ties[0], { layer: 3, gap });
      }
    }),
  );
});

Deno.test("route ties: forcing a layer swaps exactly its k-th expert for the (k+1)-th", () => {
  fc.assert(
    fc.property(arbCase, ({ xs, k }) => {
      const logits = Float32Array.from(xs);
      const o = sortedDesc(logits);
      const want = [...o.slice(0, k - 1), o[k]];
      const tc = new TieControl();
      tc.force.add(2);
      const inner = new TopKRouter({ k, gating: "softmax_weight", normalize: false });
      const r = tc.wrap(inner, 2, hpWith(k)).route(logits.slice(), 2);
      deepStrictEqual([...r.experts].sort((a, b) => a - b), want.sort((a, b) => a - b));
      // softmax over the chosen experts' own logits (the demoted one is not among them)
      const direct = new TopKRouter({ k, gating: "softmax_weight", normalize: false });
      const only = new Float32Array(logits.length).fill(-Infinity);
      for (const e of want) only[e] = logits[e];
      const ref = direct.route(only, 2);
      for (let j = 0; j < k; j++) {
        strictEqual(r.weights[[...r.experts].indexOf(ref.experts[j])], ref.weights[j]);
      }
      // another layer is untouched
      const other = tc.wrap(
        new TopKRouter({ k, gating: "softmax_weight", normalize: false }),
        1,
        hpWith(k),
      )
        .route(logits.slice(), 1);
      deepStrictEqual(
        [...other.experts].sort((a, b) => a - b),
        o.slice(0, k).sort((a, b) => a - b),
      );
    }),
  );
});

Deno.test("route ties: nextDownF32 is the f32 just below; bad input is rejected", () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (x0) => {
      const x = Math.fround(x0);
      if (x === -3.4028234663852886e38) return;
      const y = nextDownF32(x);
      assert(y < x && Math.fround(y) === y);
      // nothing representable strictly between
      const mid = (x + y) / 2;
      assert(Math.fround(mid) === x || Math.fround(mid) === y);
    }),
  );
  strictEqual(nextDownF32(0), -1.401298464324817e-45);
  throws(() => nextDownF32(NaN), RangeError);
  throws(() => new TieControl(-1), RangeError);
  assert(ROUTER_TIE_TOL > 0 && ROUTER_TIE_TOL < 0.1);
});
