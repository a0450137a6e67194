/**
 * Fingerprints of the synthesizer: sha256 of `synthesizeModel` for every registered
 * architecture under many specs (dense, biases, tied output, head dims, shared experts, legacy
 * experts, Q8_0, every quant mix, deepseek2/gpt-oss/granitemoe options), and of
 * `synthesizeLayout` for every preset and mix at depths 1, 2 and full (vocabulary 1000). A
 * refactor of `core/model/synthetic.ts` or of an architecture's `synth` hook must keep them:
 *
 * ```sh
 * deno run -A tools/synth_hashes.ts > before.txt   # before the change
 * deno run -A tools/synth_hashes.ts > after.txt && diff before.txt after.txt
 * ```
 *
 * About 40 s on one CPU core.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { isArchName, SUPPORTED_ARCHS } from "../core/model/arch.ts";
import { PRESET_MIXES, PRESETS, presetSpec } from "../core/model/presets.ts";
import {
  type QuantMix,
  synthesizeLayout,
  synthesizeModel,
  type SyntheticModelSpec,
} from "../core/model/synthetic.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";

const sha = (b: Uint8Array | string): string => createHash("sha256").update(b).digest("hex");

/** The spec variants each architecture is synthesized with. */
const VARIANTS: Record<string, SyntheticModelSpec> = {
  default: {},
  dense: { nExpert: 0 },
  bias: { qkvBias: true },
  tied: { tiedOutput: true },
  hd: { headDim: 32, nHead: 4 },
  kv4: { nHeadKv: 4, nHead: 4 },
  shared: { nFfShared: 64 },
  sharedzero: { nFfShared: 0 },
  q8: { type: GgmlType.Q8_0, embdType: GgmlType.F16 },
  big: {
    nEmbd: 256,
    nFf: 256,
    nLayer: 3,
    seed: 7,
    ropeBase: 50000,
    nCtx: 1024,
    weightScale: 0.5,
  },
  legacy: { legacyExperts: true },
  vocab: { nVocab: 300 },
  ds1: {
    deepseek: {
      qLoraRank: 24,
      mla: false,
      groups: [2, 1],
      yarn: { factor: 4, origCtx: 128, logMul: 0.1 },
      probsBias: true,
      scale: 2.5,
      norm: true,
      gating: "sigmoid",
      nFfDense: 80,
      denseLead: 2,
      nShared: 2,
    },
  },
  ds2: {
    deepseek: {
      kvLoraRank: 16,
      nopeDim: 8,
      ropeDim: 8,
      vDim: 12,
      nShared: 0,
      yarn: { factor: 2, origCtx: 64, logMul: 0 },
    },
    nLayer: 3,
  },
  go1: { gptOss: { window: 8, pattern: 1, yarn: { factor: 32, origCtx: 128 } } },
  gr1: { graniteScales: { embedding: 0, residual: 1.5, attention: 0, logit: 3 } },
};
const MIXES: readonly QuantMix[] = ["Q2_K", "Q3_K_M", "Q4_K_M", "IQ4_XS", "MXFP4_MOE"];
for (const mix of MIXES) {
  VARIANTS[`mix_${mix}`] = { mix, nEmbd: 256, nFf: 256, nLayer: 3, nHead: 8 };
  VARIANTS[`mixodd_${mix}`] = { mix, nEmbd: 96, nFf: 160 };
}

/** `fn()`'s fingerprint, or the message of what it threw (errors are part of the behaviour). */
function attempt(fn: () => string): string {
  try {
    return fn();
  } catch (e) {
    return `ERR ${(e as Error).message}`;
  }
}

/** One line per architecture × variant, then one per preset × mix × depth. */
export function synthHashes(): string[] {
  const out: string[] = [];
  for (const arch of SUPPORTED_ARCHS.filter(isArchName)) {
    for (const [name, v] of Object.entries(VARIANTS)) {
      const spec: SyntheticModelSpec = { arch, ...v };
      const bytes = attempt(() => sha(synthesizeModel(spec)));
      const layout = attempt(() => {
        const l = synthesizeLayout(spec);
        return `${sha(l.metadataOnly)} ${sha(JSON.stringify(l.tensors))}`;
      });
      out.push(`${arch} ${name} ${bytes} layout ${layout}`);
    }
  }
  for (const name of Object.keys(PRESETS)) {
    for (const mix of PRESET_MIXES) {
      for (const layers of [1, 2, 999]) {
        const l = synthesizeLayout(presetSpec(name, { mix, layers, vocab: 1000 }));
        out.push(
          `preset ${name} ${mix} L${layers} ${sha(l.metadataOnly)} ${
            sha(JSON.stringify(l.tensors))
          }`,
        );
      }
    }
  }
  return out;
}

if (import.meta.main) console.log(synthHashes().join("\n"));
