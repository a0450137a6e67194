/** The plugins in `examples/` work as the README section "Writing a plugin" says. */
import assert from "node:assert/strict";
import {
  type Expert,
  loadFromManifest,
  preparePlugins,
  StreamingExpertStore,
  validateModelManifest,
  validatePluginManifest,
} from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  dirUrl,
  loadTestModel,
  logitsOf,
  manifestFor,
  tempDir,
  writeModel,
} from "../../core/plugin/plugin_test_util.ts";

const EX = new URL("../../examples/", import.meta.url);

Deno.test("examples: the clamped expert kind clamps exactly the configured experts' outputs", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const use = new URL("expert-kind/", EX).pathname;
    const { model: m } = await loadFromManifest(
      manifestFor(model, [{ use, config: { experts: [0, 2], layers: [1], limit: 0.02 } }]) as never,
      { baseUrl: dirUrl(dir) },
    );
    assert.deepEqual(m.transformer.moe[1]!.spec.experts.map((e) => e.kind), [
      "clamped",
      "swiglu",
      "clamped",
      "swiglu",
    ]);
    const ref = (e: Expert): Expert =>
      e.layer === 1 && (e.index === 0 || e.index === 2)
        ? {
          ...e,
          kind: "ref",
          forward(x, n, out) {
            e.forward(x, n, out);
            for (let i = 0; i < n * 32; i++) {
              out[i] = out[i] > 0.02 ? 0.02 : out[i] < -0.02 ? -0.02 : out[i];
            }
          },
        }
        : e;
    const got = await logitsOf(m);
    assertClose(got, await logitsOf(await loadTestModel({ wrapExpert: ref })), 1e-6);
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-4, "clamping changed the outputs");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("examples: the FIFO cache policy drives the streaming store under a budget", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const use = new URL("cache-policy/", EX).pathname;
    const { model: m } = await loadFromManifest(
      manifestFor(model, [{ use, config: { keepPrefetched: true } }], {
        memory: { expertBudgetMb: 0.06 },
      }) as never,
    );
    assert.ok(m.store instanceof StreamingExpertStore);
    assert.equal(m.store.policy.name, "fifo");
    assertClose(await logitsOf(m), await logitsOf(await loadTestModel()), 0);
    assert.ok(m.store.stats().evictions > 0);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("examples: their model and plugin manifests validate", async () => {
  for (const ex of ["expert-kind", "cache-policy"]) {
    const read = async (f: string) =>
      JSON.parse(await Deno.readTextFile(new URL(`${ex}/${f}`, EX)));
    assert.deepEqual(validatePluginManifest(await read("manifest.json"), ex), []);
    const man = await read("model.json");
    assert.deepEqual(validateModelManifest(man), []);
    const { problems } = await preparePlugins(man.plugins, { baseUrl: new URL(`${ex}/`, EX) });
    assert.deepEqual(problems, []);
  }
});
