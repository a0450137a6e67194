/**
 * `route-top-p`: dynamic routing that picks as many experts as a token needs
 * (docs/specs-lora-moe.md §3 Dynamic_MoE, §4 DynMoLE). Probabilities are the softmax of the
 * gate logits, sorted descending with ties to the lower expert index.
 *
 * - `dynamic-moe`: keep the prefix up to and including the first position
 *   whose cumulative probability strictly exceeds `p` (all experts when none does).
 * - `dynmole`: keep positions whose cumulative probability is ≤ `p`; route to
 *   all experts when the normalized Tsallis entropy exceeds `entropyThreshold`.
 *
 * Both then keep at least `minK` and at most `maxK`; weights are the raw
 * probabilities unless `renormalize`.
 *
 * @module
 */

import {
  type HParams,
  PluginError,
  type PluginFactory,
  type Route,
  type Router,
  softmaxInPlace,
  topK,
} from "../../mod.ts";

/** Options of top-p routing (the plugin config, defaults filled). */
export interface TopPOptions {
  /** Probability-mass threshold. */
  readonly p: number;
  /** Selection rule. */
  readonly rule: "dynamic-moe" | "dynmole";
  /** Minimum experts. */
  readonly minK: number;
  /** Maximum experts (default: all). */
  readonly maxK?: number;
  /** Divides the probabilities (Dynamic_MoE). */
  readonly temperature: number;
  /** Rescale kept weights to sum to 1. */
  readonly renormalize: boolean;
  /** DynMoLE broadcast threshold (≥ 1 disables). */
  readonly entropyThreshold: number;
  /** Tsallis index q. */
  readonly entropyIndex: number;
  /** Added to probabilities before the entropy. */
  readonly entropyEps: number;
  /** Layers to apply to (default all). */
  readonly layers?: readonly number[];
}

/** Defaults of `TopPOptions`. */
export const TOP_P_DEFAULTS: TopPOptions = {
  p: 0.4,
  rule: "dynamic-moe",
  minK: 1,
  temperature: 1,
  renormalize: false,
  entropyThreshold: 1,
  entropyIndex: 1.1,
  entropyEps: 1e-5,
};

/** Normalized Tsallis entropy of `p` (Shannon for q = 1), in [0, 1] up to eps. */
export function tsallisEntropy(p: Float32Array, q: number, eps: number): number {
  const n = p.length;
  if (n < 2) return 0;
  if (q === 1) {
    let h = 0;
    for (const v of p) h -= (v + eps) * Math.log(v + eps);
    return h / Math.log(n);
  }
  let s = 0;
  for (const v of p) s += (v + eps) ** q;
  return (1 - s) / (1 - n ** (1 - q));
}

/** Route one token's gate logits by the top-p rule. `logits` is not modified. */
export function topPRoute(logits: Float32Array, o: TopPOptions): Route {
  const n = logits.length;
  const probs = softmaxInPlace(logits, new Float32Array(n));
  if (o.temperature !== 1) {
    for (let i = 0; i < n; i++) probs[i] = Math.fround(probs[i] / o.temperature);
  }
  const order = topK(probs, n);
  let keep = 0;
  if (o.rule === "dynamic-moe") {
    let c = 0;
    keep = n;
    for (let j = 0; j < n; j++) {
      c += probs[order[j]];
      if (c > o.p) {
        keep = j + 1;
        break;
      }
    }
  } else {
    const broadcast = o.entropyIndex > 0 && o.entropyThreshold < 1 &&
      tsallisEntropy(probs, o.entropyIndex, o.entropyEps) > o.entropyThreshold;
    if (broadcast) keep = n;
    else {
      let c = 0;
      for (let j = 0; j < n; j++) {
        c += probs[order[j]];
        if (c <= o.p) keep = j + 1;
        else break;
      }
    }
  }
  keep = Math.min(Math.max(keep, o.minK), o.maxK ?? n, n);
  const experts = order.slice(0, keep);
  const weights = new Float32Array(keep);
  let sum = 0;
  for (let j = 0; j < keep; j++) sum += weights[j] = probs[experts[j]];
  if (o.renormalize && sum > 0) {
    for (let j = 0; j < keep; j++) weights[j] = Math.fround(weights[j] / sum);
  }
  return { experts, weights };
}

/** A router that routes by `topPRoute`. */
export function topPRouter(opts: Partial<TopPOptions> = {}): Router {
  const o: TopPOptions = { ...TOP_P_DEFAULTS, ...opts };
  return { name: `top-p(${o.p})`, route: (logits) => topPRoute(logits, o) };
}

/** The plugin factory: overrides the router of the configured layers. */
const createPlugin: PluginFactory<Partial<TopPOptions>> = (config) => {
  const o: TopPOptions = { ...TOP_P_DEFAULTS, ...config };
  if (o.maxK !== undefined && o.maxK < o.minK) {
    throw new PluginError(
      "bad_config",
      `config.maxK (${o.maxK}) must be ≥ config.minK (${o.minK})`,
      { field: "maxK" },
    );
  }
  const layers = o.layers ? new Set(o.layers) : null;
  const router = topPRouter(o);
  return {
    name: "route-top-p",
    version: "0.1.0",
    hooks: {
      router: (
        inner: Router,
        layer: number,
        _hp: HParams,
      ): Router => (!layers || layers.has(layer) ? router : inner),
    },
  };
};

export default createPlugin;
