/**
 * Named adapters (`adapters` in a model manifest): several adapters over one
 * set of base weights, picked per sequence. One batch mixing the base model
 * and two adapters gives each sequence exactly the tokens of a model loaded
 * with that adapter alone; a named adapter may only use the `adapter` hook.
 */
import assert from "node:assert/strict";
import { BatchScheduler, type SequenceRequest } from "../../core/generate/batch.ts";
import { type LinearAdapter, loadFromManifest, type Model } from "../../mod.ts";

const EX = new URL("../../examples/", import.meta.url);
const ROOT = new URL("../../", import.meta.url);

/** The two shipped adapters as one manifest (paths relative to the repository root). */
export function multiAdapterManifest(backend = "ref"): Record<string, unknown> {
  return {
    manifestVersion: 1,
    model: { source: "core/model/default_model.gguf" },
    backend,
    plugins: [],
    adapters: {
      sea: [{
        use: "mola",
        config: { adapter: "examples/mola-sea/adapter", experts: "2468", topK: 2 },
      }],
      qa: [{ use: "smora", config: { adapter: "examples/smora-qa/adapter", activeRanks: 4 } }],
    },
  };
}

async function run(
  model: Model,
  reqs: readonly { prompt: number[]; adapters?: readonly LinearAdapter[] }[],
): Promise<number[][]> {
  const sched = new BatchScheduler(model, { maxSequences: 8 });
  const seqs = reqs.map((r) => sched.submit({ ...r, maxTokens: 12 } as SequenceRequest));
  return await Promise.all(seqs.map(async (s) => {
    const out: number[] = [];
    for await (const step of s.steps) out.push(step.token);
    return out;
  }));
}

Deno.test("named adapters: one batch of base + two adapters equals each adapter's model alone, and the base weights are shared", async () => {
  const { model, adapters } = await loadFromManifest(multiAdapterManifest() as never, {
    baseUrl: ROOT,
  });
  assert.deepEqual([...adapters.keys()], ["sea", "qa"]);
  const sea = adapters.get("sea")!, qa = adapters.get("qa")!;
  assert.ok(sea.adapters.length > 0 && qa.adapters.length > 0);
  assert.equal(model.transformer.adapters.length, 0, "named adapters are not the model's own");
  const alone = async (name: string): Promise<Model> =>
    (await loadFromManifest(new URL(`${name}/model.json`, EX), { backend: "ref" })).model;
  const seaModel = await alone("mola-sea"), qaModel = await alone("smora-qa");
  try {
    const tok = model.tokenizer;
    const p1 = tok.encode("The little fox"), p2 = tok.encode("Tom sailed a small boat to");
    const p3 = tok.encode("Tom found a blue ball in the park. Q: What did Tom find? A:");
    // interleaved on purpose: sequences of one adapter are not adjacent in submission order
    const got = await run(model, [
      { prompt: p1, adapters: sea.adapters },
      { prompt: p1 },
      { prompt: p3, adapters: qa.adapters },
      { prompt: p2, adapters: sea.adapters },
      { prompt: p1, adapters: qa.adapters },
    ]);
    const [seaP1, seaP2] = await run(seaModel, [{ prompt: p1 }, { prompt: p2 }]);
    const [qaP3, qaP1] = await run(qaModel, [{ prompt: p3 }, { prompt: p1 }]);
    const [baseP1] = await run(model, [{ prompt: p1 }]);
    assert.deepEqual(got, [seaP1, baseP1, qaP3, seaP2, qaP1]);
    // three different texts for the same prompt
    assert.notDeepEqual(seaP1, baseP1);
    assert.notDeepEqual(qaP1, baseP1);
    assert.notDeepEqual(seaP1, qaP1);
    assert.equal(model.transformer.adapters.length, 0, "the model's own adapters are restored");
  } finally {
    for (const m of [model, seaModel, qaModel]) m.dispose();
  }
});

Deno.test("named adapters: only the adapter hook, valid names, every problem reported before loading", async () => {
  const m = multiAdapterManifest();
  const bad = {
    ...m,
    adapters: {
      "sea": (m.adapters as Record<string, unknown>).sea,
      "bias": [{ use: "router-bias", config: { bias: { "0": [0, 0, 1, 0, 0, 0, 0, 0] } } }],
      "no good": [{ use: "lora", config: { adapter: "x" } }],
      "empty": [],
      "merged": [{ use: "lora", config: { adapter: "x", merge: true } }],
    },
  };
  await assert.rejects(
    loadFromManifest(bad as never, { baseUrl: ROOT }),
    (e: Error & { code?: string }) => {
      assert.equal(e.name, "ManifestError");
      assert.match(e.message, /adapter_hooks_only/);
      assert.match(e.message, /adapters\.bias/);
      assert.match(e.message, /no good/);
      assert.match(e.message, /empty/);
      assert.match(e.message, /adapters\.merged: plugins\[0\] \(lora\): config\.merge/);
      assert.match(e.message, /merge_shared/);
      assert.doesNotMatch(e.message, /\(lora\)[^\n]*adapter_hooks_only/, "lora is an adapter");
      return true;
    },
  );
});
