/**
 * RoPE with YaRN (ggml `rope_ext` with `ext_factor`/`attn_factor`), composed in
 * core so that no backend needs a new op: when a model has no YaRN scaling the
 * blocks call the backend's `rope`; with YaRN they call {@link ropeYarn}, which
 * follows ggml-cpu's `ggml_rope_cache_init`/`rope_yarn` in f32.
 *
 * @module
 */

import type { Backend, RopeParams } from "../../backend/backend.ts";

const f = Math.fround;

/** YaRN parameters as llama.cpp's context derives them (`llama_context` constructor). */
export interface YarnParams {
  /** `yarn_ext_factor` (1 for YaRN models). */
  readonly extFactor: number;
  /** `yarn_attn_factor` (the cos/sin magnitude before the in-kernel correction). */
  readonly attnFactor: number;
  /** `yarn_beta_fast` (default 32). */
  readonly betaFast: number;
  /** `yarn_beta_slow` (default 1). */
  readonly betaSlow: number;
  /** `rope.scaling.original_context_length` (default: the training context). */
  readonly nCtxOrig: number;
}

/** ggml `ggml_rope_yarn_corr_dim` in f32. */
function corrDim(nDims: number, nCtxOrig: number, nRot: number, base: number): number {
  const denom = f(f(f(nRot * 2) * f(Math.PI)));
  return f(f(nDims * f(Math.log(f(nCtxOrig / denom)))) / f(2 * f(Math.log(base))));
}

/** ggml `ggml_rope_yarn_corr_dims`: the first and last dimension pairs that are blended. */
export function yarnCorrDims(
  nDims: number,
  nCtxOrig: number,
  freqBase: number,
  betaFast: number,
  betaSlow: number,
): [number, number] {
  const start = Math.floor(corrDim(nDims, nCtxOrig, betaFast, freqBase));
  const end = Math.ceil(corrDim(nDims, nCtxOrig, betaSlow, freqBase));
  return [Math.max(0, start), Math.min(nDims - 1, end)];
}

/** cos/sin (already × the magnitude scale) of every dimension pair at `pos`. */
export function yarnCache(
  pos: number,
  p: RopeParams,
  y: YarnParams,
  cos: Float32Array,
  sin: Float32Array,
): void {
  const thetaScale = f(Math.pow(f(p.freqBase), f(-2 / p.nRot)));
  const [lo, hi] = yarnCorrDims(p.nRot, y.nCtxOrig, p.freqBase, y.betaFast, y.betaSlow);
  const fs = f(p.freqScale);
  let mscale = f(y.attnFactor);
  if (y.extFactor !== 0) mscale = f(mscale * f(1 + f(0.1 * f(Math.log(f(1 / fs))))));
  let theta = f(pos);
  for (let j = 0; j < p.nRot / 2; j++) {
    const interp = f(fs * theta);
    let th = interp;
    if (y.extFactor !== 0) {
      // rope_yarn_ramp(low, high, i0) with i0 = 2j: (i0/2 - low) / max(0.001, high - low)
      const r = f(f(j - lo) / Math.max(0.001, f(hi - lo)));
      const ramp = f(1 - Math.min(1, Math.max(0, r)));
      const mix = f(ramp * y.extFactor);
      th = f(f(interp * f(1 - mix)) + f(theta * mix));
    }
    cos[j] = f(f(Math.cos(th)) * mscale);
    sin[j] = f(f(Math.sin(th)) * mscale);
    theta = f(theta * thetaScale);
  }
}

/**
 * Rotate, in place, `nTokens` rows of `nHeads` heads of `headDim` (the first `p.nRot` dims of
 * each head rotate, NORM or NEOX pairs). Without YaRN (`y` null, or a neutral one) this is the
 * backend's `rope`; with it the YaRN blend and magnitude scale are applied here.
 */
export function applyRope(
  be: Backend,
  x: Float32Array,
  nTokens: number,
  nHeads: number,
  headDim: number,
  positions: Int32Array,
  p: RopeParams,
  y: YarnParams | null,
): void {
  if (!y || (y.extFactor === 0 && f(y.attnFactor) === 1)) {
    be.rope(x, nTokens, nHeads, headDim, positions, p);
    return;
  }
  const half = p.nRot / 2;
  const cos = new Float32Array(half), sin = new Float32Array(half);
  for (let t = 0; t < nTokens; t++) {
    yarnCache(positions[t], p, y, cos, sin);
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let j = 0; j < half; j++) {
        const i0 = p.mode === 0 ? o + 2 * j : o + j;
        const i1 = p.mode === 0 ? i0 + 1 : i0 + half;
        const a = x[i0], b = x[i1];
        x[i0] = f(a * cos[j]) - f(b * sin[j]);
        x[i1] = f(a * sin[j]) + f(b * cos[j]);
      }
    }
  }
}
