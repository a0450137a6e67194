/**
 * The transformer forward pass over a backend: embedding → blocks
 * (attention with KV cache, MoE or dense FFN) → norm → output logits.
 * Each block runs through its architecture module (`arch/<name>.ts`), which
 * follows that architecture's llama.cpp graph.
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
import type { Expert, FfnLinear, FfnProj, Scratch } from "../moe/expert.ts";
import { MoeLayer } from "../moe/moe_layer.ts";
import type { Router } from "../moe/router.ts";
import type { ExpertStore } from "../store/expert_store.ts";
import type { BatchSeq, LayerContext } from "./arch/types.ts";
import type { HParams } from "./hparams.ts";
import type { ModelWeights } from "./weights.ts";

/**
 * Names of the linear projections adapters can attach to: attention, the
 * dense FFN (`ffn_*`, non-MoE blocks), each routed expert's FFN
 * (`ffn_*_exps`, with an expert index) and the output head.
 */
export type LinearName =
  | "attn_q"
  | "attn_k"
  | "attn_v"
  | "attn_output"
  | "ffn_gate"
  | "ffn_up"
  | "ffn_down"
  | "ffn_gate_exps"
  | "ffn_up_exps"
  | "ffn_down_exps"
  | "output";

/** The per-expert projection names, by FFN projection. */
export const EXPERT_PROJ: Readonly<Record<FfnProj, LinearName>> = {
  gate: "ffn_gate_exps",
  up: "ffn_up_exps",
  down: "ffn_down_exps",
};

/** The dense FFN projection names, by FFN projection. */
export const DENSE_PROJ: Readonly<Record<FfnProj, LinearName>> = {
  gate: "ffn_gate",
  up: "ffn_up",
  down: "ffn_down",
};

/**
 * Adds a term to a linear layer's output (LoRA and LoRA-expert mixes):
 * called after the base matmul `out = W·x` with the same input rows. For the
 * `ffn_*_exps` projections `expert` is the routed expert's index (and only the
 * tokens routed to it are passed); it is -1 elsewhere.
 */
export interface LinearAdapter {
  /** Which projections this adapter touches (checked before each call). */
  applies(layer: number, proj: LinearName, expert?: number): boolean;
  /** `out[t] += delta(x[t])` for `nTokens` rows. */
  apply(
    layer: number,
    proj: LinearName,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
    expert?: number,
  ): void;
}

/** One sequence of {@link Transformer.forwardBatch}: new tokens at `startPos…` into `cache`. */
export interface BatchInput {
  /** The sequence's own KV cache (distinct per sequence). */
  readonly cache: KvCache;
  /** Its new tokens (a decode step's one token, or a prefill chunk). */
  readonly tokens: Int32Array;
  /** Position of its first new token. */
  readonly startPos: number;
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
  /** Set once an architecture's block rejected a batch: batches then run sequence by sequence. */
  #batchUnsupported = false;
  readonly #linearFn: LayerContext["linear"] = (layer, proj, w, x, n, out) =>
    this.#linear(layer, proj, w, x, n, out);
  readonly #plainFn = (layer: number, proj: LinearName): boolean => {
    for (const a of this.adapters) if (a.applies(layer, proj, -1)) return false;
    return true;
  };
  readonly #ffnFn = (layer: number): FfnLinear | undefined =>
    this.#adapts(layer, DENSE_PROJ, -1)
      ? (p, w, x, n, out) => this.#linear(layer, DENSE_PROJ[p], w, x, n, out)
      : undefined;

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
      scale: hp.scales.attention !== 0 ? hp.scales.attention : 1 / Math.sqrt(hp.headDimK),
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
          gateBias: lw.gateInpB ?? undefined,
        }, scratch)
        : null
    );
    this.moe.forEach((m, l) => {
      if (!m) return;
      const runners: FfnLinear[] = [];
      m.expertAdapter = {
        applies: (e) => this.adapters.length > 0 && this.#adapts(l, EXPERT_PROJ, e),
        linear: (e) =>
          runners[e] ??= (p, w, x, n, out) => this.#linear(l, EXPERT_PROJ[p], w, x, n, out, e),
      };
    });
  }

  /** Whether an adapter touches any of the FFN projections `names` of `layer` (expert `e`). */
  #adapts(layer: number, names: Readonly<Record<FfnProj, LinearName>>, e: number): boolean {
    for (const a of this.adapters) {
      if (
        a.applies(layer, names.gate, e) || a.applies(layer, names.up, e) ||
        a.applies(layer, names.down, e)
      ) return true;
    }
    return false;
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
    const { nEmbd, rmsEps, nVocab } = hp;
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
    const { embedding, logit } = hp.scales;
    if (embedding !== 0) {
      const s = Math.fround(embedding);
      for (let i = 0; i < n * nEmbd; i++) x[i] = Math.fround(x[i] * s);
    }
    if (this.#positions.length !== n) this.#positions = new Int32Array(n);
    const positions = this.#positions;
    for (let t = 0; t < n; t++) positions[t] = startPos + t;
    const ctx: LayerContext = {
      be,
      hp,
      S,
      cache,
      startPos,
      n,
      positions,
      weights: W,
      x,
      rope: this.#rope,
      attn: this.#attn,
      moe: this.moe,
      signal,
      linear: this.#linearFn,
      plain: this.#plainFn,
      ffn: this.#ffnFn,
    };
    for (let l = 0; l < hp.nLayer; l++) await hp.arch.forwardLayer(ctx, l);

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
    if (logit !== 0 && logit !== 1) {
      // llama.cpp: ggml_scale(logits, 1.0f / f_logit_scale), in f32
      const s = Math.fround(1 / Math.fround(logit));
      for (let i = 0; i < rows * nVocab; i++) logits[i] = Math.fround(logits[i] * s);
    }
  }

  /**
   * Evaluate several sequences in one pass (continuous batching): their new tokens are stacked
   * into one batch, so every norm, matmul and MoE layer runs once over all rows (an expert's
   * weights are read once per step for all the tokens routed to it), while attention runs per
   * sequence against its own cache from its own position. Writes the logits of each sequence's
   * last token into `logits[i*nVocab ..]`. Per-row results equal {@link forward} on each
   * sequence alone up to the backend's multi-row summation order (see docs/batching.md).
   * Architectures whose blocks read `LayerContext.cache` directly run sequence by sequence.
   */
  async forwardBatch(
    seqs: readonly BatchInput[],
    logits: Float32Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const { hp, backend: be, weights: W } = this;
    const { nEmbd, rmsEps, nVocab } = hp;
    const nSeq = seqs.length;
    if (nSeq === 0) throw new ModelError("empty_batch", "Cannot evaluate: no sequences");
    if (logits.length < nSeq * nVocab) {
      throw new RangeError(
        `Cannot write logits: need ${nSeq * nVocab} floats, got ${logits.length}`,
      );
    }
    let n = 0;
    const seen = new Set<KvCache>();
    for (let i = 0; i < nSeq; i++) {
      const s = seqs[i];
      const m = s.tokens.length;
      if (m === 0) {
        throw new ModelError("empty_batch", `Cannot evaluate: sequence ${i} has no tokens`);
      }
      if (seen.has(s.cache)) {
        throw new ModelError("bad_batch", `Cannot evaluate: sequence ${i} repeats a KV cache`, {
          index: i,
        });
      }
      seen.add(s.cache);
      if (!Number.isInteger(s.startPos) || s.startPos < 0 || s.startPos + m > s.cache.spec.nCtx) {
        throw new ModelError(
          "context_full",
          `Cannot evaluate ${m} tokens of sequence ${i} at position ${s.startPos}: ` +
            `context holds ${s.cache.spec.nCtx}`,
          { index: i, startPos: s.startPos, nTokens: m, nCtx: s.cache.spec.nCtx },
        );
      }
      n += m;
    }
    const sequential = async (): Promise<void> => {
      for (let i = 0; i < nSeq; i++) {
        const s = seqs[i];
        await this.forward(
          s.cache,
          s.tokens,
          s.startPos,
          logits.subarray(i * nVocab, (i + 1) * nVocab),
          false,
          signal,
        );
      }
    };
    if (nSeq === 1 || this.#batchUnsupported) return await sequential();
    const S = this.#scratch;
    const tokens = new Int32Array(n);
    const positions = new Int32Array(n);
    const spans: BatchSeq[] = [];
    let r = 0;
    for (const s of seqs) {
      tokens.set(s.tokens, r);
      for (let t = 0; t < s.tokens.length; t++) positions[r + t] = s.startPos + t;
      spans.push({ cache: s.cache, startPos: s.startPos, n: s.tokens.length });
      r += s.tokens.length;
    }
    const x = S.get("x", n * nEmbd);
    be.getRows(W.tokEmbd, tokens, x);
    const { embedding, logit } = hp.scales;
    if (embedding !== 0) {
      const f = Math.fround(embedding);
      for (let i = 0; i < n * nEmbd; i++) x[i] = Math.fround(x[i] * f);
    }
    const unsupported = (): never => {
      throw new ModelError(
        "batch_unsupported",
        `Cannot batch sequences: architecture '${hp.arch.name}' reads one KV cache per block`,
      );
    };
    const ctx: LayerContext = {
      be,
      hp,
      S,
      get cache(): KvCache {
        return unsupported();
      },
      get startPos(): number {
        return unsupported();
      },
      seqs: spans,
      n,
      positions,
      weights: W,
      x,
      rope: this.#rope,
      attn: this.#attn,
      moe: this.moe,
      signal,
      linear: this.#linearFn,
      plain: this.#plainFn,
      ffn: this.#ffnFn,
    };
    try {
      for (let l = 0; l < hp.nLayer; l++) await hp.arch.forwardLayer(ctx, l);
    } catch (e) {
      if (!(e instanceof ModelError && e.code === "batch_unsupported")) throw e;
      // nothing was attended yet in the failing block; re-running each sequence rewrites the
      // same cache positions
      this.#batchUnsupported = true;
      return await sequential();
    }
    const last = S.get("batch.last", nSeq * nEmbd);
    r = 0;
    for (let i = 0; i < nSeq; i++) {
      r += seqs[i].tokens.length;
      last.set(x.subarray((r - 1) * nEmbd, r * nEmbd), i * nEmbd);
    }
    const normed = S.get("final", nSeq * nEmbd);
    be.rmsnorm(last, nEmbd, rmsEps, W.outputNorm, normed);
    const out = logits.length === nSeq * nVocab ? logits : logits.subarray(0, nSeq * nVocab);
    this.#linear(-1, "output", W.output, normed, nSeq, out);
    if (logit !== 0 && logit !== 1) {
      const f = Math.fround(1 / Math.fround(logit));
      for (let i = 0; i < nSeq * nVocab; i++) out[i] = Math.fround(out[i] * f);
    }
  }

  #linear(
    layer: number,
    proj: LinearName,
    w: WeightView,
    x: Float32Array,
    n: number,
    out: Float32Array,
    expert = -1,
  ): void {
    this.backend.matmul(w, x, n, out);
    for (const a of this.adapters) {
      if (a.applies(layer, proj, expert)) a.apply(layer, proj, x, n, out, expert);
    }
  }
}
