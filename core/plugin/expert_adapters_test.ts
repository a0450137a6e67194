/**
 * Adapters on the FFN: each routed expert's gate/up/down (PEFT keys
 * `experts.N.w1/w2/w3` as in Mixtral, `experts.N.gate_proj/…` as in Qwen-MoE)
 * and the dense FFN of non-MoE blocks.
 *
 * The oracle is the merged model: LoRA on expert E's projection equals the
 * model whose expert-E slice of that weight is `W + s·B·A` (written into an
 * F32 GGUF here, independently of the plugin), for every token — routed to E
 * or not — because an unrouted expert contributes nothing either way. MoLA
 * with one expert (k = 1) and SMoRA with every rank active in one gate block
 * reduce to that LoRA on any target. An expert's adapter runs only on the
 * tokens routed to it.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { readGguf } from "../formats/gguf_reader.ts";
import { MemorySource } from "../store/byte_source.ts";
import {
  type LinearName,
  loadModel,
  mergeLora,
  type Model,
  projectionAdapter,
  type SyntheticModelSpec,
} from "../../mod.ts";
import {
  assertClose,
  assertDiffers,
  cleanup,
  gaussian,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  modelBytes,
  SPEC,
  tempDir,
  type TestTensor,
  writeAdapter,
} from "./plugin_test_util.ts";

const NFF = SPEC.nFf!, D = SPEC.nEmbd!;

/** One LoRA target: GGUF weight, expert slice (-1 = whole tensor), HF module path, widths. */
interface Target {
  layer: number;
  expert: number;
  hf: string;
  tensor: string;
  dIn: number;
  dOut: number;
}

const MIXTRAL: Readonly<Record<string, [string, number, number]>> = {
  w1: ["ffn_gate_exps", D, NFF],
  w3: ["ffn_up_exps", D, NFF],
  w2: ["ffn_down_exps", NFF, D],
};
const QWEN: Readonly<Record<string, [string, number, number]>> = {
  gate_proj: ["ffn_gate_exps", D, NFF],
  up_proj: ["ffn_up_exps", D, NFF],
  down_proj: ["ffn_down_exps", NFF, D],
};
const DENSE: Readonly<Record<string, [string, number, number]>> = {
  gate_proj: ["ffn_gate", D, NFF],
  up_proj: ["ffn_up", D, NFF],
  down_proj: ["ffn_down", NFF, D],
};

function expertTarget(layer: number, expert: number, w: string, qwen = false): Target {
  const [t, dIn, dOut] = (qwen ? QWEN : MIXTRAL)[w];
  const mid = qwen ? "mlp" : "block_sparse_moe";
  return {
    layer,
    expert,
    hf: `base_model.model.model.layers.${layer}.${mid}.experts.${expert}.${w}`,
    tensor: `blk.${layer}.${t}.weight`,
    dIn,
    dOut,
  };
}

function denseTarget(layer: number, w: string): Target {
  const [t, dIn, dOut] = DENSE[w];
  return {
    layer,
    expert: -1,
    hf: `base_model.model.model.layers.${layer}.mlp.${w}`,
    tensor: `blk.${layer}.${t}.weight`,
    dIn,
    dOut,
  };
}

interface Pair {
  t: Target;
  rank: number;
  a: Float32Array;
  b: Float32Array;
  scale: number;
}

/** The model bytes with `W + s·B·A` written into each target's (expert slice of its) F32 weight. */
async function mergedModel(spec: SyntheticModelSpec, pairs: readonly Pair[]): Promise<Uint8Array> {
  const bytes = modelBytes(spec).slice();
  const g = await readGguf(new MemorySource(bytes, "m.gguf"));
  for (const p of pairs) {
    const info = g.tensors.find((x) => x.name === p.t.tensor)!;
    assert.equal(info.type, 0, `${p.t.tensor} is F32`);
    const n = p.t.dIn * p.t.dOut;
    const off = info.fileOffset + Math.max(0, p.t.expert) * n * 4;
    const w = new Float32Array(bytes.buffer.slice(off, off + n * 4));
    mergeLora(w, { rank: p.rank, dIn: p.t.dIn, dOut: p.t.dOut, a: p.a, b: p.b }, p.scale);
    bytes.set(new Uint8Array(w.buffer), off);
  }
  return bytes;
}

function loraTensors(pairs: readonly Pair[]): Record<string, TestTensor> {
  const out: Record<string, TestTensor> = {};
  for (const p of pairs) {
    out[`${p.t.hf}.lora_A.weight`] = { shape: [p.rank, p.t.dIn], data: p.a };
    out[`${p.t.hf}.lora_B.weight`] = { shape: [p.t.dOut, p.rank], data: p.b };
  }
  return out;
}

const DENSE_SPEC: SyntheticModelSpec = { ...SPEC, nExpert: 0, nExpertUsed: 0, seed: 5 };

Deno.test("expert LoRA (Mixtral w1/w2/w3, Qwen gate/up/down_proj) equals merging s·B·A into that expert's slice, with rank/alpha patterns", async () => {
  const dir = await tempDir();
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.boolean(),
        fc.uniqueArray(
          fc.record({
            layer: fc.integer({ min: 0, max: SPEC.nLayer! - 1 }),
            expert: fc.integer({ min: 0, max: SPEC.nExpert! - 1 }),
            w: fc.constantFrom("w1", "w2", "w3"),
          }),
          { minLength: 1, maxLength: 4, selector: (r) => `${r.layer}:${r.expert}:${r.w}` },
        ),
        async (seed, qwen, picks) => {
          const g = gaussian(seed);
          const names: Record<string, string> = { w1: "gate_proj", w2: "down_proj", w3: "up_proj" };
          // rank 2 everywhere except expert targets of layer 1 (rank 3 via rank_pattern); alpha
          // 4, or 6 for every down projection via alpha_pattern
          const pairs: Pair[] = picks.map((p) => {
            const t = expertTarget(p.layer, p.expert, qwen ? names[p.w] : p.w, qwen);
            const rank = p.layer === 1 ? 3 : 2;
            const alpha = p.w === "w2" ? 6 : 4;
            return {
              t,
              rank,
              a: g(rank * t.dIn, 0.3),
              b: g(t.dOut * rank, 0.3),
              scale: alpha / rank,
            };
          });
          const down = qwen ? "down_proj" : "w2";
          await writeAdapter(`${dir}/ad`, {
            r: 2,
            lora_alpha: 4,
            rank_pattern: { "layers.1.*experts.*": 3 },
            alpha_pattern: { [down]: 6 },
          }, loraTensors(pairs));
          const { model } = await loadWithPlugins(dir, [{
            use: "lora",
            config: { adapter: "ad" },
          }]);
          const merged = await loadModel(await mergedModel(SPEC, pairs), { backend: "ref" });
          const base = await loadTestModel();
          const routed = new Set<string>();
          model.transformer.moe.forEach((m) =>
            m!.observers.push((layer, _t, r) =>
              r.experts.forEach((e) => routed.add(`${layer}:${e}`))
            )
          );
          try {
            const got = await logitsOf(model);
            assertClose(got, await logitsOf(merged), 1e-3); // f32 rounding of W vs W + sBA
            // an adapter on an expert the prompt never routes to changes nothing, as merging would
            if (pairs.some((p) => routed.has(`${p.t.layer}:${p.t.expert}`))) {
              assertDiffers(got, await logitsOf(base), 1e-5, "the adapter changed the logits");
            } else assertClose(got, await logitsOf(base), 0);
          } finally {
            for (const m of [model, merged, base]) m.dispose();
          }
        },
      ),
      { numRuns: 12 },
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("dense-FFN LoRA (mlp.gate/up/down_proj of a dense model) equals the merged weights", async () => {
  const dir = await tempDir();
  try {
    const g = gaussian(77);
    const pairs: Pair[] = [
      denseTarget(0, "down_proj"),
      denseTarget(1, "gate_proj"),
      denseTarget(1, "up_proj"),
    ]
      .map((t) => ({ t, rank: 2, a: g(2 * t.dIn, 0.3), b: g(t.dOut * 2, 0.3), scale: 4 / 2 }));
    await writeAdapter(`${dir}/ad`, { r: 2, lora_alpha: 4 }, loraTensors(pairs));
    await Deno.writeFile(`${dir}/model.gguf`, modelBytes(DENSE_SPEC));
    const { loadFromManifest } = await import("../../mod.ts");
    const { model } = await loadFromManifest({
      manifestVersion: 1,
      model: { source: `${dir}/model.gguf` },
      backend: "ref",
      plugins: [{ use: "lora", config: { adapter: `${dir}/ad` } }],
    } as never);
    const merged = await loadModel(await mergedModel(DENSE_SPEC, pairs), { backend: "ref" });
    const base = await loadModel(modelBytes(DENSE_SPEC), { backend: "ref" });
    try {
      const got = await logitsOf(model);
      assertClose(got, await logitsOf(merged), 1e-3); // f32 rounding of W vs W + sBA
      assertDiffers(got, await logitsOf(base), 1e-5, "the adapter changed the logits");
    } finally {
      for (const m of [model, merged, base]) m.dispose();
    }
  } finally {
    await cleanup(dir);
  }
});

Deno.test("MoLA (1 expert, k=1) and SMoRA (all ranks, one gate block) on expert targets reduce to the same LoRA", async () => {
  const dir = await tempDir();
  try {
    const g = gaussian(5);
    const r = 4;
    const targets = [expertTarget(0, 2, "w2"), expertTarget(1, 0, "w1"), expertTarget(1, 3, "w3")];
    const pairs: Pair[] = targets.map((t) => ({
      t,
      rank: r,
      a: g(r * t.dIn, 0.3),
      b: g(t.dOut * r, 0.3),
      scale: 8 / r,
    }));
    // alpha_pattern reaches the expert targets of every method: w2 (down) gets alpha 4
    const ap = { alpha_pattern: { "experts\\.\\d+\\.w2": 4 } };
    await writeAdapter(`${dir}/lora`, { r, lora_alpha: 8, ...ap }, loraTensors(pairs));
    await writeAdapter(`${dir}/lora8`, { r, lora_alpha: 8 }, loraTensors(pairs));
    const mola: Record<string, TestTensor> = {};
    const smora: Record<string, TestTensor> = {};
    for (const p of pairs) {
      mola[`${p.t.hf}.router.router.weight`] = { shape: [1, p.t.dIn], data: g(p.t.dIn) };
      mola[`${p.t.hf}.lora_A_0.weight`] = { shape: [r, p.t.dIn], data: p.a };
      mola[`${p.t.hf}.lora_B_0.weight`] = { shape: [p.t.dOut, r], data: p.b };
      smora[`${p.t.hf}.lora_A.weight`] = { shape: [r, p.t.dIn], data: p.a };
      smora[`${p.t.hf}.lora_B.weight`] = { shape: [p.t.dOut, r], data: p.b };
      smora[`${p.t.hf}.lora_router.weight`] = { shape: [1, p.t.dIn], data: g(p.t.dIn) };
    }
    await writeAdapter(`${dir}/mola`, { r, lora_alpha: 8, top_k: 1, ...ap }, mola);
    // SMoRA: y = α·Σ_i (1/r)(A_i·x)B_i = (α/r)·B·A·x, so α = 8 matches LoRA alpha 8
    await writeAdapter(
      `${dir}/smora`,
      { r, lora_alpha: 8, activate_r: r, rank_partition: r, ...ap },
      smora,
    );
    // a rank_pattern that contradicts an expert target's rank is refused by both mixes
    const rp = { rank_pattern: { "experts.3.w3": 2 } };
    await writeAdapter(`${dir}/smora_rp`, {
      r,
      lora_alpha: 8,
      activate_r: 2,
      rank_partition: r,
      ...rp,
    }, smora);
    await writeAdapter(`${dir}/mola_rp`, { r, lora_alpha: 8, top_k: 1, ...rp }, mola);
    for (const [use, adapter] of [["smora", "smora_rp"], ["mola", "mola_rp"]]) {
      await assert.rejects(
        loadWithPlugins(dir, [{ use, config: { adapter } }]),
        (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "rank_mismatch",
      );
    }
    const lora = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "lora" } }])).model,
    );
    const viaMola = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "mola", config: { adapter: "mola", experts: 1 } }]))
        .model,
    );
    const viaSmora = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "smora", config: { adapter: "smora" } }])).model,
    );
    assertClose(viaMola, lora, 1e-5);
    assertClose(viaSmora, lora, 1e-5);
    const lora8 = await logitsOf(
      (await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "lora8" } }])).model,
    );
    assertDiffers(lora, lora8, 1e-6, "alpha_pattern changed the w2 scale");
    assertDiffers(
      lora,
      await logitsOf(await loadTestModel()),
      1e-5,
      "the adapters changed the logits",
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("MoLA per-layer expert counts on expert targets: '12' gives layer 0 one LoRA expert and layer 1 two; a mismatch is typed", async () => {
  const dir = await tempDir();
  try {
    const g = gaussian(31);
    const r = 2;
    const tensors: Record<string, TestTensor> = {};
    // layer 0: expert 1's w2 with 1 LoRA expert; layer 1: expert 2's w1 with 2 LoRA experts
    for (const [t, n] of [[expertTarget(0, 1, "w2"), 1], [expertTarget(1, 2, "w1"), 2]] as const) {
      tensors[`${t.hf}.router.router.weight`] = { shape: [n, t.dIn], data: g(n * t.dIn) };
      for (let i = 0; i < n; i++) {
        tensors[`${t.hf}.lora_A_${i}.weight`] = { shape: [r, t.dIn], data: g(r * t.dIn, 0.3) };
        tensors[`${t.hf}.lora_B_${i}.weight`] = { shape: [t.dOut, r], data: g(t.dOut * r, 0.3) };
      }
    }
    await writeAdapter(`${dir}/mola`, { r, lora_alpha: 4 }, tensors);
    const { model } = await loadWithPlugins(dir, [{
      use: "mola",
      config: { adapter: "mola", experts: "12", topK: 1 },
    }]);
    const base = await loadTestModel();
    try {
      const tokens = [1, 17, 99, 256, 3, 44, 7, 300, 12, 5, 77, 401, 9, 23, 150, 2];
      assertDiffers(await logitsOf(model, tokens), await logitsOf(base, tokens), 1e-6, "MoLA");
    } finally {
      model.dispose();
      base.dispose();
    }
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "mola", config: { adapter: "mola", experts: "22" } }]),
      (e: Error & { code?: string }) =>
        e.name === "PluginError" && e.code === "expert_count_mismatch",
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("an expert's adapter runs only on the tokens routed to it (unrouted experts cost nothing)", async () => {
  const seen: { layer: number; expert: number; n: number }[] = [];
  const projs: LinearName[] = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];
  const deltas = [];
  for (let l = 0; l < SPEC.nLayer!; l++) {
    for (let e = 0; e < SPEC.nExpert!; e++) {
      for (const p of projs) {
        deltas.push(
          [l, p, (_x: Float32Array, n: number) => {
            if (p === "ffn_down_exps") seen.push({ layer: l, expert: e, n });
          }, e] as const,
        );
      }
    }
  }
  const model: Model = await loadTestModel({ adapters: [projectionAdapter(deltas)] });
  const routed = new Map<string, number>();
  model.transformer.moe.forEach((m) =>
    m!.observers.push((layer, _t, route) => {
      for (const e of route.experts) {
        routed.set(`${layer}:${e}`, (routed.get(`${layer}:${e}`) ?? 0) + 1);
      }
    })
  );
  try {
    await logitsOf(model);
    const got = new Map(seen.map((s) => [`${s.layer}:${s.expert}`, s.n]));
    assert.deepEqual(got, routed);
    assert.ok(routed.size < SPEC.nLayer! * SPEC.nExpert!, "some experts were not routed");
  } finally {
    model.dispose();
  }
});

Deno.test("expert targets out of range, on a dense model, or on an expert kind without projections are typed PluginErrors", async () => {
  const dir = await tempDir();
  try {
    const g = gaussian(9);
    const bad = expertTarget(0, SPEC.nExpert!, "w2"); // expert 4 of 4
    await writeAdapter(
      `${dir}/bad`,
      { r: 2 },
      loraTensors([{ t: bad, rank: 2, a: g(2 * NFF), b: g(D * 2), scale: 1 }]),
    );
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "bad" } }]),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "bad_expert",
    );
    const ok = expertTarget(0, 1, "w2");
    await writeAdapter(
      `${dir}/ok`,
      { r: 2 },
      loraTensors([{ t: ok, rank: 2, a: g(2 * NFF), b: g(D * 2), scale: 1 }]),
    );
    await Deno.writeFile(`${dir}/dense.gguf`, modelBytes(DENSE_SPEC));
    const { loadFromManifest } = await import("../../mod.ts");
    await assert.rejects(
      loadFromManifest({
        manifestVersion: 1,
        model: { source: `${dir}/dense.gguf` },
        backend: "ref",
        plugins: [{ use: "lora", config: { adapter: `${dir}/ok` } }],
      } as never),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "unsupported_target",
    );
    await assert.rejects(
      loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ok", merge: true } }]),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "bad_config",
    );
    // an expert kind without forwardLinear cannot carry per-expert adapters: typed, at the first call
    const { model } = await loadWithPlugins(dir, [{ use: "lora", config: { adapter: "ok" } }]);
    const m = await loadTestModel({
      adapters: model.transformer.adapters,
      wrapExpert: (e) => ({ ...e, kind: "opaque", forward: (x, n, out) => e.forward(x, n, out) }),
    });
    await assert.rejects(
      (async () => {
        for (let t = 0; t < 40; t++) await logitsOf(m, [1, 2 + t, 3 + t, 4 + t]);
      })(),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "unsupported_target",
    );
    model.dispose();
    m.dispose();
  } finally {
    await cleanup(dir);
  }
});

Deno.test("expert adapters under a streaming expert store (budget < all experts) give the resident model's logits", async () => {
  const dir = await tempDir();
  try {
    const ex = new URL("../../examples/smora-qa/", import.meta.url);
    const m = JSON.parse(await Deno.readTextFile(new URL("model.json", ex)));
    const plugins = m.plugins.map((p: { use: string; config: Record<string, unknown> }) => ({
      ...p,
      config: { ...p.config, adapter: new URL("adapter", ex).pathname },
    }));
    const source = new URL("../model/default_model.gguf", import.meta.url).pathname;
    const { loadFromManifest } = await import("../../mod.ts");
    const load = async (memory?: Record<string, unknown>) =>
      (await loadFromManifest(
        {
          manifestVersion: 1,
          model: { source },
          backend: "ref",
          plugins,
          ...(memory ? { memory } : {}),
        } as never,
      )).model;
    const resident = await load();
    const streamed = await load({ expertBudgetMb: 0.5 }); // ~10 of the 32 experts (52 KB each)
    try {
      const tokens = resident.tokenizer.encode(
        "Tom found a blue ball in the park. Q: What did Tom find? A: a blue ball.",
      );
      assertClose(await logitsOf(streamed, tokens), await logitsOf(resident, tokens), 0);
      assert.ok(streamed.store.stats().evictions > 0, "the store evicted experts (it streamed)");
    } finally {
      resident.dispose();
      streamed.dispose();
    }
  } finally {
    await cleanup(dir);
  }
});
