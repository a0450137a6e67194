import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  generateText,
  GgmlType,
  loadFromManifest,
  loadModel,
  loadPlugins,
  MemorySource,
  PluginError,
} from "../../mod.ts";
import createPlugin, {
  copyPlan,
  expertLocations,
  planExperts,
  routingStats,
  skipRoute,
  writeExpertCopies,
} from "./mod.ts";
import { modelBytes, PROMPT } from "../../core/store/store_test_util.ts";

Deno.test("quant-experts: skipRoute keeps the top expert and every weight ≥ skipBelow", () => {
  fc.assert(
    fc.property(
      fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 8 }),
      fc.float({ min: 0, max: Math.fround(0.99), noNaN: true }),
      (ws, skip) => {
        const sorted = ws.slice().sort((a, b) => b - a);
        const r = {
          experts: Int32Array.from(sorted.map((_, i) => i)),
          weights: Float32Array.from(sorted),
        };
        const out = skipRoute(r, skip);
        assert.equal(out.experts[0], 0);
        for (let j = 0; j < r.experts.length; j++) {
          const kept = [...out.experts].includes(j);
          assert.equal(kept, j === 0 || r.weights[j] >= skip, `expert ${j}`);
        }
      },
    ),
  );
});

Deno.test("quant-experts: plans fit the memory target and upgrade the most important experts first", async () => {
  const src = new MemorySource(modelBytes());
  const locs = await expertLocations(src);
  const model = await loadModel(modelBytes(), { backend: "ref" });
  const st = await routingStats(model, [...PROMPT, ...PROMPT]);
  model.dispose();
  assert.equal(st.tokens, 2 * PROMPT.length);
  for (const row of st.freq) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 2) < 1e-9);
  const ladder = [GgmlType.Q4_0, GgmlType.Q8_0];
  const low = planExperts(locs, { mode: "hobbit", type: GgmlType.Q4_0 }).bytes;
  for (const mode of ["edgemoe", "mc-moe"] as const) {
    for (const frac of [0, 0.3, 1]) {
      const memoryBytes = Math.floor(low + frac * low);
      const plan = planExperts(locs, { mode, memoryBytes, ladder }, st);
      assert.ok(plan.bytes <= memoryBytes);
      const imp = plan.importance!;
      // any Q8_0 expert is at least as important as every Q4_0 expert it could have swapped with
      const hi = locs.flat().filter((l) => plan.types[l.layer][l.index] === GgmlType.Q8_0);
      const lo = locs.flat().filter((l) => plan.types[l.layer][l.index] === GgmlType.Q4_0);
      if (frac === 0) assert.equal(hi.length, 0);
      const minHi = Math.min(...hi.map((l) => imp[l.layer][l.index]));
      const maxLo = Math.max(...lo.map((l) => imp[l.layer][l.index]));
      if (hi.length && lo.length) assert.ok(minHi >= maxLo, "upgrades follow importance");
    }
    assert.throws(
      () => planExperts(locs, { mode, memoryBytes: low - 1, ladder }, st),
      (e) => e instanceof PluginError && e.code === "bad_config",
    );
  }
  const { gguf, manifest } = await writeExpertCopies(
    src,
    locs,
    planExperts(locs, { mode: "hobbit", type: GgmlType.Q4_0 }),
  );
  assert.ok(gguf.length > low);
  assert.equal(manifest.experts.flat().length, locs.flat().length);
  assert.equal(copyPlan({ mode: "hobbit", types: [[1]], bytes: 0 })(0, 0), 1);
});

Deno.test("quant-experts: plugin object and manifest", async () => {
  const off = createPlugin({}, undefined as never);
  assert.ok(!(off instanceof Promise));
  assert.equal(off.hooks.router, undefined);
  const [loaded] = await loadPlugins([{
    use: "quant-experts",
    config: { mode: "mc-moe", skipBelow: 0.3 },
  }]);
  assert.equal(loaded.plugin.name, "quant-experts");
  assert.ok(loaded.plugin.hooks.router);
  await assert.rejects(
    loadPlugins([{ use: "quant-experts", config: { skipBelow: 2 } }]),
    /skipBelow/,
  );
});

Deno.test("quant-experts: the example model manifest streams with Q4_0 copies and skips low-weight experts", async () => {
  const url = new URL("../../examples/quant-experts/model.json", import.meta.url);
  const { model, plugins } = await loadFromManifest(url.href, { backend: "ref" });
  assert.equal(plugins[0].plugin.name, "quant-experts");
  const out = await generateText(model, [1, 40, 50], { maxTokens: 12, temperature: 0 });
  assert.equal(out.tokens.length, 12);
  const st = model.store.stats();
  assert.ok(st.fallbackHits! > 0, "misses used the Q4_0 copies");
  assert.ok(st.misses > 0);
  model.dispose();
});
