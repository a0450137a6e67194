/**
 * The MoE FFN layer (llama.cpp `build_moe_ffn`): gate logits → router →
 * expert store → experts → weighted sum in rank order (+ shared expert).
 *
 * Tokens of a batch are grouped by expert so each expert runs one matmul
 * over all its tokens (prefill), as ggml's `mul_mat_id` does; per-token
 * results equal token-by-token evaluation because activations are
 * quantized per row.
 *
 * With a store that reports readiness per expert (`ensureEach`, the
 * streaming store), resident experts run first and each missed one as soon
 * as its own load lands; every expert writes to its own (token, rank)
 * place and the sum is taken in rank order afterwards, so the result does
 * not depend on that order.
 *
 * @module
 */

import type { Backend, WeightView } from "../backend/backend.ts";
import { PluginError } from "../errors.ts";
import type { ExpertStore } from "./expert_store.ts";
import {
  type Expert,
  type ExpertWeights,
  type FfnLinear,
  type Scratch,
  SwigluExpert,
  swigluFfn,
} from "./expert.ts";
import type { Route, RouteBuffer, Router } from "./router.ts";

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

/**
 * Per-expert linear adapters of one MoE layer (set by the transformer):
 * consulted only for the experts a batch routes to, so an adapter on an
 * expert that is not routed costs nothing.
 */
export interface ExpertAdapterHook {
  /** Whether any adapter touches a projection of expert `expert`. */
  applies(expert: number): boolean;
  /** The projection runner (base matmul + adapters) of expert `expert`. */
  linear(expert: number): FfnLinear;
}

/** One expert FFN of a backend's optional `ffnSwigluMany` (the WASM backend on threads). */
interface FfnJob {
  gate: WeightView;
  up: WeightView;
  down: WeightView;
  x: Float32Array;
  nTokens: number;
  out: Float32Array;
}

/**
 * A backend that may run several SwiGLU experts in one call (one parallel
 * region on a threaded backend; false: it did nothing, run them one by one).
 */
type ManyFfnBackend = Backend & {
  readonly threads?: number;
  ffnSwigluMany?(jobs: readonly FfnJob[]): boolean;
};

/** Scratch tags of the fused path's per-job buffers. */
const XIN_TAGS: string[] = [];
const EOUT_TAGS: string[] = [];
function tag(tags: string[], stem: string, i: number): string {
  while (tags.length <= i) tags.push(`${stem}.${tags.length}`);
  return tags[i];
}

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
  /** Router bias (`ffn_gate_inp.bias`, gpt-oss), added to the gate logits. */
  readonly gateBias?: Float32Array;
}

/** One MoE FFN layer. */
export class MoeLayer {
  readonly spec: MoeLayerSpec;
  readonly #backend: Backend;
  readonly #scratch: Scratch;
  /**
   * Observers called for every routed token. The route and hidden state are
   * only valid during the call: copy what you keep.
   */
  readonly observers: RouteObserver[] = [];
  /** Per-expert adapters (LoRA on `experts.E.{w1,w2,w3}`); null when none. */
  expertAdapter: ExpertAdapterHook | null = null;
  readonly #routes: Route[] = [];
  readonly #bufs: RouteBuffer[] = [];
  #used = new Uint8Array(0);
  readonly #usedList: number[] = [];
  /** The fused path ensured every used expert of this call already. */
  #ensured = false;
  #slots = new Int32Array(0);
  readonly #jobs: FfnJob[] = [];
  /** Per job of the fused path: its first slot in `#slots` and its slot count. */
  #jobSlots = new Int32Array(0);
  /** Per (token, rank) slot of the fused path: its job and row (`job · nTokens + row`). */
  #slotRow = new Int32Array(0);

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
    const { nEmbd, gateInp, router, store, layer } = this.spec;
    const nExp = gateInp.rows;
    const S = this.#scratch;
    const logits = S.get("moe.logits", nTokens * nExp);
    this.#backend.matmul(gateInp, x, nTokens, logits);
    const gb = this.spec.gateBias;
    if (gb) { for (let i = 0; i < nTokens * nExp; i++) logits[i] += gb[i % nExp]; }

    // route every token into reusable buffers (nothing allocated per decoded token)
    const routes = this.#routes;
    while (this.#bufs.length < nTokens) {
      this.#bufs.push({ experts: new Int32Array(0), weights: new Float32Array(0) });
    }
    if (this.#used.length !== nExp) this.#used = new Uint8Array(nExp);
    const used = this.#used.fill(0);
    let maxK = 0;
    for (let t = 0; t < nTokens; t++) {
      const row = nTokens === 1 ? logits : logits.subarray(t * nExp, (t + 1) * nExp);
      const r = router.route(row, layer, this.#bufs[t]);
      routes[t] = r;
      if (r.experts.length > maxK) maxK = r.experts.length;
      for (let j = 0; j < r.experts.length; j++) used[r.experts[j]] = 1;
      if (this.observers.length > 0) {
        const h = nTokens === 1 ? x : x.subarray(t * nEmbd, (t + 1) * nEmbd);
        for (const obs of this.observers) obs(layer, t, r, h);
      }
    }
    const usedList = this.#usedList;
    usedList.length = 0;
    for (let e = 0; e < nExp; e++) if (used[e]) usedList.push(e);
    // a budget-bounded store may hold fewer experts than a batch uses: ensure them in chunks
    const chunk = Math.max(1, store.maxEnsureExperts?.(layer) ?? usedList.length);

    // per-token, per-rank expert outputs, combined afterwards in rank order (the fused path
    // combines straight into `out`, in the same order)
    this.#ensured = false;
    const fused = chunk >= usedList.length && this.#canFuse() &&
      await this.#forwardFused(x, nTokens, maxK, out, signal);
    const parts = fused ? out : S.get("moe.parts", nTokens * maxK * nEmbd);
    if (this.#slots.length < nTokens) this.#slots = new Int32Array(nTokens * 2);
    if (!fused && !this.#ensured && chunk >= usedList.length && store.ensureEach) {
      // per-expert readiness: resident experts first, then each missed one as its load lands
      let arr = store.ensureEach(layer, usedList, signal);
      if (arr instanceof Promise) arr = await arr;
      if (!arr) {
        for (let i = 0; i < usedList.length; i++) {
          this.#runExpert(usedList[i], x, nTokens, maxK, parts);
        }
      } else {
        for (const i of arr.ready) this.#runExpert(usedList[i], x, nTokens, maxK, parts);
        for (let n = 0; n < arr.pending; n++) {
          this.#runExpert(usedList[await arr.next()], x, nTokens, maxK, parts);
        }
      }
    } else {
      for (let i = 0; i < usedList.length && !fused; i++) {
        if (i % chunk === 0 && !(i === 0 && this.#ensured)) {
          const pending = store.ensure(
            layer,
            chunk >= usedList.length ? usedList : usedList.slice(i, i + chunk),
            signal,
          );
          if (pending) await pending;
        }
        this.#runExpert(usedList[i], x, nTokens, maxK, parts);
      }
    }
    for (let t = 0; t < nTokens && !fused; t++) {
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

    const shared = this.spec.shared;
    const be = this.#backend;
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

  /**
   * Expert `e` over the tokens routed to it; its weighted outputs go to
   * their (token, rank) places in `parts`, so the order experts run in
   * does not change the combined result.
   */
  #runExpert(
    e: number,
    x: Float32Array,
    nTokens: number,
    maxK: number,
    parts: Float32Array,
  ): void {
    const { nEmbd, experts, layer } = this.spec;
    const routes = this.#routes;
    const S = this.#scratch;
    const slots = this.#slots;
    let n = 0;
    for (let t = 0; t < nTokens; t++) {
      const rank = routes[t].experts.indexOf(e);
      if (rank >= 0) slots[n++] = t * maxK + rank;
    }
    const expert = experts[e];
    if (!expert) throw new RangeError(`Cannot run expert ${e} of layer ${layer}: no such expert`);
    const xin = n === nTokens ? x : S.get("moe.xin", n * nEmbd);
    if (xin !== x) {
      for (let i2 = 0; i2 < n; i2++) {
        const src = Math.floor(slots[i2] / maxK) * nEmbd;
        xin.set(x.subarray(src, src + nEmbd), i2 * nEmbd);
      }
    }
    const eout = S.get("moe.eout", n * nEmbd);
    const hook = this.expertAdapter;
    if (hook !== null && hook.applies(e)) {
      if (!expert.forwardLinear) {
        throw new PluginError(
          "unsupported_target",
          `Cannot adapt expert ${e} of layer ${layer}: its kind '${expert.kind}' has no adaptable projections`,
          { layer, expert: e, kind: expert.kind },
        );
      }
      expert.forwardLinear(xin, n, eout, hook.linear(e));
    } else expert.forward(xin, n, eout);
    for (let i2 = 0; i2 < n; i2++) {
      const slot = slots[i2];
      const w = routes[Math.floor(slot / maxK)].weights[slot % maxK];
      const src = i2 * nEmbd;
      const dst = slot * nEmbd;
      for (let c = 0; c < nEmbd; c++) parts[dst + c] = eout[src + c] * w;
    }
  }

  /**
   * Whether this call's experts may run in one backend call: the backend has
   * `ffnSwigluMany` and threads, and every used expert is a plain SwiGLU
   * expert without adapters.
   */
  #canFuse(): boolean {
    const be = this.#backend as ManyFfnBackend;
    if (be.ffnSwigluMany === undefined || !((be.threads ?? 1) > 1)) return false;
    const experts = this.spec.experts;
    const hook = this.expertAdapter;
    for (const e of this.#usedList) {
      if (!(experts[e] instanceof SwigluExpert) || (hook !== null && hook.applies(e))) return false;
    }
    return true;
  }

  /**
   * The routed experts of this call in one backend call (`ffnSwigluMany`:
   * one parallel region for all of them on a threaded backend; `#canFuse`
   * first), combined into `out` as the per-expert loop and the rank-order
   * sum do: `out[t] = Σ_j f32(w_tj · expert_{e_tj}(x[t]))`, summed in rank
   * order in f32 (the same bits, without the `parts` buffer). Returns false
   * when it did not run them (the loop then does; `#ensured` tells it the
   * experts are resident already).
   */
  async #forwardFused(
    x: Float32Array,
    nTokens: number,
    maxK: number,
    out: Float32Array,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const be = this.#backend as ManyFfnBackend;
    const { nEmbd, experts, store, layer } = this.spec;
    const used = this.#usedList;
    const pending = store.ensure(layer, used, signal);
    if (pending) await pending;
    this.#ensured = true;
    const routes = this.#routes;
    const S = this.#scratch;
    if (this.#slots.length < nTokens * maxK) this.#slots = new Int32Array(nTokens * maxK);
    if (this.#jobSlots.length < 2 * used.length) this.#jobSlots = new Int32Array(2 * used.length);
    const slots = this.#slots, js = this.#jobSlots, jobs = this.#jobs;
    jobs.length = used.length;
    let s0 = 0;
    for (let i = 0; i < used.length; i++) {
      const e = used[i];
      const w = (experts[e] as SwigluExpert).resolveWeights();
      if (!w.gate) return false;
      let n = 0;
      for (let t = 0; t < nTokens; t++) {
        const rank = routes[t].experts.indexOf(e);
        if (rank >= 0) slots[s0 + n++] = t * maxK + rank;
      }
      js[2 * i] = s0;
      js[2 * i + 1] = n;
      let xin = x;
      if (n !== nTokens) {
        xin = S.get(tag(XIN_TAGS, "moe.xin", i), n * nEmbd);
        for (let i2 = 0; i2 < n; i2++) {
          const src = Math.floor(slots[s0 + i2] / maxK) * nEmbd;
          xin.set(x.subarray(src, src + nEmbd), i2 * nEmbd);
        }
      }
      const out = S.get(tag(EOUT_TAGS, "moe.eout", i), n * nEmbd);
      const j = jobs[i] ??= { gate: w.gate, up: w.up, down: w.down, x: xin, nTokens: n, out };
      j.gate = w.gate;
      j.up = w.up;
      j.down = w.down;
      j.x = xin;
      j.nTokens = n;
      j.out = out;
      s0 += n;
    }
    if (!be.ffnSwigluMany?.(jobs)) return false;
    // where each (token, rank) slot's row is: job `i` at row `i2`, as `i * nTokens + i2`
    if (this.#slotRow.length < nTokens * maxK) this.#slotRow = new Int32Array(nTokens * maxK);
    const where = this.#slotRow;
    for (let i = 0; i < used.length; i++) {
      const b = js[2 * i], n = js[2 * i + 1];
      for (let i2 = 0; i2 < n; i2++) where[slots[b + i2]] = i * nTokens + i2;
    }
    const f = Math.fround;
    for (let t = 0; t < nTokens; t++) {
      const r = routes[t], k = r.experts.length, o = t * nEmbd;
      if (k === 0) {
        out.fill(0, o, o + nEmbd);
        continue;
      }
      for (let j = 0; j < k; j++) {
        const at = where[t * maxK + j], i = Math.floor(at / nTokens);
        const eout = jobs[i].out, src = (at - i * nTokens) * nEmbd, w = r.weights[j];
        if (j === 0) { for (let c = 0; c < nEmbd; c++) out[o + c] = eout[src + c] * w; }
        else for (let c = 0; c < nEmbd; c++) out[o + c] += f(eout[src + c] * w);
      }
    }
    return true;
  }
}
