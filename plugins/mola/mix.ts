/**
 * A mixture of LoRA experts on one projection (MoLA, spec §1.1): a gate
 * `W_r` scores the experts per token, the top-k are kept and renormalized,
 * and `y += Σ_j w_j · s · B_j(A_j·x)`. The gate is softmax in f32 (MoLA,
 * MoE-PEFT) or sigmoid plus a per-expert bias (selection and weights both use
 * the biased values, as SMoRA does for its rank blocks).
 *
 * @module
 */

import {
  addLoraDelta,
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
  const e = m.experts.length;
  const g = matVecF32(m.router, e, m.dIn, x, xOff, new Float32Array(e));
  if (m.gating === "sigmoid") {
    for (let i = 0; i < e; i++) {
      g[i] = Math.fround(Math.fround(1 / (1 + Math.exp(-g[i]))) + (m.bias ? m.bias[i] : 0));
    }
  } else softmaxInPlace(g);
  const experts = topK(g, m.topK);
  const weights = new Float32Array(m.topK);
  let sum = 0;
  for (let j = 0; j < m.topK; j++) sum += weights[j] = g[experts[j]];
  const s = Math.fround(sum);
  for (let j = 0; j < m.topK; j++) weights[j] = Math.fround(weights[j] / s);
  return { experts, weights };
}

/** `out[t] += Σ_j w_tj · s · B_j(A_j·x[t])` for `nTokens` rows. */
export function addMixDelta(m: LoraMix, x: Float32Array, nTokens: number, out: Float32Array): void {
  const { dIn, dOut } = m;
  for (let t = 0; t < nTokens; t++) {
    const r = mixRoute(m, x, t * dIn);
    const xr = x.subarray(t * dIn, (t + 1) * dIn), or = out.subarray(t * dOut, (t + 1) * dOut);
    for (let j = 0; j < r.experts.length; j++) {
      addLoraDelta(m.experts[r.experts[j]], r.weights[j] * m.scale, xr, 1, or);
    }
  }
}
