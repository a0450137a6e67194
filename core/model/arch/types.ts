/**
 * The contract of an architecture module (`core/model/arch/<name>.ts`): how
 * it reads its hyper-parameters, which tensors it loads, and the forward pass
 * of one block, composed from the shared blocks of `blocks.ts`.
 *
 * @module
 */

import type {
  AttentionParams,
  Backend,
  KvCache,
  RopeMode,
  RopeParams,
  WeightView,
} from "../../backend/backend.ts";
import type { GgmlType } from "../../tensor/ggml_type.ts";
import type { GgufMetadata, GgufValue } from "../../formats/gguf_types.ts";
import type { Expert, ExpertKey, ExpertWeights, FfnLinear, Scratch } from "../../moe/expert.ts";
import type { MoeLayer } from "../../moe/moe_layer.ts";
import type { Gating } from "../../moe/router.ts";
import type { HParams } from "../hparams.ts";
import type { SyntheticModelSpec } from "../synthetic.ts";
import type { LinearName } from "../transformer.ts";
import type { LayerWeights, ModelWeights, WeightLoader } from "../weights.ts";
import type { QkNorm } from "./blocks.ts";
import type { YarnParams } from "./rope.ts";

/** Float ranges, as `[min, max]`. */
export type FloatRange = readonly [number, number];

/** What an architecture module reads its own hyper-parameters with (all bounded, typed errors). */
export interface HParamContext {
  /** GGUF metadata. */
  readonly meta: GgufMetadata;
  /** `general.architecture` (the key prefix). */
  readonly arch: string;
  /** Common values already read and checked. */
  readonly nLayer: number;
  /** Hidden size. */
  readonly nEmbd: number;
  /** Vocabulary size (rows of `token_embd`). */
  readonly nVocab: number;
  /** Experts per layer. */
  readonly nExpert: number;
  /** Experts per token. */
  readonly nExpertUsed: number;
  /** `feed_forward_length` (0 when absent). */
  readonly nFf: number;
  /** RoPE base (`rope.freq_base`). */
  readonly ropeFreqBase: number;
  /** RoPE frequency scale (`1 / rope.scaling.factor`, f32; 1 when unscaled). */
  readonly ropeFreqScale: number;
  /**
   * YaRN parameters when `rope.scaling.type` is `yarn` (else null), given llama.cpp's
   * `rope_yarn_log_mul` and whether YaRN's `mscale` is that multiplier too (DeepSeek-V2).
   */
  yarn(logMul: number, mscaleFromLogMul: boolean): YarnParams | null;
  /** Whether `<arch>.<key>` is present. */
  has(key: string): boolean;
  /** `<arch>.<key>` as a number, unchecked (`def` when absent, required without `def`). */
  num(key: string, def?: number): number;
  /** `v` itself when an integer in `[min, max]`; `ModelError` `bad_hparam` naming `name` otherwise. */
  check(name: string, v: number, min: number, max: number): number;
  /** `<arch>.<key>` as an integer in `[min, max]` (`def` when absent); `ModelError` `bad_hparam` otherwise. */
  int(key: string, def: number | undefined, min: number, max: number): number;
  /**
   * `<arch>.<key>` as a finite float in `range` (`def` when absent, required without `def`;
   * `GgufError` `missing_key`); `orZero` also accepts 0,
   * `openMin`/`openMax` exclude the ends. `ModelError` `bad_hparam` naming the key otherwise.
   */
  float(
    key: string,
    def: number | undefined,
    range: FloatRange,
    opts?: { openMin?: boolean; openMax?: boolean; orZero?: boolean },
  ): number;
  /** `<arch>.<key>` as a boolean (`def` when absent). */
  bool(key: string, def: boolean): boolean;
  /** `<arch>.<key>` as a string (`def` when absent, required without `def`). */
  str(key: string, def?: string): string;
}

/** How the router of a MoE layer picks and weighs experts (llama.cpp `build_moe_ffn`). */
export interface RoutingParams {
  /** Gate function. */
  readonly gating: Gating;
  /** Renormalise the top-k weights (`norm_w`). */
  readonly normTopK: boolean;
  /** `expert_weights_scale` (0 = none). */
  readonly weightsScale: number;
  /** `expert_group_count` (0 or 1 = no group-limited routing). */
  readonly nGroups: number;
  /** `expert_group_used_count`. */
  readonly nGroupUsed: number;
}

/** Multipliers some architectures apply (Granite); neutral values mean none. */
export interface ModelScales {
  /** Token embeddings × this (0 = none). */
  readonly embedding: number;
  /** Attention and FFN outputs × this before the residual add (0 = none). */
  readonly residual: number;
  /** Attention score scale (0 = `1/sqrt(head_dim)`). */
  readonly attention: number;
  /** Logits ÷ this (0 or 1 = none). */
  readonly logit: number;
}

/** What an architecture module adds to the common hyper-parameters. */
export interface ArchHParams {
  /** Routed expert FFN width. */
  readonly nFfExp: number;
  /** Shared expert FFN width (0 = none). */
  readonly nFfShexp: number;
  /** `expert_weights_scale` (0 = none). */
  readonly expertWeightsScale: number;
  /** Routing (default: the module's `gating`/`normTopK`, no groups). */
  readonly routing?: Partial<RoutingParams>;
  /** Scales (default none). */
  readonly scales?: Partial<ModelScales>;
  /** Leading dense blocks (`leading_dense_block_count`, default 0). */
  readonly nLayerDenseLead?: number;
  /**
   * Blocks the forward pass runs, when `block_count` also counts blocks it does not (llama.cpp
   * `n_layer = n_layer_all - n_layer_nextn`: NextN/MTP blocks after the trunk); default
   * `block_count`.
   */
  readonly nLayer?: number;
  /** YaRN parameters (default: `HParamContext.yarn(0, false)`). */
  readonly yarn?: YarnParams | null;
  /** Multi-head latent attention dimensions. */
  readonly mla?: MlaParams;
  /** Sliding-window attention (gpt-oss). */
  readonly swa?: SwaParams;
}

/** Sliding-window attention layout (llama.cpp `n_swa`, `swa_layers`, `rope_freq_base_train_swa`). */
export interface SwaParams {
  /** `attention.sliding_window`: a row at position p sees keys at positions > p − window. */
  readonly window: number;
  /** `layers[l]`: whether block `l` uses the window (else full attention). */
  readonly layers: readonly boolean[];
  /** RoPE base of the windowed blocks (`rope.freq_base_swa`, default `rope.freq_base`). */
  readonly freqBase: number;
}

/** Multi-head latent attention (DeepSeek-V2/V3) dimensions. */
export interface MlaParams {
  /**
   * MLA form (`attention.key_length_mla` present, `attn_k_b`/`attn_v_b`): the cache holds the
   * latent; false: an older conversion (`attn_kv_b`), decompressed to full per-head K/V.
   */
  readonly absorbed: boolean;
  /** `attention.q_lora_rank` (0: Q is projected directly, as in V2-Lite). */
  readonly qLoraRank: number;
  /** `attention.kv_lora_rank`: width of the compressed KV latent. */
  readonly kvLoraRank: number;
  /** `attention.key_length_mla`: per-head Q/K width (no-rope part + `n_rot`). */
  readonly headDimK: number;
  /** `attention.value_length_mla`: per-head V width. */
  readonly headDimV: number;
  /** Attention score scale (`mscale² / sqrt(headDimK)`, YaRN-corrected). */
  readonly kqScale: number;
}

/** One sequence of a batched forward pass: its rows, cache and first position. */
export interface BatchSeq {
  /** Its KV cache. */
  readonly cache: KvCache;
  /** Position of its first row. */
  readonly startPos: number;
  /** Its rows (tokens) in the batch. */
  readonly n: number;
}

/** Everything the forward pass of one block sees. */
export interface LayerContext {
  /** Backend running the ops. */
  readonly be: Backend;
  /** Hyper-parameters. */
  readonly hp: HParams;
  /** Reusable buffers. */
  readonly S: Scratch;
  /** KV cache of the session (a batch of several sequences throws here: use {@link seqs}). */
  readonly cache: KvCache;
  /**
   * A batch of several sequences (`Transformer.forwardBatch`): their rows are stacked in this
   * order in `x`, and each attends only to its own cache (`attend` in `blocks.ts`). Absent for a
   * single sequence. An architecture that reads `cache`/`startPos` directly gets a typed
   * `ModelError` `batch_unsupported` in a batch, and the batch runs sequence by sequence.
   */
  readonly seqs?: readonly BatchSeq[];
  /** Position of the first token. */
  readonly startPos: number;
  /** Tokens in the batch. */
  readonly n: number;
  /** `positions[t] = startPos + t`. */
  readonly positions: Int32Array;
  /** The model's weights. */
  readonly weights: ModelWeights;
  /** Residual stream, `n × n_embd`, updated in place. */
  readonly x: Float32Array;
  /** RoPE parameters. */
  readonly rope: RopeParams;
  /** Attention parameters. */
  readonly attn: AttentionParams;
  /** MoE layers (null for dense blocks). */
  readonly moe: readonly (MoeLayer | null)[];
  /** Abort signal of the call. */
  readonly signal?: AbortSignal;
  /**
   * The dense FFN's projection runner of `layer` when adapters touch its
   * `ffn_gate`/`ffn_up`/`ffn_down` (else undefined: the fused FFN runs).
   */
  readonly ffn?: (layer: number) => FfnLinear | undefined;
  /**
   * Whether no adapter touches (`layer`, `proj`), so `linear` there is
   * exactly `be.matmul` (a block may then run several projections in one
   * backend call). Absent: assume adapters.
   */
  readonly plain?: (layer: number, proj: LinearName) => boolean;
  /** `out = W·x` plus the linear adapters of (`layer`, `proj`). */
  linear(
    layer: number,
    proj: LinearName,
    w: WeightView,
    x: Float32Array,
    n: number,
    out: Float32Array,
  ): void;
}

/** One architecture: one module under `core/model/arch/`, registered in `arch.ts`. */
export interface ArchSpec {
  /** GGUF `general.architecture`. */
  readonly name: string;
  /** RoPE flavour (llama.cpp `llama_model_rope_type`). */
  readonly ropeMode: RopeMode;
  /** Default gate function of the router. */
  readonly gating: Gating;
  /** Default top-k renormalisation. */
  readonly normTopK: boolean;
  /** Whether `output.weight` may be absent (tied to `token_embd`). */
  readonly tiedOutput: boolean;
  /** Read the architecture's own hyper-parameters. */
  readHParams(c: HParamContext): ArchHParams;
  /** Load (and check) the tensors of block `l`; locate its experts. */
  loadLayer(ld: WeightLoader, hp: HParams, l: number): Promise<LayerWeights>;
  /** Run block `l` on `c.x` in place. */
  forwardLayer(c: LayerContext, l: number): Promise<void>;
  /**
   * Build routed expert `loc.index` of layer `loc.layer` when the architecture's experts are not
   * the default SwiGLU ones (gpt-oss: biases and the clamped SwiGLU); default `SwigluExpert`.
   */
  createExpert?(
    key: ExpertKey,
    backend: Backend,
    weights: () => ExpertWeights,
    scratch: Scratch,
    lw: LayerWeights,
  ): Expert;
  /**
   * How `core/model/synthetic.ts` writes a random-weight model of this architecture (its
   * default vocabulary and heads, its block tensors, its metadata keys). Without it the
   * architecture cannot be synthesized (`ModelError` `bad_spec`).
   */
  readonly synth?: ArchSynth;
}

/** One GGUF key/value of a synthetic model's metadata, in file order. */
export type SynthMetaEntry = [string, GgufValue];

/** The shared-expert tensors of a standard block ({@link SynthContext.standardLayer}). */
export interface SynthSharedExpert {
  /** `ffn_gate_inp_shexp` gate (Qwen2-MoE) before the `ffn_*_shexp` matrices. */
  readonly gated: boolean;
  /** FFN width of the shared expert. */
  readonly width: number;
}

/** Options of {@link SynthContext.standardLayer}. */
export interface SynthStandardOptions {
  /** Q/K norm tensors: `per_head` (`[head_dim]`), `full` (`[n_head·head_dim]`), none by default. */
  readonly qkNorm?: QkNorm;
  /** A shared expert after the routed ones (none by default). */
  readonly shared?: SynthSharedExpert;
  /** A dense FFN of this width instead of the router and experts (a leading dense block). */
  readonly dense?: number;
  /** An `exp_probs_b.bias` selection bias after the router (none by default). */
  readonly probsBias?: boolean;
  /** One fused `attn_qkv` (`[n_embd, qDim + 2·kvDim]`) instead of `attn_q`/`attn_k`/`attn_v`. */
  readonly fusedQkv?: boolean;
}

/**
 * What an architecture's synthesizer hook sees: the resolved common shape of the spec, and the
 * writers that draw a tensor's values (in call order, from the model's one PRNG stream).
 */
export interface SynthContext {
  /** The spec as given. */
  readonly spec: SyntheticModelSpec;
  /** Hidden size. */
  readonly nEmbd: number;
  /** Blocks. */
  readonly nLayer: number;
  /** Query heads. */
  readonly nHead: number;
  /** KV heads (after {@link ArchSynth.nHeadKv}). */
  readonly nHeadKv: number;
  /** Head dim. */
  readonly headDim: number;
  /** Experts per layer (0 = dense). */
  readonly nExpert: number;
  /** Experts per token. */
  readonly nExpertUsed: number;
  /** Expert FFN width. */
  readonly nFf: number;
  /** `nHead · headDim`. */
  readonly qDim: number;
  /** `nHeadKv · headDim`. */
  readonly kvDim: number;
  /** `<arch>.<k>`: the metadata key of `k`. */
  key(k: string): string;
  /** `<arch>.<k>` as a u32 entry. */
  u32(k: string, v: number): SynthMetaEntry;
  /** `<arch>.<k>` as an f32 entry. */
  f32(k: string, v: number): SynthMetaEntry;
  /** A tensor of `type` (before the quant mix) with values `mean + N(0,1)·scale`. */
  add(name: string, dims: number[], type: GgmlType, scale: number, mean?: number): void;
  /** A matrix `[cols, rows, …extra]` of the spec's type, scaled by `1/sqrt(cols)`. */
  mat(name: string, cols: number, rows: number, extra?: number[]): void;
  /** An F32 norm weight around 1. */
  norm(name: string, n: number): void;
  /** An F32 bias around 0. */
  vec(name: string, n: number): void;
  /**
   * The tensors of standard block `l` after `attn_norm`: Q/K/V (biases with `spec.qkvBias`), Q/K
   * norms, `attn_output`, `ffn_norm`, then a dense FFN (no experts) or the router and merged
   * experts (legacy per-expert tensors with `spec.legacyExperts`) and the shared expert.
   */
  standardLayer(l: number, opts?: SynthStandardOptions): void;
}

/**
 * The common metadata of a synthetic model, in parts an architecture's
 * {@link ArchSynth.meta} reorders, edits and extends.
 */
export interface SynthMetaParts {
  /**
   * `general.architecture`, `general.name`, then `context_length`, `embedding_length`,
   * `block_count`, `feed_forward_length` (the expert width), `attention.head_count`,
   * `attention.head_count_kv`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`.
   */
  readonly head: readonly SynthMetaEntry[];
  /** `attention.key_length`/`value_length` when the head dim is not `nEmbd / nHead` (else none). */
  readonly keyLength: readonly SynthMetaEntry[];
  /** `expert_count` and `expert_used_count` (none for a dense model). */
  readonly experts: readonly SynthMetaEntry[];
}

/** An architecture's part of the synthesizer (`core/model/synthetic.ts`). */
export interface ArchSynth {
  /** Tokenizer kind of the default test vocabulary. */
  readonly vocab: "llama" | "gpt2";
  /** Default KV heads for `nHead` query heads (default `max(1, nHead >> 1)`). */
  nHeadKv?(nHead: number): number;
  /**
   * Blocks the file holds for `nLayer` trunk blocks (default `nLayer`; bailingmoe2 adds its
   * NextN blocks): the layer count of the quant mix's per-layer rules.
   */
  blockCount?(spec: SyntheticModelSpec, nLayer: number): number;
  /** The tensors of block `l` after `attn_norm` (default `c.standardLayer(l)`). */
  layer?(c: SynthContext, l: number): void;
  /**
   * The architecture's metadata before the vocabulary's (default
   * `[...head, ...keyLength, ...experts]`).
   */
  meta?(c: SynthContext, parts: SynthMetaParts): SynthMetaEntry[];
}
