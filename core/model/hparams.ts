/**
 * Hyper-parameters read from GGUF metadata, validated against bounds so an
 * absurd header fails with a `ModelError` instead of a huge allocation.
 *
 * @module
 */

import { ModelError } from "../errors.ts";
import type { GgufMetadata } from "../formats/gguf_types.ts";
import { getBool, getNumber, getPerLayer, getString } from "../formats/gguf_meta.ts";
import { type ArchSpec, archSpec, SUPPORTED_ARCHS } from "./arch.ts";
import type {
  HParamContext,
  MlaParams,
  ModelScales,
  RoutingParams,
  SwaParams,
} from "./arch/types.ts";
import type { YarnParams } from "./arch/rope.ts";

/** Model hyper-parameters (llama.cpp `llama_hparams` subset). */
export interface HParams {
  /** Architecture facts. */
  readonly arch: ArchSpec;
  /** Vocabulary size (rows of `token_embd`). */
  readonly nVocab: number;
  /** Training context length. */
  readonly nCtxTrain: number;
  /** Hidden size. */
  readonly nEmbd: number;
  /** Number of blocks the forward pass runs (`block_count` less any NextN/MTP blocks). */
  readonly nLayer: number;
  /** Query heads per layer. */
  readonly nHead: number;
  /** KV heads per layer. */
  readonly nHeadKv: number;
  /** K head dim. */
  readonly headDimK: number;
  /** V head dim. */
  readonly headDimV: number;
  /** Rotated dims per head. */
  readonly nRot: number;
  /** RoPE base. */
  readonly ropeFreqBase: number;
  /** RoPE frequency scale (`1/factor`). */
  readonly ropeFreqScale: number;
  /** RMSNorm epsilon. */
  readonly rmsEps: number;
  /** Experts per MoE layer (0 = dense). */
  readonly nExpert: number;
  /** Experts used per token. */
  readonly nExpertUsed: number;
  /** Routed expert FFN width. */
  readonly nFfExp: number;
  /** Shared expert FFN width (Qwen2-MoE), 0 when none. */
  readonly nFfShexp: number;
  /** Dense FFN width (`feed_forward_length`). */
  readonly nFf: number;
  /** `expert_weights_scale` (0 = none). */
  readonly expertWeightsScale: number;
  /** How MoE layers route (gate function, renormalisation, scale, expert groups). */
  readonly routing: RoutingParams;
  /** Embedding, residual, attention and logit multipliers (Granite); neutral otherwise. */
  readonly scales: ModelScales;
  /** Leading blocks with a dense FFN before the MoE blocks (`leading_dense_block_count`). */
  readonly nLayerDenseLead: number;
  /** YaRN RoPE scaling (`rope.scaling.type = yarn`), null otherwise. */
  readonly yarn: YarnParams | null;
  /** Multi-head latent attention dimensions (deepseek2), null otherwise. */
  readonly mla: MlaParams | null;
  /** Sliding-window attention layout (gpt-oss), null otherwise. */
  readonly swa: SwaParams | null;
}

/**
 * YaRN parameters as llama.cpp's context derives them: `ext_factor` 1, `beta_fast`/`beta_slow`
 * 32/1 (llama.cpp's defaults for these architectures), `attn_factor` from the magnitude
 * scales (`get_mscale`) cancelled by the kernel's own `1 + 0.1·ln(factor)`, times
 * `rope.scaling.attn_factor`; all in f32.
 */
function yarnParams(
  c: HParamContext,
  freqScale: number,
  nCtxTrain: number,
  logMul: number,
  mscaleFromLogMul: boolean,
): YarnParams {
  const f = Math.fround;
  const factor = f(1 / f(freqScale));
  const getMscale = (scale: number, m: number) =>
    scale <= 1 ? 1 : f(f(f(0.1 * f(m)) * f(Math.log(scale))) + 1);
  let attn: number;
  if (logMul !== 0) {
    const m = mscaleFromLogMul && f(logMul) !== 1 ? logMul : 1;
    attn = f(getMscale(factor, m) / getMscale(factor, logMul));
  } else {
    attn = getMscale(factor, 1);
  }
  attn = f(attn * f(1 / f(1 + f(0.1 * f(Math.log(factor))))));
  attn = f(attn * f(c.float("rope.scaling.attn_factor", 1, HPARAM_FLOAT_RANGES.ropeAttnFactor)));
  return {
    extFactor: 1,
    attnFactor: attn,
    // llama.cpp reads rope.scaling.yarn_beta_* only for grok and mistral3: the defaults here
    betaFast: 32,
    betaSlow: 1,
    nCtxOrig: c.int("rope.scaling.original_context_length", nCtxTrain, 1, HPARAM_LIMITS.nCtx),
  };
}

/** Upper bounds on hyper-parameters; anything larger is rejected as malformed. */
export const HPARAM_LIMITS = {
  nEmbd: 65536,
  nLayer: 1024,
  nHead: 1024,
  headDim: 4096,
  nExpert: 4096,
  nFf: 1 << 20,
  nVocab: 1 << 22,
  nCtx: 1 << 24,
} as const;

function bounded(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new ModelError(
      "bad_hparam",
      `Cannot load model: ${name} must be an integer in [${min}, ${max}]: received ${v}`,
      { field: name, value: v },
    );
  }
  return v;
}

/** Ranges of the float hyper-parameters (inclusive unless noted); NaN and ±Infinity never pass. */
export const HPARAM_FLOAT_RANGES = {
  /** `rope.scaling.factor`: 0 means unscaled (as in llama.cpp), else within these bounds. */
  ropeScalingFactor: [1e-3, 1e6],
  /** `rope.freq_base`: above 1 (exclusive) and finite in f32. */
  ropeFreqBase: [1, 3.4028234663852886e38],
  /** `attention.layer_norm_rms_epsilon`: both ends exclusive. */
  rmsEps: [0, 1],
  /** `expert_weights_scale`: 0 means none. */
  expertWeightsScale: [0, 1e6],
  /** `rope.scaling.attn_factor`. */
  ropeAttnFactor: [1e-6, 1e6],
} as const;

/** `ModelError` `bad_hparam` "Cannot load model: `message`" naming `field` (architecture checks). */
export function badHparam(field: string, message: string): ModelError {
  return new ModelError("bad_hparam", `Cannot load model: ${message}`, { field });
}

function badFloat(key: string, v: number, range: string): ModelError {
  return new ModelError(
    "bad_hparam",
    `Cannot load model: ${key} must be ${range}: received ${v}`,
    { field: key, key, value: v },
  );
}

/** A float that must be finite and in [min, max] (`openMin`/`openMax` exclude the ends). */
function floatIn(
  key: string,
  v: number,
  [min, max]: readonly [number, number],
  opts: { openMin?: boolean; openMax?: boolean; orZero?: boolean } = {},
): number {
  if (opts.orZero && v === 0) return 0;
  const lo = opts.openMin ? v > min : v >= min;
  const hi = opts.openMax ? v < max : v <= max;
  if (!Number.isFinite(v) || !lo || !hi) {
    const range = `${opts.openMin ? "(" : "["}${min}, ${max}${opts.openMax ? ")" : "]"}`;
    throw badFloat(key, v, `${opts.orZero ? "0 or " : ""}a finite number in ${range}`);
  }
  return v;
}

function uniform(name: string, v: number[]): number {
  if (v.some((x) => x !== v[0])) {
    throw new ModelError(
      "unsupported_hparam",
      `Cannot load model: per-layer ${name} values differ (${
        v.join(",")
      }); only uniform values are supported`,
      { field: name },
    );
  }
  return v[0];
}

/**
 * Read and validate hyper-parameters. `nVocab` comes from the embedding
 * tensor, which the caller passes in.
 */
export function readHParams(meta: GgufMetadata, nVocab: number): HParams {
  const archName = getString(meta, "general.architecture");
  const arch = archSpec(archName);
  if (!arch) {
    throw new ModelError(
      "unsupported_arch",
      `Cannot load model: architecture '${archName}' is not supported (supported: ${
        SUPPORTED_ARCHS.join(", ")
      })`,
      { arch: archName },
    );
  }
  const k = (s: string) => `${archName}.${s}`;
  const L = HPARAM_LIMITS;
  const nEmbd = bounded("embedding_length", getNumber(meta, k("embedding_length")), 1, L.nEmbd);
  const nLayer = bounded("block_count", getNumber(meta, k("block_count")), 1, L.nLayer);
  const nHead = bounded(
    "attention.head_count",
    uniform("head_count", getPerLayer(meta, k("attention.head_count"), nLayer)),
    1,
    L.nHead,
  );
  const nHeadKv = bounded(
    "attention.head_count_kv",
    uniform("head_count_kv", getPerLayer(meta, k("attention.head_count_kv"), nLayer, nHead)),
    1,
    nHead,
  );
  if (nHead % nHeadKv !== 0) {
    throw new ModelError(
      "bad_hparam",
      `Cannot load model: head_count ${nHead} is not a multiple of head_count_kv ${nHeadKv}`,
      { field: "attention.head_count_kv" },
    );
  }
  const defHead = Math.floor(nEmbd / nHead);
  const headDimK = bounded(
    "attention.key_length",
    getNumber(meta, k("attention.key_length"), defHead),
    1,
    L.headDim,
  );
  const headDimV = bounded(
    "attention.value_length",
    getNumber(meta, k("attention.value_length"), defHead),
    1,
    L.headDim,
  );
  const nRot = bounded(
    "rope.dimension_count",
    getNumber(meta, k("rope.dimension_count"), headDimK),
    2,
    headDimK,
  );
  if (nRot % 2 !== 0) {
    throw new ModelError("bad_hparam", `Cannot load model: rope.dimension_count ${nRot} is odd`, {
      field: "rope.dimension_count",
    });
  }
  const nExpert = bounded("expert_count", getNumber(meta, k("expert_count"), 0), 0, L.nExpert);
  const nExpertUsed = bounded(
    "expert_used_count",
    getNumber(meta, k("expert_used_count"), 0),
    nExpert > 0 ? 1 : 0,
    nExpert,
  );
  const nFf = bounded(
    "feed_forward_length",
    uniform("feed_forward_length", getPerLayer(meta, k("feed_forward_length"), nLayer, 0)),
    0,
    L.nFf,
  );
  const F = HPARAM_FLOAT_RANGES;
  const scaleFactor = floatIn(
    k("rope.scaling.factor"),
    getNumber(meta, k("rope.scaling.factor"), 0),
    F.ropeScalingFactor,
    { orZero: true },
  );
  const scalingType = meta.has(k("rope.scaling.type"))
    ? getString(meta, k("rope.scaling.type"))
    : "linear";
  if (scalingType !== "linear" && scalingType !== "none" && scalingType !== "yarn") {
    throw new ModelError(
      "unsupported_hparam",
      `Cannot load model: rope.scaling.type '${scalingType}' is not supported (linear, none, yarn)`,
      { field: "rope.scaling.type" },
    );
  }
  // llama.cpp: rope_freq_scale_train = 1.0f / ropescale, in f32
  const ropeFreqScale = scalingType === "none" || scaleFactor === 0
    ? 1
    : Math.fround(1 / Math.fround(scaleFactor));
  const rmsEps = floatIn(
    k("attention.layer_norm_rms_epsilon"),
    getNumber(meta, k("attention.layer_norm_rms_epsilon"), 1e-5),
    F.rmsEps,
    { openMin: true, openMax: true },
  );
  const ropeFreqBase = floatIn(
    k("rope.freq_base"),
    getNumber(meta, k("rope.freq_base"), 10000),
    F.ropeFreqBase,
    { openMin: true },
  );
  const nCtxTrain = bounded(
    "context_length",
    getNumber(meta, k("context_length"), 4096),
    1,
    L.nCtx,
  );
  const ctx: HParamContext = {
    ropeFreqScale,
    ropeFreqBase,
    yarn: (logMul, fromLogMul) =>
      scalingType === "yarn" ? yarnParams(ctx, ropeFreqScale, nCtxTrain, logMul, fromLogMul) : null,
    meta,
    arch: archName,
    nLayer,
    nEmbd,
    nVocab,
    nExpert,
    nExpertUsed,
    nFf,
    has: (key) => meta.has(k(key)),
    num: (key, def) => getNumber(meta, k(key), def),
    check: bounded,
    int: (key, def, min, max) => bounded(key, getNumber(meta, k(key), def), min, max),
    float: (key, def, range, opts) => floatIn(k(key), getNumber(meta, k(key), def), range, opts),
    bool: (key, def) => getBool(meta, k(key), def),
    str: (key, def) => getString(meta, k(key), def),
  };
  const ah = arch.readHParams(ctx);
  const nLayerRun = ah.nLayer ?? nLayer;
  const nLayerDenseLead = ah.nLayerDenseLead ?? 0;
  const routing: RoutingParams = {
    gating: arch.gating,
    normTopK: arch.normTopK,
    weightsScale: ah.expertWeightsScale,
    nGroups: 0,
    nGroupUsed: 0,
    ...ah.routing,
  };
  const scales: ModelScales = { embedding: 0, residual: 0, attention: 0, logit: 0, ...ah.scales };
  const yarn = ah.yarn !== undefined ? ah.yarn : ctx.yarn(0, false);
  return {
    arch,
    nVocab: bounded("vocabulary size", nVocab, 1, L.nVocab),
    nCtxTrain,
    nEmbd,
    nLayer: nLayerRun,
    nHead,
    nHeadKv,
    headDimK,
    headDimV,
    nRot,
    ropeFreqBase,
    ropeFreqScale,
    rmsEps,
    nExpert,
    nExpertUsed,
    nFfExp: ah.nFfExp,
    nFfShexp: ah.nFfShexp,
    nFf,
    expertWeightsScale: ah.expertWeightsScale,
    routing,
    scales,
    nLayerDenseLead,
    yarn,
    mla: ah.mla ?? null,
    swa: ah.swa ?? null,
  };
}
