import assert from "node:assert/strict";
import type { Router } from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  refTopK,
  SPEC,
  tempDir,
} from "../../core/plugin/plugin_test_util.ts";
import { biasedRouter } from "./mod.ts";

const BIAS = { "0": [1.5, -1, 0, 0.25], "*": [-2, 0, 2, 0] };

Deno.test("router-bias: outputs equal a model whose router sees logits + bias[layer]", async () => {
  const dir = await tempDir();
  try {
    const { model } = await loadWithPlugins(dir, [{ use: "router-bias", config: { bias: BIAS } }]);
    const got = await logitsOf(model);
    const ref = (layer: number): Router => ({
      name: "ref",
      route: (l) =>
        refTopK(l.map((v, e) => v + (layer === 0 ? BIAS["0"] : BIAS["*"])[e]), SPEC.nExpertUsed!),
    });
    const want = await logitsOf(await loadTestModel({ wrapRouter: (_r, layer) => ref(layer) }));
    assertClose(got, want, 1e-5, "logits");
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-3, "logits vs unbiased");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("router-bias: wrong bias length or layer is a stamped PluginError; config schema rejects bad keys", async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "router-bias", config: { bias: { "*": [1, 2] } } }]),
      (e: Error) =>
        e.name === "PluginError" && /plugin 'router-bias' \(router\)/.test(e.message) &&
        /4 experts/.test(e.message),
    );
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "router-bias", config: { bias: { "7": [0, 0, 0, 0] } } }]),
      (e: Error) => e.name === "PluginError" && /2 layers/.test(e.message),
    );
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "router-bias", config: { bias: { "layer0": [0, 0, 0, 0] } } }]),
      (e: Error & { details?: { problems?: { path: string }[] } }) =>
        e.name === "ManifestError" && e.details!.problems!.some((p) => /config/.test(p.path)),
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("router-bias: biasedRouter leaves the caller's logits untouched", () => {
  const seen: number[][] = [];
  const inner: Router = { name: "spy", route: (l) => (seen.push([...l]), refTopK(l, 1)) };
  const logits = Float32Array.from([0, 1]);
  biasedRouter(inner, Float32Array.from([2, 0])).route(logits, 0);
  assert.deepEqual([...logits], [0, 1]);
  assert.deepEqual(seen, [[2, 1]]);
});
