/**
 * Router near-ties in conformance runs against llama.cpp.
 *
 * When the k-th and (k+1)-th gate logits of a token are closer than the
 * rounding noise between two correct implementations, llama.cpp and moe-edge
 * may pick different experts for that token: one step's logits then differ by
 * a whole expert's contribution (0.57 measured on the gpt-oss-20b real-size
 * case, where llama.cpp's own `x64` and `haswell` CPU variants disagree the
 * same way; docs/conformance.md). A {@link TieControl} wraps every router of a
 * model (through `ModelHooks.wrapRouter`), records the near-ties of each
 * evaluation and can force the other side of a tie at one layer, so that a
 * test can check that moe-edge matches llama.cpp — at the same tolerance — on
 * one of the two routes rather than exempting the step.
 *
 * Assumes the router selects by the order of the logits it receives (softmax
 * or softmax-weight gating, no selection bias, no group limits), as every
 * real-size preset does except ernie-4.5-21b-a3b and ling-mini-2.0
 * (`exp_probs_b`, groups): for them a recorded tie may not be one and a forced
 * route may not be the other side of one, so a retry can only fail to match
 * llama.cpp (a step is replaced only when it then matches at the tolerance):
 * it never hides a mismatch.
 *
 * @module
 */

import type { HParams } from "../../core/model/hparams.ts";
import type { Route, RouteBuffer, Router } from "../../core/moe/router.ts";

/**
 * Gate-logit gap below which a k-th/(k+1)-th pair counts as a near-tie: half of
 * the final-logit difference measured between llama.cpp's own CPU variants on
 * the real-size gpt-oss case on steps without a tie (0.024 to 0.050,
 * docs/conformance.md). The flip observed there had a gap of 0.0052.
 */
export const ROUTER_TIE_TOL = 0.02;

/** One near-tie: the layer and the gap between its k-th and (k+1)-th gate logits. */
export interface RouteTie {
  /** Block index. */
  readonly layer: number;
  /** k-th minus (k+1)-th largest gate logit (≥ 0). */
  readonly gap: number;
}

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/** The largest f32 strictly below the finite f32 `x`. */
export function nextDownF32(x: number): number {
  if (!Number.isFinite(x)) throw new RangeError(`nextDownF32: ${x} is not finite`);
  f32[0] = x;
  if (f32[0] === 0) return -1.401298464324817e-45;
  i32[0] += f32[0] > 0 ? -1 : 1;
  return f32[0];
}

/** Indices of the `k + 1` largest values of `x`, largest first (ties by lower index). */
function topIndices(x: Float32Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < x.length; i++) {
    let j = idx.length;
    while (j > 0 && x[idx[j - 1]] < x[i]) j--;
    if (j <= k) {
      idx.splice(j, 0, i);
      if (idx.length > k + 1) idx.pop();
    }
  }
  return idx;
}

/** Records the near-ties of every route and forces the other side of a tie where asked. */
export class TieControl {
  /** Near-ties seen since the last {@link TieControl.reset}, in routing order. */
  readonly ties: RouteTie[] = [];
  /**
   * Layers whose k-th expert is demoted just below the (k+1)-th on every route while set
   * (the (k+1)-th is then chosen with its own logit; nothing else changes).
   */
  readonly force: Set<number> = new Set();
  readonly #tol: number;

  /** @param tol gap below which a pair is recorded as a near-tie (default {@link ROUTER_TIE_TOL}) */
  constructor(tol: number = ROUTER_TIE_TOL) {
    if (!(tol >= 0)) throw new RangeError(`TieControl: tolerance must be ≥ 0: received ${tol}`);
    this.#tol = tol;
  }

  /** Forget the recorded ties and the forced layers. */
  reset(): void {
    this.ties.length = 0;
    this.force.clear();
  }

  /** A `ModelHooks.wrapRouter` that routes through `inner` with recording and forcing. */
  readonly wrap = (inner: Router, layer: number, hp: HParams): Router => {
    const k = hp.nExpertUsed;
    return {
      name: `tie-control(${inner.name})`,
      route: (logits: Float32Array, l: number, out?: RouteBuffer): Route => {
        if (k < logits.length) {
          const top = topIndices(logits, k);
          const a = top[k - 1], b = top[k];
          const gap = logits[a] - logits[b];
          if (gap < this.#tol) this.ties.push({ layer, gap });
          if (this.force.has(layer)) logits[a] = nextDownF32(logits[b]);
        }
        return inner.route(logits, l, out);
      },
    };
  };
}
