/**
 * Routing traces: which experts each token used at each layer. Recorded
 * from the MoE layers' route observers (`deno task cli trace`), replayed by
 * the Belady evaluator, and turned into the inter-layer affinity table the
 * affinity prefetcher ships in its config.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { Route } from "../moe/router.ts";

/** A recorded routing trace (the JSON written by `deno task cli trace`). */
export interface RouteTrace {
  /** Format tag. */
  readonly format: "moe-edge.route-trace";
  /** Format version. */
  readonly version: 1;
  /** Layers of the model. */
  readonly nLayer: number;
  /** Experts per layer. */
  readonly nExpert: number;
  /** Experts per token. */
  readonly nExpertUsed: number;
  /** `tokens[t][l]` = experts token t used at layer l, best first (`[]` for dense layers). */
  readonly tokens: number[][][];
}

/**
 * Inter-layer affinity: `table[l][e][f]` = P(expert f at the next MoE layer
 * after l | expert e at layer l), estimated from a trace. `table[l]` is `[]`
 * when layer l has no later MoE layer.
 */
export type AffinityTable = number[][][];

/** Records routes from MoE layer observers into a `RouteTrace`. */
export class RouteRecorder {
  readonly #nLayer: number;
  readonly #nExpert: number;
  readonly #nExpertUsed: number;
  readonly #tokens: number[][][] = [];
  #base = 0;
  #batch = 0;
  #lastLayer = -1;
  #lastToken = -1;

  /** @param nLayer layers; @param nExpert experts per layer; @param nExpertUsed experts per token */
  constructor(nLayer: number, nExpert: number, nExpertUsed: number) {
    this.#nLayer = nLayer;
    this.#nExpert = nExpert;
    this.#nExpertUsed = nExpertUsed;
  }

  /** The observer to push on each MoE layer's `observers`. */
  readonly observe = (layer: number, token: number, route: Route): void => {
    // a new forward pass starts when routing goes back to an earlier (layer, token)
    if (layer < this.#lastLayer || (layer === this.#lastLayer && token <= this.#lastToken)) {
      this.#base += this.#batch;
      this.#batch = 0;
    }
    this.#lastLayer = layer;
    this.#lastToken = token;
    if (token + 1 > this.#batch) this.#batch = token + 1;
    const t = this.#base + token;
    while (this.#tokens.length <= t) {
      this.#tokens.push(Array.from({ length: this.#nLayer }, () => []));
    }
    this.#tokens[t][layer] = Array.from(route.experts);
  };

  /** The trace so far. */
  trace(): RouteTrace {
    return {
      format: "moe-edge.route-trace",
      version: 1,
      nLayer: this.#nLayer,
      nExpert: this.#nExpert,
      nExpertUsed: this.#nExpertUsed,
      tokens: this.#tokens.map((t) => t.map((l) => [...l])),
    };
  }
}

function bad(msg: string): StoreError {
  return new StoreError("bad_trace", `Cannot read route trace: ${msg}`);
}

/** Validate parsed JSON as a `RouteTrace`. Throws `StoreError` `"bad_trace"` naming the field. */
export function parseRouteTrace(json: unknown): RouteTrace {
  const o = json as Record<string, unknown>;
  if (typeof o !== "object" || o === null) throw bad("not an object");
  if (o.format !== "moe-edge.route-trace") {
    throw bad(`format must be "moe-edge.route-trace": received ${o.format}`);
  }
  if (o.version !== 1) throw bad(`version must be 1: received ${o.version}`);
  for (const f of ["nLayer", "nExpert", "nExpertUsed"]) {
    if (!Number.isInteger(o[f]) || (o[f] as number) < 0) {
      throw bad(`${f} must be a non-negative integer`);
    }
  }
  const nLayer = o.nLayer as number, nExpert = o.nExpert as number;
  if (!Array.isArray(o.tokens)) throw bad("tokens must be an array");
  o.tokens.forEach((t: unknown, i: number) => {
    if (!Array.isArray(t) || t.length !== nLayer) {
      throw bad(`tokens[${i}] must hold ${nLayer} layers`);
    }
    t.forEach((l: unknown, j: number) => {
      if (!Array.isArray(l) || l.some((e) => !Number.isInteger(e) || e < 0 || e >= nExpert)) {
        throw bad(`tokens[${i}][${j}] must be expert indices below ${nExpert}`);
      }
    });
  });
  return o as unknown as RouteTrace;
}

/** Layers of `trace` that route (non-empty in some token), in order. */
export function moeLayersOf(trace: RouteTrace): number[] {
  const out: number[] = [];
  for (let l = 0; l < trace.nLayer; l++) {
    if (trace.tokens.some((t) => t[l].length > 0)) out.push(l);
  }
  return out;
}

/**
 * Estimate the affinity table from a trace with add-`smoothing` (Laplace)
 * counts, so unseen transitions keep a small probability.
 */
export function affinityFromTrace(trace: RouteTrace, smoothing = 0): AffinityTable {
  const { nLayer, nExpert } = trace;
  const moe = moeLayersOf(trace);
  const table: AffinityTable = Array.from({ length: nLayer }, () => []);
  for (let i = 0; i + 1 < moe.length; i++) {
    const l = moe[i], n = moe[i + 1];
    const counts = Array.from(
      { length: nExpert },
      () => new Array<number>(nExpert).fill(smoothing),
    );
    for (const t of trace.tokens) {
      for (const e of t[l]) for (const f of t[n]) counts[e][f]++;
    }
    table[l] = counts.map((row) => {
      const sum = row.reduce((a, b) => a + b, 0);
      return row.map((c) => (sum > 0 ? c / sum : 0));
    });
  }
  return table;
}

/**
 * The access steps a decode-style replay of `trace` makes: for each token,
 * for each routing layer, the keys (`layer * nExpert + index`) it needs.
 */
export function stepsFromTrace(trace: RouteTrace): number[][] {
  const steps: number[][] = [];
  for (const t of trace.tokens) {
    for (let l = 0; l < trace.nLayer; l++) {
      if (t[l].length === 0) continue;
      steps.push([...new Set(t[l])].sort((a, b) => a - b).map((e) => l * trace.nExpert + e));
    }
  }
  return steps;
}
