/**
 * `prefetch-next-layer`: while layer l computes, guess the experts of the
 * next MoE layer by applying that layer's router (its `ffn_gate_inp` through
 * `backend.matmul`, then its own top-k gating) to layer l's hidden state.
 * The residual stream changes little between adjacent layers, so the guess
 * is often right, and the guessed experts load while layer l computes.
 *
 * @module
 */

import {
  nextMoeLayer,
  type PluginFactory,
  type PrefetchContext,
  type Prefetcher,
  type PrefetchHint,
  type Route,
  topK,
} from "../../mod.ts";

/** Options of the next-layer prefetcher (the plugin config, defaults filled). */
export interface NextLayerOptions {
  /** Experts per token to prefetch; 0 = what the next layer's router picks. */
  readonly topK: number;
  /** MoE layers ahead to predict from the same hidden state. */
  readonly lookahead: number;
}

/** Defaults of `NextLayerOptions`. */
export const NEXT_LAYER_DEFAULTS: NextLayerOptions = { topK: 0, lookahead: 1 };

/**
 * A prefetcher that runs the next layer's router on this layer's hidden state.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel(path, {
 *   expertBudgetBytes: 64 << 20,
 *   streaming: { prefetcher: createNextLayerPrefetcher() },
 * });
 * ```
 */
export function createNextLayerPrefetcher(opts: Partial<NextLayerOptions> = {}): Prefetcher {
  const o: NextLayerOptions = { ...NEXT_LAYER_DEFAULTS, ...opts };
  let ctx: PrefetchContext | null = null;
  let logits = new Float32Array(0);
  return {
    name: "next-layer",
    init(c: PrefetchContext): void {
      ctx = c;
    },
    observe(
      layer: number,
      _token: number,
      _route: Route,
      hidden: Float32Array,
    ): PrefetchHint[] | null {
      if (!ctx) return null;
      const hints: PrefetchHint[] = [];
      let l = layer;
      for (let d = 0; d < o.lookahead; d++) {
        l = nextMoeLayer(ctx, l);
        if (l < 0) break;
        const next = ctx.layers[l]!;
        const n = next.gateInp.rows;
        if (logits.length !== n) logits = new Float32Array(n);
        ctx.backend.matmul(next.gateInp, hidden, 1, logits);
        const experts = o.topK > 0
          ? topK(logits, Math.min(o.topK, n))
          : next.router.route(logits, l).experts;
        hints.push({ layer: l, experts });
      }
      return hints;
    },
  };
}

/** The plugin factory: a `prefetch` hook building the next-layer prefetcher. */
const createPlugin: PluginFactory<Partial<NextLayerOptions>> = (config) => ({
  name: "prefetch-next-layer",
  version: "0.1.0",
  hooks: { prefetch: (): Prefetcher => createNextLayerPrefetcher(config) },
});

export default createPlugin;
