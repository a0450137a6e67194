import assert from "node:assert/strict";
import {
  createRefBackend,
  GgmlType,
  loadPlugins,
  prefetchAccuracy,
  type PrefetchContext,
  type PrefetchLayer,
  TopKRouter,
} from "../../mod.ts";
import createPlugin, { createNextLayerPrefetcher } from "./mod.ts";
import {
  ALL_EXPERT_BYTES,
  modelBytes,
  residentTokens,
  tokensWith,
} from "../../core/store/store_test_util.ts";

/** Layers 0, 2, 3 are MoE (1 dense); each router's gate is the identity, so logits = hidden. */
function identityContext(): PrefetchContext {
  const backend = createRefBackend();
  const n = 4;
  const slot = backend.allocSlot(n * n * 4);
  const eye = new Float32Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  backend.writeSlot(slot, 0, new Uint8Array(eye.buffer));
  const layer = (l: number): PrefetchLayer => ({
    layer: l,
    gateInp: { slot, offset: 0, type: GgmlType.F32, rows: n, cols: n },
    router: new TopKRouter({ k: 2, normalize: false }),
  });
  return {
    backend,
    nLayer: 4,
    nExpert: n,
    nExpertUsed: 2,
    nEmbd: n,
    layers: [layer(0), null, layer(2), layer(3)],
  };
}

const route = { experts: Int32Array.of(0, 1), weights: Float32Array.of(0.5, 0.5) };
const hidden = Float32Array.of(0.1, 3, 0.2, 2);

Deno.test("prefetch-next-layer: runs the next MoE layer's gate and router on this hidden state", () => {
  const p = createNextLayerPrefetcher();
  assert.equal(p.observe(0, 0, route, hidden), null, "nothing before init");
  p.init!(identityContext());
  const [h] = p.observe(0, 0, route, hidden)!;
  assert.equal(h.layer, 2, "skips the dense layer");
  assert.deepEqual(Array.from(h.experts), [1, 3]);
  assert.deepEqual(p.observe(3, 0, route, hidden), [], "last layer: nothing ahead");
});

Deno.test("prefetch-next-layer: topK widens the guess, lookahead predicts further layers", () => {
  const p = createNextLayerPrefetcher({ topK: 3, lookahead: 2 });
  p.init!(identityContext());
  const hints = p.observe(0, 0, route, hidden)!;
  assert.deepEqual(hints.map((h) => h.layer), [2, 3]);
  assert.deepEqual(Array.from(hints[0].experts), [1, 3, 2]);
});

Deno.test("prefetch-next-layer: on a real model the guesses mostly land and tokens stay exact", async () => {
  const { tokens, model } = await tokensWith(modelBytes(), {
    expertBudgetBytes: Math.floor(ALL_EXPERT_BYTES / 4),
    streaming: { prefetcher: createNextLayerPrefetcher() },
  });
  assert.deepEqual(tokens, await residentTokens());
  const st = model.store.stats();
  assert.ok(st.prefetches! > 0);
  // random guessing would land k/nExpert = 25% of the time
  assert.ok(prefetchAccuracy(st) > 0.45, `accuracy ${prefetchAccuracy(st)}`);
  model.dispose();
});

Deno.test("prefetch-next-layer: plugin object and manifest", async () => {
  const direct = createPlugin({ topK: 2 }, undefined as never);
  assert.ok(!(direct instanceof Promise));
  assert.equal(direct.hooks.prefetch!({ hp: undefined as never }).name, "next-layer");
  const [loaded] = await loadPlugins([{ use: "prefetch-next-layer" }]);
  assert.deepEqual(loaded.config, { topK: 0, lookahead: 1 });
  await assert.rejects(
    loadPlugins([{ use: "prefetch-next-layer", config: { lookahead: 9 } }]),
    /lookahead/,
  );
});
