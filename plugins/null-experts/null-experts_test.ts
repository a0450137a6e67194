import assert from "node:assert/strict";
import type { Expert } from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  SPEC,
  tempDir,
} from "../../core/plugin/plugin_test_util.ts";

const N = SPEC.nEmbd!;
const CONST = Array.from({ length: N }, (_, i) => Math.sin(i) / 4);

/** Reference experts written here: 0 → zero, 1 → 0.5·x, 2 (layer 1 only) → CONST. */
function refExpert(e: Expert): Expert {
  const f = (x: Float32Array, n: number, out: Float32Array): void => {
    for (let t = 0; t < n; t++) {
      for (let c = 0; c < N; c++) {
        const i = t * N + c;
        out[i] = e.index === 0 ? 0 : e.index === 1 ? 0.5 * x[i] : CONST[c];
      }
    }
  };
  const replaced = e.index === 0 || e.index === 1 || (e.index === 2 && e.layer === 1);
  return replaced ? { kind: "ref", layer: e.layer, index: e.index, forward: f } : e;
}

Deno.test("null-experts: zero, copy and constant experts change outputs exactly as written", async () => {
  const dir = await tempDir();
  try {
    const experts = [
      { layer: "*", index: 0, kind: "zero" },
      { layer: "*", index: 1, kind: "copy", scale: 0.5 },
      { layer: 1, index: 2, kind: "constant", value: CONST },
    ];
    const { model } = await loadWithPlugins(dir, [{ use: "null-experts", config: { experts } }]);
    const kinds = model.transformer.moe.map((l) => l!.spec.experts.map((e) => e.kind).join(","));
    assert.deepEqual(kinds, ["zero,copy,swiglu,swiglu", "zero,copy,constant,swiglu"]);
    const got = await logitsOf(model);
    assertClose(
      got,
      await logitsOf(await loadTestModel({ wrapExpert: refExpert })),
      1e-6,
      "logits",
    );
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-3, "logits vs FFN experts");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("null-experts: constant needs a value; bad sizes and indices are typed errors", async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(
      loadWithPlugins(dir, [{
        use: "null-experts",
        config: { experts: [{ layer: 0, index: 0, kind: "constant" }] },
      }]),
      (e: Error & { details?: { problems?: { path: string; code: string }[] } }) =>
        e.name === "ManifestError" &&
        e.details!.problems!.some((p) => /experts\[0\]\.value/.test(p.path)),
    );
    await assert.rejects(
      loadWithPlugins(dir, [{
        use: "null-experts",
        config: { experts: [{ layer: 0, index: 0, kind: "constant", value: [1, 2] }] },
      }]),
      (e: Error) =>
        e.name === "PluginError" && /expertKinds/.test(e.message) && /n_embd/.test(e.message),
    );
    await assert.rejects(
      loadWithPlugins(dir, [{
        use: "null-experts",
        config: { experts: [{ layer: "*", index: 4, kind: "zero" }] },
      }]),
      (e: Error) => e.name === "PluginError" && /does not exist/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});
