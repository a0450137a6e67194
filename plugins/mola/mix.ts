/**
 * A mixture of LoRA experts on one projection (MoLA, docs/specs-lora-moe.md §1.1): a gate
 * `W_r` scores the experts per token, the top-k are kept and renormalized,
 * and `y += Σ_j w_j · s · B_j(A_j·x)`. The gate is softmax in f32 (MoLA,
 * MoE-PEFT) or sigmoid plus a per-expert bias (selection and weights both use
 * the biased values, as SMoRA does for its rank blocks).
 *
 * @module
 */

import {
  addLoraRow,
  type LoraPair,
  matVecF32,
  PluginError,
  type Route,
  softmaxInPlace,
  topK,
} from "../../mod.ts";

/** One projection's LoRA-expert mixture. */
export interface LoraMix {
  /** Input width. */
  readonly dIn: number;
  /** Output width. */
  readonly dOut: number;
  /** Gate `W_r`, `[experts][dIn]`. */
  readonly router: Float32Array;
  /** The experts (same dIn/dOut). */
  readonly experts: readonly LoraPair[];
  /** Experts kept per token. */
  readonly topK: number;
  /** `s` applied to every expert (`alpha/r`). */
  readonly scale: number;
  /** Gate function (default softmax). */
  readonly gating?: "softmax" | "sigmoid";
  /** Per-expert bias added to sigmoid gate values. */
  readonly bias?: Float32Array;
}

/** Check a mixture's sizes; throws `PluginError` `"bad_shape"` / `"bad_config"` naming `what`. */
export function checkMix(m: LoraMix, what: string): LoraMix {
  const e = m.experts.length;
  if (e === 0 || m.router.length !== e * m.dIn || (m.bias && m.bias.length !== e)) {
    throw new PluginError(
      "bad_shape",
      `${what}: gate has ${m.router.length} values for ${e} experts × ${m.dIn}`,
      {
        what,
      },
    );
  }
  if (m.experts.some((p) => p.dIn !== m.dIn || p.dOut !== m.dOut)) {
    throw new PluginError("bad_shape", `${what}: experts differ in shape from ${m.dOut}×${m.dIn}`, {
      what,
    });
  }
  if (!Number.isInteger(m.topK) || m.topK < 1 || m.topK > e) {
    throw new PluginError("bad_config", `${what}: top-k ${m.topK} must be in [1, ${e}]`, { what });
  }
  return m;
}

/** The route of token row `x[xOff..]`: top-k experts (ties to the lower index) with renormalized weights. */
export function mixRoute(m: LoraMix, x: Float32Array, xOff: number): Route {
  const experts = new Int32Array(m.topK), weights = new Float32Array(m.topK);
  routeInto(m, x, xOff, new Float32Array(m.experts.length), experts, weights);
  return { experts, weights };
}

/** {@link mixRoute} into caller buffers (`g` holds the gate values). */
function routeInto(
  m: LoraMix,
  x: Float32Array,
  xOff: number,
  g: Float32Array,
  experts: Int32Array,
  weights: Float32Array,
): void {
  const e = m.experts.length;
  matVecF32(m.router, e, m.dIn, x, xOff, g);
  if (m.gating === "sigmoid") {
    for (let i = 0; i < e; i++) {
      g[i] = Math.fround(Math.fround(1 / (1 + Math.exp(-g[i]))) + (m.bias ? m.bias[i] : 0));
    }
  } else softmaxInPlace(g);
  topK(g, m.topK, experts);
  let sum = 0;
  for (let j = 0; j < m.topK; j++) sum += weights[j] = g[experts[j]];
  const s = Math.fround(sum);
  for (let j = 0; j < m.topK; j++) weights[j] = Math.fround(weights[j] / s);
}

/** Per-mixture route buffers, so a decoded token allocates nothing. */
const scratch = new WeakMap<LoraMix, { g: Float32Array; e: Int32Array; w: Float32Array }>();

/** `out[t] += Σ_j w_tj · s · B_j(A_j·x[t])` for `nTokens` rows. */
export function addMixDelta(m: LoraMix, x: Float32Array, nTokens: number, out: Float32Array): void {
  const { dIn, dOut } = m;
  let b = scratch.get(m);
  if (!b) {
    b = {
      g: new Float32Array(m.experts.length),
      e: new Int32Array(m.topK),
      w: new Float32Array(m.topK),
    };
    scratch.set(m, b);
  }
  for (let t = 0; t < nTokens; t++) {
    routeInto(m, x, t * dIn, b.g, b.e, b.w);
    for (let j = 0; j < m.topK; j++) {
      addLoraRow(m.experts[b.e[j]], b.w[j] * m.scale, x, t * dIn, out, t * dOut);
    }
  }
}
