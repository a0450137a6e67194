/**
 * The conformance matrix: small random-weight models with awkward sizes,
 * covering every supported architecture and tensor type.
 */

import { GgmlType } from "../../core/tensor/ggml_type.ts";
import type { SyntheticModelSpec } from "../../core/model/synthetic.ts";

/** One conformance case. */
export interface ConformanceCase {
  readonly name: string;
  readonly spec: SyntheticModelSpec;
  /** Float weights: exact greedy tokens required; quantized: margin-gated argmax. */
  readonly float: boolean;
}

// 96-wide embedding (not a multiple of 64), 6 heads of 16, 2 KV heads, 3 experts top-2.
const AWKWARD: SyntheticModelSpec = {
  nEmbd: 96,
  nHead: 6,
  nHeadKv: 2,
  nLayer: 2,
  nExpert: 3,
  nExpertUsed: 2,
  nFf: 64,
  nVocab: 300,
};
// K-quants need rows of whole 256-element blocks.
const KQ: SyntheticModelSpec = {
  nEmbd: 256,
  nHead: 4,
  nHeadKv: 2,
  nLayer: 2,
  nExpert: 4,
  nExpertUsed: 2,
  nFf: 256,
  nVocab: 300,
};

const T = GgmlType;

/** Every case; seeds are fixed so llama.cpp and moe-edge see the same bytes on every run. */
export const CASES: readonly ConformanceCase[] = [
  {
    name: "llama F32 awkward",
    float: true,
    spec: { ...AWKWARD, arch: "llama", type: T.F32, seed: 11 },
  },
  {
    name: "llama F32 legacy experts, tied output",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "llama",
      type: T.F32,
      legacyExperts: true,
      tiedOutput: true,
      seed: 12,
    },
  },
  {
    name: "qwen2moe F32 shared expert + qkv bias",
    float: true,
    spec: { ...AWKWARD, arch: "qwen2moe", type: T.F32, qkvBias: true, nFfShared: 96, seed: 13 },
  },
  {
    name: "qwen3moe F32 head_dim ≠ n_embd/n_head",
    float: true,
    spec: { ...AWKWARD, arch: "qwen3moe", nHead: 4, headDim: 32, type: T.F32, seed: 14 },
  },
  {
    name: "olmoe F32",
    float: true,
    spec: { ...AWKWARD, arch: "olmoe", nHead: 6, nHeadKv: 6, type: T.F32, seed: 15 },
  },
  { name: "llama F16", float: true, spec: { ...AWKWARD, arch: "llama", type: T.F16, seed: 16 } },
  {
    name: "qwen3moe BF16",
    float: true,
    spec: { ...AWKWARD, arch: "qwen3moe", type: T.BF16, seed: 17 },
  },
  { name: "llama Q8_0", float: false, spec: { ...AWKWARD, arch: "llama", type: T.Q8_0, seed: 21 } },
  { name: "llama Q4_0", float: false, spec: { ...AWKWARD, arch: "llama", type: T.Q4_0, seed: 22 } },
  {
    name: "qwen3moe Q4_1",
    float: false,
    spec: { ...AWKWARD, arch: "qwen3moe", type: T.Q4_1, seed: 23 },
  },
  {
    name: "olmoe Q5_0",
    float: false,
    spec: { ...AWKWARD, arch: "olmoe", nHeadKv: 6, type: T.Q5_0, seed: 24 },
  },
  {
    name: "qwen2moe Q5_1",
    float: false,
    spec: { ...AWKWARD, arch: "qwen2moe", type: T.Q5_1, seed: 25 },
  },
  {
    name: "llama Q4_K",
    float: false,
    spec: { ...KQ, arch: "llama", type: T.Q4_K, embdType: T.Q8_0, seed: 31 },
  },
  {
    name: "qwen3moe Q5_K",
    float: false,
    spec: { ...KQ, arch: "qwen3moe", type: T.Q5_K, seed: 32 },
  },
  { name: "llama Q6_K", float: false, spec: { ...KQ, arch: "llama", type: T.Q6_K, seed: 33 } },
];
