/**
 * The router contract: given a token's gate logits for one layer, which
 * experts it uses and with what weights. Built-in gating follows llama.cpp's
 * `build_moe_ffn`; plugins wrap a router to bias, mask or re-select.
 *
 * @module
 */

import { softmaxRow } from "../tensor/ggml_math.ts";

/** One token's routing decision: expert indices in rank order and their weights. */
export interface Route {
  /** Chosen expert indices, best first. */
  readonly experts: Int32Array;
  /** Weight applied to each chosen expert's output (same length as `experts`). */
  readonly weights: Float32Array;
}

/** Reusable storage a caller may offer a router so routing allocates nothing per token. */
export interface RouteBuffer {
  /** Expert indices; replaced by the router when its length does not fit. */
  experts: Int32Array;
  /** Weights; replaced by the router when its length does not fit. */
  weights: Float32Array;
}

/** Routes one token at one layer from its gate logits (`n_expert` values). */
export interface Router {
  /** Short name for diagnostics, e.g. `"softmax-topk"`. */
  readonly name: string;
  /**
   * Decide experts and weights. `logits` may be modified by the router. When
   * `out` is given the router may write into it and return it (the route is
   * then only valid until the caller reuses `out`); routers may ignore it.
   */
  route(logits: Float32Array, layer: number, out?: RouteBuffer): Route;
}

/** Gating function applied to the logits (ggml `llama_expert_gating_func_type`). */
export type Gating = "softmax" | "sigmoid" | "softmax_weight";

/** Options of the built-in top-k router. */
export interface TopKRouterOptions {
  /** Experts per token (`expert_used_count`). */
  readonly k: number;
  /** Gating function; default `"softmax"`. */
  readonly gating?: Gating;
  /** Renormalise the chosen weights to sum to 1 (`norm_w`). */
  readonly normalize: boolean;
  /** Multiply weights by this (`expert_weights_scale`); 0 or 1 = none. */
  readonly scale?: number;
  /** Per-expert selection bias added before top-k only (`exp_probs_b`). */
  readonly selectionBias?: Float32Array;
  /**
   * Group-limited routing (DeepSeek `expert_group_count` / `expert_group_used_count`): experts
   * form `groups` equal groups, each scored by the sum of its two best selection values; only
   * the best `groupsUsed` groups compete for the top-k. Absent or `groups` ≤ 1: none.
   */
  readonly groups?: number;
  /** Groups kept by group-limited routing. */
  readonly groupsUsed?: number;
}

/**
 * ggml `soft_max` (as llama.cpp's AVX2 build computes it): `e_i = exp(x_i - max)`,
 * sum in double, `y_i = e_i · f32(1/sum)`. Writes into `out` (may alias `x`).
 */
export function softmaxInPlace(x: Float32Array, out: Float32Array = x): Float32Array {
  softmaxRow(x, out, x.length);
  return out;
}

/**
 * Indices of the `k` largest values, best first. Ties go to the lower index
 * (llama.cpp's `std::sort` leaves tie order unspecified; we fix one).
 */
export function topK(
  values: Float32Array,
  k: number,
  out: Int32Array = new Int32Array(k),
): Int32Array {
  const n = values.length;
  let len = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (len === k && !(v > values[out[k - 1]])) continue;
    let j = len < k ? len++ : k - 1;
    while (j > 0 && v > values[out[j - 1]]) {
      out[j] = out[j - 1];
      j--;
    }
    out[j] = i;
  }
  return out;
}

/**
 * The built-in router: gate (softmax/sigmoid), optional selection bias,
 * top-k, optional renormalisation (sum clamped at 2^-14 as in llama.cpp)
 * and scale. Covers Mixtral (`llama`), Qwen2/3-MoE and OLMoE routing.
 */
export class TopKRouter implements Router {
  readonly name = "topk";
  readonly #opts: TopKRouterOptions;
  #probs: Float32Array = new Float32Array(0);
  #sel: Float32Array = new Float32Array(0);

  /** @param opts routing options */
  constructor(opts: TopKRouterOptions) {
    if (!Number.isInteger(opts.k) || opts.k < 1) {
      throw new RangeError(
        `Cannot create router: k must be a positive integer: received ${opts.k}`,
      );
    }
    this.#opts = opts;
  }

  #masked: Float32Array = new Float32Array(0);
  #groupScores: Float32Array = new Float32Array(0);
  #groupIdx: Int32Array = new Int32Array(0);

  /** llama.cpp `build_moe_ffn` group selection: experts outside the best groups get -Infinity. */
  #limitGroups(sel: Float32Array, groups: number, used: number): Float32Array {
    const n = sel.length;
    if (n % groups !== 0 || used < 1 || used > groups) {
      throw new RangeError(
        `Cannot route: ${n} experts do not split into ${groups} groups with ${used} used`,
      );
    }
    const per = n / groups;
    if (this.#groupScores.length !== groups) this.#groupScores = new Float32Array(groups);
    if (this.#groupIdx.length !== used) this.#groupIdx = new Int32Array(used);
    if (this.#masked.length !== n) this.#masked = new Float32Array(n);
    const scores = this.#groupScores;
    for (let g = 0; g < groups; g++) {
      let a = -Infinity, b = -Infinity;
      for (let i = g * per; i < (g + 1) * per; i++) {
        const v = sel[i];
        if (v > a) {
          b = a;
          a = v;
        } else if (v > b) b = v;
      }
      scores[g] = per >= 2 ? Math.fround(a + b) : a;
    }
    const keep = topK(scores, used, this.#groupIdx);
    const masked = this.#masked.fill(-Infinity);
    for (let j = 0; j < used; j++) {
      const g = keep[j];
      for (let i = g * per; i < (g + 1) * per; i++) masked[i] = sel[i];
    }
    return masked;
  }

  /** Route from gate logits (into `out` when given, allocating nothing). */
  route(logits: Float32Array, _layer: number, out?: RouteBuffer): Route {
    const { k, gating = "softmax", normalize, scale = 0, selectionBias } = this.#opts;
    const n = logits.length;
    if (k > n) {
      throw new RangeError(`Cannot route: k=${k} exceeds the ${n} experts`);
    }
    if (this.#probs.length !== n) {
      this.#probs = new Float32Array(n);
      this.#sel = new Float32Array(n);
    }
    const probs = this.#probs;
    if (gating === "sigmoid") {
      for (let i = 0; i < n; i++) probs[i] = Math.fround(1 / (1 + Math.exp(-logits[i])));
    } else if (gating === "softmax") {
      softmaxInPlace(logits, probs);
    } else {
      probs.set(logits);
    }
    let sel = probs;
    if (selectionBias) {
      sel = this.#sel;
      for (let i = 0; i < n; i++) sel[i] = Math.fround(probs[i] + selectionBias[i]);
    }
    const groups = this.#opts.groups ?? 0;
    if (groups > 1) sel = this.#limitGroups(sel, groups, this.#opts.groupsUsed ?? groups);
    let experts: Int32Array, weights: Float32Array;
    if (out && out.experts.length === k && out.weights.length === k) {
      experts = out.experts;
      weights = out.weights;
    } else {
      experts = new Int32Array(k);
      weights = new Float32Array(k);
      if (out) {
        out.experts = experts;
        out.weights = weights;
      }
    }
    topK(sel, k, experts);
    for (let j = 0; j < k; j++) weights[j] = probs[experts[j]];
    if (gating === "softmax_weight") softmaxInPlace(weights);
    if (normalize) {
      let sum = 0;
      for (let j = 0; j < k; j++) sum += weights[j];
      const denom = Math.max(Math.fround(sum), 6.103515625e-5);
      for (let j = 0; j < k; j++) weights[j] = Math.fround(weights[j] / denom);
    }
    if (scale !== 0 && scale !== 1) {
      for (let j = 0; j < k; j++) weights[j] = Math.fround(weights[j] * scale);
    }
    return out ?? { experts, weights };
  }
}
