import assert from "node:assert/strict";
import { createRecencyPolicy, loadPlugins, PluginError, simulatePolicy } from "../../mod.ts";
import createPlugin, { createLfuPolicy } from "./mod.ts";

Deno.test("cache-lfu: evicts the least used, ties to the least recent", () => {
  const p = createLfuPolicy({ decay: 1 });
  for (const k of [1, 2, 3]) p.onLoad(k, "demand");
  for (const k of [1, 1, 2, 3, 3]) p.onAccess(k, true);
  assert.equal(p.victim([1, 2, 3]), 2);
  p.onAccess(2, true); // 2 now ties with 1 and 3 at 2 uses; 1 is least recent
  assert.equal(p.victim([1, 2, 3]), 1);
  p.onLoad(4, "prefetch"); // a new expert starts at 0 uses
  assert.equal(p.victim([1, 2, 3, 4]), 4);
});

Deno.test("cache-lfu: counts survive eviction (a popular expert comes back strong)", () => {
  const p = createLfuPolicy({ decay: 1 });
  for (let i = 0; i < 5; i++) p.onAccess(1, true);
  p.onEvict(1);
  p.onAccess(2, false);
  p.onLoad(2, "demand");
  p.onAccess(1, false);
  p.onLoad(1, "demand");
  assert.equal(p.victim([1, 2]), 2);
});

Deno.test("cache-lfu: aging lets a new favourite overtake an old one", () => {
  const trace = [...Array(20).fill(1), ...Array(12).fill(2)];
  const aging = createLfuPolicy({ decay: 0.5, agingInterval: 4 });
  const frozen = createLfuPolicy({ decay: 1 });
  for (const p of [aging, frozen]) for (const k of trace) p.onAccess(k, true);
  assert.equal(frozen.victim([1, 2]), 2);
  assert.equal(aging.victim([1, 2]), 1);
  // agingInterval 0 = 8 × capacity
  const auto = createLfuPolicy({ decay: 0.5 });
  auto.init?.({ nLayer: 1, nExpert: 4, capacity: 1 });
  for (const k of trace) auto.onAccess(k, true);
  assert.equal(auto.victim([1, 2]), 1);
});

Deno.test("cache-lfu: keeps hot experts through scans that flush LRU", () => {
  // hot experts 0 and 1 in bursts, then a scan of 2..5; room for 3
  const steps: number[][] = [];
  for (let r = 0; r < 20; r++) {
    for (let i = 0; i < 5; i++) steps.push([0], [1]);
    for (let k = 2; k <= 5; k++) steps.push([k]);
  }
  const lfu = simulatePolicy(steps, 3, createLfuPolicy());
  const lru = simulatePolicy(steps, 3, createRecencyPolicy());
  assert.ok(lfu.hits > lru.hits, `lfu ${lfu.hits} vs lru ${lru.hits}`);
  assert.equal(lfu.misses, 2 + 20 * 4);
});

Deno.test("cache-lfu: bad config is a PluginError naming the field", () => {
  assert.throws(
    () => createLfuPolicy({ decay: 0 }),
    (e) => e instanceof PluginError && /decay/.test(e.message),
  );
  assert.throws(
    () => createLfuPolicy({ agingInterval: 1.5 }),
    (e) => e instanceof PluginError && e.code === "bad_config",
  );
});

Deno.test("cache-lfu: the plugin loads through the plugin loader with defaults", async () => {
  const [loaded] = await loadPlugins([{ use: "cache-lfu" }]);
  assert.deepEqual(loaded.config, { decay: 0.5, agingInterval: 0 });
  assert.equal(loaded.plugin.hooks.cache!({ hp: undefined as never }).name, "lfu");
  const direct = createPlugin({ decay: 0.9 }, undefined as never);
  assert.ok(!(direct instanceof Promise) && direct.hooks.cache);
  await assert.rejects(loadPlugins([{ use: "cache-lfu", config: { decay: 2 } }]), /decay/);
});
