/**
 * In-place weight packing inside `WasmBackend` (`weight_slots.ts`): every op
 * gives bit-for-bit the results of a backend that never packs, whatever the
 * sequence of writes, views and calls; across kernel variants too.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { WeightView } from "../core/backend/backend.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { FORMATS, randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { createWasmBackend, type WasmBackend } from "./mod.ts";
import { relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";

const plain = await createWasmBackend({ packWeights: false, variant: "simd128" });
const packers: WasmBackend[] = [
  await createWasmBackend({ variant: "simd128" }),
  await createWasmBackend({ variant: "simd128", scalar: true }),
];
const plainScalar = await createWasmBackend({ packWeights: false, scalar: true });
// The relaxed build sums Q4_0 in ggml's generic order (rows in lanes), the simd128 build
// per dot lane, so a relaxed packer is compared with a relaxed backend that never packs.
const plainRelaxed = relaxedSimdSupported()
  ? await createWasmBackend({ packWeights: false, variant: "relaxed" })
  : plain;
if (relaxedSimdSupported()) packers.push(await createWasmBackend({ variant: "relaxed" }));

/** The non-packing backend running the same kernels (SIMD or scalar twins, same variant) as `be`. */
function plainFor(be: WasmBackend): WasmBackend {
  return be === packers[1] ? plainScalar : be.variant === "relaxed" ? plainRelaxed : plain;
}

function bits(x: Float32Array): string {
  return new Uint32Array(x.buffer, x.byteOffset, x.length).join();
}

function matmulOn(be: WasmBackend, w: WeightView, x: Float32Array, nTok: number): string {
  const out = new Float32Array(nTok * w.rows);
  be.matmul(w, x, nTok, out);
  return bits(out);
}

function upload(be: WasmBackend, bytes: Uint8Array, pad: number): WeightView["slot"] {
  const s = be.allocSlot(bytes.length + pad + 8);
  be.writeSlot(s, pad, bytes);
  return s;
}

Deno.test("packing backend == non-packing backend for every format (matmul twice, getRows)", () => {
  for (const f of FORMATS) {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: f.blk === 1 ? 40 : f.blk === 32 ? 5 : 2 }),
        fc.constantFrom(1, 3, 17),
        fc.integer(),
        (rows, blocks, nTok, seed) => {
          const cols = blocks * f.blk;
          const r = rng(seed);
          const w = randomWeights(r, f.type, rows, cols);
          const x = new Float32Array(nTok * cols);
          for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
          const pad = 2 * (seed & 7);
          const ids = Int32Array.from({ length: rows }, (_, i) => rows - 1 - i);
          const run = (be: WasmBackend): string => {
            const slot = upload(be, w, pad);
            const v = { slot, offset: pad, type: f.type, rows, cols };
            const a = matmulOn(be, v, x, nTok);
            const b = matmulOn(be, v, x, nTok); // second call runs on the packed bytes
            const g = new Float32Array(rows * cols);
            be.getRows(v, ids, g);
            be.freeSlot(slot);
            return `${a}|${b}|${bits(g)}`;
          };
          const wants = new Map<WasmBackend, string>();
          for (const be of packers) {
            const p = plainFor(be);
            if (!wants.has(p)) wants.set(p, run(p));
            assertEquals(run(be), wants.get(p), `${f.name} ${be.variant}`);
          }
          // Across variants the results agree too, except Q4_0 (relaxed: generic order).
          if (plainRelaxed !== plain && f.type !== GgmlType.Q4_0) {
            assertEquals(wants.get(plainRelaxed), wants.get(plain), `${f.name} relaxed vs simd128`);
          }
        },
      ),
      { numRuns: 12 },
    );
  }
});

Deno.test("prepareWeights packs eligible matrices once; refuses the rest; results unchanged", () => {
  const be = packers[0];
  const r = rng(3);
  const cases: [GgmlType, number, number, boolean][] = [
    [GgmlType.Q8_0, 8, 64, true],
    [GgmlType.Q4_0, 8, 64, true],
    [GgmlType.Q4_K, 4, 256, true],
    [GgmlType.F16, 3, 21, true],
    [GgmlType.Q8_0, 6, 64, false], // rows % 4
    [GgmlType.Q6_K, 4, 256, false], // no packed layout
    [GgmlType.F32, 4, 16, false],
  ];
  for (const [type, rows, cols, packs] of cases) {
    const w = randomWeights(r, type, rows, cols);
    const x = randomActivations(r, cols);
    const slot = upload(be, w, 0);
    const v = { slot, offset: 0, type, rows, cols };
    const before = be.packedCount();
    assertEquals(be.prepareWeights(v), packs);
    assertEquals(be.prepareWeights(v), packs); // idempotent
    assertEquals(be.packedCount(), before + (packs ? 1 : 0));
    const ps = upload(plain, w, 0);
    assertEquals(matmulOn(be, v, x, 1), matmulOn(plain, { ...v, slot: ps }, x, 1));
    be.freeSlot(slot);
    plain.freeSlot(ps);
  }
});

Deno.test("writes into a packed matrix (partial, whole, neighbouring) keep every result exact", () => {
  const r = rng(5);
  const type = GgmlType.Q4_0, rows = 8, cols = 96;
  const rb = (cols / 32) * 18;
  const bytes = 2 * rows * rb + 16;
  for (const be of packers) {
    const plain = plainFor(be);
    const a = randomWeights(r, type, rows, cols), b = randomWeights(r, type, rows, cols);
    const slot = be.allocSlot(bytes), ps = plain.allocSlot(bytes);
    const write = (off: number, data: Uint8Array) => {
      be.writeSlot(slot, off, data);
      plain.writeSlot(ps, off, data);
    };
    const v0 = { slot, offset: 0, type, rows, cols }, v1 = { ...v0, offset: rows * rb + 16 };
    const check = (x: Float32Array) => {
      for (const v of [v0, v1]) {
        assertEquals(matmulOn(be, v, x, 2), matmulOn(plain, { ...v, slot: ps }, x, 2));
      }
    };
    const x = new Float32Array(2 * cols);
    x.set(randomActivations(r, cols));
    x.set(randomActivations(r, cols), cols);
    write(0, a);
    write(rows * rb + 16, b);
    check(x); // both packed now
    write(5, b.subarray(3, 40)); // partial overwrite of v0: unpack, then write
    check(x);
    write(rows * rb + 16, a); // whole overwrite of v1: forget, write standard bytes
    check(x);
    write(rows * rb, new Uint8Array(16).fill(7)); // the gap between them: nothing packed there
    check(x);
    be.freeSlot(slot);
    plain.freeSlot(ps);
  }
});

Deno.test("overlapping views of other shapes unpack first; results stay exact", () => {
  const r = rng(9);
  const type = GgmlType.Q8_0, rows = 8, cols = 64;
  const rb = (cols / 32) * 34;
  const w = randomWeights(r, type, rows, cols);
  for (const be of packers) {
    const plain = plainFor(be);
    const slot = upload(be, w, 0), ps = upload(plain, w, 0);
    const whole = { slot, offset: 0, type, rows, cols };
    const tail = { slot, offset: 4 * rb, type, rows: 4, cols };
    const wide = { slot, offset: 0, type, rows: rows / 2, cols: 2 * cols };
    const x = randomActivations(r, 2 * cols);
    for (const v of [whole, tail, whole, wide, tail, whole]) {
      const xs = x.subarray(0, v.cols);
      assertEquals(matmulOn(be, v, xs, 1), matmulOn(plain, { ...v, slot: ps }, xs, 1));
    }
    be.freeSlot(slot);
    plain.freeSlot(ps);
  }
});

Deno.test("ffnSwiglu over packed experts == unpacked composition, every variant", () => {
  const r = rng(13);
  const nEmbd = 256, nFf = 512;
  const pairs: [GgmlType, GgmlType][] = [[GgmlType.Q8_0, GgmlType.Q8_0], [
    GgmlType.Q4_K,
    GgmlType.Q4_0,
  ]];
  for (const [tg, td] of pairs) {
    const shapes: [GgmlType, number, number][] = [[tg, nFf, nEmbd], [tg, nFf, nEmbd], [
      td,
      nEmbd,
      nFf,
    ]];
    const mats = shapes.map(([t, rows, cols]) => ({
      w: randomWeights(r, t, rows, cols),
      type: t,
      rows,
      cols,
    }));
    for (const m of mats) {
      if (m.type === GgmlType.Q8_0) {
        m.w.forEach((b, i) => (b === 0x80 && i % 34 >= 2 ? (m.w[i] = 1) : 0));
      }
    }
    const x = new Float32Array(3 * nEmbd);
    for (let t = 0; t < 3; t++) x.set(randomActivations(r, nEmbd), t * nEmbd);
    const run = (be: WasmBackend, fused: boolean): string => {
      const vs = mats.map((m) => ({
        slot: upload(be, m.w, 0),
        offset: 0,
        type: m.type,
        rows: m.rows,
        cols: m.cols,
      }));
      const out = new Float32Array(3 * nEmbd);
      if (fused) be.ffnSwiglu(vs[0], vs[1], vs[2], x, 3, out);
      else {
        const g = new Float32Array(3 * nFf), u = new Float32Array(3 * nFf);
        be.matmul(vs[0], x, 3, g);
        be.matmul(vs[1], x, 3, u);
        be.swiglu(g, u, g);
        be.matmul(vs[2], g, 3, out);
      }
      for (const v of vs) be.freeSlot(v.slot);
      return bits(out);
    };
    for (const be of [packers[0], ...packers.slice(2)]) {
      const want = run(plainFor(be), false);
      assertEquals(run(be, true), want, `fused ${be.variant}`);
      assertEquals(run(be, false), want, `unfused ${be.variant}`);
    }
  }
});
