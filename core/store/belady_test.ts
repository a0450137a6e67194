/**
 * Belady (MIN) evaluator: hand-made traces, an exhaustive optimum on tiny
 * traces, and properties against LRU/LFU/recency on random traces.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  affinityFromTrace,
  beladySimulate,
  type CachePolicy,
  createRecencyPolicy,
  parseRouteTrace,
  RouteRecorder,
  simulatePolicy,
  stepsFromTrace,
  StoreError,
} from "../../mod.ts";
import { createLruPolicy } from "../../plugins/cache-lru/mod.ts";
import { createLfuPolicy } from "../../plugins/cache-lfu/mod.ts";

const single = (keys: number[]): number[][] => keys.map((k) => [k]);

Deno.test("belady: textbook trace", () => {
  // 7 0 1 2 0 3 0 4 2 3 0 3 2 with 3 frames: MIN has 7 misses (OPT example)
  const r = beladySimulate(single([7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2]), 3);
  assert.equal(r.misses, 7);
  assert.equal(r.hits, 6);
  assert.equal(r.evictions, 4);
  // LRU on the same trace has 9 misses
  assert.equal(
    simulatePolicy(single([7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2]), 3, createLruPolicy()).misses,
    9,
  );
});

Deno.test("belady: steps keep their keys together; pinned keys always hit and take no room", () => {
  // capacity 2: step [1,2] then [3,1]: 3 must evict 2 (not 1, which the step needs)
  const r = beladySimulate([[1, 2], [3, 1], [2]], 2);
  assert.deepEqual([r.hits, r.misses], [1, 4]);
  const p = beladySimulate([[1, 9], [2, 9], [1, 9]], 1, { pinned: new Set([9]) });
  assert.deepEqual([p.hits, p.misses], [3, 3]);
  assert.equal(beladySimulate([], 1).hitRate, 1);
});

Deno.test("belady: capacity below one step is a typed error", () => {
  assert.throws(
    () => beladySimulate([[1, 2, 3]], 2),
    (e) => e instanceof StoreError && e.code === "budget_too_small",
  );
  assert.throws(
    () => simulatePolicy([[1, 2]], 1, createRecencyPolicy()),
    (e) => e instanceof StoreError,
  );
});

/** Fewest misses over every eviction choice (exponential; tiny traces only). */
function bruteForceMisses(steps: number[][], capacity: number): number {
  const go = (i: number, j: number, resident: number[]): number => {
    if (i === steps.length) return 0;
    if (j === steps[i].length) return go(i + 1, 0, resident);
    const k = steps[i][j];
    if (resident.includes(k)) return go(i, j + 1, resident);
    if (resident.length < capacity) return 1 + go(i, j + 1, [...resident, k]);
    let best = Infinity;
    for (const v of resident) {
      if (steps[i].includes(v)) continue;
      best = Math.min(best, 1 + go(i, j + 1, [...resident.filter((r) => r !== v), k]));
    }
    return best;
  };
  return go(0, 0, []);
}

const stepArb = (keys: number, maxStep: number) =>
  fc.uniqueArray(fc.integer({ min: 0, max: keys - 1 }), { minLength: 1, maxLength: maxStep });

Deno.test("belady: equals the exhaustive optimum on tiny traces", () => {
  fc.assert(
    fc.property(
      fc.array(stepArb(5, 2), { minLength: 1, maxLength: 9 }),
      fc.integer({ min: 2, max: 3 }),
      (steps, capacity) => {
        assert.equal(beladySimulate(steps, capacity).misses, bruteForceMisses(steps, capacity));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("belady: hit rate ≥ LRU, LFU and recency on random traces, for any budget", () => {
  const policies: (() => CachePolicy)[] = [
    () => createLruPolicy(),
    () => createLruPolicy({ prefetchAs: "old" }),
    () => createLfuPolicy(),
    () => createLfuPolicy({ decay: 1 }),
    () => createRecencyPolicy(),
  ];
  fc.assert(
    fc.property(
      fc.array(stepArb(12, 3), { minLength: 1, maxLength: 120 }),
      fc.integer({ min: 0, max: 12 }),
      (steps, extra) => {
        const capacity = 3 + extra;
        const opt = beladySimulate(steps, capacity);
        for (const make of policies) {
          const r = simulatePolicy(steps, capacity, make());
          assert.ok(opt.hits >= r.hits, `belady ${opt.hits} < ${r.hits}`);
          assert.equal(r.hits + r.misses, opt.hits + opt.misses);
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("belady: a capacity holding every key misses only cold starts", () => {
  fc.assert(
    fc.property(fc.array(stepArb(8, 2), { minLength: 1, maxLength: 60 }), (steps) => {
      const distinct = new Set(steps.flat()).size;
      assert.equal(beladySimulate(steps, 8).misses, distinct);
      assert.equal(simulatePolicy(steps, 8, createLruPolicy()).misses, distinct);
    }),
  );
});

Deno.test("route trace: recorder splits forward passes, steps and affinity follow", () => {
  const rec = new RouteRecorder(3, 4, 1);
  const route = (e: number) => ({ experts: Int32Array.of(e), weights: Float32Array.of(1) });
  // prefill of 2 tokens: layer 0 for t0,t1 then layer 2 (layer 1 dense)
  rec.observe(0, 0, route(1));
  rec.observe(0, 1, route(2));
  rec.observe(2, 0, route(3));
  rec.observe(2, 1, route(0));
  // one decode token
  rec.observe(0, 0, route(1));
  rec.observe(2, 0, route(3));
  const t = parseRouteTrace(JSON.parse(JSON.stringify(rec.trace())));
  assert.deepEqual(t.tokens, [[[1], [], [3]], [[2], [], [0]], [[1], [], [3]]]);
  assert.deepEqual(stepsFromTrace(t), [[1], [11], [2], [8], [1], [11]]);
  const a = affinityFromTrace(t);
  assert.deepEqual(a[0][1], [0, 0, 0, 1]);
  assert.deepEqual(a[0][2], [1, 0, 0, 0]);
  assert.deepEqual(a[0][0], [0, 0, 0, 0]);
  assert.deepEqual(a[1], []);
  assert.deepEqual(a[2], []);
  assert.throws(
    () => parseRouteTrace({ ...t, tokens: [[[9], [], []]] }),
    (e) => e instanceof StoreError && e.code === "bad_trace",
  );
  assert.throws(() => parseRouteTrace({ format: "x" }), StoreError);
});
