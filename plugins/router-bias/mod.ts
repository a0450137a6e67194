/**
 * `router-bias`: `logits'[e] = logits[e] + bias[layer][e]`, then the layer's
 * own router (gating, top-k, normalisation) runs on the biased logits. A
 * bias of `-Infinity` cannot be written in JSON; use `expert-mask` to exclude.
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

/** Config: layer index (as a string) or `"*"` → one bias per expert. */
export interface RouterBiasConfig {
  /** Biases by layer. */
  readonly bias: Readonly<Record<string, readonly number[]>>;
}

/** Wrap `inner` so it sees `logits + bias`. */
export function biasedRouter(inner: Router, bias: Float32Array): Router {
  let buf = new Float32Array(bias.length);
  return {
    name: `bias(${inner.name})`,
    route(logits: Float32Array, layer: number): Route {
      if (logits.length !== bias.length) {
        throw new PluginError(
          "shape_mismatch",
          `layer ${layer} has ${logits.length} experts, bias has ${bias.length}`,
        );
      }
      if (buf.length !== logits.length) buf = new Float32Array(logits.length);
      for (let e = 0; e < logits.length; e++) buf[e] = Math.fround(logits[e] + bias[e]);
      return inner.route(buf, layer);
    },
  };
}

/** The plugin factory. */
const createPlugin: PluginFactory<RouterBiasConfig> = (config) => ({
  name: "router-bias",
  version: "0.1.0",
  hooks: {
    router(inner: Router, layer: number, hp: HParams): Router {
      for (const k of Object.keys(config.bias)) {
        if (k !== "*" && Number(k) >= hp.nLayer) {
          throw new PluginError(
            "bad_config",
            `config.bias["${k}"]: the model has ${hp.nLayer} layers`,
            { field: "bias" },
          );
        }
      }
      const b = config.bias[String(layer)] ?? config.bias["*"];
      if (!b) return inner;
      if (b.length !== hp.nExpert) {
        throw new PluginError(
          "bad_config",
          `config.bias["${
            String(layer) in config.bias ? layer : "*"
          }"] has ${b.length} values; the model has ${hp.nExpert} experts per layer`,
          { field: "bias", layer },
        );
      }
      return biasedRouter(inner, Float32Array.from(b));
    },
  },
});

export default createPlugin;
