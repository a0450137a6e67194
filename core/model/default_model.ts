/**
 * The default model: a small MoE generated deterministically (same bytes on
 * every machine) until a trained model is embedded.
 *
 * @module
 */

import { synthesizeModel, type SyntheticModelSpec } from "./synthetic.ts";

/** Spec of the default model. */
export const DEFAULT_MODEL_SPEC: Readonly<SyntheticModelSpec> = {
  arch: "llama",
  nEmbd: 128,
  nLayer: 4,
  nHead: 4,
  nHeadKv: 2,
  nExpert: 8,
  nExpertUsed: 2,
  nFf: 256,
  nVocab: 512,
  nCtx: 1024,
  seed: 7,
};

let cached: Uint8Array | null = null;

/** GGUF bytes of the default model (generated once per isolate). */
export function defaultModelBytes(): Uint8Array {
  cached ??= synthesizeModel(DEFAULT_MODEL_SPEC);
  return cached;
}
