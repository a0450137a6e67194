/**
 * `quant-experts`: quantized experts in three modes, all built on resident
 * low-bit copies of experts (`core/store/fallback_copies.ts`) beside the
 * streaming store:
 *
 * - `hobbit` (mixed-precision offloading, HOBBIT): a copy of every expert
 *   in one low-bit type (e.g. Q2_K) stays resident; a miss computes with the
 *   copy at once while the full-precision expert loads for later tokens;
 *   only misses with a gate weight ≥ `criticalWeight` wait for full precision.
 * - `edgemoe` (expert-wise bit-width adaptation, EdgeMoE): per-expert types
 *   chosen from measured importance (routing mass on calibration text:
 *   activation frequency × mean gate weight) to fit a memory target; the
 *   copies replace the experts (nothing streams).
 * - `mc-moe` (mixture compressor, MC-MoE): per-expert types from a mix of
 *   activation frequency and gate weight, plus dynamic skipping at decode:
 *   an expert whose routed weight is below `skipBelow` is dropped from the
 *   token's route (the router hook of this plugin), the top one always kept.
 *
 * `planExperts` makes the per-expert plan; `writeExpertCopies` writes the
 * copies as a side GGUF with its own expert manifest (SHA-256 per copy);
 * `plugins/quant-experts/quantize.ts` is the command line around them.
 *
 * @module
 */

import {
  buildExpertManifest,
  type ByteSource,
  copyLocation,
  type CopyPlan,
  createRefBackend,
  type ExpertLocation,
  type ExpertManifest,
  GgmlType,
  ggmlTypeName,
  loadModel,
  MemorySource,
  type Model,
  PluginError,
  type PluginFactory,
  type Route,
  type Router,
  sideLocations,
  writeCopiesGguf,
} from "../../mod.ts";

/** The three modes. */
export type QuantMode = "hobbit" | "edgemoe" | "mc-moe";

/** Routing statistics of calibration text: per layer and expert. */
export interface RoutingStats {
  /** `freq[l][e]` = share of tokens routed to expert e at layer l. */
  readonly freq: number[][];
  /** `gate[l][e]` = mean gate weight of expert e at layer l when routed (0 when never). */
  readonly gate: number[][];
  /** Tokens counted. */
  readonly tokens: number;
}

/** Where each expert is in a model file (a load of its non-expert weights only). */
export async function expertLocations(src: ByteSource): Promise<ExpertLocation[][]> {
  let locs: ExpertLocation[][] | null = null;
  const m = await loadModel(src, {
    backend: createRefBackend(),
    integrity: "off",
    hooks: {
      createStore: (ctx) => {
        locs = ctx.locations.map((r) => [...r]);
        return {
          ensure() {},
          weights(): never {
            throw new PluginError("bad_config", "quant-experts: locations only");
          },
          stats: () => ({ hits: 0, misses: 0, evictions: 0, bytesFetched: 0, stallMs: 0 }),
        };
      },
    },
  });
  m.dispose();
  return locs!;
}

/**
 * Route `tokens` through `model` (teacher-forced, one forward pass per
 * chunk) and count, per expert, how often it is routed and its gate weight.
 */
export async function routingStats(model: Model, tokens: readonly number[]): Promise<RoutingStats> {
  const moe = model.transformer.moe;
  const nE = model.hp.nExpert;
  const count = moe.map(() => new Float64Array(nE));
  const wsum = moe.map(() => new Float64Array(nE));
  const obs = (l: number, _t: number, r: Route): void => {
    for (let j = 0; j < r.experts.length; j++) {
      count[l][r.experts[j]]++;
      wsum[l][r.experts[j]] += r.weights[j];
    }
  };
  for (const layer of moe) layer?.observers.push(obs);
  try {
    const { Session } = await import("../../mod.ts");
    const s = new Session(model);
    for (let i = 0; i < tokens.length; i += 64) await s.eval(tokens.slice(i, i + 64));
    s.dispose();
  } finally {
    for (const layer of moe) layer?.observers.splice(layer.observers.indexOf(obs), 1);
  }
  const n = Math.max(1, tokens.length);
  return {
    tokens: tokens.length,
    freq: count.map((c) => [...c].map((v) => v / n)),
    gate: count.map((c, l) => [...c].map((v, e) => v > 0 ? wsum[l][e] / v : 0)),
  };
}

/** Options of `planExperts`. */
export interface PlanOptions {
  /** The mode. */
  readonly mode: QuantMode;
  /** `hobbit`: the copies' type (default Q2_K). */
  readonly type?: number;
  /** `edgemoe`/`mc-moe`: bytes all copies may take. */
  readonly memoryBytes?: number;
  /** `edgemoe`/`mc-moe`: types to choose from, any order (default Q2_K, Q3_K, Q4_0). */
  readonly ladder?: readonly number[];
  /** `mc-moe`: weight of activation frequency against gate weight in importance (default 0.5). */
  readonly alpha?: number;
}

/** A per-expert plan: `types[l][e]` (a ggml type), and the bytes it takes. */
export interface ExpertPlan {
  /** The mode it was made for. */
  readonly mode: QuantMode;
  /** Per-expert types. */
  readonly types: number[][];
  /** Bytes of all copies. */
  readonly bytes: number;
  /** Importance used (edgemoe/mc-moe), `[l][e]`. */
  readonly importance?: number[][];
}

/** Importance of each expert under `mode` (higher = more bits). */
export function importance(mode: QuantMode, st: RoutingStats, alpha = 0.5): number[][] {
  if (mode === "edgemoe") return st.freq.map((row, l) => row.map((f, e) => f * st.gate[l][e]));
  const norm = (m: number[][]) => {
    const max = Math.max(1e-12, ...m.flat());
    return m.map((r) => r.map((v) => v / max));
  };
  const f = norm(st.freq), g = norm(st.gate);
  return f.map((row, l) => row.map((v, e) => alpha * v + (1 - alpha) * g[l][e]));
}

/**
 * The per-expert plan. `hobbit`: every expert in `type`. `edgemoe`/`mc-moe`:
 * start every expert at the smallest ladder type, then upgrade experts in
 * order of importance, one ladder step at a time, while the copies fit
 * `memoryBytes`. Throws `PluginError` `"bad_config"` when even the smallest
 * type does not fit or an option is missing.
 */
export function planExperts(
  locations: readonly (readonly ExpertLocation[])[],
  opts: PlanOptions,
  stats?: RoutingStats,
): ExpertPlan {
  const size = (loc: ExpertLocation, t: number) => copyLocation(loc, t).bytes;
  if (opts.mode === "hobbit") {
    const t = opts.type ?? GgmlType.Q2_K;
    const types = locations.map((r) => r.map(() => t));
    return { mode: "hobbit", types, bytes: locations.flat().reduce((a, l) => a + size(l, t), 0) };
  }
  if (!stats || opts.memoryBytes === undefined) {
    throw new PluginError(
      "bad_config",
      `quant-experts: mode '${opts.mode}' needs routing statistics and memoryBytes`,
    );
  }
  const all = locations.flat();
  const ladder = [...(opts.ladder ?? [GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_0])].sort((a, b) =>
    size(all[0], a) - size(all[0], b)
  );
  const imp = importance(opts.mode, stats, opts.alpha);
  const step = locations.map((r) => r.map(() => 0));
  let bytes = all.reduce((a, l) => a + size(l, ladder[0]), 0);
  if (bytes > opts.memoryBytes) {
    throw new PluginError(
      "bad_config",
      `quant-experts: ${
        ggmlTypeName(ladder[0])
      } copies of every expert take ${bytes} bytes, above memoryBytes ${opts.memoryBytes}`,
    );
  }
  const order = all.slice().sort((a, b) => imp[b.layer][b.index] - imp[a.layer][a.index]);
  for (let rung = 1; rung < ladder.length; rung++) {
    for (const loc of order) {
      if (step[loc.layer][loc.index] !== rung - 1) continue;
      const more = size(loc, ladder[rung]) - size(loc, ladder[rung - 1]);
      if (bytes + more > opts.memoryBytes) continue;
      bytes += more;
      step[loc.layer][loc.index] = rung;
    }
  }
  return {
    mode: opts.mode,
    types: step.map((r) => r.map((s) => ladder[s])),
    bytes,
    importance: imp,
  };
}

/** A plan as a `CopyPlan`. */
export function copyPlan(plan: ExpertPlan): CopyPlan {
  return (l, e) => plan.types[l]?.[e] ?? null;
}

/**
 * Write the copies of `plan` as a side GGUF and its expert manifest
 * (SHA-256 of each copy's three matrices back to back).
 */
export async function writeExpertCopies(
  source: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
  plan: ExpertPlan,
): Promise<{ gguf: Uint8Array; manifest: ExpertManifest }> {
  const gguf = await writeCopiesGguf(source, locations, copyPlan(plan), { mode: plan.mode });
  const side = new MemorySource(gguf);
  const locs = await sideLocations(side, locations);
  const manifest = await buildExpertManifest(side, locs.map((r) => r.filter((l) => l !== null)));
  return { gguf, manifest };
}

/** Drop experts whose routed weight is below `skipBelow` (the top one is always kept). */
export function skipRoute(r: Route, skipBelow: number): Route {
  let keep = 0;
  for (let j = 0; j < r.experts.length; j++) if (j === 0 || r.weights[j] >= skipBelow) keep++;
  if (keep === r.experts.length) return r;
  const experts = new Int32Array(keep), weights = new Float32Array(keep);
  let k = 0;
  for (let j = 0; j < r.experts.length; j++) {
    if (j !== 0 && r.weights[j] < skipBelow) continue;
    experts[k] = r.experts[j];
    weights[k++] = r.weights[j];
  }
  return { experts, weights };
}

/** The plugin config. */
export interface QuantExpertsConfig {
  /** The mode (documentation of the side file's use; `mc-moe` enables skipping). */
  readonly mode?: QuantMode;
  /** `mc-moe`: drop routed experts with a weight below this (0 = off). */
  readonly skipBelow?: number;
}

/** The plugin factory: for `mc-moe` with `skipBelow` > 0, a router that skips low-weight experts. */
const createPlugin: PluginFactory<QuantExpertsConfig> = (config) => {
  const mode = config.mode ?? "hobbit";
  const skip = config.skipBelow ?? 0;
  if (!(skip >= 0 && skip < 1)) {
    throw new PluginError(
      "bad_config",
      `quant-experts: skipBelow must be in [0, 1): received ${skip}`,
    );
  }
  const hooks: { router?: (inner: Router) => Router } = {};
  if (mode === "mc-moe" && skip > 0) {
    hooks.router = (inner: Router): Router => ({
      name: `${inner.name}+skip`,
      route: (logits, layer, out) => {
        const r = inner.route(logits, layer, out);
        // the top expert is first in routes of the built-in routers; keep the heaviest anyway
        let top = 0;
        for (let j = 1; j < r.weights.length; j++) if (r.weights[j] > r.weights[top]) top = j;
        if (top !== 0) return r;
        return skipRoute(r, skip);
      },
    });
  }
  return { name: "quant-experts", version: "0.1.0", hooks };
};

export default createPlugin;
