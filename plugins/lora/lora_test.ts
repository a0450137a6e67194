import assert from "node:assert/strict";
import { type LinearAdapter, type LinearName, loadFromManifest, loraScale } from "../../mod.ts";
import {
  denseBA,
  loraFixture,
  molaFixture,
  PROJS,
  refAdapter,
  shortName,
} from "../../core/plugin/adapters_test_util.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  dirUrl,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  manifestFor,
  SPEC,
  tempDir,
  writeAdapter,
  writeModel,
} from "../../core/plugin/plugin_test_util.ts";

const TARGETS = ["0:q", "1:v", "1:o", "-1:lm_head"];
const CONFIG = {
  peft_type: "LORA",
  r: 4,
  lora_alpha: 16,
  rank_pattern: { "v_proj": 4 },
  alpha_pattern: { "o_proj": 8 },
  target_modules: ["q_proj", "v_proj", "o_proj", "lm_head"],
};

/** The reference: ΔW = s·B·A with s written out by hand (o_proj: 8/4 from alpha_pattern, others 16/4), plus s·b. */
function reference(
  fx: ReturnType<typeof loraFixture>,
  bias?: { key: string; b: Float32Array },
): LinearAdapter {
  const key = (l: number, p: LinearName) => `${l}:${shortName(p)}`;
  const s = (p: LinearName) => (p === "attn_output" ? 2 : 4);
  const base = refAdapter(
    (l, p) => fx.pairs.has(key(l, p)),
    (l, p) =>
      denseBA(
        [{ ...fx.pairs.get(key(l, p))!, c: s(p) }],
        PROJS[shortName(p)].dIn,
        PROJS[shortName(p)].dOut,
      ),
  );
  if (!bias) return base;
  return {
    applies: base.applies,
    apply(l, p, x, n, out) {
      base.apply(l, p, x, n, out);
      if (key(l, p) !== bias.key) return;
      const dOut = PROJS[shortName(p)].dOut;
      for (let t = 0; t < n; t++) {
        for (let r = 0; r < dOut; r++) out[t * dOut + r] += s(p) * bias.b[r];
      }
    },
  };
}

/** Round to bf16 by truncation, as the fixture writer stores it. */
function truncBf16(x: number): number {
  const u = new Uint32Array(Float32Array.of(x).buffer);
  u[0] &= 0xffff0000;
  return new Float32Array(u.buffer)[0];
}

Deno.test("lora: outputs equal W·x + s·B·A·x with per-module rank/alpha patterns (F32, F16, BF16 tensors)", async () => {
  const dir = await tempDir();
  try {
    const fx = loraFixture(5, TARGETS, 4);
    // F16/BF16 storage: the reference must see the rounded values
    const q = `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`;
    const v = `base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight`;
    fx.tensors[q] = { ...fx.tensors[q], dtype: "BF16" };
    fx.tensors[v] = { ...fx.tensors[v], dtype: "F16" };
    const bf = fx.pairs.get("0:q")!.a;
    for (let i = 0; i < bf.length; i++) bf[i] = truncBf16(bf[i]);
    const h = fx.pairs.get("1:v")!.b;
    for (let i = 0; i < h.length; i++) h[i] = roundF16(h[i]);
    await writeAdapter(`${dir}/ad`, CONFIG, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ad" } }]);
    const got = await logitsOf(model);
    const want = await logitsOf(await loadTestModel({ adapters: [reference(fx)] }));
    assertClose(got, want, 1e-4, "logits");
    assertDiffers(got, await logitsOf(await loadTestModel()), 1e-2, "logits vs base");
  } finally {
    await cleanup(dir);
  }
});

function roundF16(x: number): number {
  const f = Float32Array.of(x), u = new Uint32Array(f.buffer)[0];
  const e = ((u >>> 23) & 0xff) - 127;
  if (e < -14) return 0; // test values are far from subnormal f16 range
  const man = u & 0x7fffff;
  const kept = man >>> 13;
  return Math.sign(x) * (1 + kept / 1024) * 2 ** e;
}

Deno.test("lora: lora_B.bias adds s·b; rsLoRA scales by alpha/√r", async () => {
  const dir = await tempDir();
  try {
    const fx = loraFixture(6, ["0:q", "1:v"], 4);
    const b = Float32Array.from({ length: 32 }, (_, i) => Math.cos(i) / 3);
    fx.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"] = {
      shape: [32],
      data: b,
    };
    await writeAdapter(`${dir}/ad`, { peft_type: "LORA", r: 4, lora_alpha: 16 }, fx.tensors);
    const { model } = await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ad" } }]);
    const want = await logitsOf(
      await loadTestModel({ adapters: [reference(fx, { key: "0:q", b })] }),
    );
    assertClose(await logitsOf(model), want, 1e-4, "logits");
  } finally {
    await cleanup(dir);
  }
  assert.equal(loraScale(16, 4, true), 8);
  assert.equal(loraScale(16, 4), 4);
});

Deno.test("lora: merged weights give the same outputs as the unmerged term; config.scale scales it", async () => {
  const dir = await tempDir();
  try {
    const fx = loraFixture(7, TARGETS, 4);
    await writeAdapter(`${dir}/ad`, CONFIG, fx.tensors);
    const unmerged = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ad" } }])).model,
    );
    const r = await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ad", merge: true } }]);
    assert.equal(r.model.transformer.adapters.length, 0);
    assertClose(await logitsOf(r.model), unmerged, 1e-4, "merged vs unmerged");
    const off = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ad", scale: 0 } }])).model,
    );
    assertClose(off, await logitsOf(await loadTestModel()), 1e-6, "scale 0 = base");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("lora: merging into a tied output head, a foreign layout or a mismatched shape are typed PluginErrors", async () => {
  const dir = await tempDir();
  try {
    await writeAdapter(`${dir}/ad`, CONFIG, loraFixture(8, ["-1:lm_head"], 4).tensors);
    const tied = await writeModel(dir, { ...SPEC, tiedOutput: true });
    await assert.rejects(
      loadFromManifest(
        manifestFor(tied, [{ use: "lora", config: { adapter: "ad", merge: true } }]) as never,
        {
          baseUrl: dirUrl(dir),
        },
      ),
      (e: Error) => e.name === "PluginError" && /merge_incomplete|never loaded/.test(e.message),
    );
    await writeAdapter(`${dir}/mola`, { r: 2 }, molaFixture(1, [2, 2], ["q"], 2).tensors);
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "mola" } }]),
      (e: Error & { code?: string }) =>
        e.name === "PluginError" && e.code === "not_plain_lora" && /\(setup\)/.test(e.message),
    );
    const bad = loraFixture(9, ["0:q"], 2);
    bad.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = {
      shape: [2, 16],
      data: new Float32Array(32),
    };
    await writeAdapter(`${dir}/bad`, { r: 2, lora_alpha: 2 }, bad.tensors);
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "bad" } }]),
      (e: Error & { code?: string }) =>
        e.name === "PluginError" && e.code === "shape_mismatch" && /\(adapter\)/.test(e.message),
    );
    await writeAdapter(`${dir}/rank`, { r: 8, lora_alpha: 2 }, loraFixture(9, ["0:q"], 2).tensors);
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "rank" } }]),
      (e: Error & { code?: string }) => e.code === "rank_mismatch",
    );
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "missing" } }]),
      (e: Error & { code?: string; cause?: unknown }) =>
        e.name === "PluginError" && e.code === "not_found" &&
        (e.cause as Error).name === "ManifestError",
    );
  } finally {
    await cleanup(dir);
  }
});
