/**
 * The expert contract: a unit of weights plus compute. The default kind is
 * the SwiGLU FFN `down(silu(gate·x) ⊙ up·x)`; plugins add kinds (LoRA-mixed,
 * zero-compute, custom) by implementing `Expert`.
 *
 * @module
 */

import type { Backend, WeightView } from "../backend/backend.ts";
import { siluRow } from "../tensor/ggml_math.ts";

/** Identifies one expert: its layer and index within the layer. */
export interface ExpertKey {
  /** Layer index. */
  readonly layer: number;
  /** Expert index within the layer. */
  readonly index: number;
}

/** The weight matrices of a SwiGLU expert. `gate` is absent for `silu(up)` experts. */
export interface ExpertWeights {
  /** `[n_ff][n_embd]`, or null when the model has no gate projection. */
  readonly gate: WeightView | null;
  /** `[n_ff][n_embd]`. */
  readonly up: WeightView;
  /** `[n_embd][n_ff]`. */
  readonly down: WeightView;
}

/** A unit of compute the MoE layer can call. */
export interface Expert extends ExpertKey {
  /** Kind name, e.g. `"swiglu"`. */
  readonly kind: string;
  /**
   * `out[t] = expert(x[t])` for `nTokens` rows of `n_embd`. The weights
   * must be resident (the MoE layer ensures that through the expert store).
   */
  forward(x: Float32Array, nTokens: number, out: Float32Array): void;
  /**
   * Same as `forward`, with every projection run through `linear` (which adds
   * the linear adapters of this expert's `gate`/`up`/`down`). Kinds without it
   * cannot carry per-expert adapters.
   */
  forwardLinear?(x: Float32Array, nTokens: number, out: Float32Array, linear: FfnLinear): void;
}

/** A projection of a SwiGLU FFN. */
export type FfnProj = "gate" | "up" | "down";

/**
 * Runs one FFN projection `out = W·x` for `nTokens` rows (plus whatever
 * adapters the caller adds); replaces `backend.matmul` in `swigluFfn`.
 */
export type FfnLinear = (
  proj: FfnProj,
  w: WeightView,
  x: Float32Array,
  nTokens: number,
  out: Float32Array,
) => void;

/** Reusable scratch buffers keyed by size, so forward passes allocate nothing per token. */
export class Scratch {
  #bufs = new Map<string, Float32Array>();
  #views = new Map<string, Float32Array>();
  /** A buffer of exactly `n` floats for `tag`, reused across calls (same view for the same n). */
  get(tag: string, n: number): Float32Array {
    let b = this.#bufs.get(tag);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, b ? b.length * 2 : 0));
      this.#bufs.set(tag, b);
    }
    if (b.length === n) return b;
    let v = this.#views.get(tag);
    if (!v || v.length !== n || v.buffer !== b.buffer) {
      v = b.subarray(0, n);
      this.#views.set(tag, v);
    }
    return v;
  }
}

/**
 * Compute a SwiGLU FFN with backend ops: `down(silu(gate·x) ⊙ (up·x))`
 * (or `down(silu(up·x))` without a gate). With `linear`, each projection runs
 * through it (adapters on the FFN) instead of the fused backend op.
 */
export function swigluFfn(
  backend: Backend,
  w: ExpertWeights,
  x: Float32Array,
  nTokens: number,
  out: Float32Array,
  scratch: Scratch,
  linear?: FfnLinear,
): void {
  const mm: FfnLinear = linear ?? ((_p, wv, xi, n, o) => backend.matmul(wv, xi, n, o));
  if (!linear && w.gate && backend.ffnSwiglu) {
    // fused on the backend: bit-identical to the three matmuls + swiglu below
    backend.ffnSwiglu(w.gate, w.up, w.down, x, nTokens, out);
    return;
  }
  const nFf = w.up.rows;
  const up = scratch.get("ffn.up", nTokens * nFf);
  mm("up", w.up, x, nTokens, up);
  const act = scratch.get("ffn.act", nTokens * nFf);
  if (w.gate) {
    const gate = scratch.get("ffn.gate", nTokens * nFf);
    mm("gate", w.gate, x, nTokens, gate);
    backend.swiglu(gate, up, act, nFf);
  } else {
    for (let t = 0; t < nTokens; t++) siluRow(nFf, act, up, t * nFf);
  }
  mm("down", w.down, act, nTokens, out);
}

/** The default expert: SwiGLU FFN whose weights come from a resolver (the expert store). */
export class SwigluExpert implements Expert {
  readonly kind = "swiglu";
  readonly layer: number;
  readonly index: number;
  readonly #backend: Backend;
  readonly #weights: () => ExpertWeights;
  readonly #scratch: Scratch;

  /**
   * @param key layer and index
   * @param backend backend running the ops
   * @param weights returns the resident weights (called per forward, so a
   *   streaming store can move the expert between slots)
   * @param scratch shared scratch buffers
   */
  constructor(key: ExpertKey, backend: Backend, weights: () => ExpertWeights, scratch: Scratch) {
    this.layer = key.layer;
    this.index = key.index;
    this.#backend = backend;
    this.#weights = weights;
    this.#scratch = scratch;
  }

  /** Run the FFN on `nTokens` rows. */
  forward(x: Float32Array, nTokens: number, out: Float32Array): void {
    swigluFfn(this.#backend, this.#weights(), x, nTokens, out, this.#scratch);
  }

  /**
   * The resident weights (valid until the store next moves the expert), for
   * a caller that runs several experts in one backend call (the MoE layer on
   * a threaded backend).
   */
  resolveWeights(): ExpertWeights {
    return this.#weights();
  }

  /** Run the FFN with each projection through `linear` (per-expert adapters). */
  forwardLinear(x: Float32Array, nTokens: number, out: Float32Array, linear: FfnLinear): void {
    swigluFfn(this.#backend, this.#weights(), x, nTokens, out, this.#scratch, linear);
  }
}
