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
import { allowedMask, maskedRouter } from "./mod.ts";

/** Reference: softmax renormalized over the allowed experts, then the model's top-k over them. */
function refMasked(allowed: number[]): Router {
  return {
    name: "ref",
    route(logits) {
      const sub = allowed.map((e) => logits[e]);
      const r = refTopK(sub, Math.min(SPEC.nExpertUsed!, allowed.length));
      return { experts: Int32Array.from(r.experts, (i) => allowed[i]), weights: r.weights };
    },
  };
}

Deno.test("expert-mask: outputs equal a model routed over the allowed experts only", async () => {
  const dir = await tempDir();
  try {
    const config = { include: { "0": [0, 1, 3] }, exclude: { "*": [1] } };
    const { model } = await loadWithPlugins(dir, [{ use: "expert-mask", config }]);
    const used = new Set<string>();
    for (const l of model.transformer.moe) {
      l?.observers.push((layer, _t, r) => r.experts.forEach((e) => used.add(`${layer}:${e}`)));
    }
    const got = await logitsOf(model);
    assert.ok(
      !used.has("0:1") && !used.has("0:2") && !used.has("1:1"),
      `masked experts ran: ${[...used]}`,
    );
    const want = await logitsOf(
      await loadTestModel({
        wrapRouter: (_r, layer) => refMasked(layer === 0 ? [0, 3] : [0, 2, 3]),
      }),
    );
    assertClose(got, want, 1e-5, "logits");
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-3, "logits vs unmasked");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("expert-mask: one allowed expert gets weight 1 even with k = 2", () => {
  const inner: Router = { name: "ref", route: (l) => refTopK(l, 2) };
  const r = maskedRouter(inner, Uint8Array.from([0, 0, 1, 0])).route(
    Float32Array.from([5, 4, -3, 1]),
    0,
  );
  assert.deepEqual([...r.experts], [2]);
  assertClose(r.weights, [1], 1e-7);
});

Deno.test("expert-mask: masking everything or naming a missing expert is a typed error", async () => {
  assert.throws(
    () => allowedMask({ exclude: { "*": [0, 1] } }, 0, 2),
    (e: Error) => e.name === "PluginError",
  );
  assert.throws(() => allowedMask({ include: { "0": [9] } }, 0, 4), /expert 9 does not exist/);
  assert.equal(allowedMask({ include: { "1": [0] } }, 0, 4), null);
  const dir = await tempDir();
  try {
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "expert-mask", config: { exclude: { "*": [0, 1, 2, 3] } } }]),
      (e: Error) =>
        e.name === "PluginError" && /expert-mask/.test(e.message) && /every expert/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});
