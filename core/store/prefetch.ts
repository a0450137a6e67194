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
import type { MoeLayer } from "../moe/moe_layer.ts";
import type { Route, Router } from "../moe/router.ts";
import { PluginError } from "../errors.ts";

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

/** Call a prefetcher hook, stamping what it throws as a `PluginError` naming it and the hook. */
export function callPrefetcher<T>(p: Prefetcher, hook: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PluginError) throw e;
    throw new PluginError(
      "hook_failed",
      `Plugin '${p.name}' failed in prefetch hook '${hook}': ${(e as Error).message}`,
      { plugin: p.name, hook },
    );
  }
}

/**
 * Init `p` with the context of `layers` and add a route observer to each MoE
 * layer: `onRoute` sees every token's experts, `onHints` what `p` returns.
 */
export function attachPrefetcher(
  p: Prefetcher,
  layers: readonly (MoeLayer | null)[],
  base: Omit<PrefetchContext, "layers">,
  onRoute: (layer: number, experts: Int32Array) => void,
  onHints: (hints: readonly PrefetchHint[]) => void,
): void {
  const ctx: PrefetchContext = {
    ...base,
    layers: layers.map((m) =>
      m ? { layer: m.spec.layer, gateInp: m.spec.gateInp, router: m.spec.router } : null
    ),
  };
  callPrefetcher(p, "init", () => p.init?.(ctx));
  for (const m of layers) {
    m?.observers.push((layer, token, route, hidden) => {
      onRoute(layer, route.experts);
      const hints = callPrefetcher(p, "observe", () => p.observe(layer, token, route, hidden));
      if (hints) onHints(hints);
    });
  }
}
