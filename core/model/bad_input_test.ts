/** Bad model files give typed errors naming the problem. */

import { equal, ok as assert, rejects } from "node:assert/strict";
import { GenerationError, GgufError, ModelError, type MoeEdgeError } from "../errors.ts";
import { LOAD_BUDGET, loadModel } from "./model.ts";
import { synthesizeModel } from "./synthetic.ts";
import { loadWeights, WeightLoader } from "./weights.ts";
import { readHParams } from "./hparams.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { writeGguf } from "../formats/gguf_writer.ts";
import { gguf, type GgufValue } from "../formats/gguf_types.ts";
import { MemorySource } from "../store/byte_source.ts";
import { RefBackend } from "../backend/ref_backend.ts";
import { generateText } from "../generate/generate.ts";
import { Session } from "../generate/session.ts";

const good = synthesizeModel({
  nEmbd: 32,
  nHead: 2,
  nHeadKv: 1,
  nLayer: 1,
  nExpert: 2,
  nExpertUsed: 1,
  nFf: 32,
  nVocab: 300,
});

/** Rewrite `good` with edits to its metadata and tensors. */
async function rewrite(
  edit: (
    meta: Map<string, ReturnType<typeof gguf.u32>>,
    tensors: { name: string; dims: number[]; type: number; data: Uint8Array }[],
  ) => void,
): Promise<Uint8Array> {
  const f = await readGguf(new MemorySource(good));
  const meta = new Map(f.metadata) as Map<string, ReturnType<typeof gguf.u32>>;
  const tensors = [];
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

async function expectError(
  bytes: Uint8Array,
  cls: typeof MoeEdgeError,
  code: string,
  mentions: string,
): Promise<void> {
  await rejects(loadModel(bytes, { backend: "ref" }), (e: unknown) => {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert(
      (e as MoeEdgeError).code === code,
      `expected code ${code}, got ${(e as MoeEdgeError).code}: ${(e as Error).message}`,
    );
    assert(
      (e as Error).message.includes(mentions),
      `message should mention '${mentions}': ${(e as Error).message}`,
    );
    return true;
  });
}

Deno.test("a good synthetic model loads", async () => {
  const m = await loadModel(good, { backend: "ref" });
  assert(m.hp.nExpert === 2);
});

Deno.test("truncated file → GgufError truncated/out_of_file", async () => {
  for (const len of [3, 20, 200, good.length - 10]) {
    await rejects(loadModel(good.slice(0, len), { backend: "ref" }), (e: unknown) => {
      assert(e instanceof GgufError, `len ${len}: ${e}`);
      // a count that no longer fits in what remains is caught before the read runs short
      assert(["truncated", "out_of_file", "bad_count"].includes(e.code), `len ${len}: ${e.code}`);
      return true;
    });
  }
});

Deno.test("wrong magic → GgufError bad_magic", async () => {
  const b = good.slice();
  b.set([0x47, 0x47, 0x4d, 0x4c], 0);
  await expectError(b, GgufError, "bad_magic", "magic");
});

Deno.test("unsupported version → GgufError unsupported_version", async () => {
  const b = good.slice();
  new DataView(b.buffer).setUint32(4, 9, true);
  await expectError(b, GgufError, "unsupported_version", "9");
});

Deno.test("unknown tensor type → GgufError unknown_type", async () => {
  const f = await readGguf(new MemorySource(good));
  const t = f.tensors[0];
  // tensor info: u64 name length, name, u32 n_dims, i64 dims[n_dims], i32 type, u64 offset
  const b = good.slice();
  const dv = new DataView(b.buffer);
  const name = new TextEncoder().encode(t.name);
  let pos = -1;
  for (let p = 8; p < f.dataOffset && pos < 0; p++) {
    if (
      dv.getBigUint64(p - 8, true) === BigInt(name.length) && name.every((c, i) => b[p + i] === c)
    ) {
      pos = p + name.length + 4 + 8 * t.dims.length;
    }
  }
  assert(pos > 0 && dv.getInt32(pos, true) === t.type);
  dv.setInt32(pos, 77, true);
  await expectError(b, GgufError, "unknown_type", "77");
});

Deno.test("missing tensor → ModelError missing_tensor naming it", async () => {
  const b = await rewrite((_m, ts) =>
    ts.splice(ts.findIndex((t) => t.name === "blk.0.attn_q.weight"), 1)
  );
  await expectError(b, ModelError, "missing_tensor", "blk.0.attn_q.weight");
});

Deno.test("shape mismatch → ModelError shape_mismatch naming the tensor", async () => {
  const b = await rewrite((_m, ts) => {
    const i = ts.findIndex((t) => t.name === "blk.0.attn_norm.weight");
    ts[i] = { ...ts[i], dims: [16], data: ts[i].data.slice(0, 64) };
  });
  await expectError(b, ModelError, "shape_mismatch", "blk.0.attn_norm.weight");
});

Deno.test("unsupported architecture → ModelError unsupported_arch", async () => {
  const b = await rewrite((m) => m.set("general.architecture", gguf.str("mamba")));
  await expectError(b, ModelError, "unsupported_arch", "mamba");
});

Deno.test("absurd hyper-parameters are rejected before allocating", async () => {
  const b = await rewrite((m) => m.set("llama.block_count", gguf.u32(4_000_000)));
  await expectError(b, ModelError, "bad_hparam", "block_count");
  const c = await rewrite((m) => m.set("llama.expert_used_count", gguf.u32(9)));
  await expectError(c, ModelError, "bad_hparam", "expert_used_count");
});

Deno.test("wrongly typed metadata → GgufError wrong_type naming the key", async () => {
  const b = await rewrite((m) => m.set("llama.embedding_length", gguf.str("32")));
  await expectError(b, GgufError, "wrong_type", "llama.embedding_length");
});

Deno.test("a model opened from a path closes its file on failure and on dispose", async () => {
  // Deno's resource sanitizer fails this test if a file handle leaks
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/bad.gguf`, good.slice(0, 100));
  await Deno.writeFile(`${dir}/good.gguf`, good);
  await rejects(loadModel(`${dir}/bad.gguf`, { backend: "ref" }), GgufError);
  const m = await loadModel(`${dir}/good.gguf`, { backend: "ref" });
  m.dispose();
  await Deno.remove(dir, { recursive: true });
});

// ---- hardening: memory amplification, non-finite values, slot leaks ----

/** Byte position of each tensor info's u64 data-offset field, by name. */
async function offsetFields(bytes: Uint8Array): Promise<Map<string, number>> {
  const f = await readGguf(new MemorySource(bytes));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Map<string, number>();
  let p = 24;
  for (const t of f.tensors) {
    const name = new TextEncoder().encode(t.name);
    for (; p < f.dataOffset; p++) {
      if (
        dv.getBigUint64(p, true) === BigInt(name.length) &&
        name.every((c, i) => bytes[p + 8 + i] === c)
      ) break;
    }
    const at = p + 8 + name.length + 4 + 8 * t.dims.length + 4;
    assert(dv.getBigUint64(at, true) === BigInt(t.offset), `offset field of ${t.name}`);
    out.set(t.name, at);
    p = at + 8;
  }
  return out;
}

Deno.test("tensors pointing at the same bytes → GgufError overlapping_tensors, no allocation", async () => {
  // the shape of amp_overlap_300L.gguf: many layers, every tensor at data offset 0
  const many = synthesizeModel({
    nEmbd: 32,
    nHead: 2,
    nLayer: 24,
    nExpert: 2,
    nFf: 32,
    nVocab: 300,
  });
  const b = many.slice();
  const dv = new DataView(b.buffer);
  for (const at of (await offsetFields(b)).values()) dv.setBigUint64(at, 0n, true);
  const be = new RefBackend();
  await rejects(loadModel(b, { backend: be }), (e: unknown) => {
    assert(e instanceof GgufError && e.code === "overlapping_tensors", String(e));
    assert(/overlaps tensor 'token_embd.weight'/.test(e.message), e.message);
    return true;
  });
  equal(be.memoryBytes(), 0);
});

Deno.test("tensors out of index order → GgufError unordered_tensors", async () => {
  const b = good.slice();
  const fields = await offsetFields(b);
  const f = await readGguf(new MemorySource(good));
  // swap the data offsets of two same-sized tensors: in range, no overlap, wrong order
  const [x, y] = [f.tensor("blk.0.attn_k.weight"), f.tensor("blk.0.attn_v.weight")];
  equal(x.nbytes, y.nbytes);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(fields.get(x.name)!, BigInt(y.offset), true);
  dv.setBigUint64(fields.get(y.name)!, BigInt(x.offset), true);
  await expectError(b, GgufError, "unordered_tensors", "blk.0.attn_v.weight");
});

Deno.test("a good model's load allocation stays within the file's size", async () => {
  for (const spec of [{}, { arch: "qwen2moe" as const, qkvBias: true }, { tiedOutput: true }]) {
    const bytes = synthesizeModel({
      nEmbd: 32,
      nHead: 2,
      nLayer: 2,
      nFf: 32,
      nVocab: 300,
      ...spec,
    });
    const be = new RefBackend();
    const m = await loadModel(bytes, { backend: be });
    assert(be.memoryBytes() <= bytes.length, `${be.memoryBytes()} > ${bytes.length}`);
    assert(m.loadAllocatedBytes <= LOAD_BUDGET.perFileByte * bytes.length);
    m.dispose();
    equal(be.memoryBytes(), 0);
  }
});

Deno.test("the loader refuses to pass its budget (load_budget) and frees what it took", async () => {
  const f = await readGguf(new MemorySource(good));
  const hp = readHParams(f.metadata, f.tensor("token_embd.weight").dims[1]);
  const be = new RefBackend();
  const ld = new WeightLoader(f, be, 0, undefined, undefined, { budgetBytes: 20_000 });
  await rejects(loadWeights(ld, hp), (e: unknown) => {
    assert(e instanceof ModelError && e.code === "load_budget", String(e));
    return true;
  });
  assert(ld.allocatedBytes <= 20_000);
  ld.free();
  equal(be.memoryBytes(), 0);
});

const FLOAT_HPARAMS: [string, number[]][] = [
  ["llama.rope.scaling.factor", [NaN, Infinity, -Infinity, 1.401298464324817e-45, -2, 1e30]],
  ["llama.expert_weights_scale", [NaN, Infinity, -1, 1e30]],
  ["llama.rope.freq_base", [NaN, Infinity, 0.5, -10000]],
  ["llama.attention.layer_norm_rms_epsilon", [NaN, Infinity, 0, -1e-5, 2]],
];

Deno.test("every float hyper-parameter is range-checked: ModelError bad_hparam naming the key", async () => {
  for (const [key, values] of FLOAT_HPARAMS) {
    for (const v of values) {
      for (const val of [gguf.f32(v), gguf.f64(v)] as GgufValue[]) {
        if (val.type === 6 && Number.isFinite(v) && !Number.isFinite(Math.fround(v))) continue;
        const b = await rewrite((m) => m.set(key, val as ReturnType<typeof gguf.u32>));
        await expectError(b, ModelError, "bad_hparam", key);
      }
    }
  }
  // in range: accepted
  const ok = await rewrite((m) => {
    m.set("llama.rope.scaling.factor", gguf.f32(4) as ReturnType<typeof gguf.u32>);
    m.set("llama.expert_weights_scale", gguf.f32(2.5) as ReturnType<typeof gguf.u32>);
  });
  const model = await loadModel(ok, { backend: "ref" });
  equal(model.hp.ropeFreqScale, 0.25);
  equal(model.hp.expertWeightsScale, 2.5);
});

/** `good` with element `i` of F32 tensor `name` set to `v`. */
async function poison(name: string, v: number, i = 0, bytes = good): Promise<Uint8Array> {
  const f = await readGguf(new MemorySource(bytes));
  const t = f.tensor(name);
  equal(t.type, 0);
  const b = bytes.slice();
  new DataView(b.buffer).setFloat32(t.fileOffset + 4 * i, v, true);
  return b;
}

Deno.test("non-finite norm weights and biases → ModelError non_finite_weight at load", async () => {
  for (const name of ["output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"]) {
    for (const v of [NaN, Infinity, -Infinity]) {
      await expectError(await poison(name, v, 3), ModelError, "non_finite_weight", name);
    }
  }
  const biased = synthesizeModel({
    nEmbd: 32,
    nHead: 2,
    nLayer: 1,
    nFf: 32,
    nVocab: 300,
    qkvBias: true,
  });
  const b = await poison("blk.0.attn_k.bias", NaN, 1, biased);
  await expectError(b, ModelError, "non_finite_weight", "blk.0.attn_k.bias");
});

Deno.test("non-finite matrix weights: GenerationError at the first logit; refused with checkWeights", async () => {
  const cases: [string, number][] = [
    ["token_embd.weight", NaN],
    ["blk.0.attn_q.weight", Infinity],
    ["blk.0.ffn_gate_inp.weight", NaN],
    ["blk.0.ffn_up_exps.weight", NaN],
    ["blk.0.ffn_down_exps.weight", -Infinity],
  ];
  const f = await readGguf(new MemorySource(good));
  for (const [name, v] of cases) {
    // poison the first element of every row (every expert too), whatever the prompt touches
    const t = f.tensor(name);
    const b = good.slice();
    const dv = new DataView(b.buffer);
    const cols = t.dims[0];
    for (let r = 0; r < t.nbytes / 4 / cols; r++) {
      dv.setFloat32(t.fileOffset + 4 * r * cols, v, true);
    }
    const be = new RefBackend();
    await rejects(loadModel(b, { backend: be, checkWeights: true }), (e: unknown) => {
      assert(e instanceof ModelError && e.code === "non_finite_weight", `${name}: ${e}`);
      assert((e as Error).message.includes(`'${name}`), (e as Error).message);
      return true;
    });
    equal(be.memoryBytes(), 0, `${name}: slots freed after checkWeights refused it`);
    // default: no O(file) scan at load; the logit guard stops generation instead of sampling
    const m = await loadModel(b, { backend: "ref" });
    await rejects(generateText(m, [1, 2, 3], { maxTokens: 4 }), (e: unknown) => {
      assert(e instanceof GenerationError && e.code === "non_finite_logits", `${name}: ${e}`);
      return true;
    });
    m.dispose();
  }
});

Deno.test("one NaN logit among finite ones still raises GenerationError (never sampled)", async () => {
  const f = await readGguf(new MemorySource(good));
  const out = f.tensor("output.weight");
  const b = good.slice();
  new DataView(b.buffer).setFloat32(out.fileOffset + 4 * 5 * out.dims[0], NaN, true); // row 5
  const m = await loadModel(b, { backend: "ref" });
  for (const opts of [{}, { temperature: 0 }, { temperature: 1, topK: 5, seed: 1 }]) {
    await rejects(generateText(m, [1, 2], { maxTokens: 3, ...opts }), (e: unknown) => {
      assert(e instanceof GenerationError && e.code === "non_finite_logits", String(e));
      assert(/token id 5 /.test((e as Error).message), (e as Error).message);
      return true;
    });
  }
  const s = new Session(m, { nCtx: 16 });
  await rejects(s.eval([1, 2, 3], { allLogits: true }), GenerationError);
  equal(s.position, 0);
  s.dispose();
  m.dispose();
});

Deno.test("a failed load frees every slot of a caller-supplied backend", async () => {
  // late_missing_tensor.gguf: the last layer lacks a tensor, after most slots are filled
  const late = await rewrite((_m, ts) =>
    ts.splice(ts.findIndex((t) => t.name === "blk.0.ffn_norm.weight"), 1)
  );
  const qwen = synthesizeModel({
    arch: "qwen2moe",
    nEmbd: 32,
    nHead: 2,
    nLayer: 2,
    nFf: 32,
    nVocab: 300,
  });
  const lateQwen = await (async () => {
    const q = await readGguf(new MemorySource(qwen));
    const tensors = [];
    for (const t of q.tensors) {
      if (t.name === "blk.1.ffn_norm.weight") continue;
      tensors.push({ ...t, dims: [...t.dims], data: await q.readTensorBytes(t) });
    }
    return writeGguf({ metadata: q.metadata, tensors });
  })();
  const be = new RefBackend();
  for (let i = 0; i < 20; i++) {
    await rejects(loadModel(late, { backend: be }), ModelError);
    await rejects(loadModel(lateQwen, { backend: be }), ModelError);
    // failing in an expert (checkWeights) and after the store exists (adapters hook)
    await rejects(
      loadModel(await poison("blk.0.ffn_up_exps.weight", NaN), {
        backend: be,
        checkWeights: true,
      }),
      ModelError,
    );
    await rejects(
      loadModel(good, {
        backend: be,
        hooks: {
          adapters: () => {
            throw new ModelError("boom", "adapter failed");
          },
        },
      }),
      ModelError,
    );
  }
  equal(be.memoryBytes(), 0);
  const m = await loadModel(good, { backend: be });
  assert(be.memoryBytes() > 0);
  m.dispose();
  equal(be.memoryBytes(), 0);
});
