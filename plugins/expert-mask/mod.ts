/**
 * `expert-mask`: per layer, allowed = (include set, or all experts) minus
 * the exclude set. Masked experts get a gate logit of `-Infinity` before the
 * layer's own router runs, so a softmax gate is renormalized over the
 * allowed experts exactly (`p_e = exp(l_e) / Σ_{allowed} exp(l_j)`), and
 * top-k picks among them; masked experts are dropped from the route when
 * `k` exceeds the allowed count.
 *
 * @module
 */

import {
  type HParams,
  PluginError,
  type PluginFactory,
  type Route,
  type Router,
} from "../../mod.ts";

/** Layer index (as a string) or `"*"` → expert indices. */
export type ExpertSets = Readonly<Record<string, readonly number[]>>;

/** Config of `expert-mask`. */
export interface ExpertMaskConfig {
  /** Only these experts (per layer). */
  readonly include?: ExpertSets;
  /** Never these experts (per layer). */
  readonly exclude?: ExpertSets;
}

/** The allowed mask of `layer`, or null when nothing is masked there. */
export function allowedMask(
  cfg: ExpertMaskConfig,
  layer: number,
  nExpert: number,
): Uint8Array | null {
  const pick = (s?: ExpertSets) => s?.[String(layer)] ?? s?.["*"];
  const inc = pick(cfg.include), exc = pick(cfg.exclude);
  if (!inc && !exc) return null;
  for (const [name, set] of [["include", inc], ["exclude", exc]] as const) {
    const bad = set?.find((e) => e >= nExpert);
    if (bad !== undefined) {
      throw new PluginError(
        "bad_config",
        `config.${name}: expert ${bad} does not exist (layer ${layer} has ${nExpert})`,
        {
          field: name,
          layer,
        },
      );
    }
  }
  const mask = new Uint8Array(nExpert).fill(inc ? 0 : 1);
  for (const e of inc ?? []) mask[e] = 1;
  for (const e of exc ?? []) mask[e] = 0;
  if (!mask.includes(1)) {
    throw new PluginError("bad_config", `config masks every expert of layer ${layer}`, { layer });
  }
  return mask;
}

/** Wrap `inner` so only experts with `mask[e] = 1` can be chosen. */
export function maskedRouter(inner: Router, mask: Uint8Array): Router {
  let buf = new Float32Array(mask.length);
  return {
    name: `mask(${inner.name})`,
    route(logits: Float32Array, layer: number): Route {
      if (buf.length !== logits.length) buf = new Float32Array(logits.length);
      for (let e = 0; e < logits.length; e++) buf[e] = mask[e] ? logits[e] : -Infinity;
      const r = inner.route(buf, layer);
      let ok = 0;
      for (const e of r.experts) ok += mask[e];
      if (ok === r.experts.length) return r;
      const experts = new Int32Array(ok), weights = new Float32Array(ok);
      for (let j = 0, o = 0; j < r.experts.length; j++) {
        if (!mask[r.experts[j]]) continue;
        experts[o] = r.experts[j];
        weights[o++] = r.weights[j];
      }
      return { experts, weights };
    },
  };
}

/** The plugin factory. */
const createPlugin: PluginFactory<ExpertMaskConfig> = (config) => ({
  name: "expert-mask",
  version: "0.1.0",
  hooks: {
    router(inner: Router, layer: number, hp: HParams): Router {
      const mask = allowedMask(config, layer, hp.nExpert);
      return mask ? maskedRouter(inner, mask) : inner;
    },
  },
});

export default createPlugin;
