/** Bad model files give typed errors naming the problem. */

import { ok as assert, rejects } from "node:assert/strict";
import { GgufError, ModelError, type MoeEdgeError } from "../../core/errors.ts";
import { loadModel } from "../../core/model/model.ts";
import { synthesizeModel } from "../../core/model/synthetic.ts";
import { readGguf } from "../../core/formats/gguf_reader.ts";
import { writeGguf } from "../../core/formats/gguf_writer.ts";
import { gguf } from "../../core/formats/gguf_types.ts";
import { MemorySource } from "../../core/store/byte_source.ts";

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
