/**
 * Low-bit fallback copies (HOBBIT): misses below the critical gate weight
 * compute with the resident copy without waiting; copies made at load equal
 * copies read from a side GGUF; the side file's manifest is checked.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  buildExpertManifest,
  generateText,
  GgmlType,
  loadFallbackCopies,
  loadFromManifest,
  ManifestError,
  MemorySource,
  sideLocations,
  StreamingExpertStore,
  writeCopiesGguf,
} from "../../mod.ts";
import { createRefBackend } from "../backend/ref_backend.ts";
import {
  EXPERT_BYTES,
  isStoreError,
  modelBytes,
  residentTokens,
  storeContext,
  tokensWith,
} from "./store_test_util.ts";

const Q4 = GgmlType.Q4_0;

Deno.test("fallback: critical weight 0 never falls back (resident tokens); Infinity always does", async () => {
  const base = await residentTokens();
  const never = await tokensWith(modelBytes(), {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    streaming: { fallbackCopies: { type: Q4, criticalWeight: 0 } },
  });
  assert.deepEqual(never.tokens, base);
  assert.equal(never.model.store.stats().fallbackHits, 0);
  never.model.dispose();
  const always = await tokensWith(modelBytes(), {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    streaming: { fallbackCopies: { type: Q4, criticalWeight: Infinity, loadOnFallback: false } },
  });
  const st = always.model.store.stats();
  assert.equal(st.loads, 0, "no full-precision load");
  assert.equal(st.stallMs, 0);
  assert.equal(st.fallbackHits, st.misses);
  assert.ok(st.misses > 0);
  assert.equal(always.tokens.length, base.length);
  always.model.dispose();
});

Deno.test("fallback: by default (critical 0.8) misses fall back and full precision loads for later tokens", async () => {
  const { model } = await tokensWith(modelBytes(), {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    streaming: { fallbackCopies: { type: Q4 } },
  });
  const st = model.store.stats();
  assert.ok(st.fallbackHits! > 0, "some misses used the copy");
  assert.ok(st.fallbackHits! <= st.misses);
  assert.ok(st.loads! > 0, "full precision still loads (background or critical)");
  const mem = (model.store as StreamingExpertStore).memory();
  assert.equal(mem.fallbackBytes, 4 * 8 * 3 * 128 * 2 * 18);
  model.dispose();
});

Deno.test("fallback copies: side GGUF equals made-at-load copies; its manifest is checked", async () => {
  const src = new MemorySource(modelBytes());
  const ctx = await storeContext(src);
  const gguf = await writeCopiesGguf(src, ctx.locations, () => Q4);
  const side = new MemorySource(gguf);
  const locs = await sideLocations(side, ctx.locations);
  assert.ok(locs.flat().every((l) => l !== null && l.up.type === Q4));
  const be = createRefBackend();
  const made = await loadFallbackCopies(be, src, ctx.locations, { type: Q4 });
  const read = await loadFallbackCopies(be, src, ctx.locations, { source: side });
  assert.equal(made.bytes, read.bytes);
  const x = new Float32Array(64).map((_, i) => Math.sin(i));
  for (const [l, e] of [[0, 0], [3, 7], [1, 4]]) {
    for (const p of ["gate", "up", "down"] as const) {
      const a = made.weights(l, e)![p]!, b = read.weights(l, e)![p]!;
      const cols = a.cols, oa = new Float32Array(a.rows), ob = new Float32Array(b.rows);
      be.matmul(a, x.length === cols ? x : new Float32Array(cols).fill(0.5), 1, oa);
      be.matmul(b, x.length === cols ? x : new Float32Array(cols).fill(0.5), 1, ob);
      assert.deepEqual(oa, ob, `${l}:${e} ${p}`);
    }
  }
  // the side file's manifest: a wrong hash is an integrity error
  const manifest = await buildExpertManifest(side, locs.map((r) => r.filter((x) => x !== null)));
  await loadFallbackCopies(be, src, ctx.locations, { source: side, manifest });
  const bad = { ...manifest, experts: manifest.experts.map((r) => r.map(() => "0".repeat(64))) };
  await assert.rejects(
    loadFallbackCopies(be, src, ctx.locations, { source: side, manifest: bad }),
    isStoreError("integrity"),
  );
  await assert.rejects(loadFallbackCopies(be, src, ctx.locations, {}), isStoreError("bad_option"));
  // Q2_K needs 256 columns: a clear error, not a crash
  await assert.rejects(
    loadFallbackCopies(be, src, ctx.locations, { type: GgmlType.Q2_K }),
    isStoreError("bad_option"),
  );
  made.dispose();
  read.dispose();
  assert.equal(made.weights(0, 0), null);
});

Deno.test("fallback: a model manifest's memory.expertFallback gives the same store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-fallback-" });
  try {
    await Deno.writeFile(`${dir}/m.gguf`, modelBytes());
    const write = (memory: Record<string, unknown>) =>
      Deno.writeTextFile(
        `${dir}/model.json`,
        JSON.stringify({ manifestVersion: 1, model: { source: "m.gguf" }, memory, plugins: [] }),
      );
    await write({ expertBudgetMb: (4 * EXPERT_BYTES) / 2 ** 20, expertFallback: "q4_0" });
    const { model } = await loadFromManifest(`${dir}/model.json`, { backend: "ref" });
    await generateText(model, [1, 17, 42, 99], { maxTokens: 8, temperature: 0 });
    const store = model.store as StreamingExpertStore;
    assert.equal(store.memory().fallbackBytes, 4 * 8 * 3 * 128 * 2 * 18);
    assert.ok(store.stats().fallbackHits! > 0);
    model.dispose();
    await write({ expertBudgetMb: 1, expertFallback: "q9_9" });
    await assert.rejects(
      loadFromManifest(`${dir}/model.json`, { backend: "ref" }),
      (e) => e instanceof ManifestError && /q9_9/.test(e.message),
    );
    // memory.expertFallbackLoads: none = no background load; bad text is a manifest error
    await write({
      expertBudgetMb: (4 * EXPERT_BYTES) / 2 ** 20,
      expertFallback: "q4_0",
      expertCriticalWeight: 2,
      expertFallbackLoads: "none",
    });
    const none = await loadFromManifest(`${dir}/model.json`, { backend: "ref" });
    await generateText(none.model, [1, 17, 42, 99], { maxTokens: 8, temperature: 0 });
    const st = none.model.store.stats();
    assert.ok(st.fallbackHits! > 0);
    assert.equal(st.loads, 0, "every miss fell back and nothing loaded in the background");
    none.model.dispose();
    await write({ expertBudgetMb: 1, expertFallback: "q4_0", expertFallbackLoads: "weight=x" });
    await assert.rejects(
      loadFromManifest(`${dir}/model.json`, { backend: "ref" }),
      (e) => e instanceof ManifestError && /expertFallbackLoads/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fallback: under random ensure/prefetch sequences every ensured expert has weights, within budget", async () => {
  const ctx = await storeContext(new MemorySource(modelBytes()));
  const copies = await loadFallbackCopies(ctx.backend, ctx.source, ctx.locations, { type: Q4 });
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 6 }),
      fc.constantFrom(0, 0.5, Infinity),
      fc.boolean(),
      fc.integer({ min: 1, max: 4 }),
      fc.array(
        fc.tuple(
          fc.boolean(),
          fc.integer({ min: 0, max: 3 }),
          fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 2 }),
        ),
        { maxLength: 30 },
      ),
      async (cap, criticalWeight, loadOnFallback, packAfterUses, ops) => {
        const budget = cap * EXPERT_BYTES;
        const s = await StreamingExpertStore.create(ctx, {
          expertBudgetBytes: budget,
          packAfterUses,
          fallback: { weights: copies.weights, criticalWeight, loadOnFallback },
        });
        for (const [pre, layer, ex] of ops) {
          if (pre) s.prefetch(layer, ex);
          else {
            await s.ensure(layer, ex);
            for (const e of ex) {
              const w = s.weights(layer, e);
              assert.ok(w.up.rows > 0);
            }
          }
          assert.ok(s.memory().allocatedBytes <= budget);
        }
        const st = s.stats();
        assert.ok(st.fallbackHits! <= st.misses);
        // without route observers there is no gate weight: only `Infinity` falls back
        if (criticalWeight !== Infinity) assert.equal(st.fallbackHits, 0);
        else assert.equal(st.fallbackHits, st.misses);
        s.dispose();
      },
    ),
    { numRuns: 40 },
  );
  copies.dispose();
});

/** A store with fallback copies on `ctx` and fake MoE layers whose route observers the test calls. */
async function observedStore(
  backgroundLoads: import("../../mod.ts").BackgroundLoadPolicy | undefined,
  cap = 6,
) {
  const ctx = await storeContext(new MemorySource(modelBytes()));
  const copies = await loadFallbackCopies(ctx.backend, ctx.source, ctx.locations, { type: Q4 });
  const s = await StreamingExpertStore.create(ctx, {
    expertBudgetBytes: cap * EXPERT_BYTES,
    fallback: { weights: copies.weights, criticalWeight: 0.9, backgroundLoads },
  });
  type Obs = (l: number, t: number, r: { experts: Int32Array; weights: Float32Array }) => void;
  const layers = ctx.locations.map(() => ({ observers: [] as Obs[] }));
  s.attach(layers as unknown as Parameters<StreamingExpertStore["attach"]>[0]);
  /** One decode token at `layer`: route (observers), then ensure. */
  const step = async (layer: number, experts: number[], weights: number[]): Promise<void> => {
    const r = { experts: Int32Array.from(experts), weights: Float32Array.from(weights) };
    for (const o of layers[layer].observers) o(layer, 0, r);
    await s.ensure(layer, experts);
  };
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 50 && s.memory().loading > 0; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  return {
    s,
    step,
    settle,
    dispose: () => {
      s.dispose();
      copies.dispose();
    },
  };
}

Deno.test("fallback background loads: by gate weight share, by routing frequency, at most maxPerToken per pass", async () => {
  // by weight only: the 0.7 expert loads in the background, the 0.3 one does not
  {
    const t = await observedStore({ minWeight: 0.5, minFrequency: Infinity, maxPerToken: 8 });
    await t.step(0, [1, 2], [0.7, 0.3]);
    const st = t.s.stats();
    assert.equal(st.fallbackHits, 2);
    assert.equal(st.prefetches, 1);
    await t.settle();
    await t.step(0, [1, 2], [0.7, 0.3]);
    assert.equal(t.s.stats().perLayer![0].hits, 1, "expert 1 now full precision");
    t.dispose();
  }
  // shares, not raw weights: an unnormalized router's 0.06 of 0.1 routed is a share of 0.6
  {
    const t = await observedStore({ minWeight: 0.5, minFrequency: Infinity, maxPerToken: 8 });
    await t.step(0, [1, 2], [0.06, 0.04]);
    assert.equal(t.s.stats().prefetches, 1);
    t.dispose();
  }
  // never by weight, by frequency: an expert routed every token passes 2× the uniform share
  // (2/8) once its decayed count (1 − (7/8)^n)·8 reaches 4, i.e. on its sixth token; one
  // routed every fourth token never does (its count stays below 2.5)
  {
    const t = await observedStore({ minWeight: 2, minFrequency: 2, maxPerToken: 8 });
    const loads: number[] = [];
    for (let i = 0; i < 7; i++) {
      await t.step(0, [3, 4 + (i % 4)], [0.4, 0.6]);
      loads.push(t.s.stats().perLayer![0].prefetches);
      await t.settle();
    }
    assert.deepEqual(loads, [0, 0, 0, 0, 0, 1, 1]);
    assert.equal(t.s.stats().perLayer![0].hits, 1, "the seventh token finds expert 3 loaded");
    t.dispose();
  }
  // at most maxPerToken per forward pass (a pass starts at the first MoE layer's first token)
  {
    const t = await observedStore({ minWeight: 0, maxPerToken: 1 });
    await t.step(0, [1, 2], [0.5, 0.5]);
    await t.step(1, [1, 2], [0.5, 0.5]);
    assert.equal(t.s.stats().prefetches, 1, "one per pass");
    await t.step(0, [5, 6], [0.5, 0.5]);
    assert.equal(t.s.stats().prefetches, 2, "a new pass may queue one more");
    t.dispose();
  }
  // loadOnFallback false wins over any policy
  {
    const ctx = await storeContext(new MemorySource(modelBytes()));
    const copies = await loadFallbackCopies(ctx.backend, ctx.source, ctx.locations, { type: Q4 });
    const s = await StreamingExpertStore.create(ctx, {
      expertBudgetBytes: 6 * EXPERT_BYTES,
      fallback: {
        weights: copies.weights,
        criticalWeight: Infinity,
        loadOnFallback: false,
        backgroundLoads: { minWeight: 0 },
      },
    });
    await s.ensure(0, [1, 2]);
    assert.equal(s.stats().prefetches, 0);
    s.dispose();
    copies.dispose();
  }
});

Deno.test("fallback background loads: text form and bad values are typed errors", async () => {
  const { parseBackgroundLoads } = await import("./streaming_options.ts");
  assert.deepEqual(parseBackgroundLoads("all"), { minWeight: 0, maxPerToken: Infinity });
  assert.equal(parseBackgroundLoads("none"), null);
  assert.deepEqual(parseBackgroundLoads("weight=0.6, per-token=inf"), {
    minWeight: 0.6,
    maxPerToken: Infinity,
  });
  assert.deepEqual(parseBackgroundLoads("freq=3"), { minFrequency: 3 });
  for (const bad of ["", "weight", "weight=-1", "speed=2", "weight=1,weight=2", "per-token=x"]) {
    assert.throws(() => parseBackgroundLoads(bad), isStoreError("bad_option"), bad);
  }
  const ctx = await storeContext(new MemorySource(modelBytes()));
  for (const backgroundLoads of [{ minWeight: -1 }, { maxPerToken: NaN }]) {
    await assert.rejects(
      StreamingExpertStore.create(ctx, {
        expertBudgetBytes: 4 * EXPERT_BYTES,
        fallback: { weights: () => null, backgroundLoads },
      }),
      isStoreError("bad_option"),
    );
  }
});
