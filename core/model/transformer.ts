/**
 * The transformer forward pass over a backend: embedding → blocks
 * (attention with KV cache, MoE or dense FFN) → norm → output logits.
 * Follows llama.cpp's graphs for the architectures in `arch.ts`.
 *
 * @module
 */

import type {
  AttentionParams,
  Backend,
  KvCache,
  RopeParams,
  WeightView,
} from "../backend/backend.ts";
import { ModelError } from "../errors.ts";
import { type Expert, type Scratch, swigluFfn } from "../moe/expert.ts";
import { MoeLayer } from "../moe/moe_layer.ts";
import type { Router } from "../moe/router.ts";
import type { ExpertStore } from "../store/expert_store.ts";
import type { HParams } from "./hparams.ts";
import type { ModelWeights } from "./weights.ts";

/** Names of the linear projections adapters can attach to. */
export type LinearName =
  | "attn_q"
  | "attn_k"
  | "attn_v"
  | "attn_output"
  | "ffn_gate"
  | "ffn_up"
  | "ffn_down"
  | "output";

/**
 * Adds a term to a linear layer's output (LoRA and LoRA-expert mixes):
 * called after the base matmul `out = W·x` with the same input rows.
 */
export interface LinearAdapter {
  /** Which projections this adapter touches (checked before each call). */
  applies(layer: number, proj: LinearName): boolean;
  /** `out[t] += delta(x[t])` for `nTokens` rows. */
  apply(layer: number, proj: LinearName, x: Float32Array, nTokens: number, out: Float32Array): void;
}

/** Parts a transformer is assembled from (the loader and plugins provide them). */
export interface TransformerParts {
  /** Backend running the ops. */
  readonly backend: Backend;
  /** Hyper-parameters. */
  readonly hp: HParams;
  /** Non-expert weights + expert locations. */
  readonly weights: ModelWeights;
  /** Expert residency. */
  readonly store: ExpertStore;
  /** `routers[l]` for each MoE layer. */
  readonly routers: readonly Router[];
  /** `experts[l][e]` for each MoE layer. */
  readonly experts: readonly (readonly Expert[])[];
  /** Shared scratch. */
  readonly scratch: Scratch;
  /** Linear-layer adapters, applied in order. */
  readonly adapters?: readonly LinearAdapter[];
}

/** Runs forward passes; owns no KV cache (sessions do). */
export class Transformer {
  readonly hp: HParams;
  readonly backend: Backend;
  readonly weights: ModelWeights;
  /** MoE layers (null for dense blocks). */
  readonly moe: readonly (MoeLayer | null)[];
  readonly #scratch: Scratch;
  readonly #rope: RopeParams;
  /** Linear-layer adapters (may be changed between forward passes). */
  adapters: LinearAdapter[];
  readonly #attn: AttentionParams;
  #positions = new Int32Array(0);

  /** @param parts assembled parts */
  constructor(parts: TransformerParts) {
    const { backend, hp, weights, scratch } = parts;
    this.hp = hp;
    this.backend = backend;
    this.weights = weights;
    this.#scratch = scratch;
    this.adapters = [...(parts.adapters ?? [])];
    this.#attn = {
      nHeads: hp.nHead,
      nKvHeads: hp.nHeadKv,
      headDimK: hp.headDimK,
      headDimV: hp.headDimV,
      scale: 1 / Math.sqrt(hp.headDimK),
    };
    this.#rope = {
      mode: hp.arch.ropeMode,
      nRot: hp.nRot,
      freqBase: hp.ropeFreqBase,
      freqScale: hp.ropeFreqScale,
    };
    this.moe = weights.layers.map((lw, l) =>
      lw.gateInp
        ? new MoeLayer(backend, {
          layer: l,
          nEmbd: hp.nEmbd,
          gateInp: lw.gateInp,
          router: parts.routers[l],
          experts: parts.experts[l],
          store: parts.store,
          shared: lw.shared ?? undefined,
        }, scratch)
        : null
    );
  }

  /**
   * Evaluate `tokens` at positions `startPos…` into `cache`. Writes logits of
   * every token (`allLogits`) or only the last one into `logits`
   * (`nTokens*nVocab` or `nVocab` floats).
   */
  async forward(
    cache: KvCache,
    tokens: Int32Array,
    startPos: number,
    logits: Float32Array,
    allLogits = false,
    signal?: AbortSignal,
  ): Promise<void> {
    const { hp, backend: be, weights: W } = this;
    const n = tokens.length;
    const { nEmbd, nHead, nHeadKv, headDimK, headDimV, rmsEps, nVocab } = hp;
    if (n === 0) throw new ModelError("empty_batch", "Cannot evaluate: no tokens");
    if (startPos + n > cache.spec.nCtx) {
      throw new ModelError(
        "context_full",
        `Cannot evaluate ${n} tokens at position ${startPos}: context holds ${cache.spec.nCtx}`,
        { startPos, nTokens: n, nCtx: cache.spec.nCtx },
      );
    }
    const S = this.#scratch;
    const x = S.get("x", n * nEmbd);
    be.getRows(W.tokEmbd, tokens, x);
    const h = S.get("h", n * nEmbd);
    const qDim = nHead * headDimK, kDim = nHeadKv * headDimK, vDim = nHeadKv * headDimV;
    const q = S.get("q", n * qDim), k = S.get("k", n * kDim), v = S.get("v", n * vDim);
    const att = S.get("att", n * nHead * headDimV);
    const ffo = S.get("ffo", n * nEmbd);
    if (this.#positions.length !== n) this.#positions = new Int32Array(n);
    const positions = this.#positions;
    for (let t = 0; t < n; t++) positions[t] = startPos + t;
    const attn = this.#attn;

    for (let l = 0; l < hp.nLayer; l++) {
      const lw = W.layers[l];
      be.rmsnorm(x, nEmbd, rmsEps, lw.attnNorm, h);
      this.#linear(l, "attn_q", lw.wq, h, n, q);
      this.#linear(l, "attn_k", lw.wk, h, n, k);
      this.#linear(l, "attn_v", lw.wv, h, n, v);
      if (lw.bq) addBias(q, lw.bq);
      if (lw.bk) addBias(k, lw.bk);
      if (lw.bv) addBias(v, lw.bv);
      if (hp.arch.qkNorm === "per_head") {
        be.rmsnorm(q, headDimK, rmsEps, lw.qNorm, q);
        be.rmsnorm(k, headDimK, rmsEps, lw.kNorm, k);
      } else if (hp.arch.qkNorm === "full") {
        be.rmsnorm(q, qDim, rmsEps, lw.qNorm, q);
        be.rmsnorm(k, kDim, rmsEps, lw.kNorm, k);
      }
      be.rope(q, n, nHead, headDimK, positions, this.#rope);
      be.rope(k, n, nHeadKv, headDimK, positions, this.#rope);
      be.attention(cache, l, startPos, n, q, k, v, attn, att);
      this.#linear(l, "attn_output", lw.wo, att, n, h);
      if (lw.bo) addBias(h, lw.bo);
      for (let i = 0; i < n * nEmbd; i++) x[i] += h[i];

      be.rmsnorm(x, nEmbd, rmsEps, lw.ffnNorm, h);
      const moe = this.moe[l];
      if (moe) await moe.forward(h, n, ffo, signal);
      else swigluFfn(be, lw.dense!, h, n, ffo, S);
      for (let i = 0; i < n * nEmbd; i++) x[i] += ffo[i];
    }

    const rows = allLogits ? n : 1;
    const last = allLogits || n === 1 ? x : x.subarray((n - 1) * nEmbd, n * nEmbd);
    const normed = S.get("final", rows * nEmbd);
    be.rmsnorm(last, nEmbd, rmsEps, W.outputNorm, normed);
    if (logits.length < rows * nVocab) {
      throw new RangeError(
        `Cannot write logits: need ${rows * nVocab} floats, got ${logits.length}`,
      );
    }
    this.#linear(-1, "output", W.output, normed, rows, logits);
  }

  #linear(
    layer: number,
    proj: LinearName,
    w: WeightView,
    x: Float32Array,
    n: number,
    out: Float32Array,
  ): void {
    this.backend.matmul(w, x, n, out);
    for (const a of this.adapters) if (a.applies(layer, proj)) a.apply(layer, proj, x, n, out);
  }
}

function addBias(x: Float32Array, b: Float32Array): void {
  const m = b.length;
  for (let i = 0; i < x.length; i++) x[i] += b[i % m];
}
