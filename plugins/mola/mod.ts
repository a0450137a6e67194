/**
 * `mola`: LoRA-expert mixtures per projection (docs/specs-lora-moe.md §1). Reads original
 * MoLA checkpoints (`lora_A_{i}`, `router.router.weight`, `r` as a list)
 * and MoE-PEFT ones (`experts.{e}.lora_A`, `moe_gate`); E_L comes from the
 * gate's rows, r_L from `lora_A_0`, the scale is `alpha/r_L` (`alpha/√r_L`
 * with `use_rslora`), and K_L from the config (default `top_k`, else 2).
 *
 * @module
 */

import {
  type AdapterLayout,
  checkPair,
  type HParams,
  type LinearAdapter,
  type LinearName,
  type LoraPair,
  loraScale,
  type ModelContext,
  openPeftAdapter,
  pairInGgufLayout,
  patternValue,
  type PeftAdapter,
  perLayer,
  PluginError,
  type PluginFactory,
  projectionAdapter,
  readTensor,
  targetShape,
} from "../../mod.ts";
import { addMixDelta, checkMix } from "./mix.ts";

export { addMixDelta, checkMix, type LoraMix, mixRoute } from "./mix.ts";

type PerLayerSpec = number | string | readonly number[];

/** Config of `mola`. */
export interface MolaConfig {
  /** Adapter directory. */
  readonly adapter: string;
  /** Expected experts per layer. */
  readonly experts?: PerLayerSpec;
  /** Experts per token per layer. */
  readonly topK?: PerLayerSpec;
  /** Gate function. */
  readonly gating?: "softmax" | "sigmoid";
  /** Extra multiplier. */
  readonly scale?: number;
  /** Projections to adapt. */
  readonly targets?: readonly LinearName[];
  /** `lora_B` row layout: the GGUF tensors' (default) or the HF model's (Q/K rows permuted here). */
  readonly layout?: AdapterLayout;
}

/** One projection's experts as read from the adapter (top-k is bound at load). */
export interface MolaModule {
  /** Layer (-1 = output head). */
  readonly layer: number;
  /** Projection. */
  readonly proj: LinearName;
  /** The model's routed expert (`ffn_*_exps`), -1 otherwise. */
  readonly ffnExpert: number;
  /** Gate `[E][dIn]`. */
  readonly router: Float32Array;
  /** Experts. */
  readonly experts: readonly LoraPair[];
  /** `alpha/r` (× extra scale). */
  readonly scale: number;
}

/** Read the MoLA modules of an adapter. */
export async function molaModules(ad: PeftAdapter, extraScale = 1): Promise<MolaModule[]> {
  const c = ad.config;
  const out: MolaModule[] = [];
  for (const m of ad.modules.values()) {
    const what = `module ${m.module}`;
    const gate = m.other.get("router");
    if (!gate || m.a.has(-1)) {
      throw new PluginError(
        "not_mola",
        `${what}: expects numbered LoRA experts and a router (plain LoRA: use 'lora')`,
        {
          module: m.module,
        },
      );
    }
    const [e, dIn] = ad.file.tensor(gate).shape;
    const router = await readTensor(ad.file, gate, [e, dIn]);
    const experts: LoraPair[] = [];
    let rank = 0;
    for (let i = 0; i < e; i++) {
      const a = m.a.get(i), b = m.b.get(i);
      if (!a || !b) {
        throw new PluginError(
          "missing_expert",
          `${what}: the router has ${e} experts but expert ${i} lacks lora_A or lora_B`,
        );
      }
      rank ||= ad.file.tensor(a).shape[0];
      const dOut = ad.file.tensor(b).shape[0];
      const A = await readTensor(ad.file, a, [rank, dIn]),
        B = await readTensor(ad.file, b, [dOut, rank]);
      experts.push(checkPair({ rank, dIn, dOut, a: A, b: B }, `${what} expert ${i}`));
    }
    if (m.a.size !== e || m.b.size !== e) {
      throw new PluginError(
        "missing_expert",
        `${what}: ${m.a.size} lora_A and ${m.b.size} lora_B for ${e} router rows`,
      );
    }
    // r per layer (original MoLA), overridden per module by rank_pattern (every target)
    const rLayer = Array.isArray(c.r) ? c.r[m.layer < 0 ? c.r.length - 1 : m.layer] : c.r;
    const rCfg = patternValue(c.rank_pattern, m.module, typeof rLayer === "number" ? rLayer : rank);
    if (rCfg !== rank) {
      throw new PluginError(
        "rank_mismatch",
        `${what}: experts have rank ${rank}, adapter_config r/rank_pattern says ${rCfg}`,
      );
    }
    const alpha = patternValue(
      c.alpha_pattern,
      m.module,
      typeof c.lora_alpha === "number" ? c.lora_alpha : 8,
      "alpha_pattern",
    );
    out.push({
      layer: m.layer,
      proj: m.proj,
      ffnExpert: m.ffnExpert,
      router,
      experts,
      scale: loraScale(alpha, rank, c.use_rslora === true) * extraScale,
    });
  }
  return out;
}

/** Bind modules to a model: check shapes, expert counts and top-k; returns the adapter. */
export function molaAdapter(
  modules: readonly MolaModule[],
  hp: HParams,
  opts: {
    experts?: PerLayerSpec;
    topK: PerLayerSpec;
    gating?: "softmax" | "sigmoid";
    layout?: AdapterLayout;
  },
): LinearAdapter {
  const counts = opts.experts === undefined ? null : perLayer(opts.experts, hp.nLayer, "experts");
  const ks = perLayer(opts.topK, hp.nLayer, "topK");
  return projectionAdapter(modules.map((m) => {
    const what = `MoLA ${m.layer}:${m.proj}${m.ffnExpert >= 0 ? `:${m.ffnExpert}` : ""}`;
    const { dIn, dOut } = targetShape(hp, m.layer, m.proj, what, m.ffnExpert);
    const l = m.layer < 0 ? hp.nLayer - 1 : m.layer;
    if (counts && m.layer >= 0 && counts[l] !== m.experts.length) {
      throw new PluginError(
        "expert_count_mismatch",
        `${what}: the adapter has ${m.experts.length} experts, config.experts says ${
          counts[l]
        } for layer ${l}`,
        { layer: m.layer, proj: m.proj },
      );
    }
    const mix = checkMix(
      {
        dIn,
        dOut,
        router: m.router,
        experts: m.experts.map((p) => pairInGgufLayout(p, hp, m.proj, opts.layout)),
        topK: ks[l],
        scale: m.scale,
        gating: opts.gating,
      },
      what,
    );
    const delta = (x: Float32Array, n: number, out: Float32Array) => addMixDelta(mix, x, n, out);
    return [m.layer, m.proj, delta, m.ffnExpert] as const;
  }));
}

/** The plugin factory. */
const createPlugin: PluginFactory<MolaConfig> = async (config, setup) => {
  const ad = await openPeftAdapter(setup, config.adapter);
  const targets = config.targets ? new Set(config.targets) : null;
  const modules = (await molaModules(ad, config.scale ?? 1)).filter((m) =>
    !targets || targets.has(m.proj)
  );
  const topK = config.topK ?? (typeof ad.config.top_k === "number" ? ad.config.top_k : 2);
  return {
    name: "mola",
    version: "0.1.0",
    hooks: {
      adapter: (ctx: ModelContext): LinearAdapter =>
        molaAdapter(modules, ctx.hp, {
          experts: config.experts,
          topK,
          gating: config.gating,
          layout: config.layout,
        }),
    },
  };
};

export default createPlugin;
