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
import { Rng } from "../util/rng.ts";
import { buildTestVocab, type VocabSpec } from "../tokenizer/mod.ts";
import { ModelError } from "../errors.ts";
import { type ArchName, archSpec, DEFAULT_ARCH, SUPPORTED_ARCHS } from "./arch.ts";
import type { SynthContext, SynthMetaEntry, SynthStandardOptions } from "./arch/types.ts";

/** Shape and options of a synthetic model. */
export interface SyntheticModelSpec {
  /**
   * Architecture (default {@link DEFAULT_ARCH}, `"llama"`): a registered one
   * ({@link SUPPORTED_ARCHS}) with a synthesizer hook (`ArchSpec.synth`, which writes its
   * tensors and keys); any other gives `ModelError` `bad_spec`.
   */
  arch?: ArchName;
  /**
   * gpt-oss options: sliding window (default 4 tokens, so short prompts cross it), window
   * pattern (default: llama.cpp's 2), YaRN (default none).
   */
  gptOss?: { window?: number; pattern?: number; yarn?: { factor: number; origCtx: number } };
  /**
   * deepseek2 (MLA, shared experts, leading dense blocks, routing and YaRN options); defaults:
   * no q_lora, kv_lora_rank 32, no-rope 16, rope 16, V 16, 1 dense block of `nFf`, 1 shared
   * expert, softmax gating, no bias, no groups, no norm, no scale, no YaRN.
   */
  deepseek?: SyntheticDeepseekSpec;
  /**
   * ernie4_5-moe options: leading dense blocks (default 1, of `nFfDense`, default `2·nFf`),
   * `exp_probs_b` selection biases (default on); the shared expert is `nFfShared` wide (default
   * `nFf`, 0: none).
   */
  ernie?: SyntheticErnieSpec;
  /**
   * bailingmoe2 options: leading dense blocks (default 1, of `nFfDense`, default `2·nFf`), gating
   * (default sigmoid), `exp_probs_b` (default on), expert groups (default none), weight
   * renormalisation (default on) and scale (default 2.5), shared experts (default 1, each `nFf`
   * wide), rotary dims (default half the head), NextN blocks (default 1).
   */
  bailing?: SyntheticBailingSpec;
  /**
   * granitemoe multipliers (defaults: granite-3.x-1b-a400m's embedding 12, residual 0.22,
   * attention 1/64, logit 6); 0 leaves the optional ones out of the file.
   */
  graniteScales?: { embedding?: number; residual?: number; attention?: number; logit?: number };
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
  /**
   * Shared expert width for qwen2moe and ernie4_5-moe (default nFf) and granitemoe (default 0:
   * none).
   */
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
  /**
   * A llama-quantize type mix (`type` and `embdType` are then ignored): each matrix gets the type
   * llama.cpp's `llama_tensor_get_type` picks for that ftype (the rules for these archs, see
   * {@link quantMixType}), with its fallback for rows that are not whole blocks.
   */
  mix?: QuantMix;
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

/** ernie4_5-moe options of a synthetic model ({@link SyntheticModelSpec.ernie}). */
export interface SyntheticErnieSpec {
  /** `leading_dense_block_count`. */
  denseLead?: number;
  /** Dense FFN width (`feed_forward_length`, default `2·nFf`). */
  nFfDense?: number;
  /** Write `exp_probs_b` selection biases. */
  probsBias?: boolean;
}

/** bailingmoe2 options of a synthetic model ({@link SyntheticModelSpec.bailing}). */
export interface SyntheticBailingSpec {
  /** `leading_dense_block_count`. */
  denseLead?: number;
  /** Dense FFN width (`feed_forward_length`). */
  nFfDense?: number;
  /** Gate function (`expert_gating_func`). */
  gating?: "softmax" | "sigmoid";
  /** Write `exp_probs_b` selection biases. */
  probsBias?: boolean;
  /** `expert_group_count` and `expert_group_used_count` (default: not written). */
  groups?: readonly [number, number];
  /** `expert_weights_norm`. */
  norm?: boolean;
  /** `expert_weights_scale`. */
  scale?: number;
  /** `expert_shared_count`. */
  nShared?: number;
  /** `rope.dimension_count`. */
  ropeDim?: number;
  /** `nextn_predict_layers`: NextN/MTP blocks written after the trunk (not run). */
  nextn?: number;
}

/** deepseek2 options of a synthetic model ({@link SyntheticModelSpec.deepseek}). */
export interface SyntheticDeepseekSpec {
  /** `attention.q_lora_rank` (0: `attn_q` directly). */
  qLoraRank?: number;
  /** `attention.kv_lora_rank`. */
  kvLoraRank?: number;
  /** Per-head no-rope Q/K width (`key_length_mla - rope.dimension_count`). */
  nopeDim?: number;
  /** `rope.dimension_count`. */
  ropeDim?: number;
  /** `attention.value_length_mla`. */
  vDim?: number;
  /** `leading_dense_block_count`. */
  denseLead?: number;
  /** Dense FFN width (`feed_forward_length`, default `nFf`). */
  nFfDense?: number;
  /** `expert_shared_count`. */
  nShared?: number;
  /** Gate function (`expert_gating_func`). */
  gating?: "softmax" | "sigmoid";
  /** Write `exp_probs_b` selection biases. */
  probsBias?: boolean;
  /** `expert_group_count` and `expert_group_used_count`. */
  groups?: readonly [number, number];
  /** `expert_weights_norm`. */
  norm?: boolean;
  /** `expert_weights_scale` (0: not written). */
  scale?: number;
  /** false: an older conversion without MLA keys, with `attn_kv_b` (default true). */
  mla?: boolean;
  /** YaRN: `rope.scaling.factor`, `original_context_length`, `yarn_log_multiplier` (0: not written). */
  yarn?: { factor: number; origCtx: number; logMul: number };
}

/** The llama-quantize ftypes {@link SyntheticModelSpec.mix} can reproduce. */
export type QuantMix = "Q2_K" | "Q3_K_M" | "Q4_K_M" | "IQ4_XS" | "MXFP4_MOE";

const T = GgmlType;
const MIX_BASE: Record<QuantMix, GgmlType> = {
  Q2_K: T.Q2_K,
  Q3_K_M: T.Q3_K,
  Q4_K_M: T.Q4_K,
  IQ4_XS: T.IQ4_XS,
  MXFP4_MOE: T.MXFP4,
};

/** llama.cpp `use_more_bits(i, n)`: first and last eighth of the layers, and every third between. */
function useMoreBits(i: number, n: number): boolean {
  const e = Math.trunc(n / 8);
  return i < e || i >= Math.trunc((7 * n) / 8) || (i - e) % 3 === 2;
}

/**
 * llama.cpp `tensor_type_fallback`: a type whose block does not divide the row length `cols` is
 * replaced (IQ4_XS → IQ4_NL; Q2_K, Q3_K → Q4_0; Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0), and by F16
 * when even that does not fit.
 */
export function fallbackType(type: GgmlType, cols: number): GgmlType {
  const bs = traitsOf(type).blockSize;
  if (cols % bs === 0) return type;
  const fb: Partial<Record<number, GgmlType>> = {
    [T.IQ4_XS]: T.IQ4_NL,
    [T.Q2_K]: T.Q4_0,
    [T.Q3_K]: T.Q4_0,
    [T.Q4_K]: T.Q5_0,
    [T.Q5_K]: T.Q5_1,
    [T.Q6_K]: T.Q8_0,
  };
  const r = fb[type] ?? type;
  return cols % traitsOf(r).blockSize === 0 ? r : T.F16;
}

/**
 * The type llama-quantize gives tensor `name` (row length `cols`, `nDims` dimensions) for `mix`,
 * following `llama_tensor_get_type` for MoE models without an importance matrix (no falcon /
 * 70B / 8-expert special cases): `output` Q6_K (Q8_0 for MXFP4_MOE or when its rows are not whole
 * blocks of the base type); `attn_v` (and a fused `attn_qkv`) Q3_K or Q4_K (Q2_K, by GQA ≥ 4), Q5_K for the first two
 * layers then Q4_K (Q3_K_M), Q6_K on `use_more_bits` layers (Q4_K_M), Q5_K with GQA ≥ 4 (IQ4_XS);
 * `ffn_down*` Q3_K (Q2_K), Q5_K for the first sixteenth then Q4_K (Q3_K_M), Q6_K on
 * `use_more_bits` layers (Q4_K_M), Q5_K for the first eighth (IQ4_XS); MXFP4_MOE: 3-D expert
 * tensors MXFP4, every other matrix Q8_0; everything else the base type. Then
 * {@link fallbackType}.
 */
export function quantMixType(
  mix: QuantMix,
  name: string,
  cols: number,
  nDims: number,
  nLayer: number,
  nGqa: number,
): GgmlType {
  const base = MIX_BASE[mix];
  const m = /^blk\.(\d+)\.(.+)\.weight$/.exec(name);
  const layer = m ? Number(m[1]) : -1;
  const role = m ? m[2] : name.replace(/\.weight$/, "");
  let t: GgmlType = base;
  if (role === "output") {
    t = mix === "MXFP4_MOE" || cols % traitsOf(base).blockSize !== 0 ? T.Q8_0 : T.Q6_K;
  } else if (mix === "MXFP4_MOE") {
    t = nDims === 3 ? T.MXFP4 : T.Q8_0;
  } else if (role === "attn_v" || role === "attn_qkv") {
    // llama.cpp treats a fused attn_qkv as attn_v-like (category_is_attn_v)
    if (mix === "Q2_K") t = nGqa >= 4 ? T.Q4_K : T.Q3_K;
    else if (mix === "Q3_K_M") t = layer < 2 ? T.Q5_K : T.Q4_K;
    else if (mix === "Q4_K_M" && useMoreBits(layer, nLayer)) t = T.Q6_K;
    else if (mix === "IQ4_XS" && nGqa >= 4) t = T.Q5_K;
  } else if (role.startsWith("ffn_down")) {
    if (mix === "Q2_K") t = T.Q3_K;
    else if (mix === "Q3_K_M") t = layer < Math.trunc(nLayer / 16) ? T.Q5_K : T.Q4_K;
    else if (mix === "Q4_K_M" && useMoreBits(layer, nLayer)) t = T.Q6_K;
    else if (mix === "IQ4_XS" && layer < Math.trunc(nLayer / 8)) t = T.Q5_K;
  }
  return fallbackType(t, cols);
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

/** One tensor of a synthetic model's layout: what `synthesizeModel` would fill with draws. */
export interface SyntheticTensorLayout {
  /** Tensor name. */
  readonly name: string;
  /** ggml dims (`[cols, rows, …]`). */
  readonly dims: readonly number[];
  /** Type after the quant mix. */
  readonly type: GgmlType;
  /** Standard deviation of the values drawn. */
  readonly scale: number;
  /** Mean of the values drawn. */
  readonly mean: number;
}

/** Set while {@linkcode synthesizeLayout} runs: `add` records tensors instead of drawing them. */
let layoutSink: SyntheticTensorLayout[] | null = null;

/**
 * The layout of `synthesizeModel(spec)` without its data: the GGUF bytes of its metadata with no
 * tensor (header and key/values only) and the tensors it would hold, in order (the streaming
 * writer, core/model/synthetic_stream.ts, fills them). Not for `legacyExperts`.
 */
export function synthesizeLayout(
  spec: SyntheticModelSpec,
): { metadataOnly: Uint8Array; tensors: SyntheticTensorLayout[] } {
  if (spec.legacyExperts) {
    throw new ModelError("bad_spec", "Cannot lay out a synthetic model with legacy experts");
  }
  const tensors: SyntheticTensorLayout[] = [];
  layoutSink = tensors;
  try {
    return { metadataOnly: synthesizeModel(spec), tensors };
  } finally {
    layoutSink = null;
  }
}

/** Build the GGUF bytes of a synthetic model. */
export function synthesizeModel(spec: SyntheticModelSpec = {}): Uint8Array {
  const arch: string = spec.arch ?? DEFAULT_ARCH;
  const synth = archSpec(arch)?.synth;
  if (!synth) {
    throw new ModelError(
      "bad_spec",
      `Cannot synthesize architecture '${arch}': one of ${SUPPORTED_ARCHS.join(", ")}`,
      { arch },
    );
  }
  const nEmbd = spec.nEmbd ?? 64, nLayer = spec.nLayer ?? 2, nHead = spec.nHead ?? 4;
  const nHeadKv = spec.nHeadKv ?? synth.nHeadKv?.(nHead) ?? Math.max(1, nHead >> 1);
  const headDim = spec.headDim ?? Math.floor(nEmbd / nHead);
  const nExpert = spec.nExpert ?? 4, nUsed = spec.nExpertUsed ?? Math.min(2, nExpert);
  const nFf = spec.nFf ?? 96;
  const type = spec.type ?? GgmlType.F32, embdType = spec.embdType ?? type;
  const scaleMul = spec.weightScale ?? 1;
  const vocab = spec.vocab ?? buildTestVocab(synth.vocab, { size: spec.nVocab ?? 512 });
  const nVocab = vocab.tokens.length;
  if (headDim % 2 !== 0) {
    throw new ModelError("bad_spec", `Cannot synthesize: head dim ${headDim} must be even`);
  }
  // llama-quantize counts every block in the file (NextN blocks too) for its per-layer rules
  const mixLayers = synth.blockCount?.(spec, nLayer) ?? nLayer;
  const g = new Gauss(spec.seed ?? 1);
  const tensors: GgufWriteTensor[] = [];

  const add = (name: string, dims: number[], t0: GgmlType, scale: number, mean = 0) => {
    // llama-quantize keeps the router (ffn_gate_inp), 1-D tensors and biases in F32
    const t = spec.mix !== undefined && dims.length > 1 && !name.includes("ffn_gate_inp") &&
        name.endsWith(".weight")
      ? quantMixType(spec.mix, name, dims[0], dims.length, mixLayers, nHead / nHeadKv)
      : t0;
    if (layoutSink) return void layoutSink.push({ name, dims, type: t, scale, mean });
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
  const qDim = nHead * headDim, kvDim = nHeadKv * headDim;
  const key = (k: string) => `${arch}.${k}`;

  /** The standard block after attn_norm (the layout most architectures share). */
  const standardLayer = (l: number, opts: SynthStandardOptions = {}) => {
    const p = `blk.${l}`;
    if (opts.fusedQkv) mat(`${p}.attn_qkv.weight`, nEmbd, qDim + 2 * kvDim);
    else {
      mat(`${p}.attn_q.weight`, nEmbd, qDim);
      mat(`${p}.attn_k.weight`, nEmbd, kvDim);
      mat(`${p}.attn_v.weight`, nEmbd, kvDim);
    }
    if (spec.qkvBias) {
      vec(`${p}.attn_q.bias`, qDim);
      vec(`${p}.attn_k.bias`, kvDim);
      vec(`${p}.attn_v.bias`, kvDim);
    }
    if (opts.qkNorm === "per_head") {
      norm(`${p}.attn_q_norm.weight`, headDim);
      norm(`${p}.attn_k_norm.weight`, headDim);
    } else if (opts.qkNorm === "full") {
      norm(`${p}.attn_q_norm.weight`, qDim);
      norm(`${p}.attn_k_norm.weight`, kvDim);
    }
    mat(`${p}.attn_output.weight`, qDim, nEmbd);
    norm(`${p}.ffn_norm.weight`, nEmbd);
    if (nExpert === 0 || opts.dense !== undefined) {
      const w = opts.dense ?? nFf;
      mat(`${p}.ffn_gate.weight`, nEmbd, w);
      mat(`${p}.ffn_up.weight`, nEmbd, w);
      mat(`${p}.ffn_down.weight`, w, nEmbd);
      return;
    }
    add(`${p}.ffn_gate_inp.weight`, [nEmbd, nExpert], GgmlType.F32, 1 / Math.sqrt(nEmbd));
    if (opts.probsBias) add(`${p}.exp_probs_b.bias`, [nExpert], GgmlType.F32, 0.3);
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
    const sh = opts.shared;
    if (sh) {
      if (sh.gated) {
        add(`${p}.ffn_gate_inp_shexp.weight`, [nEmbd], GgmlType.F32, 1 / Math.sqrt(nEmbd));
      }
      mat(`${p}.ffn_gate_shexp.weight`, nEmbd, sh.width);
      mat(`${p}.ffn_down_shexp.weight`, sh.width, nEmbd);
      mat(`${p}.ffn_up_shexp.weight`, nEmbd, sh.width);
    }
  };

  const c: SynthContext = {
    spec,
    nEmbd,
    nLayer,
    nHead,
    nHeadKv,
    headDim,
    nExpert,
    nExpertUsed: nUsed,
    nFf,
    qDim,
    kvDim,
    key,
    u32: (k, v) => [key(k), gguf.u32(v)],
    f32: (k, v) => [key(k), gguf.f32(v)],
    add,
    mat: (name, cols, rows, extra) => mat(name, cols, rows, extra),
    norm,
    vec,
    standardLayer,
  };

  add("token_embd.weight", [nEmbd, nVocab], embdType, 1);
  norm("output_norm.weight", nEmbd);
  if (!spec.tiedOutput) mat("output.weight", nEmbd, nVocab, [], embdType);
  for (let l = 0; l < nLayer; l++) {
    norm(`blk.${l}.attn_norm.weight`, nEmbd);
    if (synth.layer) synth.layer(c, l);
    else standardLayer(l);
  }

  const head: SynthMetaEntry[] = [
    ["general.architecture", gguf.str(arch)],
    ["general.name", gguf.str(`moe-edge synthetic ${arch}`)],
    c.u32("context_length", spec.nCtx ?? 512),
    c.u32("embedding_length", nEmbd),
    c.u32("block_count", nLayer),
    c.u32("feed_forward_length", nFf),
    c.u32("attention.head_count", nHead),
    c.u32("attention.head_count_kv", nHeadKv),
    c.f32("rope.freq_base", spec.ropeBase ?? 10000),
    c.f32("attention.layer_norm_rms_epsilon", 1e-5),
  ];
  const keyLength: SynthMetaEntry[] = headDim !== Math.floor(nEmbd / nHead)
    ? [c.u32("attention.key_length", headDim), c.u32("attention.value_length", headDim)]
    : [];
  const experts: SynthMetaEntry[] = nExpert > 0
    ? [c.u32("expert_count", nExpert), c.u32("expert_used_count", nUsed)]
    : [];
  const meta = synth.meta
    ? synth.meta(c, { head, keyLength, experts })
    : [...head, ...keyLength, ...experts];
  meta.push(...vocabMeta(vocab));
  return writeGguf({ metadata: meta, tensors });
}
