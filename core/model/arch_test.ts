/**
 * Architecture modules: every registered architecture synthesizes, loads, inspects and runs;
 * their own hyper-parameters fail typed and name the key; Granite's multipliers, YaRN and
 * group-limited routing behave as llama.cpp's graphs say (conformance: tests/conformance).
 */

import { equal, ok as assert, rejects } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { formatInspect, inspectModel } from "../../cli/inspect.ts";
import { RefBackend } from "../backend/ref_backend.ts";
import { GgufError, ModelError, type MoeEdgeError } from "../errors.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { gguf, type GgufValue } from "../formats/gguf_types.ts";
import { writeGguf } from "../formats/gguf_writer.ts";
import { Session } from "../generate/session.ts";
import { type ArchName, archSpec, isArchName, SUPPORTED_ARCHS } from "./arch.ts";
import { applyRope, yarnCorrDims } from "./arch/rope.ts";
import { swigluOai } from "./arch/gpt-oss.ts";
import { attentionExt } from "./arch/attention.ts";
import { loadModel } from "./model.ts";
import { modelNeeds } from "./memory_plan.ts";
import { synthesizeLayout, synthesizeModel, type SyntheticModelSpec } from "./synthetic.ts";
import { TopKRouter } from "../moe/router.ts";
import { MemorySource } from "../store/byte_source.ts";

/** Every registered architecture (the synthesizer takes its specifics from the module's hook). */
const SYNTH_ARCHS: readonly ArchName[] = SUPPORTED_ARCHS.filter(isArchName);
const SMALL: SyntheticModelSpec = {
  nEmbd: 32,
  nHead: 2,
  nHeadKv: 1,
  nLayer: 2,
  nExpert: 4,
  nExpertUsed: 2,
  nFf: 32,
  nVocab: 300,
};

/** A model's tensor records (writable copies). */
type TensorRecords = { name: string; dims: number[]; type: number; data: Uint8Array }[];

/** Rewrite a model with `edit` applied to copies of its metadata and tensor records. */
async function rewriteGguf(
  bytes: Uint8Array,
  edit: (meta: Map<string, GgufValue>, tensors: TensorRecords) => void,
): Promise<Uint8Array> {
  const f = await readGguf(new MemorySource(bytes));
  const meta = new Map(f.metadata) as Map<string, GgufValue>;
  const tensors: TensorRecords = [];
  for (const t of f.tensors) {
    tensors.push({
      name: t.name,
      dims: [...t.dims],
      type: t.type,
      data: await f.readTensorBytes(t),
    });
  }
  edit(meta, tensors);
  return writeGguf({ metadata: meta, tensors });
}

/** Rewrite a model's metadata with `edit`. */
function withMeta(
  bytes: Uint8Array,
  edit: (meta: Map<string, GgufValue>) => void,
): Promise<Uint8Array> {
  return rewriteGguf(bytes, (meta) => edit(meta));
}

async function expectError(
  bytes: Uint8Array,
  cls: typeof MoeEdgeError,
  code: string,
  mentions: string,
): Promise<void> {
  await rejects(loadModel(bytes, { backend: "ref" }), (e: unknown) => {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    equal((e as MoeEdgeError).code, code, (e as Error).message);
    assert((e as Error).message.includes(mentions), `'${(e as Error).message}' names ${mentions}`);
    return true;
  });
}

Deno.test("every registered architecture is synthesizable, and its module carries its name", () => {
  equal(SYNTH_ARCHS.length, SUPPORTED_ARCHS.length);
  for (const name of SUPPORTED_ARCHS) {
    equal(archSpec(name)?.name, name);
    assert(archSpec(name)?.synth, `${name} has no synthesizer hook`);
  }
  equal(archSpec("mamba"), undefined);
  equal(archSpec("__proto__"), undefined);
  equal(isArchName("constructor"), false);
});

Deno.test("synthesizing an unregistered architecture fails typed, naming it and the others", () => {
  const names = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom("mamba", "__proto__", "constructor", "toString", "LLAMA", "llama "),
  ).filter((s) => !SUPPORTED_ARCHS.includes(s));
  fc.assert(
    fc.property(names, (name) => {
      // a JavaScript caller (or a cast) can pass any string: checked at run time
      const spec = { ...SMALL, arch: name as ArchName };
      for (const run of [() => synthesizeModel(spec), () => synthesizeLayout(spec)]) {
        try {
          run();
        } catch (e) {
          assert(e instanceof ModelError, `expected ModelError, got ${e}`);
          equal(e.code, "bad_spec");
          assert(e.message.includes(`'${name}'`) && e.message.includes("deepseek2"), e.message);
          continue;
        }
        assert(false, `'${name}' was synthesized`);
      }
    }),
    { numRuns: 60 },
  );
});

for (const arch of SYNTH_ARCHS) {
  Deno.test(`${arch}: synthesized model loads, inspects and generates finite logits`, async () => {
    const bytes = synthesizeModel({ ...SMALL, arch, nLayer: arch === "deepseek2" ? 3 : 2 });
    const r = await inspectModel(new MemorySource(bytes));
    equal(r.architecture, arch);
    assert(formatInspect(r).includes(arch));
    const model = await loadModel(bytes, { backend: "ref" });
    equal(model.arch, arch);
    const s = new Session(model, { nCtx: 32 });
    for (const batch of [[5, 77, 120], [9], [33]]) {
      const logits = await s.eval(batch);
      equal(logits.length, model.hp.nVocab);
      assert(logits.every(Number.isFinite));
    }
    s.dispose();
    model.dispose();
  });
}

for (
  const arch of ["deepseek2", "gpt-oss", "granitemoe", "ernie4_5-moe", "bailingmoe2"] as const
) {
  Deno.test(`${arch}: experts streamed under a 2-expert budget give the resident logits, bit for bit`, async () => {
    const nExpert = 6;
    const bytes = synthesizeModel({ ...SMALL, arch, nLayer: 3, nExpert, nFfShared: 24, seed: 9 });
    const f = await readGguf(new MemorySource(bytes));
    // one expert = its gate, up and down slices (the same in every MoE layer here)
    const perExpert = ["gate", "up", "down"]
      .map((p) => f.tensor(`blk.2.ffn_${p}_exps.weight`).nbytes / nExpert)
      .reduce((a, b) => a + b, 0);
    const run = async (budget?: number) => {
      const m = await loadModel(bytes, {
        backend: "ref",
        ...(budget ? { expertBudgetBytes: budget } : {}),
      });
      const store = m.store.constructor.name;
      const s = new Session(m, { nCtx: 16 });
      const out: number[] = [];
      for (const batch of [[5, 77, 120, 9], [33], [250]]) out.push(...(await s.eval(batch)));
      s.dispose();
      m.dispose();
      return { out, store };
    };
    const resident = await run();
    const streamed = await run(2 * perExpert);
    assert(resident.store !== streamed.store, `${streamed.store} streams`);
    equal(streamed.out.length, resident.out.length);
    for (let i = 0; i < resident.out.length; i++) equal(streamed.out[i], resident.out[i]);
  });
}

Deno.test("granitemoe: logit_scale is required (GgufError missing_key naming it)", async () => {
  const bytes = await withMeta(
    synthesizeModel({ ...SMALL, arch: "granitemoe" }),
    (m) => m.delete("granitemoe.logit_scale"),
  );
  await expectError(bytes, GgufError, "missing_key", "granitemoe.logit_scale");
});

Deno.test("granitemoe: non-finite, negative or huge multipliers → ModelError bad_hparam naming the key", async () => {
  const base = synthesizeModel({ ...SMALL, arch: "granitemoe" });
  const keys = ["embedding_scale", "residual_scale", "attention.scale", "logit_scale"];
  const bad = fc.oneof(
    fc.constantFrom(NaN, Infinity, -Infinity, -1, 1e7),
    fc.float({ min: Math.fround(-1e6), max: Math.fround(-1e-3), noNaN: true }),
  );
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...keys), bad, async (key, v) => {
      const bytes = await withMeta(base, (m) => m.set(`granitemoe.${key}`, gguf.f32(v)));
      await expectError(bytes, ModelError, "bad_hparam", `granitemoe.${key}`);
    }),
    { numRuns: 12 },
  );
  // logit_scale 0 would divide by zero: refused too
  const zero = await withMeta(base, (m) => m.set("granitemoe.logit_scale", gguf.f32(0)));
  await expectError(zero, ModelError, "bad_hparam", "granitemoe.logit_scale");
});

Deno.test("granitemoe: logits ÷ logit_scale in f32, exactly (same weights, scale 1 vs s)", async () => {
  const spec: SyntheticModelSpec = { ...SMALL, arch: "granitemoe", seed: 5 };
  const run = async (logit: number) => {
    const m = await loadModel(synthesizeModel({ ...spec, graniteScales: { logit } }), {
      backend: "ref",
    });
    const s = new Session(m, { nCtx: 16 });
    const out = Float32Array.from(await s.eval([5, 7, 9]));
    s.dispose();
    m.dispose();
    return out;
  };
  const one = await run(1);
  for (const scale of [6, 0.75]) {
    const got = await run(scale);
    const k = Math.fround(1 / Math.fround(scale));
    for (let i = 0; i < one.length; i++) equal(got[i], Math.fround(one[i] * k));
  }
});

Deno.test("deepseek2: bad or unsupported hyper-parameters fail typed, naming the key", async () => {
  const base = synthesizeModel({ ...SMALL, arch: "deepseek2", nLayer: 3 });
  const cases: [(m: Map<string, GgufValue>) => void, typeof MoeEdgeError, string, string][] = [
    [
      (m) => m.delete("deepseek2.attention.key_length_mla"),
      ModelError,
      "bad_hparam",
      "key_length_mla",
    ],
    [
      (m) => m.set("deepseek2.attention.head_count_kv", gguf.u32(2)),
      ModelError,
      "bad_hparam",
      "head_count_kv",
    ],
    [
      (m) => m.set("deepseek2.attention.key_length", gguf.u32(40)),
      ModelError,
      "bad_hparam",
      "key_length",
    ],
    [
      (m) => m.set("deepseek2.expert_gating_func", gguf.u32(4)),
      ModelError,
      "unsupported_hparam",
      "expert_gating_func",
    ],
    [
      (m) => m.set("deepseek2.expert_gating_func", gguf.u32(9)),
      ModelError,
      "bad_hparam",
      "expert_gating_func",
    ],
    [
      (m) => m.set("deepseek2.leading_dense_block_count", gguf.u32(9)),
      ModelError,
      "bad_hparam",
      "leading_dense_block_count",
    ],
    [(m) => m.delete("deepseek2.attention.kv_lora_rank"), GgufError, "missing_key", "kv_lora_rank"],
    [
      (m) => m.delete("deepseek2.expert_shared_count"),
      GgufError,
      "missing_key",
      "expert_shared_count",
    ],
    [
      (m) => {
        m.set("deepseek2.expert_group_count", gguf.u32(3));
        m.set("deepseek2.expert_group_used_count", gguf.u32(1));
      },
      ModelError,
      "bad_hparam",
      "expert_group_count",
    ],
    [
      (m) => {
        m.set("deepseek2.expert_group_count", gguf.u32(2));
        m.set("deepseek2.expert_group_used_count", gguf.u32(2));
      },
      ModelError,
      "bad_hparam",
      "expert_group_used_count",
    ],
    [
      (m) => m.set("deepseek2.nextn_predict_layers", gguf.u32(1)),
      ModelError,
      "unsupported_hparam",
      "nextn_predict_layers",
    ],
    [
      (m) => m.set("deepseek2.attention.temperature_scale", gguf.f32(0.1)),
      ModelError,
      "unsupported_hparam",
      "temperature_scale",
    ],
    [
      (m) => m.set("deepseek2.rope.scaling.type", gguf.str("longrope")),
      ModelError,
      "unsupported_hparam",
      "longrope",
    ],
  ];
  for (const [edit, cls, code, mentions] of cases) {
    await expectError(await withMeta(base, edit), cls, code, mentions);
  }
});

/** Rewrite a model's tensors with `edit` (metadata unchanged). */
function withTensors(
  bytes: Uint8Array,
  edit: (tensors: TensorRecords) => void,
): Promise<Uint8Array> {
  return rewriteGguf(bytes, (_meta, tensors) => edit(tensors));
}

Deno.test("ernie4_5-moe: bad or unsupported hyper-parameters fail typed, naming the key", async () => {
  const base = synthesizeModel({ ...SMALL, arch: "ernie4_5-moe", nLayer: 3 });
  const A = "ernie4_5-moe";
  const cases: [(m: Map<string, GgufValue>) => void, typeof MoeEdgeError, string, string][] = [
    [(m) => m.delete(`${A}.interleave_moe_layer_step`), GgufError, "missing_key", "step"],
    [(m) => m.delete(`${A}.expert_feed_forward_length`), GgufError, "missing_key", "expert_feed"],
    [
      (m) => m.delete(`${A}.attention.layer_norm_rms_epsilon`),
      GgufError,
      "missing_key",
      "layer_norm_rms_epsilon",
    ],
    // step 2: block 1 would be dense after the leading one, but has expert tensors only
    [
      (m) => m.set(`${A}.interleave_moe_layer_step`, gguf.u32(2)),
      ModelError,
      "unsupported_hparam",
      "interleave_moe_layer_step",
    ],
    [
      (m) => m.set(`${A}.interleave_moe_layer_step`, gguf.u32(0)),
      ModelError,
      "bad_hparam",
      "interleave_moe_layer_step",
    ],
    [
      (m) => m.set(`${A}.leading_dense_block_count`, gguf.u32(4)),
      ModelError,
      "bad_hparam",
      "leading_dense_block_count",
    ],
    [
      (m) => m.set(`${A}.expert_shared_feed_forward_length`, gguf.u32(2 ** 21)),
      ModelError,
      "bad_hparam",
      "expert_shared_feed_forward_length",
    ],
    // llama.cpp asserts n_rot = head dim (no partial rotary)
    [
      (m) => m.set(`${A}.rope.dimension_count`, gguf.u32(8)),
      ModelError,
      "bad_hparam",
      "rope.dimension_count",
    ],
    [(m) => m.set(`${A}.expert_count`, gguf.u32(0)), ModelError, "bad_hparam", "expert_"],
  ];
  for (const [edit, cls, code, mentions] of cases) {
    await expectError(await withMeta(base, edit), cls, code, mentions);
  }
  // a shared-expert width without its tensors, and an exp_probs_b of the wrong size
  await expectError(
    await withMeta(
      synthesizeModel({ ...SMALL, arch: "ernie4_5-moe", nFfShared: 0 }),
      (m) => m.set(`${A}.expert_shared_feed_forward_length`, gguf.u32(16)),
    ),
    ModelError,
    "missing_tensor",
    "_shexp.weight",
  );
  await expectError(
    await withTensors(base, (ts) => {
      const t = ts.find((t) => t.name === "blk.1.exp_probs_b.bias")!;
      t.dims = [2];
      t.data = t.data.subarray(0, 8);
    }),
    ModelError,
    "shape_mismatch",
    "exp_probs_b",
  );
});

Deno.test("ernie4_5-moe: leading dense blocks run a dense FFN; attn_output.bias is ignored, as llama.cpp's graph does", async () => {
  const spec: SyntheticModelSpec = { ...SMALL, arch: "ernie4_5-moe", nLayer: 3, seed: 3 };
  const bytes = synthesizeModel({ ...spec, ernie: { denseLead: 2 } });
  const m = await loadModel(bytes, { backend: "ref" });
  equal(m.hp.nLayerDenseLead, 2);
  equal(m.hp.nFfShexp, SMALL.nFf);
  equal(m.transformer.moe[0], null);
  equal(m.transformer.moe[1], null);
  assert(m.transformer.moe[2] !== null);
  const logits = async (model: typeof m) => {
    const s = new Session(model, { nCtx: 16 });
    const out = Float32Array.from(await s.eval([5, 77, 120, 9]));
    s.dispose();
    return out;
  };
  const plain = await logits(m);
  m.dispose();
  const biased = await withTensors(bytes, (ts) => {
    const data = new Uint8Array(4 * (SMALL.nEmbd ?? 0));
    new Float32Array(data.buffer).fill(0.5);
    ts.push({ name: "blk.0.attn_output.bias", dims: [SMALL.nEmbd ?? 0], type: 0, data });
  });
  const m2 = await loadModel(biased, { backend: "ref" });
  const got = await logits(m2);
  m2.dispose();
  equal(got.length, plain.length);
  for (let i = 0; i < got.length; i++) equal(got[i], plain[i]);
});

Deno.test("bailingmoe2: bad or unsupported hyper-parameters and tensors fail typed, naming them", async () => {
  const base = synthesizeModel({ ...SMALL, arch: "bailingmoe2", nLayer: 3, nExpert: 6 });
  const A = "bailingmoe2";
  const cases: [(m: Map<string, GgufValue>) => void, typeof MoeEdgeError, string, string][] = [
    [(m) => m.delete(`${A}.expert_gating_func`), GgufError, "missing_key", "expert_gating_func"],
    [
      (m) => m.set(`${A}.expert_gating_func`, gguf.u32(4)),
      ModelError,
      "unsupported_hparam",
      "expert_gating_func",
    ],
    [
      (m) => m.set(`${A}.expert_gating_func`, gguf.u32(0)),
      ModelError,
      "bad_hparam",
      "expert_gating_func",
    ],
    [(m) => m.delete(`${A}.expert_shared_count`), GgufError, "missing_key", "expert_shared_count"],
    [
      (m) => m.set(`${A}.expert_shared_count`, gguf.u32(0)),
      ModelError,
      "bad_hparam",
      "expert_shared_count",
    ],
    [(m) => m.delete(`${A}.expert_feed_forward_length`), GgufError, "missing_key", "expert_feed"],
    [
      (m) => m.delete(`${A}.attention.layer_norm_rms_epsilon`),
      GgufError,
      "missing_key",
      "layer_norm_rms_epsilon",
    ],
    // every block NextN: no trunk left
    [
      (m) => m.set(`${A}.nextn_predict_layers`, gguf.u32(4)),
      ModelError,
      "bad_hparam",
      "nextn_predict_layers",
    ],
    // 3 trunk blocks (4 counted, 1 NextN): 4 leading dense blocks is too many
    [
      (m) => m.set(`${A}.leading_dense_block_count`, gguf.u32(4)),
      ModelError,
      "bad_hparam",
      "leading_dense_block_count",
    ],
    [
      (m) => {
        m.set(`${A}.expert_group_count`, gguf.u32(4));
        m.set(`${A}.expert_group_used_count`, gguf.u32(2));
      },
      ModelError,
      "bad_hparam",
      "expert_group_count",
    ],
    [
      (m) => {
        m.set(`${A}.expert_group_count`, gguf.u32(3));
        m.set(`${A}.expert_group_used_count`, gguf.u32(3));
      },
      ModelError,
      "bad_hparam",
      "expert_group_used_count",
    ],
    [
      (m) => m.set(`${A}.expert_weights_scale`, gguf.f32(NaN)),
      ModelError,
      "bad_hparam",
      "expert_weights_scale",
    ],
    // the Q part of attn_qkv is n_embd rows: n_head · key_length must be n_embd
    [
      (m) => {
        m.set(`${A}.attention.key_length`, gguf.u32(8));
        m.set(`${A}.attention.value_length`, gguf.u32(8));
        m.set(`${A}.rope.dimension_count`, gguf.u32(8));
      },
      ModelError,
      "bad_hparam",
      "key_length",
    ],
    [(m) => m.set(`${A}.expert_count`, gguf.u32(0)), ModelError, "bad_hparam", "expert_"],
  ];
  for (const [edit, cls, code, mentions] of cases) {
    await expectError(await withMeta(base, edit), cls, code, mentions);
  }
  await expectError(
    await withTensors(
      base,
      (ts) => ts.splice(ts.findIndex((t) => t.name === "blk.2.ffn_gate_exps.weight"), 1),
    ),
    ModelError,
    "missing_tensor",
    "blk.2.ffn_gate_exps",
  );
  await expectError(
    await withTensors(base, (ts) => {
      const t = ts.find((t) => t.name === "blk.1.attn_qkv.weight")!;
      t.dims = [t.dims[0], t.dims[1] - 1];
      t.data = t.data.subarray(0, t.data.length - 4 * t.dims[0]);
    }),
    ModelError,
    "shape_mismatch",
    "attn_qkv",
  );
  // use_qkv_bias / use_bias checkpoints: llama.cpp creates no such tensors and refuses the file
  for (const [name, n] of [["attn_qkv.bias", 32 + 2 * 16], ["attn_output.bias", 32]] as const) {
    await expectError(
      await withTensors(base, (ts) => {
        ts.push({ name: `blk.2.${name}`, dims: [n], type: 0, data: new Uint8Array(4 * n) });
      }),
      ModelError,
      "unsupported_tensor",
      `blk.2.${name}`,
    );
  }
});

Deno.test("bailingmoe2: NextN blocks are counted in block_count but never run, loaded or planned", async () => {
  // the NextN block is drawn after the trunk, so both files hold the same trunk weights
  const spec: SyntheticModelSpec = { ...SMALL, arch: "bailingmoe2", nLayer: 3, seed: 4 };
  const logits = async (nextn: number) => {
    const bytes = synthesizeModel({ ...spec, bailing: { nextn } });
    const m = await loadModel(bytes, { backend: "ref" });
    equal(m.hp.nLayer, 3);
    equal(m.file.metadata.get("bailingmoe2.block_count")?.value, 3 + nextn);
    const needs = modelNeeds(m.file, m.hp);
    const s = new Session(m, { nCtx: 16 });
    const out = Float32Array.from(await s.eval([5, 77, 120, 9]));
    out.set(await s.eval([33]), 0);
    s.dispose();
    m.dispose();
    return { out, needs, size: bytes.length };
  };
  const without = await logits(0), withNextn = await logits(2);
  assert(withNextn.size > without.size);
  equal(withNextn.needs.residentBytes, without.needs.residentBytes);
  equal(withNextn.needs.expertBytes, without.needs.expertBytes);
  equal(withNextn.needs.expertCount, without.needs.expertCount);
  equal(withNextn.needs.kvBytesPerToken, without.needs.kvBytesPerToken);
  for (let i = 0; i < without.out.length; i++) equal(withNextn.out[i], without.out[i]);
});

Deno.test("gpt-oss: window, pattern and expert widths are checked, typed and named", async () => {
  const base = synthesizeModel({ ...SMALL, arch: "gpt-oss" });
  const cases: [(m: Map<string, GgufValue>) => void, typeof MoeEdgeError, string, string][] = [
    [
      (m) => m.delete("gpt-oss.attention.sliding_window"),
      GgufError,
      "missing_key",
      "sliding_window",
    ],
    [
      (m) => m.set("gpt-oss.attention.sliding_window", gguf.u32(0)),
      ModelError,
      "bad_hparam",
      "sliding_window",
    ],
    [
      (m) => m.set("gpt-oss.attention.sliding_window_pattern", gguf.u32(9)),
      ModelError,
      "bad_hparam",
      "sliding_window_pattern",
    ],
    [
      (m) => m.delete("gpt-oss.expert_feed_forward_length"),
      GgufError,
      "missing_key",
      "expert_feed_forward_length",
    ],
    [
      (m) => m.set("gpt-oss.rope.freq_base_swa", gguf.f32(NaN)),
      ModelError,
      "bad_hparam",
      "gpt-oss.rope.freq_base_swa",
    ],
  ];
  for (const [edit, cls, code, mentions] of cases) {
    await expectError(await withMeta(base, edit), cls, code, mentions);
  }
  const m = await loadModel(base, { backend: "ref" });
  // llama.cpp load_swa_pattern(ml, 2): even blocks windowed, odd blocks full
  equal(JSON.stringify(m.hp.swa?.layers), JSON.stringify([true, false]));
  equal(m.hp.swa?.window, 4);
  m.dispose();
});

Deno.test("memory plan: gpt-oss counts its core K/V copy, deepseek2 MLA its latent cache", async () => {
  for (const arch of ["gpt-oss", "deepseek2"] as const) {
    const bytes = synthesizeModel({ ...SMALL, arch, nLayer: 3 });
    const m = await loadModel(bytes, { backend: "ref" });
    const needs = modelNeeds(m.file, m.hp);
    const { nHeadKv, headDimK, headDimV, nLayer } = m.hp;
    const once = nHeadKv * (headDimK + headDimV) * 2 * nLayer;
    equal(needs.kvBytesPerToken, arch === "gpt-oss" ? 2 * once : once);
    // a backend with attentionExt (ref, wasm) keeps one copy: the plan counts one
    equal(modelNeeds(m.file, m.hp, { coreKvCopy: false }).kvBytesPerToken, once);
    equal(m.memoryPlan?.kvBytes ?? null, m.memoryPlan === null ? null : once * m.nCtx);
    m.dispose();
  }
});

Deno.test("gpt-oss: swigluOai clamps as ggml (gate ≤ 7, up in ±7) and is finite for any input", () => {
  fc.assert(
    fc.property(
      fc.float({ noNaN: true }),
      fc.float({ noNaN: true }),
      (g, u) => {
        const out = new Float32Array(1);
        swigluOai(Float32Array.of(g), Float32Array.of(u), out);
        const x = Math.min(g, 7), y = Math.min(Math.max(u, -7), 7);
        const want = Math.fround(x / (1 + Math.exp(-1.702 * x))) * (y + 1);
        if (!Number.isFinite(g) && g > 0) return Number.isFinite(out[0]);
        return Number.isNaN(want) || Math.abs(out[0] - want) <= 1e-5 * Math.max(1, Math.abs(want));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("deepseek2: the KV cache holds one latent head (kv_lora_rank + n_rot), not n_head full K/V", async () => {
  const model = await loadModel(
    synthesizeModel({
      ...SMALL,
      arch: "deepseek2",
      nHead: 4,
      nLayer: 3,
      deepseek: { kvLoraRank: 24, ropeDim: 8, nopeDim: 16, vDim: 16 },
    }),
    { backend: "ref" },
  );
  const { nHeadKv, headDimK, headDimV, mla } = model.hp;
  equal(nHeadKv, 1);
  equal(headDimK, 24 + 8);
  equal(headDimV, 24);
  equal(mla?.headDimK, 24);
  equal(model.hp.nLayerDenseLead, 1);
  equal(mla?.absorbed, true);
  equal(model.transformer.moe[0], null);
  assert(model.transformer.moe[1] !== null);
  model.dispose();
});

Deno.test("deepseek2 without MLA keys (attn_kv_b): full per-head K/V in the cache", async () => {
  const model = await loadModel(
    synthesizeModel({
      ...SMALL,
      arch: "deepseek2",
      nHead: 4,
      nLayer: 3,
      deepseek: { mla: false, kvLoraRank: 24, ropeDim: 8, nopeDim: 16, vDim: 12 },
    }),
    { backend: "ref" },
  );
  equal(model.hp.mla?.absorbed, false);
  equal(model.hp.nHeadKv, 4);
  equal(model.hp.headDimK, 24);
  equal(model.hp.headDimV, 12);
  const s = new Session(model, { nCtx: 16 });
  assert((await s.eval([1, 2, 3])).every(Number.isFinite));
  s.dispose();
  model.dispose();
});

Deno.test("attention with sinks/window: the reference backend's op equals the core composition, and plain attention without extras", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.constantFrom([2, 1], [4, 2], [3, 3]),
      fc.integer({ min: 0, max: 6 }),
      fc.boolean(),
      fc.integer({ min: 1, max: 1000 }),
      (steps, [nHeads, nKvHeads], window, withSinks, seed) => {
        const dk = 8, dv = 4, nCtx = 16;
        const p = { nHeads, nKvHeads, headDimK: dk, headDimV: dv, scale: 0.35 };
        const spec = { layers: 1, nCtx, nKvHeads, headDimK: dk, headDimV: dv };
        const a = new RefBackend(), b = new RefBackend();
        const ca = a.createKvCache(spec), cb = b.createKvCache(spec), cc = a.createKvCache(spec);
        const val = (i: number) => Math.sin(i * 12.9898 + seed) * 2;
        const sinks = withSinks
          ? Float32Array.from({ length: nHeads }, (_, h) => val(h + 99))
          : null;
        const x = { sinks, window };
        let pos = 0;
        for (let s = 0; s < steps; s++) {
          const n = 1 + (s % 3);
          if (pos + n > nCtx) break;
          const q = Float32Array.from({ length: n * nHeads * dk }, (_, i) => val(i + pos * 7));
          const k = Float32Array.from({ length: n * nKvHeads * dk }, (_, i) => val(i + pos * 11));
          const v = Float32Array.from({ length: n * nKvHeads * dv }, (_, i) => val(i + pos * 13));
          const o1 = new Float32Array(n * nHeads * dv), o2 = o1.slice(), o3 = o1.slice();
          a.attentionExt(ca, 0, pos, n, q, k, v, p, x, o1);
          attentionExt(cb, 0, pos, n, q, k, v, p, x, o2);
          for (let i = 0; i < o1.length; i++) if (o1[i] !== o2[i]) return false;
          if (!withSinks && window === 0) {
            a.attention(cc, 0, pos, n, q, k, v, p, o3);
            for (let i = 0; i < o1.length; i++) if (o1[i] !== o3[i]) return false;
          }
          pos += n;
        }
        return true;
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("YaRN: correction dims follow ggml's formula; a neutral YaRN is the backend's rope", () => {
  // n_rot 64, n_ctx_orig 4096, base 10000: d(32) = 64·ln(4096/(2π·32)) / (2·ln 10000) ≈ 20.9
  const [lo, hi] = yarnCorrDims(64, 4096, 10000, 32, 1);
  equal(lo, Math.floor((64 * Math.log(4096 / (2 * Math.PI * 32))) / (2 * Math.log(10000))));
  equal(hi, Math.ceil((64 * Math.log(4096 / (2 * Math.PI))) / (2 * Math.log(10000))));
  const be = new RefBackend();
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 4 }),
      fc.constantFrom(0 as const, 2 as const),
      fc.integer({ min: 0, max: 500 }),
      (n, heads, mode, pos0) => {
        const hd = 8;
        const x = Float32Array.from({ length: n * heads * hd }, (_, i) => Math.sin(i + pos0));
        const pos = Int32Array.from({ length: n }, (_, t) => pos0 + t);
        const p = { mode, nRot: hd, freqBase: 10000, freqScale: 1 };
        const a = x.slice(), b = x.slice();
        be.rope(a, n, heads, hd, pos, p);
        applyRope(be, b, n, heads, hd, pos, p, {
          extFactor: 1,
          attnFactor: 1,
          betaFast: 32,
          betaSlow: 1,
          nCtxOrig: 4096,
        });
        // freq_scale 1: interpolation = extrapolation and ln(1) = 0, so YaRN changes nothing
        for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
        return true;
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("group-limited routing: chosen experts lie in the best groups (sum of each group's top two)", () => {
  fc.assert(
    fc.property(
      fc.constantFrom([2, 1], [3, 2], [4, 2], [4, 3]),
      fc.integer({ min: 2, max: 4 }),
      fc.array(fc.float({ min: -4, max: 4, noNaN: true }), { minLength: 24, maxLength: 24 }),
      ([groups, used], per, raw) => {
        const n = groups * per;
        const logits = Float32Array.from(raw.slice(0, n));
        const k = Math.min(2, used * per);
        const r = new TopKRouter({
          k,
          gating: "sigmoid",
          normalize: true,
          groups,
          groupsUsed: used,
        });
        const probs = logits.map((v) => Math.fround(1 / (1 + Math.exp(-v))));
        const score = Array.from({ length: groups }, (_, g) => {
          const s = [...probs.slice(g * per, (g + 1) * per)].sort((a, b) => b - a);
          return Math.fround(s[0] + s[1]); // summed in f32, as ggml_sum_rows stores it
        });
        const kth = [...score].sort((a, b) => b - a)[used - 1];
        const route = r.route(logits.slice(), 0);
        for (const e of route.experts) {
          if (score[Math.floor(e / per)] < kth) return false;
        }
        const sum = route.weights.reduce((a, b) => a + b, 0);
        return Math.abs(sum - 1) < 1e-5;
      },
    ),
    { numRuns: 100 },
  );
  // experts that do not split into the groups: a RangeError, not a wrong route
  const bad = new TopKRouter({ k: 1, normalize: false, groups: 3, groupsUsed: 1 });
  let threw = false;
  try {
    bad.route(new Float32Array(4), 0);
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw);
});
