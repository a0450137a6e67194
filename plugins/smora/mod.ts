/**
 * `smora`: Single-Ranked Mixture of Experts LoRA (docs/specs-lora-moe.md §2, SRMoLE code).
 * Per token: `g = sigmoid(W_g·x)` (one value per block of P ranks, repeated),
 * `g' = g + b`, top-k ranks of `g'`, `ĝ = g'_I / Σ g'_I`, and
 * `y += α · Σ_{i∈I} ĝ_i (A_i·x) B[:,i]` (= `s·Σ G_i …` with `s = α/k`,
 * `G = k·ĝ`). Only the k active ranks are computed — `A_i·x` and the column
 * `B[:,i]` — so the cost is `k·(dIn+dOut)`, not a dense rank-r product.
 *
 * @module
 */

import {
  type AdapterLayout,
  type LinearAdapter,
  type LinearName,
  matVecF32,
  type ModelContext,
  openPeftAdapter,
  patternValue,
  type PeftAdapter,
  permuteQkRows,
  PluginError,
  type PluginFactory,
  projectionAdapter,
  qkPermutationHeads,
  readTensor,
  targetShape,
  topK,
} from "../../mod.ts";

/** Config of `smora`. */
export interface SmoraConfig {
  /** Adapter directory. */
  readonly adapter: string;
  /** k. */
  readonly activeRanks?: number;
  /** P. */
  readonly partition?: number;
  /** Extra multiplier. */
  readonly scale?: number;
  /** Projections to adapt. */
  readonly targets?: readonly LinearName[];
  /** `lora_B` row layout: the GGUF tensors' (default) or the HF model's (Q/K rows permuted here). */
  readonly layout?: AdapterLayout;
}

/** One projection's SMoRA LoRA. */
export interface SmoraModule {
  /** Layer (-1 = output head). */
  readonly layer: number;
  /** Projection. */
  readonly proj: LinearName;
  /** The model's routed expert (`ffn_*_exps`); -1 (or absent) otherwise. */
  readonly ffnExpert?: number;
  /** Rank r. */
  readonly rank: number;
  /** Input width. */
  readonly dIn: number;
  /** Output width. */
  readonly dOut: number;
  /** `A`, `[r][dIn]`. */
  readonly a: Float32Array;
  /** `B`, `[dOut][r]`. */
  readonly b: Float32Array;
  /** Rank gate `W_g`, `[r/P][dIn]`. */
  readonly router: Float32Array;
  /** Ranks per gate value P. */
  readonly partition: number;
  /** Bias `b`, `[r]`. */
  readonly bias: Float32Array;
  /** Active ranks k. */
  readonly k: number;
  /** `lora_alpha` (× extra scale). */
  readonly alpha: number;
}

/** Check a module's sizes; throws `PluginError` naming `what`. */
export function checkSmora(m: SmoraModule, what: string): SmoraModule {
  const { rank: r, dIn, dOut, partition: p } = m;
  if (
    r % p !== 0 || m.router.length !== (r / p) * dIn || m.a.length !== r * dIn ||
    m.b.length !== dOut * r
  ) {
    throw new PluginError(
      "bad_shape",
      `${what}: rank ${r}, partition ${p}: A, B or lora_router has the wrong size`,
      {
        what,
      },
    );
  }
  if (m.bias.length !== r) {
    throw new PluginError(
      "bad_shape",
      `${what}: lora_biases has ${m.bias.length} values for rank ${r}`,
    );
  }
  if (!Number.isInteger(m.k) || m.k < 1 || m.k > r) {
    throw new PluginError("bad_config", `${what}: active ranks ${m.k} must be in [1, ${r}]`, {
      what,
    });
  }
  return m;
}

/** Active ranks of token row `x[xOff..]` and their normalized gates `ĝ`. */
export function smoraRoute(
  m: SmoraModule,
  x: Float32Array,
  xOff: number,
): { ranks: Int32Array; gates: Float32Array } {
  const b = buffers(m);
  routeInto(m, x, xOff, b);
  return { ranks: b.ranks.slice(), gates: b.gates.slice() };
}

/** Per-module route buffers, so a decoded token allocates nothing. */
interface SmoraBuffers {
  g: Float32Array;
  biased: Float32Array;
  ranks: Int32Array;
  gates: Float32Array;
  c: Float64Array;
}

const scratch = new WeakMap<SmoraModule, SmoraBuffers>();

function buffers(m: SmoraModule): SmoraBuffers {
  let b = scratch.get(m);
  if (!b) {
    b = {
      g: new Float32Array(m.rank / m.partition),
      biased: new Float32Array(m.rank),
      ranks: new Int32Array(m.k),
      gates: new Float32Array(m.k),
      c: new Float64Array(m.k),
    };
    scratch.set(m, b);
  }
  return b;
}

function routeInto(m: SmoraModule, x: Float32Array, xOff: number, b: SmoraBuffers): void {
  const blocks = m.rank / m.partition;
  const { g, biased, ranks, gates } = b;
  matVecF32(m.router, blocks, m.dIn, x, xOff, g);
  for (let i = 0; i < m.rank; i++) {
    const s = Math.fround(1 / (1 + Math.exp(-g[Math.floor(i / m.partition)])));
    biased[i] = Math.fround(s + m.bias[i]);
  }
  topK(biased, m.k, ranks);
  let sum = 0;
  for (let j = 0; j < m.k; j++) sum += gates[j] = biased[ranks[j]];
  const s = Math.fround(sum);
  for (let j = 0; j < m.k; j++) gates[j] = Math.fround(gates[j] / s);
}

/** `out[t] += α Σ_{i∈I_t} ĝ_i (A_i·x[t]) B[:,i]` for `nTokens` rows. */
export function addSmoraDelta(
  m: SmoraModule,
  x: Float32Array,
  nTokens: number,
  out: Float32Array,
): void {
  const { dIn, dOut, rank, a, b, k } = m;
  const buf = buffers(m);
  const { c, ranks, gates } = buf;
  for (let t = 0; t < nTokens; t++) {
    const xo = t * dIn;
    routeInto(m, x, xo, buf);
    for (let j = 0; j < k; j++) {
      let z = 0;
      const row = ranks[j] * dIn;
      for (let col = 0; col < dIn; col++) z += a[row + col] * x[xo + col];
      c[j] = m.alpha * gates[j] * z;
    }
    const oo = t * dOut;
    for (let o = 0; o < dOut; o++) {
      let s = 0;
      const row = o * rank;
      for (let j = 0; j < k; j++) s += b[row + ranks[j]] * c[j];
      out[oo + o] += s;
    }
  }
}

/**
 * Read the SMoRA modules of an adapter (k and P from the config or
 * adapter_config; per-module rank checked against `rank_pattern`/`r`, α from
 * `alpha_pattern`/`lora_alpha`).
 */
export async function smoraModules(
  ad: PeftAdapter,
  opts: { activeRanks?: number; partition?: number; scale?: number } = {},
): Promise<SmoraModule[]> {
  const c = ad.config;
  const k = opts.activeRanks ?? (typeof c.activate_r === "number" ? c.activate_r : undefined);
  if (k === undefined) {
    throw new PluginError(
      "bad_config",
      "config.activeRanks is required (adapter_config has no activate_r)",
      {
        field: "activeRanks",
      },
    );
  }
  const partition = opts.partition ?? (typeof c.rank_partition === "number" ? c.rank_partition : 1);
  const baseAlpha = typeof c.lora_alpha === "number" ? c.lora_alpha : 8;
  const out: SmoraModule[] = [];
  for (const m of ad.modules.values()) {
    const what = `module ${m.module}`;
    const an = m.a.get(-1), bn = m.b.get(-1), gn = m.other.get("rank_router");
    if (!an || !bn || !gn || m.a.size !== 1) {
      throw new PluginError(
        "not_smora",
        `${what}: expects lora_A, lora_B and lora_router (plain LoRA: use 'lora')`,
      );
    }
    const [rank, dIn] = ad.file.tensor(an).shape;
    const dOut = ad.file.tensor(bn).shape[0];
    if (rank % partition !== 0) {
      throw new PluginError(
        "bad_config",
        `${what}: rank ${rank} is not a multiple of partition ${partition}`,
      );
    }
    // rank_pattern / alpha_pattern reach every target (attention, dense FFN, experts.N.*)
    const rCfg = patternValue(c.rank_pattern, m.module, typeof c.r === "number" ? c.r : rank);
    if (rCfg !== rank) {
      throw new PluginError(
        "rank_mismatch",
        `${what}: lora_A has rank ${rank}, adapter_config says ${rCfg}`,
        { module: m.module },
      );
    }
    const alpha = patternValue(c.alpha_pattern, m.module, baseAlpha, "alpha_pattern") *
      (opts.scale ?? 1);
    const bName = m.other.get("rank_bias");
    out.push(checkSmora({
      layer: m.layer,
      proj: m.proj,
      ffnExpert: m.ffnExpert,
      rank,
      dIn,
      dOut,
      a: await readTensor(ad.file, an, [rank, dIn]),
      b: await readTensor(ad.file, bn, [dOut, rank]),
      router: await readTensor(ad.file, gn, [rank / partition, dIn]),
      partition,
      bias: bName ? await readTensor(ad.file, bName, [rank]) : new Float32Array(rank),
      k,
      alpha,
    }, what));
  }
  return out;
}

/** Bind modules to a model (shape checks); returns the adapter. */
export function smoraAdapter(
  modules: readonly SmoraModule[],
  ctx: ModelContext,
  layout: AdapterLayout = "gguf",
): LinearAdapter {
  return projectionAdapter(modules.map((m0) => {
    const heads = layout === "hf" ? qkPermutationHeads(ctx.hp, m0.proj) : 0;
    const m = heads ? { ...m0, b: permuteQkRows(m0.b, m0.dOut, m0.rank, heads) } : m0;
    const e = m.ffnExpert ?? -1;
    const what = `SMoRA ${m.layer}:${m.proj}${e >= 0 ? `:${e}` : ""}`;
    const { dIn, dOut } = targetShape(ctx.hp, m.layer, m.proj, what, e);
    if (dIn !== m.dIn || dOut !== m.dOut) {
      throw new PluginError(
        "shape_mismatch",
        `${what} is ${m.dOut}×${m.dIn}; the model's projection is ${dOut}×${dIn}`,
      );
    }
    const delta = (x: Float32Array, n: number, out: Float32Array) => addSmoraDelta(m, x, n, out);
    return [m.layer, m.proj, delta, e] as const;
  }));
}

/** The plugin factory. */
const createPlugin: PluginFactory<SmoraConfig> = async (config, setup) => {
  const ad = await openPeftAdapter(setup, config.adapter);
  const targets = config.targets ? new Set(config.targets) : null;
  const modules = (await smoraModules(ad, config)).filter((m) => !targets || targets.has(m.proj));
  return {
    name: "smora",
    version: "0.1.0",
    hooks: {
      adapter: (ctx: ModelContext): LinearAdapter => smoraAdapter(modules, ctx, config.layout),
    },
  };
};

export default createPlugin;
