/** synthesizeModel's llama-quantize type mixes (quantMixType, fallbackType). */
import assert from "node:assert/strict";
import { fallbackType, quantMixType, synthesizeModel } from "./synthetic.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { MemorySource } from "../store/byte_source.ts";

const T = GgmlType;

Deno.test("fallbackType: llama.cpp's tensor_type_fallback for rows that are not whole blocks", () => {
  assert.equal(fallbackType(T.IQ4_XS, 256), T.IQ4_XS);
  assert.equal(fallbackType(T.IQ4_XS, 96), T.IQ4_NL);
  assert.equal(fallbackType(T.Q2_K, 96), T.Q4_0);
  assert.equal(fallbackType(T.Q3_K, 96), T.Q4_0);
  assert.equal(fallbackType(T.Q4_K, 96), T.Q5_0);
  assert.equal(fallbackType(T.Q5_K, 96), T.Q5_1);
  assert.equal(fallbackType(T.Q6_K, 96), T.Q8_0);
  assert.equal(fallbackType(T.IQ4_XS, 40), T.F16); // not even a 32-block
  assert.equal(fallbackType(T.MXFP4, 48), T.F16);
});

Deno.test("quantMixType: per-role types of each mix", () => {
  const q = (mix: Parameters<typeof quantMixType>[0], name: string, cols = 256, nDims = 2) =>
    quantMixType(mix, name, cols, nDims, 8, 2);
  assert.equal(q("Q4_K_M", "output.weight"), T.Q6_K);
  assert.equal(q("Q4_K_M", "token_embd.weight"), T.Q4_K);
  assert.equal(q("Q4_K_M", "blk.0.ffn_down_exps.weight", 256, 3), T.Q6_K); // use_more_bits(0, 8)
  assert.equal(q("Q4_K_M", "blk.1.ffn_down_exps.weight", 256, 3), T.Q4_K);
  assert.equal(q("Q4_K_M", "blk.3.ffn_down_exps.weight", 256, 3), T.Q6_K); // (3 - 1) % 3 == 2
  assert.equal(q("Q4_K_M", "blk.7.attn_v.weight"), T.Q6_K);
  assert.equal(q("Q4_K_M", "blk.2.attn_q.weight"), T.Q4_K);
  assert.equal(q("Q2_K", "blk.2.attn_v.weight"), T.Q3_K);
  assert.equal(q("Q2_K", "blk.2.ffn_down_exps.weight", 256, 3), T.Q3_K);
  assert.equal(q("Q2_K", "blk.2.ffn_up_exps.weight", 256, 3), T.Q2_K);
  assert.equal(q("Q3_K_M", "blk.0.attn_v.weight"), T.Q5_K);
  assert.equal(q("Q3_K_M", "blk.5.attn_v.weight"), T.Q4_K);
  assert.equal(q("Q3_K_M", "blk.5.attn_k.weight"), T.Q3_K);
  assert.equal(q("IQ4_XS", "blk.0.ffn_down_exps.weight", 256, 3), T.Q5_K);
  assert.equal(q("IQ4_XS", "blk.4.ffn_gate_exps.weight", 256, 3), T.IQ4_XS);
  assert.equal(q("IQ4_XS", "blk.4.ffn_gate_exps.weight", 96, 3), T.IQ4_NL);
  assert.equal(q("IQ4_XS", "output.weight", 96), T.Q8_0);
  assert.equal(q("MXFP4_MOE", "blk.0.ffn_up_exps.weight", 96, 3), T.MXFP4);
  assert.equal(q("MXFP4_MOE", "blk.0.attn_q.weight", 96), T.Q8_0);
  assert.equal(q("MXFP4_MOE", "output.weight"), T.Q8_0);
});

Deno.test("synthesizeModel({mix}): writes the mix's types, routers and norms stay F32", async () => {
  const bytes = synthesizeModel({
    nEmbd: 96,
    nHead: 6,
    nHeadKv: 2,
    nFf: 64,
    nExpert: 3,
    nLayer: 2,
    nVocab: 300,
    mix: "MXFP4_MOE",
  });
  const g = await readGguf(new MemorySource(bytes));
  const types = new Map(g.tensors.map((t) => [t.name, t.type]));
  assert.equal(types.get("blk.0.ffn_gate_exps.weight"), T.MXFP4);
  assert.equal(types.get("blk.1.ffn_down_exps.weight"), T.MXFP4);
  assert.equal(types.get("blk.0.attn_q.weight"), T.Q8_0);
  assert.equal(types.get("token_embd.weight"), T.Q8_0);
  assert.equal(types.get("output.weight"), T.Q8_0);
  assert.equal(types.get("blk.0.ffn_gate_inp.weight"), T.F32);
  assert.equal(types.get("blk.0.attn_norm.weight"), T.F32);
});
