import assert from "node:assert/strict";
import type { LinearAdapter, LinearName } from "../../mod.ts";
import {
  denseBA,
  dotRow,
  PROJS,
  refAdapter,
  shortName,
  smoraFixture,
} from "../../core/plugin/adapters_test_util.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  tempDir,
  writeAdapter,
} from "../../core/plugin/plugin_test_util.ts";

/**
 * SMoRA written out (docs/specs-lora-moe.md §2.1): g = sigmoid(W_g·x) repeated P times, g' = g + b,
 * top-k ranks of g', ĝ = g'_I / Σ g'_I, ΔW = α Σ_{i∈I} ĝ_i · B[:,i]·A_i.
 */
function reference(
  fx: ReturnType<typeof smoraFixture>,
  rank: number,
  part: number,
  k: number,
  alpha: number,
): LinearAdapter {
  const key = (l: number, p: LinearName) => `${l}:${shortName(p)}`;
  return refAdapter((l, p) => fx.mods.has(key(l, p)), (l, p, x) => {
    const m = fx.mods.get(key(l, p))!;
    const { dIn, dOut } = PROJS[shortName(p)];
    const g = Array.from(
      { length: rank },
      (_, i) => 1 / (1 + Math.exp(-dotRow(m.router, Math.floor(i / part), dIn, x))) + m.bias[i],
    );
    const top = g.map((_, i) => i).sort((a, b) => g[b] - g[a] || a - b).slice(0, k);
    const sum = top.reduce((a, i) => a + g[i], 0);
    return denseBA(
      top.map((i) => ({ a: m.a, b: m.b, rank, c: (alpha * g[i]) / sum, cols: [i] })),
      dIn,
      dOut,
    );
  });
}

Deno.test("smora: top-k ranks of sigmoid gate + bias change outputs exactly as the SRMoLE math says", async () => {
  const dir = await tempDir();
  try {
    const fx = smoraFixture(31, 2, ["q", "v", "o"], 8);
    const cfg = { peft_type: "SRMOLE", r: 8, lora_alpha: 4, activate_r: 3, rank_partition: 1 };
    await writeAdapter(`${dir}/ad`, cfg, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{ use: "smora", config: { adapter: "ad" } }]);
    const got = await logitsOf(model);
    assertClose(
      got,
      await logitsOf(await loadTestModel({ adapters: [reference(fx, 8, 1, 3, 4)] })),
      1e-4,
      "logits",
    );
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-2, "logits vs base");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("smora: rank blocks (partition 2) and config overrides of k", async () => {
  const dir = await tempDir();
  try {
    const fx = smoraFixture(32, 2, ["k", "o"], 8, 2);
    await writeAdapter(`${dir}/ad`, {
      peft_type: "SRMOLE",
      r: 8,
      lora_alpha: 2,
      activate_r: 8,
      rank_partition: 2,
    }, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{
      use: "smora",
      config: { adapter: "ad", activeRanks: 4 },
    }]);
    assertClose(
      await logitsOf(model),
      await logitsOf(await loadTestModel({ adapters: [reference(fx, 8, 2, 4, 2)] })),
      1e-4,
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("smora: a missing k, a partition that does not divide r and a plain LoRA are typed errors", async () => {
  const dir = await tempDir();
  try {
    const fx = smoraFixture(33, 2, ["q"], 6);
    await writeAdapter(`${dir}/ad`, { r: 6, lora_alpha: 2 }, fx.tensors);
    const rejects = (config: unknown, code: string) =>
      assert.rejects(
        loadWithPlugins(dir, [{ use: "smora", config }]),
        (e: Error & { code?: string }) =>
          e.name === "PluginError" && e.code === code && /plugin 'smora'/.test(e.message),
      );
    await rejects({ adapter: "ad" }, "bad_config");
    await rejects({ adapter: "ad", activeRanks: 2, partition: 4 }, "bad_config");
    await rejects({ adapter: "ad", activeRanks: 7 }, "bad_config");
    const plain = { ...fx.tensors };
    for (const k of Object.keys(plain)) if (k.includes("lora_router")) delete plain[k];
    await writeAdapter(`${dir}/plain`, { r: 6 }, plain);
    await rejects({ adapter: "plain", activeRanks: 2 }, "not_smora");
  } finally {
    await cleanup(dir);
  }
});
