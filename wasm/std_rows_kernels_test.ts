/**
 * Decode (one token) over standard-layout (unpacked) matrices: the relaxed build reads
 * 4-row groups straight from the GGUF block layout (`relaxed::std_kernels`, c/relaxed.c
 * `rx_std_*`) instead of the one-row tiles. Its outputs must be bit-identical to the
 * simd128 module's standard-layout kernels (Q4_0: to the generic-order twin
 * `refMatmulQ4_0Generic`, the relaxed build's Q4_0 order) and to its own packed kernels, in both dot
 * forms, for every group count (odd, even), rows that are not a multiple of 4 (the tile
 * fallback), the row spacings picked for large matrices (rows % 8 == 0, with leftover rows),
 * several block counts, Q8_0 quants of -128 (packing refuses them, the standard kernels take
 * them), and inf/NaN f16 scales (which packing refuses, so
 * streamed experts can hold them).
 */
import { equal as assertEquals, ok as assert } from "node:assert/strict";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import {
  FORMATS,
  KernelHarness,
  randomActivations,
  randomWeights,
  refMatmulQ4_0Generic,
  rng,
} from "./kernel_test_util.ts";
import { PACKED_FLAG, relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";

/** Types with a standard-layout decode kernel in the relaxed build. */
const TYPES = [GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q8_0] as const;

/** One-token matmul of `w` (rows × cols) on `x`; the output as u32 bits. */
function decode(
  H: KernelHarness,
  type: number,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
): Uint32Array {
  const k = H.k;
  H.reset();
  const wp = H.putU8(w);
  if (type & PACKED_FLAG) {
    const tmp = H.alloc(k.pack_scratch_bytes(type & ~PACKED_FLAG, cols));
    assertEquals(k.pack_weights(type & ~PACKED_FLAG, wp, rows, cols, tmp, 0), 0, "pack");
  }
  const xp = H.putF32(x);
  const op = H.alloc(4 * rows);
  const sp = H.alloc(k.matmul_scratch_bytes(type, cols, 1));
  assertEquals(k.matmul(type, wp, rows, cols, xp, 1, op, sp), 0, "matmul");
  return new Uint32Array(H.getU8(op, 4 * rows).slice().buffer);
}

/** `w` (Q8_0) with every quant of -128 made -127. */
function scrubQ8(w: Uint8Array): Uint8Array {
  const o = w.slice();
  for (let i = 0; i < o.length; i++) if (i % 34 >= 2 && o[i] === 0x80) o[i] = 0x81;
  return o;
}

/** Same bits, except that any NaN equals any NaN (NaN payloads are not specified). */
function sameBits(a: Uint32Array, b: Uint32Array, tag: string): void {
  assertEquals(a.length, b.length);
  const nan = (u: number) => (u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && !(nan(a[i]) && nan(b[i]))) {
      throw new Error(`${tag} row ${i}: 0x${a[i].toString(16)} vs 0x${b[i].toString(16)}`);
    }
  }
}

Deno.test({
  name:
    "standard-layout decode: relaxed group kernels give the bits of the simd128 tiles and of packed",
  ignore: !relaxedSimdSupported(),
  fn: async () => {
    const R = await KernelHarness.create("relaxed");
    const S = await KernelHarness.create("simd128");
    const mode = R.k.relaxed_dot_mode!;
    const picked = mode(2);
    try {
      for (const type of TYPES) {
        const fm = FORMATS.find((f) => f.type === type)!;
        for (
          const [rows, nbk] of [[4, 1], [8, 2], [12, 3], [20, 9], [36, 2], [7, 3], [64, 4], [
            136,
            1,
          ], [256, 2]]
        ) {
          const cols = nbk * fm.blk;
          const r = rng(1000 * type + 10 * rows + nbk);
          const w = randomWeights(r, type, rows, cols);
          const x = randomActivations(r, cols);
          // Q4_0: the relaxed build's order is ggml's generic one (the simd128 build's is
          // per dot lane): its reference is the generic-order twin.
          const ref = type === GgmlType.Q4_0
            ? new Uint32Array(refMatmulQ4_0Generic(w, rows, cols, x, 1).buffer)
            : decode(S, type, w, rows, cols, x);
          for (const m of [0, 1]) {
            mode(m);
            const tag = `${fm.name} ${rows}x${cols} mode ${m}`;
            sameBits(decode(R, type, w, rows, cols, x), ref, `${tag} std vs simd128`);
            if (rows % 4 === 0) {
              // Packing (relaxed build) refuses Q8_0 quants of -128; the standard kernels take them.
              const wp = type === GgmlType.Q8_0 ? scrubQ8(w) : w;
              const refp = wp === w ? ref : decode(S, type, wp, rows, cols, x);
              sameBits(decode(R, type | PACKED_FLAG, wp, rows, cols, x), refp, `${tag} packed`);
            }
          }
          // Non-finite scales: +inf, -inf, NaN in a few blocks (packing refuses these).
          const wi = w.slice();
          const nb = (rows * cols) / fm.blk;
          const bad = [0x7c00, 0xfc00, 0x7e01];
          for (let j = 0; j < 3; j++) {
            const b = Math.floor(r() * nb);
            const s = fm.scales[j % fm.scales.length];
            wi[b * fm.bytes + s] = bad[j] & 0xff;
            wi[b * fm.bytes + s + 1] = bad[j] >> 8;
          }
          const refi = type === GgmlType.Q4_0
            ? new Uint32Array(refMatmulQ4_0Generic(wi, rows, cols, x, 1).buffer)
            : decode(S, type, wi, rows, cols, x);
          assert(refi.some((u) => (u & 0x7f800000) === 0x7f800000), "non-finite outputs expected");
          for (const m of [0, 1]) {
            mode(m);
            sameBits(
              decode(R, type, wi, rows, cols, x),
              refi,
              `${fm.name} ${rows}x${cols} mode ${m} inf/NaN`,
            );
          }
        }
      }
    } finally {
      mode(picked);
    }
  },
});
