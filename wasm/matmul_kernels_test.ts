/**
 * Matmul and get_rows kernels for every weight format: SIMD vs scalar twin,
 * vs core's traits table (activation bytes bit-exact, results within 1e-5
 * of Σ|terms|), and vs an f64 reference over dequantized weights and
 * dequantized activations.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { quantizeActivation, traitsOf } from "../core/tensor/traits.ts";
import {
  FORMATS,
  fromF16,
  KernelHarness,
  randomActivations,
  randomWeights,
  rng,
} from "./kernel_test_util.ts";

const H = await KernelHarness.create();
/** Tolerance relative to Σ|w·a| for f32 accumulation in a different order. */
const REL_TOL = 1e-5;

interface Case {
  rows: number;
  cols: number;
  nTok: number;
  seed: number;
}

function caseArb(blk: number): fc.Arbitrary<Case> {
  const maxBlocks = blk === 1 ? 70 : blk === 32 ? 9 : 3;
  return fc.record({
    rows: fc.integer({ min: 1, max: 9 }),
    cols: fc.integer({ min: 1, max: maxBlocks }).map((b) => b * blk),
    nTok: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 15, max: 35 })),
    seed: fc.integer(),
  });
}

function check(type: GgmlType, c: Case): void {
  const tr = traitsOf(type);
  const vt = traitsOf(tr.vecDotType);
  const { rows, cols, nTok } = c;
  const r = rng(c.seed);
  const w = randomWeights(r, type, rows, cols);
  const x = new Float32Array(nTok * cols);
  for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
  H.reset();
  const k = H.k;
  const wp = H.putU8(w);
  const xp = H.putF32(x);
  const arb = k.act_row_bytes(type, cols);
  assertEquals(arb > 0, true);
  const a1 = H.alloc(nTok * arb);
  const a2 = H.alloc(nTok * arb);
  const sc = H.alloc(k.matmul_scratch_bytes(type, cols, nTok));
  assertEquals(k.prepare_act(type, xp, cols, nTok, a1), 0);
  assertEquals(k.prepare_act_scalar(type, xp, cols, nTok, a2), 0);
  const act = H.getU8(a1, nTok * arb);
  assertEquals(act.join(), H.getU8(a2, nTok * arb).join(), "prepare_act SIMD vs scalar");

  // Activation bytes vs traits (bit-exact). F16/BF16 are prepared as the f32 image of the rounded values.
  const tb = cols / vt.blockSize * vt.typeSize;
  const tAct = new Uint8Array(nTok * tb);
  for (let t = 0; t < nTok; t++) quantizeActivation(tr.vecDotType, x, t * cols, cols, tAct, t * tb);
  const deqA = new Float32Array(nTok * cols);
  if (type === GgmlType.F16 || type === GgmlType.BF16) {
    vt.dequantize(tAct, 0, nTok * cols, deqA, 0);
    const prepared = new Float32Array(act.buffer, 0, nTok * cols);
    for (let i = 0; i < nTok * cols; i++) {
      if (!Object.is(prepared[i], deqA[i])) {
        throw new Error(`prepared ${i}: ${prepared[i]} vs ${deqA[i]}`);
      }
    }
  } else if (type === GgmlType.F32) {
    deqA.set(x);
  } else {
    assertEquals(act.join(), tAct.join(), "activation bytes vs traits");
    for (let t = 0; t < nTok; t++) vt.dequantize(tAct, t * tb, cols, deqA, t * cols);
  }

  const o1 = H.alloc(4 * nTok * rows);
  const o2 = H.alloc(4 * nTok * rows);
  const o3 = H.alloc(4 * nTok * rows);
  assertEquals(k.matmul(type, wp, rows, cols, xp, nTok, o1, sc), 0);
  assertEquals(k.matmul_scalar(type, wp, rows, cols, xp, nTok, o2, sc), 0);
  assertEquals(k.matmul_prepared(type, wp, rows, cols, a1, nTok, o3, sc), 0);
  const simd = H.getF32(o1, nTok * rows);
  const scalar = H.getF32(o2, nTok * rows);
  const prep = H.getF32(o3, nTok * rows);

  const deqW = new Float32Array(rows * cols);
  const wrb = cols / tr.blockSize * tr.typeSize;
  for (let i = 0; i < rows; i++) tr.dequantize(w, i * wrb, cols, deqW, i * cols);
  const q81 = tr.vecDotType === GgmlType.Q8_1;
  for (let t = 0; t < nTok; t++) {
    for (let i = 0; i < rows; i++) {
      let ref = 0;
      let mag = 0;
      for (let j = 0; j < cols; j++) {
        const p = deqW[i * cols + j] * deqA[t * cols + j];
        ref += p;
        mag += Math.abs(p);
      }
      if (q81) {
        // ggml uses s = f16(d·Σq) from the activation block, not the exact d·Σq.
        for (let b = 0; b < cols / 32; b++) {
          const ao = t * tb + b * 36;
          const dy = fromF16(tAct[ao] | (tAct[ao + 1] << 8));
          const sy = fromF16(tAct[ao + 2] | (tAct[ao + 3] << 8));
          let sq = 0;
          for (let j = 0; j < 32; j++) sq += (tAct[ao + 4 + j] << 24) >> 24;
          const wo = i * wrb + b * tr.typeSize;
          const m = fromF16(w[wo + 2] | (w[wo + 3] << 8));
          ref += m * (sy - dy * sq);
          mag += Math.abs(m * sy);
        }
      }
      const tol = REL_TOL * mag + 1e-30;
      const o = t * rows + i;
      const viaTraits = tr.vecDot(cols, w, i * wrb, tAct, t * tb);
      const tag = `${tr.name} rows=${rows} cols=${cols} nTok=${nTok} t=${t} r=${i}`;
      if (!(Math.abs(simd[o] - ref) <= tol)) {
        throw new Error(`${tag}: SIMD ${simd[o]} vs f64 ref ${ref} (tol ${tol})`);
      }
      if (!(Math.abs(scalar[o] - ref) <= tol)) {
        throw new Error(`${tag}: scalar ${scalar[o]} vs f64 ref ${ref}`);
      }
      if (!(Math.abs(simd[o] - scalar[o]) <= tol)) {
        throw new Error(`${tag}: SIMD ${simd[o]} vs scalar ${scalar[o]}`);
      }
      if (!(Math.abs(simd[o] - viaTraits) <= tol)) {
        throw new Error(`${tag}: SIMD ${simd[o]} vs traits ${viaTraits}`);
      }
      if (!Object.is(prep[o], simd[o])) {
        throw new Error(`${tag}: matmul_prepared ${prep[o]} vs matmul ${simd[o]}`);
      }
    }
  }
}

for (const f of FORMATS) {
  Deno.test(`matmul ${f.name}: SIMD vs scalar vs traits vs f64 dequantized reference`, () => {
    fc.assert(fc.property(caseArb(f.blk), (c) => check(f.type, c)), { numRuns: 60 });
  });
}

Deno.test("matmul: long rows (4096 cols) for every format stay within tolerance", () => {
  for (const f of FORMATS) check(f.type, { rows: 3, cols: 4096, nTok: 2, seed: 1234 + f.type });
});

Deno.test("get_rows: dequantized rows equal traits.dequantize bit-for-bit", () => {
  for (const f of FORMATS) {
    fc.assert(
      fc.property(
        caseArb(f.blk),
        fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
        (c, idsRaw) => {
          const tr = traitsOf(f.type);
          const w = randomWeights(rng(c.seed), f.type, c.rows, c.cols);
          const ids = Int32Array.from(idsRaw, (v) => v % c.rows);
          H.reset();
          const wp = H.putU8(w);
          const ip = H.putI32(ids);
          const op = H.alloc(4 * ids.length * c.cols);
          assertEquals(H.k.get_rows(f.type, wp, c.cols, ip, ids.length, op), 0);
          const got = new Uint32Array(H.getF32(op, ids.length * c.cols).buffer);
          const want = new Float32Array(ids.length * c.cols);
          const rb = c.cols / tr.blockSize * tr.typeSize;
          for (let i = 0; i < ids.length; i++) {
            tr.dequantize(w, ids[i] * rb, c.cols, want, i * c.cols);
          }
          const wb = new Uint32Array(want.buffer);
          for (let i = 0; i < got.length; i++) {
            if (got[i] !== wb[i]) {
              throw new Error(
                `${f.name} element ${i}: ${got[i].toString(16)} vs ${wb[i].toString(16)}`,
              );
            }
          }
        },
      ),
      { numRuns: 25 },
    );
  }
});

Deno.test("matmul / get_rows: unsupported types and ragged rows are rejected with -1", () => {
  H.reset();
  const p = H.alloc(1024);
  assertEquals(H.k.matmul(GgmlType.Q8_1, p, 1, 32, p, 1, p, p), -1);
  assertEquals(H.k.matmul(16, p, 1, 256, p, 1, p, p), -1); // IQ2_XXS: not implemented
  assertEquals(H.k.matmul(GgmlType.IQ4_XS, p, 1, 32, p, 1, p, p), -1); // ragged super-block
  assertEquals(H.k.matmul(GgmlType.Q8_0, p, 1, 48, p, 1, p, p), -1);
  assertEquals(H.k.matmul(GgmlType.Q4_K, p, 1, 32, p, 1, p, p), -1);
  assertEquals(H.k.get_rows(16, p, 256, p, 1, p), -1);
  assertEquals(H.k.get_rows(GgmlType.Q3_K, p, 128, p, 1, p), -1);
  for (
    const t of [GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.IQ4_NL, GgmlType.IQ4_XS, GgmlType.MXFP4]
  ) {
    assertEquals(H.k.type_supported(t), 1);
  }
  assertEquals(H.k.act_row_bytes(GgmlType.Q8_K, 256), 0);
  assertEquals(H.k.type_supported(GgmlType.Q6_K), 1);
  assertEquals(H.k.type_supported(GgmlType.Q8_K), 0);
});

Deno.test("matmul Q2_K/Q3_K/IQ4_NL/IQ4_XS/MXFP4: scalar twin == traits.vecDot bit for bit (ggml generic order)", () => {
  for (
    const type of [GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.IQ4_NL, GgmlType.IQ4_XS, GgmlType.MXFP4]
  ) {
    const tr = traitsOf(type);
    const vt = traitsOf(tr.vecDotType);
    fc.assert(
      fc.property(caseArb(tr.blockSize), (c) => {
        const r = rng(c.seed);
        const nTok = Math.min(c.nTok, 3);
        const w = randomWeights(r, type, c.rows, c.cols);
        const x = randomActivations(r, nTok * c.cols);
        H.reset();
        const wp = H.putU8(w);
        const xp = H.putF32(x);
        const op = H.alloc(4 * nTok * c.rows);
        const sc = H.alloc(H.k.matmul_scratch_bytes(type, c.cols, nTok));
        assertEquals(H.k.matmul_scalar(type, wp, c.rows, c.cols, xp, nTok, op, sc), 0);
        const got = H.getF32(op, nTok * c.rows);
        const tb = c.cols / vt.blockSize * vt.typeSize;
        const act = new Uint8Array(tb);
        const wrb = c.cols / tr.blockSize * tr.typeSize;
        for (let t = 0; t < nTok; t++) {
          quantizeActivation(tr.vecDotType, x, t * c.cols, c.cols, act, 0);
          for (let i = 0; i < c.rows; i++) {
            const want = tr.vecDot(c.cols, w, i * wrb, act, 0);
            if (!Object.is(got[t * c.rows + i], want)) {
              throw new Error(
                `${tr.name} t=${t} r=${i}: scalar ${got[t * c.rows + i]} vs traits ${want}`,
              );
            }
          }
        }
      }),
      { numRuns: 40 },
    );
  }
});

Deno.test("matmul Q2_K/Q3_K/IQ4_NL/IQ4_XS/MXFP4: simd128 and relaxed modules agree bit for bit", async () => {
  const S = await KernelHarness.create("simd128");
  const R = await KernelHarness.create("relaxed");
  for (
    const type of [GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.IQ4_NL, GgmlType.IQ4_XS, GgmlType.MXFP4]
  ) {
    const blk = traitsOf(type).blockSize;
    fc.assert(
      fc.property(caseArb(blk), (c) => {
        const r = rng(c.seed);
        const w = randomWeights(r, type, c.rows, c.cols);
        const x = randomActivations(r, c.nTok * c.cols);
        const run = (h: KernelHarness): Float32Array => {
          h.reset();
          const wp = h.putU8(w);
          const xp = h.putF32(x);
          const op = h.alloc(4 * c.nTok * c.rows);
          const sc = h.alloc(h.k.matmul_scratch_bytes(type, c.cols, c.nTok));
          assertEquals(h.k.matmul(type, wp, c.rows, c.cols, xp, c.nTok, op, sc), 0);
          return h.getF32(op, c.nTok * c.rows);
        };
        assertEquals(run(S).join(), run(R).join());
      }),
      { numRuns: 20 },
    );
  }
});

for (const type of [GgmlType.Q6_K, GgmlType.IQ4_XS, GgmlType.IQ4_NL, GgmlType.MXFP4]) {
  const tr = traitsOf(type);
  Deno.test(`matmul ${tr.name} decode (two-row streams) == the token-tile path, bit for bit`, () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 11 }),
        fc.integer({ min: 1, max: tr.blockSize === 32 ? 9 : 3 }),
        fc.integer(),
        (rows, nb, seed) => {
          const cols = tr.blockSize * nb;
          const r = rng(seed);
          const w = randomWeights(r, type, rows, cols);
          const x = randomActivations(r, 2 * cols);
          H.reset();
          const wp = H.putU8(w);
          const xp = H.putF32(x);
          const o1 = H.alloc(4 * rows);
          const o2 = H.alloc(8 * rows);
          const sc = H.alloc(H.k.matmul_scratch_bytes(type, cols, 2));
          // one token: rows r and r + rows/2 per kernel call; two tokens: one row per tile
          assertEquals(H.k.matmul(type, wp, rows, cols, xp, 1, o1, sc), 0);
          assertEquals(H.k.matmul(type, wp, rows, cols, xp, 2, o2, sc), 0);
          const one = new Uint32Array(H.getF32(o1, rows).buffer);
          const two = new Uint32Array(H.getF32(o2, rows).buffer);
          assertEquals(one.join(), two.join());
        },
      ),
      { numRuns: 40 },
    );
  });
}
