/**
 * A fused FFN over standard-layout matrices (a streamed expert not repacked) for a few
 * tokens runs one token per kernel call on the relaxed build (`STD_TOKENS_MAX` in
 * `wasm/backend.ts`): its outputs must be bit-identical to the same expert repacked
 * (the resident path, token tiles), for every token count around the cut-over, each
 * type with a standard-row decode kernel, and the simd128 build.
 */
import { deepEqual } from "node:assert/strict";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import type { Backend, WeightView } from "../core/backend/backend.ts";
import { createWasmBackend } from "./backend.ts";
import { randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";

/** Gate, up, down of one expert (embd → ff → embd) in a slot, repacked or left standard. */
function expert(
  be: Backend,
  type: GgmlType,
  embd: number,
  ff: number,
  seed: number,
  packed: boolean,
): [WeightView, WeightView, WeightView] {
  const r = rng(seed);
  const mats = [
    randomWeights(r, type, ff, embd),
    randomWeights(r, type, ff, embd),
    randomWeights(r, type, embd, ff),
  ];
  const total = mats.reduce((a, m) => a + m.byteLength, 0);
  const slot = be.allocSlot(total, { lazyPrepare: !packed });
  let at = 0;
  const views = mats.map((m, i) => {
    be.writeSlot(slot, at, m);
    const v: WeightView = {
      slot,
      offset: at,
      type,
      rows: i < 2 ? ff : embd,
      cols: i < 2 ? embd : ff,
    };
    at += m.byteLength;
    return v;
  });
  if (packed) { for (const v of views) be.prepareWeights!(v); }
  return views as [WeightView, WeightView, WeightView];
}

Deno.test("fused FFN over standard-layout matrices: a few tokens one call each, bit-identical to the repacked expert", async () => {
  const variants = relaxedSimdSupported() ? ["relaxed", "simd128"] as const : ["simd128"] as const;
  for (const variant of variants) {
    const be = await createWasmBackend({ variant });
    for (const type of [GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q8_0]) {
      const embd = 256, ff = 512;
      const std = expert(be, type, embd, ff, 7, false);
      const pk = expert(be, type, embd, ff, 7, true);
      for (const n of [1, 2, 3, 5, 6, 7, 9]) {
        const x = randomActivations(rng(100 + n), n * embd);
        const a = new Float32Array(n * embd), b = new Float32Array(n * embd);
        be.ffnSwiglu!(std[0], std[1], std[2], x, n, a);
        be.ffnSwiglu!(pk[0], pk[1], pk[2], x, n, b);
        deepEqual(
          new Uint32Array(a.buffer),
          new Uint32Array(b.buffer),
          `${variant} type ${type} tokens ${n}`,
        );
      }
    }
    be.dispose();
  }
});
