/**
 * The relaxed-SIMD kernels have two dot forms (`relaxed_dot_mode`: 0 split i16 dot +
 * `i32x4.dot_i16x8_s`, 1 fused `i32x4.relaxed_dot_i8x16_i7x16_add_s`) that the host picks
 * between by speed (`tuneRelaxedDot`). Both must give the same bits: packed Q8_0 / Q4_0 / Q4_K
 * matmuls (1-token group kernels, 2–4-token tiles, and more tokens), and the fused expert FFN,
 * against each other and against the simd128 module (whose packed kernels the relaxed ones
 * are pinned to; Q4_0: against the generic-order twin `refMatmulQ4_0Generic`, since the
 * relaxed Q4_0 kernels keep rows in lanes and sum each row in ggml's generic order).
 */
import { equal as assertEquals, ok as assert } from "node:assert/strict";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import {
  KernelHarness,
  randomActivations,
  randomWeights,
  refMatmulQ4_0Generic,
  rng,
} from "./kernel_test_util.ts";
import { PACKED_FLAG, relaxedSimdSupported, tuneRelaxedDot } from "./pkg/moe_edge_kernels.ts";

const TYPES = [
  { type: GgmlType.Q8_0, name: "Q8_0" },
  { type: GgmlType.Q4_0, name: "Q4_0" },
  { type: GgmlType.Q4_K, name: "Q4_K" },
] as const;

/** Packed matmul of `w` (rows × cols) on `nTok` activation rows; the output bytes. */
function packedMatmul(
  H: KernelHarness,
  type: GgmlType,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
): string {
  const k = H.k;
  H.reset();
  const wp = H.putU8(w);
  const tmp = H.alloc(k.pack_scratch_bytes(type, cols));
  assertEquals(k.pack_weights(type, wp, rows, cols, tmp, 0), 0, "pack");
  const xp = H.putF32(x);
  const op = H.alloc(4 * rows * nTok);
  const sp = H.alloc(k.matmul_scratch_bytes(type | PACKED_FLAG, cols, nTok));
  assertEquals(k.matmul(type | PACKED_FLAG, wp, rows, cols, xp, nTok, op, sp), 0, "matmul");
  return H.getU8(op, 4 * rows * nTok).join();
}

Deno.test({
  name: "relaxed dot forms: split and fused give the same bits as each other and as simd128",
  ignore: !relaxedSimdSupported(),
  fn: async () => {
    const R = await KernelHarness.create("relaxed");
    // The first relaxed instance of this isolate timed the two forms in its memory above
    // heap_base; that memory must be zero again for the allocator.
    const base = (R.k.heap_base() + 63) & ~63;
    assert(new Uint8Array(R.k.memory.buffer, base).every((v) => v === 0), "zeroed after timing");
    const S = await KernelHarness.create("simd128");
    const mode = R.k.relaxed_dot_mode!;
    const picked = mode(2); // read only
    assert(picked === 0 || picked === 1, `mode ${picked}`);
    assertEquals(S.k.relaxed_dot_mode!(1), 0, "simd128 build has one form");
    try {
      for (const { type, name } of TYPES) {
        const r = rng(7 + type);
        const rows = 24, cols = type === GgmlType.Q4_K ? 512 : 256;
        const w = randomWeights(r, type, rows, cols);
        // Q8_0 quants of -128 never come out of ggml's quantizer; the relaxed build refuses them.
        if (type === GgmlType.Q8_0) {
          for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
        }
        for (const nTok of [1, 2, 3, 4, 5, 9]) {
          const x = new Float32Array(nTok * cols);
          for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
          mode(0);
          const split = packedMatmul(R, type, w, rows, cols, x, nTok);
          mode(1);
          const fused = packedMatmul(R, type, w, rows, cols, x, nTok);
          // Q4_0: the relaxed build sums in ggml's generic order (rows in lanes), the
          // simd128 build per dot lane; its reference is the generic-order twin.
          const ref = type === GgmlType.Q4_0
            ? new Uint8Array(refMatmulQ4_0Generic(w, rows, cols, x, nTok).buffer).join()
            : packedMatmul(S, type, w, rows, cols, x, nTok);
          assertEquals(split, fused, `${name} ${nTok} tokens: split vs fused`);
          assertEquals(
            split,
            ref,
            `${name} ${nTok} tokens: relaxed vs ${type === GgmlType.Q4_0 ? "twin" : "simd128"}`,
          );
        }
      }
    } finally {
      mode(picked);
    }
  },
});

Deno.test({
  name: "tuneRelaxedDot: picks a form once per isolate and applies it to later instances",
  ignore: !relaxedSimdSupported(),
  fn: async () => {
    const a = await KernelHarness.create("relaxed");
    const b0 = (a.k.heap_base() + 63) & ~63;
    assert(new Uint8Array(a.k.memory.buffer, b0).every((v) => v === 0), "fresh memory zero");
    const m = tuneRelaxedDot(a.k);
    assert(m === 0 || m === 1, `mode ${m}`);
    a.k.relaxed_dot_mode!(1 - m);
    assertEquals(tuneRelaxedDot(a.k), m, "reapplied");
    const b = await KernelHarness.create("relaxed");
    assertEquals(b.k.relaxed_dot_mode!(2), m, "a new instance gets the pick");
    // a fresh instance's memory above heap_base is all zero (the timing, when this instance
    // ran it, zeroes what it wrote), as the allocator expects
    for (const h of [b]) {
      const base = (h.k.heap_base() + 63) & ~63;
      const mem = new Uint8Array(h.k.memory.buffer, base);
      assert(mem.every((v) => v === 0), "zeroed");
    }
  },
});
