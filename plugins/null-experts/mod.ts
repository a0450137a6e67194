/**
 * `null-experts`: zero-compute expert kinds (MoE++, arXiv 2410.07348) for
 * models trained with them. Each configured `(layer, index)` is replaced:
 * `zero` → `0`, `copy` → `scale·x`, `constant` → a fixed vector `v`. The
 * MoE layer still weights the output by the router's gate, as for any expert.
 *
 * @module
 */

import {
  type Expert,
  type ExpertKind,
  type HParams,
  PluginError,
  type PluginFactory,
} from "../../mod.ts";

/** One replaced expert. */
export interface NullExpertSpec {
  /** Layer, or `"*"` for all. */
  readonly layer: number | "*";
  /** Expert index. */
  readonly index: number;
  /** Kind. */
  readonly kind: "zero" | "copy" | "constant";
  /** `copy` scale (default 1). */
  readonly scale?: number;
  /** `constant` output: a vector of n_embd or one number. */
  readonly value?: number | readonly number[];
}

/** Config of `null-experts`. */
export interface NullExpertsConfig {
  /** Replaced experts; the first matching entry wins. */
  readonly experts: readonly NullExpertSpec[];
}

function specFor(cfg: NullExpertsConfig, layer: number, index: number): NullExpertSpec | undefined {
  return cfg.experts.find((s) => s.index === index && (s.layer === "*" || s.layer === layer));
}

/** Compute of each kind: `out[t] = f(x[t])` for rows of n_embd. */
function makeForward(
  s: NullExpertSpec,
  nEmbd: number,
): (x: Float32Array, n: number, out: Float32Array) => void {
  if (s.kind === "zero") return (_x, n, out) => out.fill(0, 0, n * nEmbd);
  if (s.kind === "copy") {
    const k = s.scale ?? 1;
    return (x, n, out) => {
      for (let i = 0; i < n * nEmbd; i++) out[i] = k * x[i];
    };
  }
  const v = typeof s.value === "number"
    ? new Float32Array(nEmbd).fill(s.value)
    : Float32Array.from(s.value ?? []);
  if (v.length !== nEmbd) {
    throw new PluginError(
      "bad_config",
      `config.experts (layer ${s.layer}, index ${s.index}): value has ${v.length} numbers, the model's n_embd is ${nEmbd}`,
      { field: "value" },
    );
  }
  return (_x, n, out) => {
    for (let t = 0; t < n; t++) out.set(v, t * nEmbd);
  };
}

/** The three kinds, claiming the experts `cfg` lists. */
export function nullExpertKinds(cfg: NullExpertsConfig): ExpertKind[] {
  let checked = false;
  const check = (hp: HParams): void => {
    if (checked) return;
    cfg.experts.forEach((s, i) => {
      if (s.index >= hp.nExpert || (s.layer !== "*" && s.layer >= hp.nLayer)) {
        throw new PluginError(
          "bad_config",
          `config.experts[${i}]: expert ${s.index} of layer ${s.layer} does not exist (${hp.nLayer} layers × ${hp.nExpert} experts)`,
          { field: `experts[${i}]` },
        );
      }
    });
    checked = true;
  };
  return (["zero", "copy", "constant"] as const).map((name): ExpertKind => ({
    name,
    claims({ layer, index }, hp: HParams): boolean {
      check(hp);
      return specFor(cfg, layer, index)?.kind === name;
    },
    create(base: Expert, hp: HParams): Expert {
      const forward = makeForward(specFor(cfg, base.layer, base.index)!, hp.nEmbd);
      return { kind: name, layer: base.layer, index: base.index, forward };
    },
  }));
}

/** The plugin factory. */
const createPlugin: PluginFactory<NullExpertsConfig> = (config) => ({
  name: "null-experts",
  version: "0.1.0",
  hooks: { expertKinds: nullExpertKinds(config) },
});

export default createPlugin;
