import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import fc from "npm:fast-check@4";
import { BackendError } from "../errors.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import {
  activationBytes,
  quantizeActivation,
  rowBytes,
  traitsOf,
  WEIGHT_TYPES,
} from "../tensor/traits.ts";
import { f16ToF32, f32ToF16 } from "../tensor/f16.ts";
import { RefBackend } from "./ref_backend.ts";
import type { WeightView } from "./backend.ts";

function upload(
  be: RefBackend,
  type: GgmlType,
  w: Float32Array,
  rows: number,
  cols: number,
): WeightView {
  const rb = rowBytes(type, cols);
  const bytes = new Uint8Array(rb * rows);
  for (let r = 0; r < rows; r++) traitsOf(type).quantize(w, r * cols, cols, bytes, r * rb);
  const slot = be.allocSlot(bytes.length + 8);
  be.writeSlot(slot, 8, bytes);
  return { slot, offset: 8, type, rows, cols };
}

Deno.test("matmul equals Σ dequant(W)·dequant(quantized x) for every weight type", () => {
  const be = new RefBackend();
  for (const type of WEIGHT_TYPES) {
    const tr = traitsOf(type);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (rows, blocks, nTok, seed) => {
          const cols = blocks * Math.max(tr.blockSize, 32);
          let s = seed;
          const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
          const w = Float32Array.from({ length: rows * cols }, rnd);
          const x = Float32Array.from({ length: nTok * cols }, rnd);
          const view = upload(be, type, w, rows, cols);
          const out = new Float32Array(nTok * rows);
          be.matmul(view, x, nTok, out);
          const wq = new Float32Array(rows * cols);
          const bytes = new Uint8Array(rowBytes(type, cols) * rows);
          for (let r = 0; r < rows; r++) {
            tr.quantize(w, r * cols, cols, bytes, r * rowBytes(type, cols));
          }
          tr.dequantize(bytes, 0, rows * cols, wq, 0);
          const act = new Uint8Array(activationBytes(tr.vecDotType, cols));
          const xq = new Float32Array(cols);
          for (let t = 0; t < nTok; t++) {
            quantizeActivation(tr.vecDotType, x, t * cols, cols, act, 0);
            traitsOf(tr.vecDotType).dequantize(act, 0, cols, xq, 0);
            for (let r = 0; r < rows; r++) {
              let ref = 0, mag = 0;
              for (let c = 0; c < cols; c++) {
                ref += wq[r * cols + c] * xq[c];
                mag += Math.abs(wq[r * cols + c] * xq[c]);
              }
              const got = out[t * rows + r];
              // Q8_1 carries s = f16(d·Σq) with the unrounded d: the min term differs by its f16 rounding
              const tol = tr.vecDotType === GgmlType.Q8_1 ? 2e-3 * mag : 1e-5 * mag;
              assert(Math.abs(got - ref) <= tol + 1e-6, `${tr.name} r${r} t${t}: ${got} vs ${ref}`);
            }
          }
          be.freeSlot(view.slot);
        },
      ),
      { numRuns: 20 },
    );
  }
});

Deno.test("rmsnorm: unit weight gives mean square 1", () => {
  const be = new RefBackend();
  fc.assert(
    fc.property(
      fc.array(fc.float({ min: -100, max: 100, noNaN: true }), { minLength: 1, maxLength: 64 }),
      (v) => {
        const x = Float32Array.from(v);
        if (x.reduce((a, b) => a + b * b, 0) / x.length < 1e-2) return; // eps would dominate
        const y = new Float32Array(x.length);
        be.rmsnorm(x, x.length, 1e-6, null, y);
        const ms = y.reduce((a, b) => a + b * b, 0) / y.length;
        assert(Math.abs(ms - 1) < 1e-3, `mean square ${ms}`);
      },
    ),
  );
});

Deno.test("rope preserves pair norms, is identity at position 0, and NEOX is NORM on permuted dims", () => {
  const be = new RefBackend();
  const hd = 8, heads = 2;
  const x = Float32Array.from({ length: hd * heads }, (_, i) => Math.sin(i + 1));
  const p0 = Int32Array.of(0);
  const y = new Float32Array(x);
  be.rope(y, 1, heads, hd, p0, { mode: 0, nRot: hd, freqBase: 10000, freqScale: 1 });
  assertEquals([...y], [...x]);
  const norm = new Float32Array(x), neox = new Float32Array(hd * heads);
  // neox layout: pair j is (j, j+hd/2); build it from the norm layout (2j, 2j+1)
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < hd / 2; j++) {
      neox[h * hd + j] = x[h * hd + 2 * j];
      neox[h * hd + j + hd / 2] = x[h * hd + 2 * j + 1];
    }
  }
  const pos = Int32Array.of(37);
  be.rope(norm, 1, heads, hd, pos, { mode: 0, nRot: hd, freqBase: 10000, freqScale: 1 });
  be.rope(neox, 1, heads, hd, pos, { mode: 2, nRot: hd, freqBase: 10000, freqScale: 1 });
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < hd / 2; j++) {
      assertEquals(neox[h * hd + j], norm[h * hd + 2 * j]);
      assertEquals(neox[h * hd + j + hd / 2], norm[h * hd + 2 * j + 1]);
      const a = Math.hypot(x[h * hd + 2 * j], x[h * hd + 2 * j + 1]);
      const b = Math.hypot(norm[h * hd + 2 * j], norm[h * hd + 2 * j + 1]);
      assert(Math.abs(a - b) < 1e-5);
    }
  }
});

Deno.test("attention: one position returns V (f16), equal keys average V, GQA maps heads", () => {
  const be = new RefBackend();
  const spec = { layers: 1, nCtx: 4, nKvHeads: 1, headDimK: 4, headDimV: 4 };
  const c = be.createKvCache(spec);
  const p = { nHeads: 2, nKvHeads: 1, headDimK: 4, headDimV: 4, scale: 0.5 };
  const q = new Float32Array(8).fill(0.3);
  const k = new Float32Array([1, 1, 1, 1]);
  const v1 = new Float32Array([0.1, 0.2, 0.3, 0.4]);
  const out = new Float32Array(8);
  be.attention(c, 0, 0, 1, q, k, v1, p, out);
  const h16 = (x: number) => f16ToF32(f32ToF16(x));
  assertEquals([...out], [...v1, ...v1].map(h16));
  const v2 = new Float32Array([0.5, 0.6, 0.7, 0.8]);
  be.attention(c, 0, 1, 1, q, k, v2, p, out);
  for (let i = 0; i < 4; i++) {
    const want = 0.5 * h16(v1[i]) + 0.5 * h16(v2[i]);
    assert(Math.abs(out[i] - want) < 1e-6 && out[i + 4] === out[i]);
  }
  assertThrows(() => be.attention(c, 0, 3, 2, q, k, v2, p, out), BackendError);
});

Deno.test("slots: bad writes, freed slots and bad tokens are typed errors", () => {
  const be = new RefBackend();
  const s = be.allocSlot(16);
  assertThrows(() => be.writeSlot(s, 10, new Uint8Array(8)), BackendError);
  assertThrows(() => be.allocSlot(-1), BackendError);
  const w: WeightView = { slot: s, offset: 0, type: GgmlType.F32, rows: 2, cols: 2 };
  assertThrows(() => be.getRows(w, Int32Array.of(2), new Float32Array(2)), BackendError);
  assertThrows(() => be.matmul(w, new Float32Array(1), 1, new Float32Array(2)), BackendError);
  be.freeSlot(s);
  assertThrows(() => be.matmul(w, new Float32Array(2), 1, new Float32Array(2)), BackendError);
  assert(be.memoryBytes() === 0);
});
