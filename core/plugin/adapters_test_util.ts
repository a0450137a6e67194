/**
 * PEFT-style adapter fixtures (plain LoRA, MoLA in both key styles, SMoRA)
 * for the test model, and reference adapters that compute each method's
 * update the slow, obvious way: build the token's full ΔW, then ΔW·x.
 *
 * @module
 */

import type { LinearAdapter, LinearName } from "../../mod.ts";
import { gaussian, SPEC, type TestTensor } from "./plugin_test_util.ts";

/** HF short names of the attention projections → ours, with (dIn, dOut) of the test model. */
export const PROJS: Readonly<
  Record<string, { name: LinearName; dIn: number; dOut: number; path: string }>
> = {
  q: { name: "attn_q", dIn: 32, dOut: 32, path: "self_attn.q_proj" },
  k: { name: "attn_k", dIn: 32, dOut: 16, path: "self_attn.k_proj" },
  v: { name: "attn_v", dIn: 32, dOut: 16, path: "self_attn.v_proj" },
  o: { name: "attn_output", dIn: 32, dOut: 32, path: "self_attn.o_proj" },
  lm_head: { name: "output", dIn: 32, dOut: SPEC.nVocab!, path: "lm_head" },
};

/** The HF module path of a projection in layer `l`. */
export function modulePath(l: number, p: string): string {
  return p === "lm_head"
    ? "base_model.model.lm_head"
    : `base_model.model.model.layers.${l}.${PROJS[p].path}`;
}

/**
 * A reference adapter: for each token, `deltaW(layer, proj, x)` builds the
 * full `ΔW` (`[dOut][dIn]`, f64) and the adapter adds `ΔW·x`.
 */
export function refAdapter(
  has: (layer: number, proj: LinearName) => boolean,
  deltaW: (layer: number, proj: LinearName, x: Float32Array) => Float64Array,
): LinearAdapter {
  return {
    applies: has,
    apply(layer, proj, x, n, out) {
      const { dIn, dOut } = PROJS[shortName(proj)];
      for (let t = 0; t < n; t++) {
        const xt = x.subarray(t * dIn, (t + 1) * dIn);
        const w = deltaW(layer, proj, xt);
        for (let r = 0; r < dOut; r++) {
          let s = 0;
          for (let c = 0; c < dIn; c++) s += w[r * dIn + c] * xt[c];
          out[t * dOut + r] += s;
        }
      }
    },
  };
}

/** `Σ_j c_j · B_j A_j` as a dense matrix (B_j `[dOut][r]`, A_j `[r][dIn]`). */
export function denseBA(
  terms: { a: Float32Array; b: Float32Array; rank: number; c: number; cols?: number[] }[],
  dIn: number,
  dOut: number,
): Float64Array {
  const w = new Float64Array(dOut * dIn);
  for (const { a, b, rank, c, cols } of terms) {
    for (const i of cols ?? Array.from({ length: rank }, (_, i) => i)) {
      for (let r = 0; r < dOut; r++) {
        const br = c * b[r * rank + i];
        for (let col = 0; col < dIn; col++) w[r * dIn + col] += br * a[i * dIn + col];
      }
    }
  }
  return w;
}

/** f64 dot of a row of `m` (`cols` wide) with x. */
export function dotRow(m: Float32Array, row: number, cols: number, x: ArrayLike<number>): number {
  let s = 0;
  for (let c = 0; c < cols; c++) s += m[row * cols + c] * x[c];
  return s;
}

/** Plain LoRA fixture: tensors per `(layer, proj)`. */
export interface LoraFixture {
  /** Tensors to write. */
  tensors: Record<string, TestTensor>;
  /** Pairs by `"layer:proj"` (HF short proj name). */
  pairs: Map<string, { a: Float32Array; b: Float32Array; rank: number }>;
}

/** A plain PEFT LoRA on `targets` (e.g. `["0:q", "1:v", "-1:lm_head"]`), rank `rank`. */
export function loraFixture(seed: number, targets: string[], rank: number): LoraFixture {
  const g = gaussian(seed);
  const tensors: Record<string, TestTensor> = {};
  const pairs = new Map<string, { a: Float32Array; b: Float32Array; rank: number }>();
  for (const t of targets) {
    const [l, p] = t.split(":");
    const { dIn, dOut } = PROJS[p];
    const a = g(rank * dIn, 0.4), b = g(dOut * rank, 0.4);
    tensors[`${modulePath(Number(l), p)}.lora_A.weight`] = { shape: [rank, dIn], data: a };
    tensors[`${modulePath(Number(l), p)}.lora_B.weight`] = { shape: [dOut, rank], data: b };
    pairs.set(t, { a, b, rank });
  }
  return { tensors, pairs };
}

/** A MoLA fixture: `experts[l]` LoRA experts of rank `rank` on `projs` of each layer. */
export interface MolaFixture {
  /** Tensors to write. */
  tensors: Record<string, TestTensor>;
  /** Per `"layer:proj"`: gate `[E][dIn]` and expert pairs. */
  mods: Map<string, { router: Float32Array; experts: { a: Float32Array; b: Float32Array }[] }>;
}

/** MoLA tensors in the original (`lora_A_{i}`, `router.router`) or MoE-PEFT (`experts.{e}`, `moe_gate`) style. */
export function molaFixture(
  seed: number,
  experts: number[],
  projs: string[],
  rank: number,
  style: "original" | "moe-peft" = "original",
): MolaFixture {
  const g = gaussian(seed);
  const tensors: Record<string, TestTensor> = {};
  const mods = new Map<
    string,
    { router: Float32Array; experts: { a: Float32Array; b: Float32Array }[] }
  >();
  experts.forEach((e, l) => {
    for (const p of projs) {
      const { dIn, dOut } = PROJS[p];
      const pre = style === "original" ? modulePath(l, p) : `mola.layers.${l}.${PROJS[p].path}`;
      const router = g(e * dIn, 1);
      tensors[style === "original" ? `${pre}.router.router.weight` : `${pre}.moe_gate.weight`] = {
        shape: [e, dIn],
        data: router,
      };
      const ex: { a: Float32Array; b: Float32Array }[] = [];
      for (let i = 0; i < e; i++) {
        const a = g(rank * dIn, 0.4), b = g(dOut * rank, 0.4);
        const [ka, kb] = style === "original"
          ? [`${pre}.lora_A_${i}.weight`, `${pre}.lora_B_${i}.weight`]
          : [`${pre}.experts.${i}.lora_A.weight`, `${pre}.experts.${i}.lora_B.weight`];
        tensors[ka] = { shape: [rank, dIn], data: a };
        tensors[kb] = { shape: [dOut, rank], data: b };
        ex.push({ a, b });
      }
      mods.set(`${l}:${p}`, { router, experts: ex });
    }
  });
  return { tensors, mods };
}

/** Add an original-style MoLA module with `e` experts on the output head (`lm_head`). */
export function addMolaHead(fx: MolaFixture, seed: number, e: number, rank: number): void {
  const g = gaussian(seed);
  const { dIn, dOut } = PROJS.lm_head;
  const pre = modulePath(-1, "lm_head");
  const router = g(e * dIn, 1);
  fx.tensors[`${pre}.router.router.weight`] = { shape: [e, dIn], data: router };
  const experts = Array.from({ length: e }, (_, i) => {
    const a = g(rank * dIn, 0.4), b = g(dOut * rank, 0.4);
    fx.tensors[`${pre}.lora_A_${i}.weight`] = { shape: [rank, dIn], data: a };
    fx.tensors[`${pre}.lora_B_${i}.weight`] = { shape: [dOut, rank], data: b };
    return { a, b };
  });
  fx.mods.set("-1:lm_head", { router, experts });
}

/** A SMoRA fixture: rank `rank`, partition `part`, on `projs` of every layer. */
export interface SmoraFixture {
  /** Tensors to write. */
  tensors: Record<string, TestTensor>;
  /** Per `"layer:proj"`. */
  mods: Map<string, { a: Float32Array; b: Float32Array; router: Float32Array; bias: Float32Array }>;
}

/** SRMoLE tensors (`lora_A`, `lora_B`, `lora_router`, `lora_biases`). */
export function smoraFixture(
  seed: number,
  nLayer: number,
  projs: string[],
  rank: number,
  part = 1,
): SmoraFixture {
  const g = gaussian(seed);
  const tensors: Record<string, TestTensor> = {};
  const mods = new Map<
    string,
    { a: Float32Array; b: Float32Array; router: Float32Array; bias: Float32Array }
  >();
  for (let l = 0; l < nLayer; l++) {
    for (const p of projs) {
      const { dIn, dOut } = PROJS[p];
      const pre = modulePath(l, p);
      const a = g(rank * dIn, 0.4), b = g(dOut * rank, 0.4), router = g((rank / part) * dIn, 1);
      const bias = g(rank, 0.05);
      tensors[`${pre}.lora_A.weight`] = { shape: [rank, dIn], data: a };
      tensors[`${pre}.lora_B.weight`] = { shape: [dOut, rank], data: b };
      tensors[`${pre}.lora_router.weight`] = { shape: [rank / part, dIn], data: router };
      tensors[`${pre}.lora_biases`] = { shape: [rank], data: bias };
      mods.set(`${l}:${p}`, { a, b, router, bias });
    }
  }
  return { tensors, mods };
}

/** Our projection name → HF short name (`"-"` for projections the fixtures never adapt). */
export function shortName(proj: LinearName): string {
  return Object.entries(PROJS).find(([, v]) => v.name === proj)?.[0] ?? "-";
}
