/**
 * The MoE FFN layer (llama.cpp `build_moe_ffn`): gate logits → router →
 * expert store → experts → weighted sum in rank order (+ shared expert).
 *
 * Tokens of a batch are grouped by expert so each expert runs one matmul
 * over all its tokens (prefill), as ggml's `mul_mat_id` does; per-token
 * results equal token-by-token evaluation because activations are
 * quantized per row.
 *
 * @module
 */

import type { Backend, WeightView } from "../backend/backend.ts";
import type { ExpertStore } from "../store/expert_store.ts";
import { type Expert, type ExpertWeights, Scratch, swigluFfn } from "./expert.ts";
import type { Route, Router } from "./router.ts";

/** Shared (always-on) expert, as in Qwen2-MoE. */
export interface SharedExpert {
  /** FFN weights. */
  readonly weights: ExpertWeights;
  /** `ffn_gate_inp_shexp` (`[1][n_embd]`); its output `s` gates the expert by `silu(s)/s`. */
  readonly gate: WeightView | null;
}

/** Observes routing decisions (metrics, traces, prefetchers). */
export type RouteObserver = (
  layer: number,
  token: number,
  route: Route,
  hidden: Float32Array,
) => void;

/** Everything one MoE layer needs. */
export interface MoeLayerSpec {
  /** Layer index. */
  readonly layer: number;
  /** Hidden size. */
  readonly nEmbd: number;
  /** `ffn_gate_inp` (`[n_expert][n_embd]`). */
  readonly gateInp: WeightView;
  /** Decides experts per token. */
  readonly router: Router;
  /** `experts[e]` computes expert e. */
  readonly experts: ReadonlyArray<Expert>;
  /** Makes expert weights resident. */
  readonly store: ExpertStore;
  /** Optional shared expert. */
  readonly shared?: SharedExpert;
}

/** One MoE FFN layer. */
export class MoeLayer {
  readonly spec: MoeLayerSpec;
  readonly #backend: Backend;
  readonly #scratch: Scratch;
  /** Observers called for every routed token. */
  readonly observers: RouteObserver[] = [];

  /** @param backend ops; @param spec layer parts; @param scratch shared buffers */
  constructor(backend: Backend, spec: MoeLayerSpec, scratch: Scratch) {
    this.#backend = backend;
    this.spec = spec;
    this.#scratch = scratch;
  }

  /** `out[t] = Σ_j w_tj · expert_{e_tj}(x[t])` (+ shared expert), for `nTokens` rows. */
  async forward(
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const { nEmbd, gateInp, router, experts, store, layer, shared } = this.spec;
    const be = this.#backend;
    const nExp = gateInp.rows;
    const logits = this.#scratch.get("moe.logits", nTokens * nExp);
    be.matmul(gateInp, x, nTokens, logits);

    const routes: Route[] = new Array(nTokens);
    const used = new Set<number>();
    let maxK = 0;
    for (let t = 0; t < nTokens; t++) {
      const r = router.route(logits.subarray(t * nExp, (t + 1) * nExp), layer);
      routes[t] = r;
      if (r.experts.length > maxK) maxK = r.experts.length;
      for (const e of r.experts) used.add(e);
      for (const obs of this.observers) obs(layer, t, r, x.subarray(t * nEmbd, (t + 1) * nEmbd));
    }
    const usedList = [...used].sort((a, b) => a - b);
    // a budget-bounded store may hold fewer experts than a batch uses: ensure them in chunks
    const chunk = Math.max(1, store.maxEnsureExperts?.(layer) ?? usedList.length);

    // per-token, per-rank expert outputs, combined afterwards in rank order
    const parts = this.#scratch.get("moe.parts", nTokens * maxK * nEmbd);
    const xin = this.#scratch.get("moe.xin", nTokens * nEmbd);
    const eout = this.#scratch.get("moe.eout", nTokens * nEmbd);
    for (const [i, e] of usedList.entries()) {
      if (i % chunk === 0) {
        const pending = store.ensure(
          layer,
          chunk >= usedList.length ? usedList : usedList.slice(i, i + chunk),
          signal,
        );
        if (pending) await pending;
      }
      let n = 0;
      const slots: number[] = [];
      for (let t = 0; t < nTokens; t++) {
        const rank = routes[t].experts.indexOf(e);
        if (rank < 0) continue;
        xin.set(x.subarray(t * nEmbd, (t + 1) * nEmbd), n * nEmbd);
        slots.push(t * maxK + rank);
        n++;
      }
      const expert = experts[e];
      if (!expert) throw new RangeError(`Cannot run expert ${e} of layer ${layer}: no such expert`);
      expert.forward(xin.subarray(0, n * nEmbd), n, eout.subarray(0, n * nEmbd));
      for (let i = 0; i < n; i++) {
        const slot = slots[i];
        const w = routes[Math.floor(slot / maxK)].weights[slot % maxK];
        const src = i * nEmbd;
        const dst = slot * nEmbd;
        for (let c = 0; c < nEmbd; c++) parts[dst + c] = eout[src + c] * w;
      }
    }
    for (let t = 0; t < nTokens; t++) {
      const k = routes[t].experts.length;
      const o = t * nEmbd;
      const base = t * maxK * nEmbd;
      if (k === 0) {
        out.fill(0, o, o + nEmbd);
        continue;
      }
      for (let c = 0; c < nEmbd; c++) out[o + c] = parts[base + c];
      for (let j = 1; j < k; j++) {
        const pj = base + j * nEmbd;
        for (let c = 0; c < nEmbd; c++) out[o + c] += parts[pj + c];
      }
    }

    if (shared) {
      const sh = this.#scratch.get("moe.shared", nTokens * nEmbd);
      swigluFfn(be, shared.weights, x, nTokens, sh, this.#scratch);
      if (shared.gate) {
        const s = this.#scratch.get("moe.shgate", nTokens);
        be.matmul(shared.gate, x, nTokens, s);
        for (let t = 0; t < nTokens; t++) {
          // llama.cpp computes sigmoid(s) as silu(s)/s
          const v = s[t];
          const silu = Math.fround(v / (1 + Math.exp(-v)));
          const g = Math.fround(silu / v);
          for (let c = 0; c < nEmbd; c++) sh[t * nEmbd + c] = Math.fround(sh[t * nEmbd + c] * g);
        }
      }
      for (let i = 0; i < nTokens * nEmbd; i++) out[i] += sh[i];
    }
  }
}
