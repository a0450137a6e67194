import assert from "node:assert/strict";
import {
  affinityFromTrace,
  createRefBackend,
  generateText,
  loadModel,
  loadPlugins,
  PluginError,
  prefetchAccuracy,
  type PrefetchContext,
  RouteRecorder,
} from "../../mod.ts";
import { createAffinityPrefetcher } from "./mod.ts";
import {
  ALL_EXPERT_BYTES,
  modelBytes,
  residentTokens,
  tokensWith,
} from "../../core/store/store_test_util.ts";

function ctx(nLayer: number, nExpert: number, moe: boolean[]): PrefetchContext {
  const layers = moe.map((
    m,
    l,
  ) => (m ? { layer: l, gateInp: null as never, router: null as never } : null));
  return { backend: createRefBackend(), nLayer, nExpert, nExpertUsed: 1, nEmbd: 4, layers };
}

const r = (experts: number[], weights: number[]) => ({
  experts: Int32Array.from(experts),
  weights: Float32Array.from(weights),
});

Deno.test("prefetch-affinity: scores the next layer's experts by weighted affinity", () => {
  // layer 0 → layer 2 (layer 1 dense), 3 experts
  const table = [[[0, 0.9, 0.1], [0.2, 0, 0.8], [1, 0, 0]], [], []];
  const p = createAffinityPrefetcher({ table });
  p.init!(ctx(3, 3, [true, false, true]));
  assert.deepEqual(p.observe(0, 0, r([0], [1]), new Float32Array(4)), [{ layer: 2, experts: [1] }]);
  // 0.3·row0 + 0.7·row1 = [0.14, 0.27, 0.59]
  assert.deepEqual(p.observe(0, 0, r([0, 1], [0.3, 0.7]), new Float32Array(4)), [{
    layer: 2,
    experts: [2],
  }]);
  assert.equal(p.observe(2, 0, r([0], [1]), new Float32Array(4)), null, "no later layer");
  const two = createAffinityPrefetcher({ table, topN: 2, minProb: 0.15 });
  two.init!(ctx(3, 3, [true, false, true]));
  assert.deepEqual(two.observe(0, 0, r([0, 1], [0.3, 0.7]), new Float32Array(4)), [{
    layer: 2,
    experts: [2, 1],
  }]);
});

Deno.test("prefetch-affinity: a table that does not fit the model is a PluginError", () => {
  const bad = [
    [[[1, 0]], []], // wrong expert count
    [[[0, 1], [1, 0]]], // wrong layer count
    [[], [[0, 1], [1, 0]]], // a row for the last layer
  ];
  for (const table of bad) {
    const p = createAffinityPrefetcher({ table });
    assert.throws(
      () => p.init!(ctx(2, 2, [true, true])),
      (e) => e instanceof PluginError && e.code === "bad_config",
    );
  }
});

Deno.test("prefetch-affinity: a table from a recorded trace prefetches better than chance, tokens stay exact", async () => {
  const m0 = await loadModel(modelBytes(), { backend: createRefBackend() });
  const rec = new RouteRecorder(m0.hp.nLayer, m0.hp.nExpert, m0.hp.nExpertUsed);
  for (const m of m0.transformer.moe) m?.observers.push(rec.observe);
  await generateText(m0, [5, 6, 7, 8, 9, 10], { maxTokens: 60, temperature: 0 });
  await generateText(m0, [300, 200, 100], { maxTokens: 60, temperature: 0 });
  const trace = rec.trace();
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/trace.json`;
    await Deno.writeTextFile(path, JSON.stringify(trace));
    const [loaded] = await loadPlugins([{
      use: "prefetch-affinity",
      config: { trace: path, smoothing: 0.5 },
    }]);
    const prefetcher = loaded.plugin.hooks.prefetch!({ hp: m0.hp });
    const { tokens, model } = await tokensWith(modelBytes(), {
      expertBudgetBytes: Math.floor(ALL_EXPERT_BYTES / 2),
      streaming: { prefetcher },
    });
    assert.deepEqual(tokens, await residentTokens());
    const st = model.store.stats();
    assert.ok(st.prefetches! > 0);
    assert.ok(prefetchAccuracy(st) > 0.3, `accuracy ${prefetchAccuracy(st)}`);
    assert.deepEqual(affinityFromTrace(trace, 0.5)[0].length, 8);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  m0.dispose();
});

Deno.test("prefetch-affinity: config needs a table or a trace", async () => {
  await assert.rejects(
    loadPlugins([{ use: "prefetch-affinity" }]),
    (e) => e instanceof PluginError && /table' or 'trace/.test(e.message),
  );
  const [ok] = await loadPlugins([{ use: "prefetch-affinity", config: { table: [[], []] } }]);
  assert.deepEqual(ok.config, { table: [[], []], topN: 0, minProb: 0, smoothing: 0.5 });
});
