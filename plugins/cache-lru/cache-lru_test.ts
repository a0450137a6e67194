import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { type CachePolicy, loadPlugins, simulatePolicy } from "../../mod.ts";
import createPlugin, { createLruPolicy } from "./mod.ts";

Deno.test("cache-lru: the victim is the least recently used candidate", () => {
  const p = createLruPolicy();
  p.init?.({ nLayer: 1, nExpert: 8, capacity: 4 });
  for (const k of [1, 2, 3]) p.onLoad(k, "demand");
  p.onAccess(1, true);
  assert.equal(p.victim([1, 2, 3]), 2);
  assert.equal(p.victim([1, 3]), 3);
  p.onEvict(2);
  p.onAccess(3, true);
  assert.equal(p.victim([1, 3]), 1);
});

Deno.test("cache-lru: prefetchAs 'old' evicts unused prefetches first, used ones become recent", () => {
  const p = createLruPolicy({ prefetchAs: "old" });
  p.onLoad(1, "demand");
  p.onLoad(2, "prefetch");
  p.onLoad(3, "demand");
  assert.equal(p.victim([1, 2, 3]), 2);
  p.onAccess(2, true);
  assert.equal(p.victim([1, 2, 3]), 1);
  const recent = createLruPolicy();
  recent.onLoad(1, "demand");
  recent.onLoad(2, "prefetch");
  assert.equal(recent.victim([1, 2]), 1);
});

Deno.test("cache-lru: init grows the tracked key space beyond the default", () => {
  const p = createLruPolicy();
  p.init?.({ nLayer: 64, nExpert: 256, capacity: 100 });
  for (let k = 0; k < 64 * 256; k++) p.onLoad(k, "demand");
  assert.equal(p.victim([0, 5000, 16383]), 0);
});

/** A reference LRU with a plain array. */
function referenceLru(): CachePolicy {
  let order: number[] = [];
  const touch = (k: number) => {
    order = order.filter((x) => x !== k);
    order.push(k);
  };
  return {
    name: "ref-lru",
    onAccess: touch,
    onLoad: touch,
    onEvict: (k) => void (order = order.filter((x) => x !== k)),
    victim: (c) => order.find((k) => c.includes(k)) ?? c[0],
  };
}

Deno.test("cache-lru: replays like a reference LRU on random traces", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uniqueArray(fc.integer({ min: 0, max: 15 }), { minLength: 1, maxLength: 2 }), {
        maxLength: 150,
      }),
      fc.integer({ min: 2, max: 10 }),
      (steps, capacity) => {
        const a = simulatePolicy(steps, capacity, createLruPolicy());
        const b = simulatePolicy(steps, capacity, referenceLru());
        assert.deepEqual(a, b);
      },
    ),
  );
});

Deno.test("cache-lru: the plugin object and its manifest load through the plugin loader", async () => {
  const direct = createPlugin({}, undefined as never);
  assert.ok(!(direct instanceof Promise));
  assert.equal(direct.name, "cache-lru");
  assert.equal(direct.hooks.cache!({ hp: undefined as never }).name, "lru");
  const [loaded] = await loadPlugins([{ use: "cache-lru", config: { prefetchAs: "old" } }]);
  assert.equal(loaded.manifest.name, "cache-lru");
  assert.deepEqual(loaded.config, { prefetchAs: "old" });
  await assert.rejects(
    loadPlugins([{ use: "cache-lru", config: { prefetchAs: "never" } }]),
    /prefetchAs/,
  );
});
