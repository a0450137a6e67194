/**
 * Activation quantization and float conversion kernels: SIMD == scalar ==
 * an independent TS implementation of the x86 rule == core's traits table,
 * all bit-exact.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { quantizeActivation } from "../core/tensor/traits.ts";
import {
  bitsOf,
  fromBits,
  fromF16,
  KernelHarness,
  randomActivations,
  refQuantQ8,
  refQuantQ8K,
  rng,
  toBf16,
  toF16,
} from "./kernel_test_util.ts";

const H = await KernelHarness.create();
const RUNS = { numRuns: 150 };

function viaTraits(type: GgmlType, x: Float32Array, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  quantizeActivation(type, x, 0, x.length, out, 0);
  return out;
}

function firstDiff(a: Uint8Array, b: Uint8Array): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`;
  }
  return "none";
}

for (
  const [name, blk, bb, simd, scalar, ref, type] of [
    [
      "Q8_0",
      32,
      34,
      H.k.quantize_q8_0,
      H.k.quantize_q8_0_scalar,
      (x: Float32Array) => refQuantQ8(x, false),
      GgmlType.Q8_0,
    ],
    [
      "Q8_1",
      32,
      36,
      H.k.quantize_q8_1,
      H.k.quantize_q8_1_scalar,
      (x: Float32Array) => refQuantQ8(x, true),
      GgmlType.Q8_1,
    ],
    ["Q8_K", 256, 292, H.k.quantize_q8_k, H.k.quantize_q8_k_scalar, refQuantQ8K, GgmlType.Q8_K],
  ] as const
) {
  Deno.test(`quantize_${name}: SIMD == scalar == TS x86 rule == traits (bit-exact)`, () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: blk === 32 ? 12 : 4 }), fc.integer(), (nb, seed) => {
        H.reset();
        const x = randomActivations(rng(seed), nb * blk);
        const xp = H.putF32(x);
        const a = H.alloc(nb * bb);
        const b = H.alloc(nb * bb);
        // Poison the outputs so unwritten bytes show up.
        H.u8().fill(0xa5, a, a + nb * bb);
        H.u8().fill(0x5a, b, b + nb * bb);
        simd(xp, a, nb * blk);
        scalar(xp, b, nb * blk);
        const got = H.getU8(a, nb * bb);
        const twin = H.getU8(b, nb * bb);
        const want = ref(x);
        assertEquals(firstDiff(got, twin), "none", "SIMD vs scalar");
        assertEquals(firstDiff(got, want), "none", "SIMD vs TS x86 rule");
        if (name !== "Q8_K" || !hasZeroBlock(x)) {
          // traits leaves bsums of all-zero Q8_K blocks unwritten (= 0 in a fresh buffer) as ggml does
          assertEquals(firstDiff(got, viaTraits(type, x, nb * bb)), "none", "SIMD vs traits");
        }
      }),
      RUNS,
    );
  });
}

/** f16 of an f32 given by its bits; NaN → sign | 0x7E00 (ggml). */
function f16FromBits(b: number): number {
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) & 0x8000) | 0x7e00;
  return toF16(fromBits(b));
}

/** bf16 of an f32 given by its bits (docs/specs-llamacpp.md §2.1). */
function bf16FromBits(b: number): number {
  if ((b & 0x7fffffff) >>> 0 > 0x7f800000) return ((b >>> 16) | 64) & 0xffff;
  return toBf16(fromBits(b));
}

function hasZeroBlock(x: Float32Array): boolean {
  for (let b = 0; b < x.length / 256; b++) {
    if (x.subarray(256 * b, 256 * b + 256).every((v) => v === 0)) return true;
  }
  return false;
}

Deno.test("quantize_Q8_0: exact ties, ±max duplicates and zero blocks", () => {
  H.reset();
  // amax = 127 → id = 1: x = k + 0.5 are exact ties that must round to even.
  const x = new Float32Array(64);
  for (let j = 0; j < 32; j++) x[j] = j === 0 ? 127 : (j % 2 ? -1 : 1) * (j + 0.5);
  x[32] = -0; // second block all zeros (incl. -0)
  const xp = H.putF32(x);
  const a = H.alloc(68);
  H.k.quantize_q8_0(xp, a, 64);
  const got = H.getU8(a, 68);
  assertEquals(firstDiff(got, refQuantQ8(x, false)), "none");
  const q = new Int8Array(got.buffer, 2, 32);
  assertEquals(q[2], 2); // 2.5 → 2
  assertEquals(q[3], -4); // -3.5 → -4
  assertEquals(q[5], -6); // -5.5 → -6
  assertEquals([...got.subarray(34)].every((v) => v === 0), true);
});

Deno.test("round_f16 / round_bf16: SIMD == scalar == spec on random bit patterns, all tails", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 41 }),
      (bits) => {
        H.reset();
        const u = new Uint32Array(bits);
        const x = new Float32Array(u.buffer);
        const xp = H.putU8(new Uint8Array(u.buffer)); // bytes: NaN payloads survive
        const n = x.length;
        for (
          const [s, sc, ref] of [
            [H.k.round_f16, H.k.round_f16_scalar, f16FromBits],
            [H.k.round_bf16, H.k.round_bf16_scalar, bf16FromBits],
          ] as const
        ) {
          const a = H.alloc(2 * n);
          const b = H.alloc(2 * n);
          s(xp, a, n);
          sc(xp, b, n);
          const ga = H.getU16(a, n);
          const gb = H.getU16(b, n);
          for (let i = 0; i < n; i++) {
            assertEquals(ga[i], gb[i], `SIMD vs scalar at ${i} (bits ${bits[i].toString(16)})`);
            assertEquals(ga[i], ref(u[i]), `vs spec at ${i} (bits ${u[i].toString(16)})`);
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("round_f16: sweep of 2^22 f32 patterns across every exponent (SIMD == scalar == Float16Array)", () => {
  H.reset();
  const n = 1 << 22;
  const x = new Float32Array(n);
  const u = new Uint32Array(x.buffer);
  for (let i = 0; i < n; i++) u[i] = Math.imul(i, 1025) >>> 0; // strided over the whole 32-bit space
  // plus a dense window around the f16 subnormal/normal/overflow boundaries
  for (let i = 0; i < 4096; i++) {
    u[i] = 0x33000000 - 2048 + i;
    u[4096 + i] = 0x38800000 - 2048 + i;
    u[8192 + i] = 0x477ff000 - 2048 + i;
  }
  const xp = H.putU8(new Uint8Array(u.buffer));
  const a = H.alloc(2 * n);
  const b = H.alloc(2 * n);
  H.k.round_f16(xp, a, n);
  H.k.round_f16_scalar(xp, b, n);
  const ga = H.getU16(a, n);
  const gb = H.getU16(b, n);
  let bad = 0;
  for (let i = 0; i < n; i++) {
    if (ga[i] !== gb[i] || ga[i] !== f16FromBits(u[i])) {
      if (bad++ < 5) console.error(u[i].toString(16), ga[i].toString(16), gb[i].toString(16));
    }
  }
  assertEquals(bad, 0);
});

Deno.test("f16_to_f32: all 65536 values exact", () => {
  H.reset();
  const h = new Uint16Array(65536).map((_, i) => i);
  const hp = H.alloc(2 * 65536);
  new Uint16Array(H.k.memory.buffer, hp, 65536).set(h);
  const yp = H.alloc(4 * 65536);
  H.k.f16_to_f32(hp, yp, 65536);
  const y = H.getF32(yp, 65536);
  const yb = new Uint32Array(H.k.memory.buffer, yp, 65536); // NaN bits survive only in integer views
  for (let i = 0; i < 65536; i++) {
    const want = fromF16(i);
    if (Number.isNaN(want)) {
      // NaN payload and sign are kept, like F16C
      assertEquals(yb[i], (((i & 0x8000) << 16) | 0x7f800000 | ((i & 0x3ff) << 13)) >>> 0);
    } else assertEquals(Object.is(y[i], want), true, `h=${i.toString(16)}: ${y[i]} vs ${want}`);
  }
});

Deno.test("exp_f32: SIMD == scalar bit-exact, ≤ 1 ulp from correctly rounded e^x", () => {
  H.reset();
  const n = 200_003;
  const x = new Float32Array(n);
  const r = rng(7);
  for (let i = 0; i < n; i++) x[i] = (r() - 0.55) * 220; // [-121, 99]: underflow, subnormal, overflow
  x[0] = 0;
  x[1] = -0;
  x[2] = 88.72283;
  x[3] = 88.7229;
  x[4] = -103.97;
  x[5] = Infinity;
  x[6] = -Infinity;
  const xp = H.putF32(x);
  const a = H.alloc(4 * n);
  const b = H.alloc(4 * n);
  H.k.exp_f32(xp, a, n);
  H.k.exp_f32_scalar(xp, b, n);
  const ga = H.getF32(a, n);
  const gb = H.getF32(b, n);
  let exact = 0;
  for (let i = 0; i < n; i++) {
    assertEquals(bitsOf(ga[i]), bitsOf(gb[i]), `twin at x=${x[i]}`);
    const want = Math.fround(Math.exp(x[i]));
    const ulps = Math.abs(bitsOf(ga[i]) - bitsOf(want));
    if (ulps === 0) exact++;
    if (ulps > 1) throw new Error(`exp(${x[i]}) = ${ga[i]}, want ${want} (${ulps} ulps)`);
  }
  // Evaluating in f64 makes it correctly rounded almost always.
  if (exact < n * 0.999) throw new Error(`only ${exact}/${n} correctly rounded`);
});
