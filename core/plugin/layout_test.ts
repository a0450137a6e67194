/**
 * `layout: "hf"`: a q_proj/k_proj LoRA trained on an HF Llama-family
 * checkpoint has its `lora_B` rows in the HF order, while llama.cpp's
 * converter permuted the GGUF Q/K rows for its NORM RoPE. With `"hf"` the
 * plugins permute those rows; the result equals the same adapter written in
 * the GGUF order (by an independent index map here), for LoRA, MoLA and
 * SMoRA. Other projections and NEOX-RoPE models are left as they are.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { loadFromManifest } from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  dirUrl,
  gaussian,
  loadWithPlugins,
  logitsOf,
  modelBytes,
  SPEC,
  tempDir,
  type TestTensor,
  writeAdapter,
} from "./plugin_test_util.ts";

const D = SPEC.nEmbd!, HEADS = SPEC.nHead!, KV = SPEC.nHeadKv!, HD = D / HEADS;
const OUT: Record<string, [number, number]> = { q: [D, HEADS], k: [KV * HD, KV], v: [KV * HD, 0] };

/** HF row r of a Q/K matrix → its GGUF row (head h, half t, index j → h·d + 2j + t). */
function toGguf(m: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  if (heads === 0) return m;
  const d = rows / heads, half = d / 2, out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) {
    const h = Math.floor(r / d), w = r % d, t = Math.floor(w / half), j = w % half;
    const to = h * d + 2 * j + t;
    for (let c = 0; c < cols; c++) out[to * cols + c] = m[r * cols + c];
  }
  return out;
}

type Kind = "lora" | "mola" | "smora";

/** One adapter on `projs` of both layers: HF-order tensors, and the same in GGUF order. */
function fixture(seed: number, kind: Kind, projs: readonly string[], r: number) {
  const g = gaussian(seed);
  const hf: Record<string, TestTensor> = {}, gguf: Record<string, TestTensor> = {};
  for (let l = 0; l < SPEC.nLayer!; l++) {
    for (const p of projs) {
      const [dOut, heads] = OUT[p];
      const m = `base_model.model.model.layers.${l}.self_attn.${p}_proj`;
      const a = g(r * D, 0.3), b = g(dOut * r, 0.3);
      const put = (name: string, t: TestTensor) => (hf[name] = t, gguf[name] = t);
      const suffix = kind === "mola" ? "_0" : "";
      put(`${m}.lora_A${suffix}.weight`, { shape: [r, D], data: a });
      hf[`${m}.lora_B${suffix}.weight`] = { shape: [dOut, r], data: b };
      gguf[`${m}.lora_B${suffix}.weight`] = { shape: [dOut, r], data: toGguf(b, dOut, r, heads) };
      if (kind === "mola") put(`${m}.router.router.weight`, { shape: [1, D], data: g(D) });
      if (kind === "smora") put(`${m}.lora_router.weight`, { shape: [1, D], data: g(D) });
    }
  }
  return { hf, gguf };
}

const CFG: Record<Kind, (r: number) => Record<string, unknown>> = {
  lora: (r) => ({ r, lora_alpha: 8 }),
  mola: (r) => ({ r, lora_alpha: 8, top_k: 1 }),
  smora: (r) => ({ r, lora_alpha: 8, activate_r: r, rank_partition: r }),
};

Deno.test("layout hf: Q/K lora_B rows in HF order give the GGUF-order adapter's logits (LoRA, MoLA, SMoRA)", async () => {
  const dir = await tempDir();
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.constantFrom<Kind>("lora", "mola", "smora"),
        fc.subarray(["q", "k", "v"], { minLength: 1 }),
        fc.integer({ min: 1, max: 4 }),
        async (seed, kind, projs, r) => {
          const fx = fixture(seed, kind, projs, r);
          await writeAdapter(`${dir}/hf`, CFG[kind](r), fx.hf);
          await writeAdapter(`${dir}/gguf`, CFG[kind](r), fx.gguf);
          const load = async (adapter: string, layout?: string) =>
            await logitsOf(
              (await loadWithPlugins(dir, [{
                use: kind,
                config: { adapter, ...(layout ? { layout } : {}) },
              }])).model,
            );
          const viaHf = await load("hf", "hf");
          assertClose(viaHf, await load("gguf"), 1e-6);
          assertClose(await load("gguf", "gguf"), await load("gguf"), 0);
          // Q/K rows really move (v rows never do)
          const hfAsIs = await load("hf");
          if (projs.some((p) => p !== "v")) assertDiffers(viaHf, hfAsIs, 1e-7, "permuted");
          else assertClose(viaHf, hfAsIs, 0);
        },
      ),
      { numRuns: 15 },
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("layout hf: no permutation on a NEOX-RoPE model (qwen2moe); merge with hf is a typed error", async () => {
  const dir = await tempDir();
  try {
    const fx = fixture(3, "lora", ["q", "k"], 2);
    await writeAdapter(`${dir}/hf`, CFG.lora(2), fx.hf);
    await Deno.writeFile(`${dir}/qwen.gguf`, modelBytes({ ...SPEC, arch: "qwen2moe" }));
    const load = async (layout: string) =>
      await logitsOf(
        (await loadFromManifest({
          manifestVersion: 1,
          model: { source: "qwen.gguf" },
          backend: "ref",
          plugins: [{ use: "lora", config: { adapter: "hf", layout } }],
        } as never, { baseUrl: dirUrl(dir) })).model,
      );
    assertClose(await load("hf"), await load("gguf"), 0);
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "hf", layout: "hf", merge: true } }]),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "bad_config",
    );
  } finally {
    await cleanup(dir);
  }
});
