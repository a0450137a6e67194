/**
 * Relaxed-SIMD Q4_0 kernels, rows in lanes (c/relaxed.c `q4r_block`): the packed
 * decode kernel (two groups per call), the token tiles (2–4 tokens per call, more
 * in runs of 4) and the standard-layout kernels must all give, bit for bit, the
 * generic-order twin `refMatmulQ4_0Generic` (per row `sumf += f32(sumi)·(d_w·d_a)`
 * block by block), in both dot forms, so that a token's output does not depend on
 * how many tokens share the matmul (batched == unbatched) or on the layout.
 */
import { equal as assertEquals } from "node:assert/strict";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import {
  KernelHarness,
  randomActivations,
  randomWeights,
  refMatmulQ4_0Generic,
  rng,
} from "./kernel_test_util.ts";
import { PACKED_FLAG, relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";

/** Q4_0 matmul (packed in place when `packed`) of `nTok` rows of `x`; the output bits. */
function matmulBits(
  H: KernelHarness,
  packed: boolean,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
): Uint32Array {
  const k = H.k;
  const ty = GgmlType.Q4_0;
  H.reset();
  const wp = H.putU8(w);
  if (packed) {
    const tmp = H.alloc(k.pack_scratch_bytes(ty, cols));
    assertEquals(k.pack_weights(ty, wp, rows, cols, tmp, 0), 0, "pack");
  }
  const t = packed ? ty | PACKED_FLAG : ty;
  const xp = H.putF32(x);
  const op = H.alloc(4 * rows * nTok);
  const sp = H.alloc(k.matmul_scratch_bytes(t, cols, nTok));
  assertEquals(k.matmul(t, wp, rows, cols, xp, nTok, op, sp), 0, "matmul");
  return new Uint32Array(H.getU8(op, 4 * rows * nTok).slice().buffer);
}

/** First index where `a` and `b` differ, as a message, or "none". */
function firstDiff(a: Uint32Array, b: Uint32Array): string {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return `${i}: 0x${a[i].toString(16)} vs 0x${b[i].toString(16)}`;
  }
  return "none";
}

Deno.test({
  name:
    "relaxed Q4_0 rows in lanes: packed/standard, 1–16 tokens, both dot forms == generic-order twin",
  ignore: !relaxedSimdSupported(),
  fn: async () => {
    const H = await KernelHarness.create("relaxed");
    const mode = H.k.relaxed_dot_mode!;
    const picked = mode(2);
    try {
      for (const [rows, cols] of [[4, 32], [8, 64], [12, 96], [24, 256], [40, 1024], [16, 2816]]) {
        const r = rng(31 * rows + cols);
        const w = randomWeights(r, GgmlType.Q4_0, rows, cols);
        const maxTok = 16;
        const x = randomActivations(r, maxTok * cols);
        const twin = new Uint32Array(refMatmulQ4_0Generic(w, rows, cols, x, maxTok).buffer);
        for (const m of [0, 1]) {
          mode(m);
          for (const packed of [true, false]) {
            for (const nTok of [1, 2, 3, 4, 5, 6, 7, 8, 9, 16]) {
              const got = matmulBits(H, packed, w, rows, cols, x.subarray(0, nTok * cols), nTok);
              assertEquals(
                firstDiff(got, twin.subarray(0, rows * nTok)),
                "none",
                `${rows}x${cols} ${packed ? "packed" : "standard"} mode ${m} ${nTok} tokens`,
              );
            }
          }
        }
      }
    } finally {
      mode(picked);
    }
  },
});

Deno.test({
  name: "relaxed Q4_0: a token's row is the same alone and inside a batch (packed tiles vs decode)",
  ignore: !relaxedSimdSupported(),
  fn: async () => {
    const H = await KernelHarness.create("relaxed");
    const rows = 64, cols = 1024, nTok = 11;
    const r = rng(4242);
    const w = randomWeights(r, GgmlType.Q4_0, rows, cols);
    const x = randomActivations(r, nTok * cols);
    const batched = matmulBits(H, true, w, rows, cols, x, nTok);
    for (let t = 0; t < nTok; t++) {
      const alone = matmulBits(H, true, w, rows, cols, x.subarray(t * cols, (t + 1) * cols), 1);
      assertEquals(
        firstDiff(batched.subarray(t * rows, (t + 1) * rows), alone),
        "none",
        `token ${t}`,
      );
    }
  },
});
