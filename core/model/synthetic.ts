/**
 * Deterministic random-weight MoE models written as GGUF: the default model
 * until a trained one ships, and the models of the conformance suite and
 * benchmarks. Same spec + seed → same bytes.
 *
 * @module
 */

import { GgmlType } from "../tensor/ggml_type.ts";
import { rowBytes, traitsOf } from "../tensor/traits.ts";
import { gguf } from "../formats/gguf_types.ts";
import type { GgufValue } from "../formats/gguf_types.ts";
import { GgufValueType } from "../formats/gguf_types.ts";
import { type GgufWriteTensor, writeGguf } from "../formats/gguf_writer.ts";
import { Rng } from "../generate/sampler.ts";
import { buildTestVocab, type VocabSpec } from "../tokenizer/mod.ts";
import { ModelError } from "../errors.ts";

/** Shape and options of a synthetic model. */
export interface SyntheticModelSpec {
  /** Architecture (default `"llama"`). */
  arch?: "llama" | "qwen2moe" | "qwen3moe" | "olmoe";
  /** Hidden size (default 64). */
  nEmbd?: number;
  /** Blocks (default 2). */
  nLayer?: number;
  /** Query heads (default 4). */
  nHead?: number;
  /** KV heads (default 2). */
  nHeadKv?: number;
  /** Head dim (default nEmbd/nHead). */
  headDim?: number;
  /** Experts per layer (default 4; 0 = dense). */
  nExpert?: number;
  /** Experts per token (default 2). */
  nExpertUsed?: number;
  /** Expert FFN width (default 96). */
  nFf?: number;
  /** Shared expert width for qwen2moe (default nFf). */
  nFfShared?: number;
  /** Vocabulary (default: a 512-token test vocab of the arch's tokenizer kind). */
  vocab?: VocabSpec;
  /** Vocabulary size when `vocab` is not given (default 512). */
  nVocab?: number;
  /** Training context (default 512). */
  nCtx?: number;
  /** Type of the big matrices (default F32). */
  type?: GgmlType;
  /** Type of token_embd/output (default: `type`). */
  embdType?: GgmlType;
  /** Write legacy per-expert tensors `blk.N.ffn_*.E.weight` (llama only). */
  legacyExperts?: boolean;
  /** Omit `output.weight` (tied embeddings; llama/qwen3moe). */
  tiedOutput?: boolean;
  /** Q/K/V biases (qwen2moe style). */
  qkvBias?: boolean;
  /** RoPE base (default 10000). */
  ropeBase?: number;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Scale of weights relative to 1/sqrt(fan_in) (default 1). */
  weightScale?: number;
}

class Gauss {
  #rng: Rng;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#rng = new Rng(seed);
  }
  next(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = Math.max(this.#rng.next(), 1e-12), v = this.#rng.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

function vocabMeta(v: VocabSpec): [string, GgufValue][] {
  const m: [string, GgufValue][] = [["tokenizer.ggml.model", gguf.str(v.model)]];
  if (v.pre) m.push(["tokenizer.ggml.pre", gguf.str(v.pre)]);
  m.push(["tokenizer.ggml.tokens", gguf.arr(GgufValueType.STRING, [...v.tokens])]);
  if (v.scores) {
    m.push([
      "tokenizer.ggml.scores",
      gguf.arr(GgufValueType.FLOAT32, Array.from(v.scores, Math.fround)),
    ]);
  }
  if (v.tokenTypes) {
    m.push(["tokenizer.ggml.token_type", gguf.arr(GgufValueType.INT32, Array.from(v.tokenTypes))]);
  }
  if (v.merges) m.push(["tokenizer.ggml.merges", gguf.arr(GgufValueType.STRING, [...v.merges])]);
  const ids: [string, number | undefined][] = [
    ["bos_token_id", v.bosId],
    ["eos_token_id", v.eosId],
    ["unknown_token_id", v.unkId],
    ["padding_token_id", v.padId],
  ];
  for (const [k, id] of ids) if (id !== undefined) m.push([`tokenizer.ggml.${k}`, gguf.u32(id)]);
  if (v.addBos !== undefined) m.push(["tokenizer.ggml.add_bos_token", gguf.bool(v.addBos)]);
  if (v.addEos !== undefined) m.push(["tokenizer.ggml.add_eos_token", gguf.bool(v.addEos)]);
  return m;
}

/** Build the GGUF bytes of a synthetic model. */
export function synthesizeModel(spec: SyntheticModelSpec = {}): Uint8Array {
  const arch = spec.arch ?? "llama";
  const nEmbd = spec.nEmbd ?? 64, nLayer = spec.nLayer ?? 2, nHead = spec.nHead ?? 4;
  // llama.cpp's olmoe declares attn_k_norm as [n_embd]: OLMoE has no GQA
  const nHeadKv = spec.nHeadKv ?? (arch === "olmoe" ? nHead : Math.max(1, nHead >> 1));
  const headDim = spec.headDim ?? Math.floor(nEmbd / nHead);
  const nExpert = spec.nExpert ?? 4, nUsed = spec.nExpertUsed ?? Math.min(2, nExpert);
  const nFf = spec.nFf ?? 96, nFfSh = spec.nFfShared ?? nFf;
  const type = spec.type ?? GgmlType.F32, embdType = spec.embdType ?? type;
  const scaleMul = spec.weightScale ?? 1;
  const vocab = spec.vocab ??
    buildTestVocab(arch === "llama" ? "llama" : "gpt2", { size: spec.nVocab ?? 512 });
  const nVocab = vocab.tokens.length;
  if (headDim % 2 !== 0) {
    throw new ModelError("bad_spec", `Cannot synthesize: head dim ${headDim} must be even`);
  }
  const g = new Gauss(spec.seed ?? 1);
  const tensors: GgufWriteTensor[] = [];

  const add = (name: string, dims: number[], t: GgmlType, scale: number, mean = 0) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = mean + g.next() * scale;
    const tr = traitsOf(t);
    const rows = n / dims[0];
    const rb = rowBytes(t, dims[0]);
    const data = new Uint8Array(rb * rows);
    for (let r = 0; r < rows; r++) tr.quantize(x, r * dims[0], dims[0], data, r * rb);
    tensors.push({ name, dims, type: t, data });
  };
  const mat = (name: string, cols: number, rows: number, extra: number[] = [], t = type) =>
    add(name, [cols, rows, ...extra], t, scaleMul / Math.sqrt(cols));
  const norm = (name: string, n: number) => add(name, [n], GgmlType.F32, 0.1, 1);
  const vec = (name: string, n: number) => add(name, [n], GgmlType.F32, 0.1);

  add("token_embd.weight", [nEmbd, nVocab], embdType, 1);
  norm("output_norm.weight", nEmbd);
  if (!spec.tiedOutput) mat("output.weight", nEmbd, nVocab, [], embdType);
  const qDim = nHead * headDim, kvDim = nHeadKv * headDim;
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}`;
    norm(`${p}.attn_norm.weight`, nEmbd);
    mat(`${p}.attn_q.weight`, nEmbd, qDim);
    mat(`${p}.attn_k.weight`, nEmbd, kvDim);
    mat(`${p}.attn_v.weight`, nEmbd, kvDim);
    if (spec.qkvBias) {
      vec(`${p}.attn_q.bias`, qDim);
      vec(`${p}.attn_k.bias`, kvDim);
      vec(`${p}.attn_v.bias`, kvDim);
    }
    if (arch === "qwen3moe") {
      norm(`${p}.attn_q_norm.weight`, headDim);
      norm(`${p}.attn_k_norm.weight`, headDim);
    } else if (arch === "olmoe") {
      norm(`${p}.attn_q_norm.weight`, qDim);
      norm(`${p}.attn_k_norm.weight`, kvDim);
    }
    mat(`${p}.attn_output.weight`, qDim, nEmbd);
    norm(`${p}.ffn_norm.weight`, nEmbd);
    if (nExpert === 0) {
      mat(`${p}.ffn_gate.weight`, nEmbd, nFf);
      mat(`${p}.ffn_up.weight`, nEmbd, nFf);
      mat(`${p}.ffn_down.weight`, nFf, nEmbd);
      continue;
    }
    add(`${p}.ffn_gate_inp.weight`, [nEmbd, nExpert], GgmlType.F32, 1 / Math.sqrt(nEmbd));
    mat(`${p}.ffn_gate_exps.weight`, nEmbd, nFf, [nExpert]);
    mat(`${p}.ffn_down_exps.weight`, nFf, nEmbd, [nExpert]);
    mat(`${p}.ffn_up_exps.weight`, nEmbd, nFf, [nExpert]);
    if (spec.legacyExperts) {
      // same values, pre-2024 layout: one 2-D tensor per expert
      const merged3 = tensors.splice(-3);
      for (const [i, part] of ["gate", "down", "up"].entries()) {
        const merged = merged3[i];
        const per = merged.data.length / nExpert;
        for (let e = 0; e < nExpert; e++) {
          tensors.push({
            name: `${p}.ffn_${part}.${e}.weight`,
            dims: merged.dims.slice(0, 2),
            type: merged.type,
            data: merged.data.slice(e * per, (e + 1) * per),
          });
        }
      }
    }
    if (arch === "qwen2moe") {
      add(`${p}.ffn_gate_inp_shexp.weight`, [nEmbd], GgmlType.F32, 1 / Math.sqrt(nEmbd));
      mat(`${p}.ffn_gate_shexp.weight`, nEmbd, nFfSh);
      mat(`${p}.ffn_down_shexp.weight`, nFfSh, nEmbd);
      mat(`${p}.ffn_up_shexp.weight`, nEmbd, nFfSh);
    }
  }

  const a = (k: string) => `${arch}.${k}`;
  const meta: [string, GgufValue][] = [
    ["general.architecture", gguf.str(arch)],
    ["general.name", gguf.str(`moe-edge synthetic ${arch}`)],
    [a("context_length"), gguf.u32(spec.nCtx ?? 512)],
    [a("embedding_length"), gguf.u32(nEmbd)],
    [a("block_count"), gguf.u32(nLayer)],
    [a("feed_forward_length"), gguf.u32(arch === "qwen2moe" ? nFfSh : nFf)],
    [a("attention.head_count"), gguf.u32(nHead)],
    [a("attention.head_count_kv"), gguf.u32(nHeadKv)],
    [a("rope.freq_base"), gguf.f32(spec.ropeBase ?? 10000)],
    [a("attention.layer_norm_rms_epsilon"), gguf.f32(1e-5)],
  ];
  if (headDim !== Math.floor(nEmbd / nHead) || arch === "qwen3moe") {
    meta.push([a("attention.key_length"), gguf.u32(headDim)], [
      a("attention.value_length"),
      gguf.u32(headDim),
    ]);
  }
  if (arch === "llama") meta.push([a("rope.dimension_count"), gguf.u32(headDim)]);
  if (nExpert > 0) {
    meta.push([a("expert_count"), gguf.u32(nExpert)], [a("expert_used_count"), gguf.u32(nUsed)]);
  }
  if (arch === "qwen2moe" || arch === "qwen3moe") {
    meta.push([a("expert_feed_forward_length"), gguf.u32(nFf)]);
  }
  if (arch === "qwen2moe") meta.push([a("expert_shared_feed_forward_length"), gguf.u32(nFfSh)]);
  meta.push(...vocabMeta(vocab));
  return writeGguf({ metadata: meta, tensors });
}
