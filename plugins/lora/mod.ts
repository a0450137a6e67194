/**
 * `lora`: plain PEFT LoRA (docs/specs-lora-moe.md §5.1). Per adapted projection
 * `y = W·x + s·(B·(A·x) + b_B)` with `s = α_m/r_m` (`α_m/√r_m` with
 * `use_rslora`), `r_m`/`α_m` from `rank_pattern`/`alpha_pattern` or
 * `r`/`lora_alpha`. With `merge`, `W' = W + s·B·A` is written into the
 * weights at load (the `weights` hook) and no per-token term remains.
 *
 * @module
 */

import {
  type AdapterLayout,
  addLoraDelta,
  checkPair,
  type LinearAdapter,
  type LinearName,
  type LoraPair,
  loraScale,
  mergeLoraBytes,
  type ModelContext,
  openPeftAdapter,
  pairInGgufLayout,
  patternValue,
  type PeftAdapter,
  PluginError,
  type PluginFactory,
  projectionAdapter,
  readTensor,
  targetShape,
  type TensorBytesInfo,
} from "../../mod.ts";

/** Config of `lora`. */
export interface LoraConfig {
  /** Adapter directory. */
  readonly adapter: string;
  /** Extra multiplier. */
  readonly scale?: number;
  /** Merge into the weights at load. */
  readonly merge?: boolean;
  /** Projections to adapt. */
  readonly targets?: readonly LinearName[];
  /** `lora_B` row layout: the GGUF tensors' (default) or the HF model's (Q/K rows permuted here). */
  readonly layout?: AdapterLayout;
}

/** One adapted projection. */
export interface LoraModule {
  /** Layer (-1 = output head). */
  readonly layer: number;
  /** Projection. */
  readonly proj: LinearName;
  /** The model's routed expert (`ffn_*_exps`), -1 otherwise. */
  readonly ffnExpert: number;
  /** The pair. */
  readonly pair: LoraPair;
  /** Effective scale `s`. */
  readonly scale: number;
}

/** Read the plain-LoRA modules of a PEFT adapter. */
export async function loraModules(ad: PeftAdapter, extraScale = 1): Promise<LoraModule[]> {
  const c = ad.config;
  const out: LoraModule[] = [];
  for (const m of ad.modules.values()) {
    const what = `module ${m.module}`;
    const a = m.a.get(-1), b = m.b.get(-1);
    if (
      m.other.has("router") || m.other.has("rank_router") || m.a.size !== 1 || m.b.size !== 1 ||
      !a || !b
    ) {
      throw new PluginError(
        "not_plain_lora",
        `${what}: expects one lora_A and one lora_B (MoLA adapters: use 'mola'; SMoRA: use 'smora')`,
        { module: m.module },
      );
    }
    const [rank, dIn] = ad.file.tensor(a).shape;
    const dOut = ad.file.tensor(b).shape[0];
    const A = await readTensor(ad.file, a, [rank, dIn]);
    const B = await readTensor(ad.file, b, [dOut, rank]);
    const biasName = m.other.get("B_bias");
    const bias = biasName ? await readTensor(ad.file, biasName, [dOut]) : undefined;
    const rCfg = patternValue(c.rank_pattern, m.module, typeof c.r === "number" ? c.r : rank);
    if (rCfg !== rank) {
      throw new PluginError(
        "rank_mismatch",
        `${what}: lora_A has rank ${rank}, adapter_config says ${rCfg}`,
        {
          module: m.module,
        },
      );
    }
    const alpha = patternValue(
      c.alpha_pattern,
      m.module,
      typeof c.lora_alpha === "number" ? c.lora_alpha : 8,
      "alpha_pattern",
    );
    const pair = checkPair({ rank, dIn, dOut, a: A, b: B, bias }, what);
    out.push({
      layer: m.layer,
      proj: m.proj,
      ffnExpert: m.ffnExpert,
      pair,
      scale: loraScale(alpha, rank, c.use_rslora === true) * extraScale,
    });
  }
  return out;
}

/** Check modules against the model; returns the `LinearAdapter` adding their terms. */
export function loraAdapter(
  modules: readonly LoraModule[],
  ctx: ModelContext,
  layout: AdapterLayout = "gguf",
): LinearAdapter {
  return projectionAdapter(modules.map((m0) => {
    const m = { ...m0, pair: pairInGgufLayout(m0.pair, ctx.hp, m0.proj, layout) };
    const what = `LoRA ${m.layer}:${m.proj}${m.ffnExpert >= 0 ? `:${m.ffnExpert}` : ""}`;
    const { dIn, dOut } = targetShape(ctx.hp, m.layer, m.proj, what, m.ffnExpert);
    if (dIn !== m.pair.dIn || dOut !== m.pair.dOut) {
      throw new PluginError(
        "shape_mismatch",
        `${what} is ${m.pair.dOut}×${m.pair.dIn}; the model's projection is ${dOut}×${dIn}`,
        { layer: m.layer, proj: m.proj },
      );
    }
    const delta = (x: Float32Array, n: number, out: Float32Array) =>
      addLoraDelta(m.pair, m.scale, x, n, out);
    return [m.layer, m.proj, delta, m.ffnExpert] as const;
  }));
}

/** The GGUF weight a module merges into. */
export function ggufWeightName(layer: number, proj: LinearName): string {
  return layer < 0 ? `${proj}.weight` : `blk.${layer}.${proj}.weight`;
}

/** The plugin factory. */
const createPlugin: PluginFactory<LoraConfig> = async (config, setup) => {
  const ad = await openPeftAdapter(setup, config.adapter);
  const targets = config.targets ? new Set(config.targets) : null;
  const modules = (await loraModules(ad, config.scale ?? 1)).filter((m) =>
    !targets || targets.has(m.proj)
  );
  const byWeight = new Map(modules.map((m) => [ggufWeightName(m.layer, m.proj), m]));
  const merged = new Set<string>();
  if (config.merge && modules.some((m) => m.ffnExpert >= 0)) {
    throw new PluginError(
      "bad_config",
      "config.merge: adapters on routed experts (experts.N.*) are applied unmerged; drop merge",
    );
  }
  if (config.merge && config.layout === "hf") {
    throw new PluginError(
      "bad_config",
      "config.merge: an HF-layout adapter is applied unmerged; drop merge or convert it",
    );
  }
  if (config.merge && modules.some((m) => m.pair.bias)) {
    throw new PluginError(
      "bad_config",
      "config.merge: adapters with lora_B.bias cannot be merged (no bias tensor)",
    );
  }
  return {
    name: "lora",
    version: "0.1.0",
    hooks: {
      weights(t: TensorBytesInfo, bytes: Uint8Array): Uint8Array | void {
        const m = config.merge ? byWeight.get(t.name) : undefined;
        if (!m) return;
        merged.add(t.name);
        return mergeLoraBytes(t, bytes, m.pair, m.scale);
      },
      adapter(ctx: ModelContext): LinearAdapter | readonly LinearAdapter[] {
        const adapter = loraAdapter(modules, ctx, config.layout); // checks shapes in both modes
        if (!config.merge) return adapter;
        const missing = [...byWeight.keys()].filter((n) => !merged.has(n));
        if (missing.length) {
          throw new PluginError(
            "merge_incomplete",
            `merge: the model never loaded ${missing.join(", ")} (tied output?)`,
          );
        }
        return [];
      },
    },
  };
};

export default createPlugin;
