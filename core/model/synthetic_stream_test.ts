/**
 * The streaming synthesizer and the real-size presets: same layout as
 * synthesizeModel, loadable, deterministic, llama.cpp's type mixes.
 */

import assert from "node:assert/strict";
import { readGguf } from "../formats/gguf_reader.ts";
import { MemorySource } from "../store/byte_source.ts";
import { quantMixType, synthesizeModel } from "./synthetic.ts";
import { streamHeader, synthesizeStreamed } from "./synthetic_stream.ts";
import { PRESETS, presetSpec } from "./presets.ts";
import { loadModel } from "./model.ts";
import { generateText } from "../generate/generate.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import "../../wasm/register.ts";

const SMALL = {
  arch: "qwen3moe" as const,
  nEmbd: 256,
  nLayer: 3,
  nHead: 4,
  nHeadKv: 2,
  headDim: 64,
  nExpert: 6,
  nExpertUsed: 2,
  nFf: 256,
  nVocab: 400,
  mix: "Q4_K_M" as const,
  seed: 3,
};

Deno.test("synth stream: the same tensors, types, dims and metadata as synthesizeModel; loads and runs", async () => {
  const streamed = await synthesizeStreamed(SMALL);
  const whole = synthesizeModel(SMALL);
  const a = await readGguf(new MemorySource(streamed));
  const b = await readGguf(new MemorySource(whole));
  assert.equal(streamed.length, whole.length);
  assert.equal(a.dataOffset, b.dataOffset);
  assert.deepEqual(
    a.tensors.map((t) => [t.name, t.type, t.dims.join("x"), t.offset]),
    b.tensors.map((t) => [t.name, t.type, t.dims.join("x"), t.offset]),
  );
  assert.deepEqual([...a.metadata.keys()].sort(), [...b.metadata.keys()].sort());
  // deterministic
  assert.deepEqual(await synthesizeStreamed(SMALL), streamed);
  assert.notDeepEqual(await synthesizeStreamed({ ...SMALL, seed: 4 }), streamed);
  const m = await loadModel(streamed, { backend: "wasm", checkWeights: true });
  const r = await generateText(m, [1, 2, 3], { maxTokens: 4, temperature: 0 });
  assert.equal(r.tokens.length, 4);
  m.dispose();
});

Deno.test("presets: real shapes with llama.cpp's Q4_K_M mix (Q6_K output, Q6_K down/attn_v on use_more_bits layers)", () => {
  const spec = presetSpec("qwen3-30b-a3b");
  const { tensors, dataBytes } = streamHeader(spec);
  const type = (n: string) => tensors.find((t) => t.name === n)!.type;
  assert.equal(type("output.weight"), GgmlType.Q6_K);
  assert.equal(type("token_embd.weight"), GgmlType.Q4_K);
  assert.equal(type("blk.0.ffn_down_exps.weight"), GgmlType.Q6_K);
  assert.equal(type("blk.6.ffn_down_exps.weight"), GgmlType.Q4_K);
  assert.equal(type("blk.8.ffn_down_exps.weight"), GgmlType.Q6_K);
  assert.equal(type("blk.0.ffn_gate_exps.weight"), GgmlType.Q4_K);
  assert.equal(type("blk.0.ffn_gate_inp.weight"), GgmlType.F32);
  const q6 = tensors.filter((t) => /ffn_down_exps/.test(t.name) && t.type === GgmlType.Q6_K);
  assert.equal(q6.length, 24, "half of the 48 layers");
  // Qwen3-30B-A3B Q4_K_M is 18.6 GB in llama.cpp's hands
  assert.ok(dataBytes > 18.0e9 && dataBytes < 19.0e9, `${dataBytes}`);
  const olmoe = streamHeader(presetSpec("olmoe-1b-7b")).dataBytes;
  assert.ok(olmoe > 4.0e9 && olmoe < 4.4e9, `${olmoe}`);
  // every tensor type follows quantMixType at the preset's depth
  for (const t of tensors) {
    if (t.dims.length < 2 || t.name.includes("ffn_gate_inp")) continue;
    assert.equal(
      t.type,
      quantMixType("Q4_K_M", t.name, t.dims[0], t.dims.length, 48, 32 / 4),
      t.name,
    );
  }
  for (const mix of ["Q3_K_M", "Q2_K"] as const) {
    for (const name of Object.keys(PRESETS)) {
      const h = streamHeader(presetSpec(name, { mix, layers: 2, experts: 4, vocab: 300 }));
      assert.ok(h.tensors.length > 0, name);
    }
  }
  assert.throws(() => presetSpec("nope"), { code: "unknown_preset" });
  assert.throws(() => presetSpec("olmoe-1b-7b", { layers: 0 }), { code: "bad_spec" });
});
