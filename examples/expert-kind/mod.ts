/**
 * Example plugin: a new expert kind. `clamped` wraps the model's own expert
 * and clamps every output element to `[-limit, limit]`.
 *
 * @module
 */

import type { Expert, ExpertKind, PluginFactory } from "../../mod.ts";

/** The config, as validated against manifest.json (defaults filled in). */
export interface ClampedConfig {
  /** Expert indices to replace. */
  readonly experts: readonly number[];
  /** Layers to replace them in (default: every layer). */
  readonly layers?: readonly number[];
  /** Output bound. */
  readonly limit: number;
}

/** Build the plugin: one expert kind that claims the configured experts. */
const createPlugin: PluginFactory<ClampedConfig> = (config) => {
  const clamped: ExpertKind = {
    name: "clamped",
    claims: ({ layer, index }) =>
      config.experts.includes(index) && (!config.layers || config.layers.includes(layer)),
    create: (base: Expert): Expert => ({
      kind: "clamped",
      layer: base.layer,
      index: base.index,
      forward(x: Float32Array, nTokens: number, out: Float32Array): void {
        base.forward(x, nTokens, out); // the SwiGLU expert this one replaces
        const lim = config.limit;
        for (let i = 0; i < out.length; i++) out[i] = Math.min(lim, Math.max(-lim, out[i]));
      },
    }),
  };
  return { name: "clamped-experts", version: "0.1.0", hooks: { expertKinds: [clamped] } };
};

export default createPlugin;
