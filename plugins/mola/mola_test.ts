import assert from "node:assert/strict";
import type { LinearAdapter, LinearName } from "../../mod.ts";
import {
  addMolaHead,
  denseBA,
  dotRow,
  molaFixture,
  PROJS,
  refAdapter,
  shortName,
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
 * MoLA written out (docs/specs-lora-moe.md §1.1): logits = W_r·x, p = softmax (f64 here),
 * top-K with ties to the lower index, w = p_sel / Σ p_sel, ΔW = Σ w_j·s·B_j·A_j.
 */
function reference(
  fx: ReturnType<typeof molaFixture>,
  ks: number[],
  s: number,
  rank: number,
): LinearAdapter {
  const key = (l: number, p: LinearName) => `${l}:${shortName(p)}`;
  return refAdapter((l, p) => fx.mods.has(key(l, p)), (l, p, x) => {
    const m = fx.mods.get(key(l, p))!;
    const { dIn, dOut } = PROJS[shortName(p)];
    const logits = m.experts.map((_, e) => dotRow(m.router, e, dIn, x));
    const mx = Math.max(...logits);
    const prob = logits.map((v) => Math.exp(v - mx));
    const z = prob.reduce((a, b) => a + b, 0);
    const k = ks[l < 0 ? ks.length - 1 : l]; // the output head uses the last layer's k
    const order = prob.map((_, i) => i).sort((a, b) => prob[b] - prob[a] || a - b).slice(0, k);
    const sum = order.reduce((a, i) => a + prob[i] / z, 0);
    return denseBA(
      order.map((i) => ({ ...m.experts[i], rank, c: (prob[i] / z / sum) * s })),
      dIn,
      dOut,
    );
  });
}

Deno.test('mola: per-layer expert counts ("24"), top-k [1, 2] and the output head follow the MoLA math', async () => {
  const dir = await tempDir();
  try {
    const fx = molaFixture(21, [2, 4], ["q", "k", "o"], 4);
    addMolaHead(fx, 24, 3, 4);
    await writeAdapter(`${dir}/ad`, {
      peft_type: "LORA",
      r: [4, 4],
      lora_alpha: 8,
      target_modules: ["q_proj"],
    }, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{
      use: "mola",
      config: { adapter: "ad", experts: "24", topK: [1, 2] },
    }]);
    const got = await logitsOf(model);
    const want = await logitsOf(
      await loadTestModel({ adapters: [reference(fx, [1, 2], 8 / 4, 4)] }),
    );
    assertClose(got, want, 1e-4, "logits");
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-2, "logits vs base");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("mola: MoE-PEFT keys (experts.{e}, moe_gate) with top_k from adapter_config and rsLoRA scaling", async () => {
  const dir = await tempDir();
  try {
    const fx = molaFixture(22, [3, 3], ["v", "o"], 4, "moe-peft");
    const cfg = {
      peft_type: "MOLA",
      routing_strategy: "mola",
      num_experts: 3,
      top_k: 2,
      r: 4,
      lora_alpha: 16,
      use_rslora: true,
    };
    await writeAdapter(`${dir}/ad`, cfg, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{
      use: "mola",
      config: { adapter: "ad", experts: 3 },
    }]);
    const want = await logitsOf(
      await loadTestModel({ adapters: [reference(fx, [2, 2], 16 / Math.sqrt(4), 4)] }),
    );
    assertClose(await logitsOf(model), want, 1e-4, "logits");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("mola: count mismatch, top-k above E, MLP targets and missing experts are typed PluginErrors", async () => {
  const dir = await tempDir();
  try {
    const fx = molaFixture(23, [2, 2], ["q"], 2);
    await writeAdapter(`${dir}/ad`, { r: 2, lora_alpha: 4 }, fx.tensors);
    const rejects = (config: unknown, code: string, hook: string) =>
      assert.rejects(
        loadWithPlugins(dir, [{ use: "mola", config }]),
        (e: Error & { code?: string }) =>
          e.name === "PluginError" && e.code === code &&
          e.message.includes(`plugin 'mola' (${hook})`),
      );
    await rejects({ adapter: "ad", experts: "8642" }, "bad_config", "adapter"); // 4 groups over 2 layers
    await rejects({ adapter: "ad", experts: [2, 3] }, "expert_count_mismatch", "adapter");
    await rejects({ adapter: "ad", topK: 3 }, "bad_config", "adapter");
    const mlp = { ...fx.tensors };
    const pre = "base_model.model.model.layers.0.mlp.gate_proj";
    mlp[`${pre}.router.router.weight`] = { shape: [1, 32], data: new Float32Array(32) };
    mlp[`${pre}.lora_A_0.weight`] = { shape: [2, 32], data: new Float32Array(64) };
    mlp[`${pre}.lora_B_0.weight`] = { shape: [48, 2], data: new Float32Array(96) };
    await writeAdapter(`${dir}/mlp`, { r: 2, lora_alpha: 4 }, mlp);
    await rejects({ adapter: "mlp" }, "unsupported_target", "adapter");
    // the same adapter restricted to attention loads, and equals the attention-only adapter
    const only = await logitsOf(
      (await loadWithPlugins(dir, [{
        use: "mola",
        config: { adapter: "mlp", targets: ["attn_q"] },
      }])).model,
    );
    assertClose(
      only,
      await logitsOf(
        (await loadWithPlugins(dir, [{ use: "mola", config: { adapter: "ad" } }])).model,
      ),
      0,
    );
    const gap = { ...fx.tensors };
    delete gap["base_model.model.model.layers.1.self_attn.q_proj.lora_B_1.weight"];
    await writeAdapter(`${dir}/gap`, { r: 2 }, gap);
    await rejects({ adapter: "gap" }, "missing_expert", "setup");
    await writeAdapter(`${dir}/rank`, { r: [2, 3] }, fx.tensors);
    await rejects({ adapter: "rank" }, "rank_mismatch", "setup");
  } finally {
    await cleanup(dir);
  }
});
