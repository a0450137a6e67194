/**
 * The prefetch contract of the streaming expert store. A prefetcher is told
 * each token's hidden state and route at each MoE layer (through the layer's
 * route observers) and answers with experts worth loading ahead; the store
 * loads them asynchronously, overlapping compute, without ever making a
 * demand load wait for them. Plugins: `plugins/prefetch-next-layer`,
 * `plugins/prefetch-affinity`.
 *
 * @module
 */

import type { Backend, WeightView } from "../backend/backend.ts";
import type { Route, Router } from "../moe/router.ts";

/** What a prefetcher may use of one MoE layer. */
export interface PrefetchLayer {
  /** Layer index. */
  readonly layer: number;
  /** The layer's router weights (`ffn_gate_inp`, `[n_expert][n_embd]`). */
  readonly gateInp: WeightView;
  /** The layer's router (gating + top-k), as the model runs it. */
  readonly router: Router;
}

/** What a prefetcher learns when it is attached to a model. */
export interface PrefetchContext {
  /** Backend (for `matmul` on router weights). */
  readonly backend: Backend;
  /** Layers of the model. */
  readonly nLayer: number;
  /** Experts per layer. */
  readonly nExpert: number;
  /** Experts per token. */
  readonly nExpertUsed: number;
  /** Hidden size. */
  readonly nEmbd: number;
  /** `layers[l]` for MoE layers, null for dense ones. */
  readonly layers: readonly (PrefetchLayer | null)[];
}

/** Experts of one layer worth loading ahead. */
export interface PrefetchHint {
  /** Layer of the experts. */
  readonly layer: number;
  /** Expert indices, most likely first. */
  readonly experts: ArrayLike<number>;
}

/**
 * Predicts experts ahead of use. `observe` is called synchronously on the
 * compute path for every routed token; keep it cheap.
 *
 * @example
 * ```ts
 * import type { Prefetcher } from "./prefetch.ts";
 * // Guess that the next layer uses the same expert indices.
 * const same: Prefetcher = {
 *   name: "same-index",
 *   observe: (layer, _token, route) => [{ layer: layer + 1, experts: route.experts }],
 * };
 * ```
 */
export interface Prefetcher {
  /** Short name for metrics and errors. */
  readonly name: string;
  /** Called once when attached, before any `observe`. */
  init?(ctx: PrefetchContext): void;
  /**
   * Token `token` of the running batch was routed at `layer` with input
   * `hidden` (the MoE layer's normalized input row). Returns experts to load
   * ahead (hints for unknown layers or experts are ignored).
   */
  observe(
    layer: number,
    token: number,
    route: Route,
    hidden: Float32Array,
  ): readonly PrefetchHint[] | null | void;
}

/** Creates a prefetcher from its (plugin) configuration. */
export type PrefetcherFactory = (config?: Record<string, unknown>) => Prefetcher;

/** The first MoE layer after `layer`, or -1. */
export function nextMoeLayer(ctx: PrefetchContext, layer: number): number {
  for (let l = layer + 1; l < ctx.nLayer; l++) if (ctx.layers[l]) return l;
  return -1;
}
