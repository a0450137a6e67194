/**
 * LoRA building blocks shared by the adapter plugins: projection shapes,
 * the low-rank update `out += s·B(A·x)`, its merged form `W' = W + s·B·A`,
 * and PEFT scaling. PyTorch layout throughout: `A` is `[r][dIn]`, `B` is
 * `[dOut][r]`, a base weight is `[dOut][dIn]`, all row-major f32.
 *
 * @module
 */

import { PluginError } from "../errors.ts";
import { firstNonFinite } from "../formats/safetensors.ts";
import type { HParams } from "../model/hparams.ts";
import type { LinearAdapter, LinearName } from "../model/transformer.ts";
import type { TensorBytesInfo } from "../model/weights.ts";
import { rowBytes, traitsOf } from "../tensor/traits.ts";

/** Input and output widths of a projection adapters can attach to. */
export interface LinearShape {
  /** Input width (columns of the weight). */
  readonly dIn: number;
  /** Output width (rows of the weight). */
  readonly dOut: number;
}

/**
 * Projections the transformer calls adapters on: attention, the dense FFN
 * (blocks without experts), every routed expert's FFN (`ffn_*_exps`, with an
 * expert index) and the output head.
 */
export const ADAPTABLE_PROJECTIONS: readonly LinearName[] = [
  "attn_q",
  "attn_k",
  "attn_v",
  "attn_output",
  "ffn_gate",
  "ffn_up",
  "ffn_down",
  "ffn_gate_exps",
  "ffn_up_exps",
  "ffn_down_exps",
  "output",
];

/** Whether `proj` is a routed expert's projection (`ffn_*_exps`, addressed with an expert index). */
export function isExpertProjection(proj: LinearName): boolean {
  return proj === "ffn_gate_exps" || proj === "ffn_up_exps" || proj === "ffn_down_exps";
}

/** Whether block `layer` has a dense FFN (no experts, or one of the leading dense blocks). */
export function isDenseLayer(hp: HParams, layer: number): boolean {
  return hp.nExpert === 0 || layer < hp.nLayerDenseLead;
}

/**
 * Widths of projection `proj` for a model. `ffn_*` are the dense FFN of
 * non-MoE blocks, `ffn_*_exps` one routed expert's FFN.
 */
export function linearShape(hp: HParams, proj: LinearName): LinearShape {
  const { nEmbd, nHead, nHeadKv, headDimK, headDimV } = hp;
  switch (proj) {
    case "attn_q":
      return { dIn: nEmbd, dOut: nHead * headDimK };
    case "attn_k":
      return { dIn: nEmbd, dOut: nHeadKv * headDimK };
    case "attn_v":
      return { dIn: nEmbd, dOut: nHeadKv * headDimV };
    case "attn_output":
      return { dIn: nHead * headDimV, dOut: nEmbd };
    case "output":
      return { dIn: nEmbd, dOut: hp.nVocab };
    case "ffn_gate":
    case "ffn_up":
      return { dIn: nEmbd, dOut: hp.nFf };
    case "ffn_down":
      return { dIn: hp.nFf, dOut: nEmbd };
    case "ffn_gate_exps":
    case "ffn_up_exps":
      return { dIn: nEmbd, dOut: hp.nFfExp };
    case "ffn_down_exps":
      return { dIn: hp.nFfExp, dOut: nEmbd };
  }
}

/**
 * The shape of an adapter target, checked: `proj` must be one the transformer
 * calls adapters on, `layer` must exist (-1 for `output`), a dense-FFN target
 * needs a dense block and an expert target (`ffn_*_exps`) a MoE block and an
 * `expert` in `[0, n_expert)`. Throws `PluginError` `"unsupported_target"` /
 * `"bad_layer"` / `"bad_expert"` naming `what`.
 */
export function targetShape(
  hp: HParams,
  layer: number,
  proj: LinearName,
  what: string,
  expert = -1,
): LinearShape {
  if (!ADAPTABLE_PROJECTIONS.includes(proj)) {
    throw new PluginError(
      "unsupported_target",
      `${what}: projection ${proj} is not exposed to adapters (they attach to ${
        ADAPTABLE_PROJECTIONS.join(", ")
      })`,
      { layer, proj },
    );
  }
  if (proj === "output" ? layer !== -1 : !(layer >= 0 && layer < hp.nLayer)) {
    throw new PluginError(
      "bad_layer",
      `${what}: layer ${layer} does not exist (the model has ${hp.nLayer})`,
      {
        layer,
        proj,
      },
    );
  }
  const exp = isExpertProjection(proj);
  if (proj.startsWith("ffn_") && isDenseLayer(hp, layer) === exp) {
    throw new PluginError(
      "unsupported_target",
      exp
        ? `${what}: block ${layer} has a dense FFN, no experts to adapt`
        : `${what}: block ${layer} is a MoE block with no dense FFN (adapt its experts: experts.N.w1/w2/w3 or experts.N.gate_proj/up_proj/down_proj)`,
      { layer, proj },
    );
  }
  if (exp ? !(Number.isInteger(expert) && expert >= 0 && expert < hp.nExpert) : expert !== -1) {
    throw new PluginError(
      "bad_expert",
      exp
        ? `${what}: expert ${expert} does not exist (layer ${layer} has ${hp.nExpert})`
        : `${what}: projection ${proj} takes no expert index (got ${expert})`,
      { layer, proj, expert },
    );
  }
  return linearShape(hp, proj);
}

/** Adds one projection's adapter term: `out[t] += delta(x[t])` for `nTokens` rows. */
export type ProjectionDelta = (x: Float32Array, nTokens: number, out: Float32Array) => void;

/**
 * A `LinearAdapter` from per-(layer, projection[, expert]) deltas; layer -1 is
 * the output head, expert -1 a projection outside the experts. After each
 * delta the rows it wrote are checked: a NaN or ±Infinity (an adapter
 * overflowing on finite input, a gate dividing by zero) is `PluginError`
 * `"non_finite"` naming the layer, projection and expert, never a silent NaN
 * in the logits.
 */
export function projectionAdapter(
  deltas: Iterable<
    | readonly [layer: number, proj: LinearName, delta: ProjectionDelta]
    | readonly [layer: number, proj: LinearName, delta: ProjectionDelta, expert: number]
  >,
): LinearAdapter {
  // by projection, then layer + 1, then expert + 1
  const by = new Map<LinearName, ProjectionDelta[][]>();
  for (const [layer, proj, d, expert = -1] of deltas) {
    let arr = by.get(proj);
    if (!arr) by.set(proj, arr = []);
    (arr[layer + 1] ??= [])[expert + 1] = d;
  }
  return {
    applies: (layer: number, proj: LinearName, expert = -1): boolean =>
      by.get(proj)?.[layer + 1]?.[expert + 1] !== undefined,
    apply(
      layer: number,
      proj: LinearName,
      x: Float32Array,
      nTokens: number,
      out: Float32Array,
      expert = -1,
    ): void {
      by.get(proj)![layer + 1][expert + 1](x, nTokens, out);
      const bad = firstNonFinite(out);
      if (bad >= 0) {
        const inputOk = firstNonFinite(x) < 0;
        const where = expert >= 0 ? ` expert ${expert}` : "";
        throw new PluginError(
          "non_finite",
          `adapter on layer ${layer} ${proj}${where}: output ${bad} is ${out[bad]}${
            inputOk ? " for a finite input (the adapter overflows)" : " (its input is not finite)"
          }`,
          { layer, proj, expert, index: bad },
        );
      }
    },
  };
}

/** One low-rank pair: `a` is `[rank][dIn]`, `b` is `[dOut][rank]`; `bias` (`lora_B.bias`) is `[dOut]`. */
export interface LoraPair {
  /** Rank r. */
  readonly rank: number;
  /** Input width. */
  readonly dIn: number;
  /** Output width. */
  readonly dOut: number;
  /** `[rank][dIn]`. */
  readonly a: Float32Array;
  /** `[dOut][rank]`. */
  readonly b: Float32Array;
  /** Optional `[dOut]` bias of B (PEFT `lora_bias`). */
  readonly bias?: Float32Array;
}

/** Check a pair's array sizes; throws `PluginError` `"bad_shape"` naming `what`. */
export function checkPair(p: LoraPair, what: string): LoraPair {
  const ok = Number.isInteger(p.rank) && p.rank > 0 && p.a.length === p.rank * p.dIn &&
    p.b.length === p.dOut * p.rank && (!p.bias || p.bias.length === p.dOut);
  if (!ok) {
    throw new PluginError(
      "bad_shape",
      `Cannot use LoRA ${what}: A has ${p.a.length} values, B ${p.b.length}, for rank ${p.rank}, dIn ${p.dIn}, dOut ${p.dOut}`,
      { what, rank: p.rank, dIn: p.dIn, dOut: p.dOut },
    );
  }
  return p;
}

/** `z[i] = A_i · x` for every rank i (f64 accumulation). `x` starts at `xOff`. */
export function projectA(
  p: LoraPair,
  x: Float32Array,
  xOff: number,
  z: Float64Array,
): Float64Array {
  const { rank, dIn, a } = p;
  for (let i = 0; i < rank; i++) {
    let s = 0;
    const row = i * dIn;
    for (let c = 0; c < dIn; c++) s += a[row + c] * x[xOff + c];
    z[i] = s;
  }
  return z;
}

/**
 * `out[t] += scale · (B·(A·x[t]) + bias)` for `nTokens` rows: the unmerged
 * LoRA update, at rank-r cost (`r·(dIn+dOut)` per token).
 */
export function addLoraDelta(
  p: LoraPair,
  scale: number,
  x: Float32Array,
  nTokens: number,
  out: Float32Array,
): void {
  for (let t = 0; t < nTokens; t++) addLoraRow(p, scale, x, t * p.dIn, out, t * p.dOut);
}

let zScratch = new Float64Array(64);

/**
 * `out[oOff..+dOut] += scale · (B·(A·x[xOff..+dIn]) + bias)` for one row, with no allocation
 * (the rank-r intermediate lives in a shared scratch: calls are synchronous, never nested).
 */
export function addLoraRow(
  p: LoraPair,
  scale: number,
  x: Float32Array,
  xOff: number,
  out: Float32Array,
  oOff: number,
): void {
  const { rank, dOut, b, bias } = p;
  if (zScratch.length < rank) zScratch = new Float64Array(rank);
  const z = projectA(p, x, xOff, zScratch);
  for (let r = 0; r < dOut; r++) {
    let s = bias ? bias[r] : 0;
    const row = r * rank;
    for (let i = 0; i < rank; i++) s += b[row + i] * z[i];
    out[oOff + r] += scale * s;
  }
}

/**
 * The merged form: `w += scale · B·A` in place, for a `[dOut][dIn]` f32
 * weight (PEFT `merge`). The bias of B is not part of W; add it separately.
 */
export function mergeLora(w: Float32Array, p: LoraPair, scale: number): Float32Array {
  const { rank, dIn, dOut, a, b } = p;
  if (w.length !== dOut * dIn) {
    throw new PluginError(
      "bad_shape",
      `Cannot merge LoRA: weight has ${w.length} values, expected ${dOut}×${dIn}`,
      { dIn, dOut },
    );
  }
  for (let r = 0; r < dOut; r++) {
    for (let c = 0; c < dIn; c++) {
      let s = 0;
      for (let i = 0; i < rank; i++) s += b[r * rank + i] * a[i * dIn + c];
      w[r * dIn + c] += scale * s;
    }
  }
  return w;
}

/**
 * Merge a LoRA pair into a GGUF weight's bytes (`dims = [dIn, dOut]`), row by
 * row: dequantize, add `scale·B·A`, quantize back with the tensor's own type.
 * Exact for F32; F16/BF16/quantized types round as their writer does. A
 * merged value that is not finite after rounding (an adapter overflowing F16,
 * say) is `PluginError` `"non_finite"`. Returns new bytes; `bytes` is not
 * modified.
 */
export function mergeLoraBytes(
  t: TensorBytesInfo,
  bytes: Uint8Array,
  p: LoraPair,
  scale: number,
): Uint8Array {
  const [cols, rows] = t.dims;
  if (t.dims.length !== 2 || cols !== p.dIn || rows !== p.dOut) {
    throw new PluginError(
      "shape_mismatch",
      `Cannot merge LoRA into '${t.name}': tensor is [${
        t.dims.join(", ")
      }], LoRA is ${p.dOut}×${p.dIn}`,
      { tensor: t.name },
    );
  }
  const tr = traitsOf(t.type);
  const rb = rowBytes(t.type, cols);
  const out = new Uint8Array(bytes.length);
  const row = new Float32Array(cols);
  const back = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    tr.dequantize(bytes, r * rb, cols, row, 0);
    mergeLora(row, { ...p, dOut: 1, b: p.b.subarray(r * p.rank, (r + 1) * p.rank) }, scale);
    tr.quantize(row, 0, cols, out, r * rb);
    tr.dequantize(out, r * rb, cols, back, 0); // what the model will see, after rounding
    const bad = firstNonFinite(back);
    if (bad >= 0) {
      throw new PluginError(
        "non_finite",
        `Cannot merge LoRA into '${t.name}': row ${r} column ${bad} becomes ${
          back[bad]
        } (the adapter overflows ${tr.name})`,
        { tensor: t.name, row: r, col: bad },
      );
    }
  }
  return out;
}

/** Where an adapter's `lora_B` rows are laid out: as the GGUF tensors (default) or as the HF model. */
export type AdapterLayout = "gguf" | "hf";

/**
 * Heads whose Q/K rows llama.cpp's HF→GGUF converter permutes for projection `proj` of this
 * model (Llama-family architectures with NORM RoPE: `llama` incl. Mixtral, `granitemoe`): the
 * head count for `attn_q`, the KV-head count for `attn_k`; 0 when no permutation applies.
 */
export function qkPermutationHeads(hp: HParams, proj: LinearName): number {
  const name = hp.arch.name;
  if ((name !== "llama" && name !== "granitemoe") || hp.arch.ropeMode !== 0) return 0;
  return proj === "attn_q" ? hp.nHead : proj === "attn_k" ? hp.nHeadKv : 0;
}

/**
 * The rows of a `[rows][cols]` matrix permuted as llama.cpp's converter permutes an HF Llama
 * Q/K weight (`convert_hf_to_gguf.py` `LlamaModel.permute`,
 * `w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2)`): GGUF row `h·d + 2j + t` is HF row
 * `h·d + t·d/2 + j` (head dim `d`). Returns a new array; throws `PluginError` `"bad_shape"`
 * when `rows` is not a multiple of `2·heads`.
 */
export function permuteQkRows(
  m: Float32Array,
  rows: number,
  cols: number,
  heads: number,
): Float32Array {
  if (heads < 1 || rows % (2 * heads) !== 0 || m.length !== rows * cols) {
    throw new PluginError(
      "bad_shape",
      `Cannot permute ${rows} Q/K rows for ${heads} heads (HF layout)`,
      { rows, heads },
    );
  }
  const d = rows / heads, half = d / 2;
  const out = new Float32Array(m.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let t = 0; t < 2; t++) {
        const src = (h * d + t * half + j) * cols, dst = (h * d + 2 * j + t) * cols;
        out.set(m.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/** `p` with its `lora_B` (and bias) rows in the GGUF layout, from `layout`. */
export function pairInGgufLayout(
  p: LoraPair,
  hp: HParams,
  proj: LinearName,
  layout: AdapterLayout = "gguf",
): LoraPair {
  const heads = layout === "hf" ? qkPermutationHeads(hp, proj) : 0;
  if (heads === 0) return p;
  return {
    ...p,
    b: permuteQkRows(p.b, p.dOut, p.rank, heads),
    bias: p.bias ? permuteQkRows(p.bias, p.dOut, 1, heads) : undefined,
  };
}

/** PEFT scaling: `alpha/√r` with rsLoRA, else `alpha/r`. */
export function loraScale(alpha: number, rank: number, rsLora = false): number {
  return rsLora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** `out[e] = W_e · x` for a `[rows][cols]` f32 matrix, rounded to f32 like a torch f32 Linear. */
export function matVecF32(
  w: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  xOff: number,
  out: Float32Array,
): Float32Array {
  for (let e = 0; e < rows; e++) {
    let s = 0;
    const row = e * cols;
    for (let c = 0; c < cols; c++) s += w[row + c] * x[xOff + c];
    out[e] = s;
  }
  return out;
}

/**
 * Per-layer values from a compact spec: a number (every layer), an explicit
 * array (one per layer), or a quarter pattern string such as `"2468"` or
 * `"8-6-4-2"` (layer L gets group `floor(L·groups/nLayer)`). Throws
 * `PluginError` `"bad_config"` naming `field`.
 */
export function perLayer(
  spec: number | readonly number[] | string,
  nLayer: number,
  field: string,
): number[] {
  const bad = (why: string) =>
    new PluginError(
      "bad_config",
      `Cannot read config field '${field}': ${why}: received ${JSON.stringify(spec)}`,
      {
        field,
      },
    );
  let groups: number[];
  if (typeof spec === "number") groups = [spec];
  else if (typeof spec === "string") {
    const parts = spec.includes("-") || spec.includes(",") ? spec.split(/[-,]/) : [...spec];
    groups = parts.map((s) => (/^\d+$/.test(s.trim()) ? Number(s) : NaN));
  } else {
    if (spec.length !== nLayer) throw bad(`an array needs one value per layer (${nLayer})`);
    groups = [...spec];
  }
  if (groups.length === 0 || groups.some((g) => !Number.isInteger(g) || g < 1)) {
    throw bad("values must be positive integers");
  }
  if (Array.isArray(spec)) return groups;
  if (groups.length > nLayer) throw bad(`${groups.length} groups for ${nLayer} layers`);
  return Array.from({ length: nLayer }, (_, l) => groups[Math.floor((l * groups.length) / nLayer)]);
}
