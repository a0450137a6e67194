/**
 * `prefetch-affinity`: prefetch from an inter-layer affinity table
 * `P(expert f at the next MoE layer | expert e at this layer)`, estimated
 * from routing traces (`deno task cli trace` writes the table as its
 * `affinity` field, or give the trace and let the plugin count). For each
 * token the next layer's experts are scored `Σ_j w_j · P(f | e_j)` over the
 * token's route, and the best `topN` are prefetched.
 *
 * @module
 */

import {
  affinityFromTrace,
  type AffinityTable,
  nextMoeLayer,
  parseRouteTrace,
  PluginError,
  type PluginFactory,
  type PrefetchContext,
  type Prefetcher,
  type PrefetchHint,
  type Route,
  topK,
} from "../../mod.ts";

/** Options of the affinity prefetcher. */
export interface AffinityOptions {
  /** `table[l][e][f]` (see `AffinityTable`). */
  readonly table: AffinityTable;
  /** Experts to prefetch per token; 0 = the model's experts per token. */
  readonly topN?: number;
  /** Skip experts whose score (a probability) is below this. */
  readonly minProb?: number;
}

/** The plugin config. */
export interface AffinityConfig {
  /** The table, as `cli trace` writes it. */
  readonly table?: AffinityTable;
  /** Path/URL of a trace to compute the table from. */
  readonly trace?: string;
  /** See `AffinityOptions.topN`. */
  readonly topN?: number;
  /** See `AffinityOptions.minProb`. */
  readonly minProb?: number;
  /** Add-k smoothing when counting a trace (default 0.5). */
  readonly smoothing?: number;
}

function badConfig(msg: string): PluginError {
  return new PluginError("bad_config", `plugin 'prefetch-affinity' (prefetch): ${msg}`, {
    plugin: "prefetch-affinity",
    hook: "prefetch",
  });
}

/**
 * A prefetcher that scores the next layer's experts by affinity with this
 * layer's route.
 *
 * @example
 * ```ts
 * import { createAffinityPrefetcher } from "./mod.ts";
 * // 2 layers × 2 experts: expert e at layer 0 is followed by expert 1-e at layer 1
 * const p = createAffinityPrefetcher({ table: [[[0, 1], [1, 0]], []], topN: 1 });
 * console.log(p.name); // "affinity"
 * ```
 */
export function createAffinityPrefetcher(opts: AffinityOptions): Prefetcher {
  let ctx: PrefetchContext | null = null;
  let score = new Float32Array(0);
  const table = opts.table;
  return {
    name: "affinity",
    init(c: PrefetchContext): void {
      if (table.length !== c.nLayer) {
        throw badConfig(`table has ${table.length} layers, the model ${c.nLayer}`);
      }
      table.forEach((rows, l) => {
        const next = nextMoeLayer(c, l);
        if (rows.length === 0) return;
        if (!c.layers[l] || next < 0) {
          throw badConfig(`table[${l}] must be [] (no MoE layer follows)`);
        }
        if (rows.length !== c.nExpert || rows.some((r) => r.length !== c.nExpert)) {
          throw badConfig(`table[${l}] must be ${c.nExpert} × ${c.nExpert}`);
        }
      });
      ctx = c;
      score = new Float32Array(c.nExpert);
    },
    observe(layer: number, _token: number, route: Route): PrefetchHint[] | null {
      const rows = table[layer];
      if (!ctx || !rows || rows.length === 0) return null;
      const next = nextMoeLayer(ctx, layer);
      score.fill(0);
      let wsum = 0;
      for (let j = 0; j < route.experts.length; j++) {
        const w = Math.abs(route.weights[j]) || 1e-6;
        wsum += w;
        const row = rows[route.experts[j]];
        for (let f = 0; f < score.length; f++) score[f] += w * row[f];
      }
      const n = Math.min(opts.topN || ctx.nExpertUsed, score.length);
      const best = topK(score, n);
      const min = (opts.minProb ?? 0) * wsum;
      const experts = Array.from(best).filter((f) => score[f] >= min && score[f] > 0);
      return experts.length ? [{ layer: next, experts }] : null;
    },
  };
}

/** The plugin factory: reads `table` (or counts `trace`) and returns a `prefetch` hook. */
const createPlugin: PluginFactory<AffinityConfig> = async (config, setup) => {
  let table = config.table;
  if (!table) {
    if (!config.trace) throw badConfig("config needs 'table' or 'trace'");
    const text = new TextDecoder().decode(await setup.readBytes(config.trace));
    table = affinityFromTrace(parseRouteTrace(JSON.parse(text)), config.smoothing ?? 0.5);
  }
  const opts: AffinityOptions = { table, topN: config.topN, minProb: config.minProb };
  return {
    name: "prefetch-affinity",
    version: "0.1.0",
    hooks: { prefetch: (): Prefetcher => createAffinityPrefetcher(opts) },
  };
};

export default createPlugin;
