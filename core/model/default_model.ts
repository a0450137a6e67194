/**
 * The default model: a tiny Mixture-of-Experts the project trains itself on a
 * synthetic corpus of short children's stories ("The little fox found a red
 * ball. It was happy."), embedded in the package so that it loads with no file
 * or network permission (JSR, Deno Deploy).
 *
 * The GGUF (`core/model/default_model.gguf`, Q8_0) is embedded base64 in the
 * generated module `default_model_bytes.ts`; `tools/train/README.md` says how it
 * is trained, exported and checked against llama.cpp.
 *
 * @example
 * ```ts
 * import { loadModel } from "@moe-edge/runtime";
 * import { defaultModelBytes } from "@moe-edge/runtime/default-model";
 * const model = await loadModel(defaultModelBytes());
 * ```
 *
 * @module
 */

import type { SyntheticModelSpec } from "./synthetic.ts";
import { DEFAULT_MODEL_BASE64 } from "./default_model_bytes.ts";

/**
 * Shape of the embedded default model (arch "llama", merged experts, Mixtral
 * routing: softmax, top-2, renormalised). Its weights are trained, not synthesized:
 * `synthesizeModel(DEFAULT_MODEL_SPEC)` gives a random-weight model of the same
 * shape (same tensors, same hyper-parameters, another vocabulary) for benchmarks
 * and tests that need a stand-in.
 */
export const DEFAULT_MODEL_SPEC: Readonly<SyntheticModelSpec> = {
  arch: "llama",
  nEmbd: 128,
  nLayer: 4,
  nHead: 4,
  nHeadKv: 2,
  nExpert: 8,
  nExpertUsed: 2,
  nFf: 128,
  nVocab: 640,
  nCtx: 1024,
  seed: 7,
};

let cached: Uint8Array | null = null;

function decodeBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * GGUF bytes of the default model, decoded once per isolate from the embedded
 * module. The same array is returned on every call: do not modify it.
 */
export function defaultModelBytes(): Uint8Array {
  cached ??= decodeBase64(DEFAULT_MODEL_BASE64);
  return cached;
}
