/**
 * `inspect` reads the GGUF index only (a counting ByteSource proves it) and reports bytes per
 * expert per layer and per type, on a synthesized model whose ffn_down alternates Q4_K/Q6_K
 * (as in real Q4_K_M files).
 */

import assert from "node:assert/strict";
import { formatInspect, inspectModel, shortestFloat } from "../cli/inspect.ts";
import { gguf, readGguf, writeGguf } from "../core/formats/mod.ts";
import { ggmlTensorBytes } from "../core/formats/ggml_blocks.ts";
import { synthesizeModel } from "../core/model/synthetic.ts";
import { type ByteSource, MemorySource } from "../core/store/byte_source.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { GgufError } from "../core/errors.ts";

/** Counts every byte read through it. */
class CountingSource implements ByteSource {
  readonly size: number;
  readonly name = "counting";
  bytesRead = 0;
  maxEnd = 0;
  constructor(readonly inner: ByteSource) {
    this.size = inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.bytesRead += length;
    this.maxEnd = Math.max(this.maxEnd, offset + length);
    return this.inner.read(offset, length);
  }
}

/** A Q4_K model, then ffn_down of every odd layer rewritten as Q6_K (random bytes). */
async function mixedModel(nLayer: number): Promise<Uint8Array> {
  const base = synthesizeModel({
    nEmbd: 256,
    nFf: 256,
    nLayer,
    nExpert: 8,
    nExpertUsed: 2,
    nHead: 4,
    nHeadKv: 2,
    nVocab: 300,
    type: GgmlType.Q4_K,
    embdType: GgmlType.Q8_0,
    seed: 9,
  });
  const f = await readGguf(new MemorySource(base));
  const tensors = [];
  for (const t of f.tensors) {
    const odd = /^blk\.(\d+)\.ffn_down_exps/.exec(t.name);
    if (odd && Number(odd[1]) % 2 === 1) {
      const data = new Uint8Array(ggmlTensorBytes(GgmlType.Q6_K, t.dims));
      crypto.getRandomValues(data.subarray(0, Math.min(data.length, 65536)));
      tensors.push({ name: t.name, dims: t.dims, type: GgmlType.Q6_K, data });
    } else {
      tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await f.readTensorBytes(t) });
    }
  }
  const metadata = new Map(f.metadata);
  metadata.set("general.file_type", gguf.u32(15)); // as llama-quantize writes for Q4_K_M
  return writeGguf({ metadata, tensors });
}

Deno.test("inspect: mixed Q4_K/Q6_K experts, per layer and per type, from the index only", async () => {
  const bytes = await mixedModel(4);
  const src = new CountingSource(new MemorySource(bytes));
  const r = await inspectModel(src);
  const file = await readGguf(new MemorySource(bytes));
  // only the head of the file: at most the reader's first window (256 KiB), never the tensors
  assert.ok(src.bytesRead <= Math.max(file.dataOffset, 256 * 1024), `${src.bytesRead} read`);
  assert.ok(src.bytesRead * 8 < bytes.length, `${src.bytesRead} of ${bytes.length}`);
  assert.equal(r.index_bytes, file.dataOffset);
  const q4 = ggmlTensorBytes(GgmlType.Q4_K, [256, 256]);
  const q6 = ggmlTensorBytes(GgmlType.Q6_K, [256, 256]);
  assert.equal(r.experts_by_layer.length, 4);
  for (const l of r.experts_by_layer) {
    const odd = l.layer % 2 === 1;
    assert.equal(l.experts, 8);
    assert.deepEqual([l.gate?.type, l.up.type, l.down.type], [
      "Q4_K",
      "Q4_K",
      odd ? "Q6_K" : "Q4_K",
    ]);
    assert.equal(l.down.bytes, odd ? q6 : q4);
    assert.equal(l.bytes_per_expert, 2 * q4 + (odd ? q6 : q4));
  }
  assert.equal(r.bytes_per_expert, 2 * q4 + q6);
  assert.equal(r.bytes_per_expert_min, 3 * q4);
  assert.deepEqual(r.expert_bytes_by_type, { Q4_K: 8 * (4 * 2 + 2) * q4, Q6_K: 8 * 2 * q6 });
  assert.equal(r.expert_bytes_total, r.expert_bytes_by_type.Q4_K + r.expert_bytes_by_type.Q6_K);
  assert.equal(r.experts_total, 32);
  assert.equal(r.file_type, "Q4_K_M");
  assert.equal(r.parameters, file.tensors.reduce((a, t) => a + t.dims.reduce((p, d) => p * d), 0));
  assert.deepEqual(r.tokenizer, { model: "llama", tokens: 300, chat_template: false });
  const text = formatInspect(r);
  assert.match(text, /experts\s+8 per layer, 2 used, \d+–\d+ bytes each \(differs by layer\)/);
  assert.match(text, /^ {2}1\s+Q4_K\s+Q4_K\s+Q6_K\s+\d+/m);
  assert.match(text, /^file type\s+Q4_K_M$/m);
  assert.match(text, /^parameters\s+[\d.]+ M \(\d+\)$/m);
  assert.match(text, /expert types\s+Q4_K [\d.]+ [KM]iB, Q6_K [\d.]+ [KM]iB/);
});

Deno.test("inspect: legacy per-expert tensors and a bigger file read the same few bytes", async () => {
  const small = new CountingSource(new MemorySource(await mixedModel(2)));
  await inspectModel(small);
  const big = new CountingSource(new MemorySource(await mixedModel(8)));
  await inspectModel(big);
  assert.ok(big.size > 3 * small.size);
  assert.ok(big.bytesRead <= 256 * 1024 && small.bytesRead <= 256 * 1024);
  const legacy = synthesizeModel({ legacyExperts: true, nExpert: 3, nLayer: 2, seed: 4 });
  const r = await inspectModel(new MemorySource(legacy));
  assert.equal(r.experts_total, 6);
  assert.equal(r.experts_by_layer[1].up.type, "F32");
  assert.equal(r.bytes_per_expert, 3 * 64 * 96 * 4);
});

Deno.test("inspect: floats read as stored (f32 → shortest), hyper-parameters spaced apart", async () => {
  assert.equal(shortestFloat(Math.fround(1e-5)), 1e-5);
  assert.equal(shortestFloat(Math.fround(0.1)), 0.1);
  assert.equal(shortestFloat(10000), 10000);
  assert.equal(shortestFloat(0.1), 0.1); // not an f32 value: unchanged
  for (let i = 0; i < 2000; i++) {
    const f = Math.fround((Math.random() - 0.5) * 10 ** (Math.random() * 20 - 10));
    assert.equal(Math.fround(shortestFloat(f)), f); // never changes the stored value
  }
  const r = await inspectModel(new MemorySource(synthesizeModel({ seed: 1 })));
  const text = formatInspect(r);
  for (const line of text.split("\n\n")[0].split("\n")) {
    assert.match(line, /^[a-zA-Z]+( [a-z]+)? {2,}\S/, `key and value run together: '${line}'`);
  }
  assert.match(text, /^rmsEps\s+0\.00001$/m);
});

Deno.test("inspect: a file that is not GGUF is a GgufError naming the bytes in hex", async () => {
  const bad = new TextEncoder().encode("PK\x03\x04 not a gguf file at all");
  await assert.rejects(
    inspectModel(new MemorySource(bad)),
    (e: unknown) =>
      e instanceof GgufError && e.code === "bad_magic" &&
      /got 50 4b 03 04 \("PK\.\."\)/.test(e.message),
  );
});

Deno.test("inspect: an http(s) URL is inspected from its index by Range requests", async () => {
  const { startFaultServer } = await import("../core/store/fault_server_test_util.ts");
  const bytes = await mixedModel(2);
  const server = startFaultServer(bytes);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../cli.ts", import.meta.url).pathname,
        "inspect",
        "-m",
        server.url,
        "--json",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    const r = JSON.parse(dec.decode(out.stdout));
    assert.deepEqual(r.experts_by_layer.map((l: { down: { type: string } }) => l.down.type), [
      "Q4_K",
      "Q6_K",
    ]);
    assert.equal(r.file_bytes, bytes.length);
    assert.ok(server.requests <= 3, `${server.requests} requests`); // probe + one index window
  } finally {
    await server.stop();
  }
});
