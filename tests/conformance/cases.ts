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
  /**
   * Quantized: steps that must agree to LOGIT_TOL before the first activation-rounding flip
   * (default QUANT_EXACT_STEPS). The type mixes quantize the output layer (Q6_K / Q2_K / Q8_0,
   * 256-wide Q8_K or Q8_0 activations of the final hidden state), where a 1-ulp difference in that
   * state flips one int8 at step 0 more often than not; with F32 output/token_embd the same mixes
   * agreed to ≤ 1e-6 for up to all 32 steps (measured), so the step-0 gap is that flip, not a
   * decoding difference. They keep the |Δlogit| ≤ QUANT_FLIP_TOL and gated-argmax checks.
   */
  readonly exactSteps?: number;
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
  // Q2_K/Q3_K/IQ4_XS (256-blocks, Q8_K activations), IQ4_NL/MXFP4 (32-blocks, Q8_0 activations)
  {
    name: "llama Q2_K",
    float: false,
    spec: { ...KQ, arch: "llama", type: T.Q2_K, embdType: T.Q8_0, seed: 41 },
  },
  {
    name: "qwen3moe Q3_K",
    float: false,
    spec: { ...KQ, arch: "qwen3moe", type: T.Q3_K, seed: 42 },
  },
  {
    name: "olmoe IQ4_XS",
    float: false,
    spec: { ...KQ, arch: "olmoe", nHeadKv: 4, type: T.IQ4_XS, seed: 43 },
  },
  {
    name: "llama IQ4_NL",
    float: false,
    spec: { ...AWKWARD, arch: "llama", type: T.IQ4_NL, seed: 44 },
  },
  {
    name: "qwen2moe MXFP4",
    float: false,
    spec: { ...AWKWARD, arch: "qwen2moe", type: T.MXFP4, seed: 45 },
  },
  // granitemoe: embedding/residual/attention/logit multipliers (core/model/arch/granitemoe.ts)
  {
    name: "granitemoe F32 awkward, tied output",
    float: true,
    spec: { ...AWKWARD, arch: "granitemoe", type: T.F32, tiedOutput: true, seed: 61 },
  },
  {
    name: "granitemoe F32 shared expert, scales without residual/embedding",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "granitemoe",
      type: T.F32,
      nFfShared: 80,
      graniteScales: { embedding: 0, residual: 0, attention: 0.05, logit: 2.5 },
      seed: 62,
    },
  },
  {
    name: "granitemoe Q8_0",
    float: false,
    spec: { ...AWKWARD, arch: "granitemoe", type: T.Q8_0, seed: 63 },
  },
  // deepseek2: multi-head latent attention (absorbed, latent KV cache), leading dense block,
  // shared experts, routing variants, YaRN (core/model/arch/deepseek2.ts)
  {
    name: "deepseek2 F32 V2-Lite-like (softmax, attn_q, dense lead, shared expert)",
    float: true,
    spec: { ...AWKWARD, arch: "deepseek2", nLayer: 3, nExpert: 4, type: T.F32, seed: 71 },
  },
  {
    name: "deepseek2 F32 q_lora, sigmoid + exp_probs_b, groups, norm, scale, YaRN",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "deepseek2",
      nLayer: 3,
      nExpert: 6,
      nExpertUsed: 2,
      type: T.F32,
      deepseek: {
        qLoraRank: 40,
        kvLoraRank: 24,
        nopeDim: 8,
        ropeDim: 8,
        vDim: 12,
        nShared: 2,
        gating: "sigmoid",
        probsBias: true,
        groups: [3, 2],
        norm: true,
        scale: 2.5,
        yarn: { factor: 4, origCtx: 16, logMul: 0.0707 },
      },
      seed: 72,
    },
  },
  {
    name: "deepseek2 F32 without MLA keys (attn_kv_b, full K/V cache), q_lora, YaRN",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "deepseek2",
      nLayer: 3,
      type: T.F32,
      deepseek: {
        mla: false,
        qLoraRank: 40,
        kvLoraRank: 24,
        nopeDim: 16,
        ropeDim: 8,
        vDim: 12,
        yarn: { factor: 4, origCtx: 16, logMul: 0.0707 },
      },
      seed: 74,
    },
  },
  {
    name: "deepseek2 Q8_0",
    float: false,
    // MLA chains ~8 quantized matmuls per block (q_a, q_b, kv_a, k_b and v_b per head, output),
    // so a 1-ulp accumulation-order difference flips an int8 activation early: measured exact
    // prefixes 0, 0, 2, 7 steps for seeds 73-76, max |Δlogit| ≤ 0.07, no gated argmax mismatch
    exactSteps: 0,
    spec: {
      ...AWKWARD,
      arch: "deepseek2",
      nLayer: 3,
      type: T.Q8_0,
      deepseek: { qLoraRank: 32, kvLoraRank: 64, nopeDim: 32, ropeDim: 16, vDim: 32 },
      seed: 73,
    },
  },
  // gpt-oss: attention sinks, sliding window on even blocks (4 tokens: the 39-token run crosses
  // it), biases everywhere, clamped SwiGLU, softmax over the selected logits
  // (core/model/arch/gpt-oss.ts)
  {
    name: "gpt-oss F32 awkward (sinks, window 4, biases)",
    float: true,
    spec: { ...AWKWARD, arch: "gpt-oss", nLayer: 3, type: T.F32, seed: 81 },
  },
  {
    name: "gpt-oss F32 YaRN, window 7, all blocks windowed",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "gpt-oss",
      type: T.F32,
      gptOss: { window: 7, pattern: 0, yarn: { factor: 8, origCtx: 16 } },
      seed: 82,
    },
  },
  // gpt-oss-20b's own rope: head dim 64, base 150000, YaRN factor 32 over 4096 (corr dims
  // 8..18, so the extrapolation/interpolation ramp is exercised, unlike origCtx 16 above);
  // window 8 on even blocks; F32 so any rope or window error shows above LOGIT_TOL
  {
    name: "gpt-oss F32 real YaRN (head 64, base 150000, factor 32, orig 4096), window 8",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "gpt-oss",
      nEmbd: 128,
      nHead: 4,
      nHeadKv: 2,
      headDim: 64,
      ropeBase: 150000,
      type: T.F32,
      gptOss: { window: 8, pattern: 2, yarn: { factor: 32, origCtx: 4096 } },
      seed: 85,
    },
  },
  {
    name: "gpt-oss Q8_0",
    float: false,
    spec: { ...AWKWARD, arch: "gpt-oss", nLayer: 3, type: T.Q8_0, seed: 83 },
  },
  {
    name: "gpt-oss MXFP4_MOE mix (MXFP4 experts, Q8_0 elsewhere)",
    float: false,
    spec: { ...AWKWARD, arch: "gpt-oss", nLayer: 3, mix: "MXFP4_MOE", seed: 84 },
  },
  // ernie4_5-moe: leading dense block, softmax + exp_probs_b selection bias, renormalised top-k,
  // plain shared expert (core/model/arch/ernie4_5-moe.ts)
  {
    name: "ernie4_5-moe F32 awkward (dense lead, exp_probs_b, shared expert)",
    float: true,
    spec: { ...AWKWARD, arch: "ernie4_5-moe", nLayer: 3, nFfShared: 80, type: T.F32, seed: 91 },
  },
  {
    name: "ernie4_5-moe F32 tied output, qkv bias, no dense lead, no shared expert",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "ernie4_5-moe",
      type: T.F32,
      tiedOutput: true,
      qkvBias: true,
      nFfShared: 0,
      ernie: { denseLead: 0, probsBias: false },
      seed: 92,
    },
  },
  {
    name: "ernie4_5-moe Q8_0",
    float: false,
    spec: { ...AWKWARD, arch: "ernie4_5-moe", nLayer: 3, type: T.Q8_0, seed: 93 },
  },
  // bailingmoe2: fused attn_qkv, per-head Q/K norm, partial NEOX rotary, leading dense block,
  // sigmoid + exp_probs_b + groups, renormalised and scaled weights, shared expert, a NextN block
  // in the file that is not run (core/model/arch/bailingmoe2.ts)
  {
    name: "bailingmoe2 F32 awkward (Ling 2.0 routing: sigmoid, bias, groups, norm, scale; NextN)",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "bailingmoe2",
      nLayer: 3,
      nExpert: 6,
      type: T.F32,
      bailing: { groups: [3, 2] },
      seed: 101,
    },
  },
  {
    name: "bailingmoe2 F32 softmax, no bias/norm/scale, no dense lead, full rotary, no NextN",
    float: true,
    spec: {
      ...AWKWARD,
      arch: "bailingmoe2",
      type: T.F32,
      bailing: {
        gating: "softmax",
        probsBias: false,
        norm: false,
        scale: 0,
        denseLead: 0,
        ropeDim: 16,
        nextn: 0,
        nShared: 2,
      },
      seed: 102,
    },
  },
  {
    name: "bailingmoe2 Q8_0",
    float: false,
    spec: { ...AWKWARD, arch: "bailingmoe2", nLayer: 3, type: T.Q8_0, seed: 103 },
  },
  // llama-quantize type mixes (synthetic.ts quantMixType): what real Q2_K / Q4_K_M / IQ4_XS /
  // MXFP4_MOE files hold, incl. the IQ4_XS → IQ4_NL fallback on 96-wide rows
  {
    name: "llama Q2_K mix",
    float: false,
    exactSteps: 0,
    spec: { ...KQ, arch: "llama", mix: "Q2_K", seed: 51 },
  },
  {
    name: "olmoe Q3_K_M mix",
    float: false,
    exactSteps: 0,
    spec: { ...KQ, arch: "olmoe", nHeadKv: 4, mix: "Q3_K_M", seed: 55 },
  },
  {
    name: "qwen3moe Q4_K_M mix",
    float: false,
    exactSteps: 0,
    spec: { ...KQ, arch: "qwen3moe", mix: "Q4_K_M", seed: 52 },
  },
  {
    name: "llama IQ4_XS mix awkward (IQ4_NL fallback)",
    float: false,
    exactSteps: 0,
    spec: { ...AWKWARD, arch: "llama", mix: "IQ4_XS", seed: 53 },
  },
  {
    name: "qwen3moe MXFP4_MOE mix",
    float: false,
    exactSteps: 0,
    spec: { ...AWKWARD, arch: "qwen3moe", mix: "MXFP4_MOE", seed: 54 },
  },
];
