/**
 * WasmBackend against the reference backend, op by op, plus slot, KV-cache
 * and memory-growth behaviour.
 */
import { equal as assertEquals, throws as assertThrows } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { Backend, WeightView } from "../core/backend/backend.ts";
import { createRefBackend } from "../core/backend/ref_backend.ts";
import { createBackend } from "../core/backend/registry.ts";
import { BackendError } from "../core/errors.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { traitsOf } from "../core/tensor/traits.ts";
import { bitsOf, FORMATS, randomActivations, randomWeights, rng } from "./kernel_test_util.ts";
import { createWasmBackend, type WasmBackend } from "./mod.ts";

/** Matmul tolerance relative to Σ|w·x| (only f32 summation order differs). */
const MATMUL_REL_TOL = 1e-5;
/** Attention tolerance relative to max|V| (f16 rounding of p may flip by one ulp). */
const ATTN_REL_TOL = 2e-3;

const wasm = await createWasmBackend();
const wasmScalar = await createWasmBackend({ scalar: true });
const ref = createRefBackend();

function upload(be: Backend, bytes: Uint8Array, pad: number): WeightView["slot"] {
  const s = be.allocSlot(bytes.length + pad);
  be.writeSlot(s, pad, bytes);
  return s;
}

Deno.test("WasmBackend.matmul == RefBackend.matmul for every format (decode and prefill)", () => {
  for (const f of FORMATS) {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: f.blk === 1 ? 50 : f.blk === 32 ? 6 : 2 }),
        fc.constantFrom(1, 2, 7, 19),
        fc.integer(),
        (rows, blocks, nTok, seed) => {
          const cols = blocks * f.blk;
          const r = rng(seed);
          const w = randomWeights(r, f.type, rows, cols);
          const x = new Float32Array(nTok * cols);
          for (let t = 0; t < nTok; t++) x.set(randomActivations(r, cols), t * cols);
          const pad = 64 * (seed & 3) + 2 * (seed & 1); // unaligned offsets inside the slot too
          const outs: Float32Array[] = [];
          for (const be of [wasm, wasmScalar, ref]) {
            const slot = upload(be, w, pad);
            const out = new Float32Array(nTok * rows);
            be.matmul({ slot, offset: pad, type: f.type, rows, cols }, x, nTok, out);
            be.freeSlot(slot);
            outs.push(out);
          }
          const deq = new Float32Array(rows * cols);
          const tr = traitsOf(f.type);
          tr.dequantize(w, 0, rows * cols, deq, 0);
          for (let t = 0; t < nTok; t++) {
            for (let i = 0; i < rows; i++) {
              let mag = 0;
              for (let j = 0; j < cols; j++) mag += Math.abs(deq[i * cols + j] * x[t * cols + j]);
              const tol = MATMUL_REL_TOL * 1.1 * mag + 1e-30;
              const o = t * rows + i;
              for (const got of [outs[0], outs[1]]) {
                if (!(Math.abs(got[o] - outs[2][o]) <= tol)) {
                  throw new Error(
                    `${f.name} ${rows}x${cols} nTok ${nTok} [${t},${i}]: ${got[o]} vs ref ${
                      outs[2][o]
                    }`,
                  );
                }
              }
            }
          }
        },
      ),
      { numRuns: 15 },
    );
  }
});

Deno.test("WasmBackend.getRows == RefBackend.getRows bit-for-bit", () => {
  for (const f of FORMATS) {
    const rows = 5, cols = f.blk === 1 ? 37 : 2 * f.blk;
    const w = randomWeights(rng(f.type), f.type, rows, cols);
    const ids = new Int32Array([4, 0, 2, 2]);
    const outs = [wasm, ref].map((be) => {
      const slot = upload(be, w, 0);
      const out = new Float32Array(ids.length * cols);
      be.getRows({ slot, offset: 0, type: f.type, rows, cols }, ids, out);
      be.freeSlot(slot);
      return out;
    });
    assertEquals(
      new Uint32Array(outs[0].buffer).join(),
      new Uint32Array(outs[1].buffer).join(),
      f.name,
    );
  }
});

Deno.test("WasmBackend rmsnorm / rope / swiglu match RefBackend", () => {
  const r = rng(99);
  for (const n of [1, 7, 64, 129]) {
    const x = randomActivations(r, 3 * n);
    const w = randomActivations(r, n);
    for (const weight of [w, null]) {
      const a = new Float32Array(3 * n), b = new Float32Array(3 * n);
      wasm.rmsnorm(x, n, 1e-6, weight, a);
      ref.rmsnorm(x, n, 1e-6, weight, b);
      for (let i = 0; i < a.length; i++) {
        if (Math.abs(bitsOf(a[i]) - bitsOf(b[i])) > 1) {
          throw new Error(`rmsnorm n=${n} ${i}: ${a[i]} vs ${b[i]}`);
        }
      }
    }
    const g = randomActivations(r, n), u = randomActivations(r, n);
    const a = new Float32Array(n), b = new Float32Array(n);
    wasm.swiglu(g, u, a);
    ref.swiglu(g, u, b);
    for (let i = 0; i < n; i++) {
      if (Math.abs(bitsOf(a[i]) - bitsOf(b[i])) > 2) {
        throw new Error(`swiglu ${i}: ${a[i]} vs ${b[i]}`);
      }
    }
  }
  for (const mode of [0, 2] as const) {
    for (const [hd, nRot] of [[64, 64], [40, 16], [6, 2]]) {
      const nTok = 3, nHeads = 2;
      const x = randomActivations(r, nTok * nHeads * hd);
      const pos = new Int32Array([0, 17, 4095]);
      const p = { mode, nRot, freqBase: 10000, freqScale: 1 };
      const a = x.slice(), b = x.slice();
      wasm.rope(a, nTok, nHeads, hd, pos, p);
      ref.rope(b, nTok, nHeads, hd, pos, p);
      assertEquals(
        new Uint32Array(a.buffer).join(),
        new Uint32Array(b.buffer).join(),
        `rope mode ${mode} hd ${hd}`,
      );
    }
  }
});

Deno.test("WasmBackend.attention == RefBackend.attention over a prefill + decode sequence (GQA, 2 layers)", () => {
  const spec = { layers: 2, nCtx: 40, nKvHeads: 2, headDimK: 24, headDimV: 20 };
  const p = { nHeads: 6, nKvHeads: 2, headDimK: 24, headDimV: 20, scale: 1 / Math.sqrt(24) };
  const caches = [wasm, wasmScalar, ref].map((be) => be.createKvCache(spec));
  const r = rng(5);
  let pos = 0;
  for (const nTok of [9, 1, 1, 3, 1, 1]) {
    for (let layer = 0; layer < 2; layer++) {
      const q = randomActivations(r, nTok * p.nHeads * p.headDimK);
      const k = randomActivations(r, nTok * p.nKvHeads * p.headDimK);
      const v = randomActivations(r, nTok * p.nKvHeads * p.headDimV);
      const outs = [wasm, wasmScalar, ref].map((be, i) => {
        const out = new Float32Array(nTok * p.nHeads * p.headDimV);
        be.attention(caches[i], layer, pos, nTok, q, k, v, p, out);
        return out;
      });
      const vAll = wasm.readKv(caches[0], layer, "v", pos + nTok);
      const vmax = vAll.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      for (let i = 0; i < outs[2].length; i++) {
        for (const got of [outs[0], outs[1]]) {
          if (!(Math.abs(got[i] - outs[2][i]) <= ATTN_REL_TOL * vmax)) {
            throw new Error(
              `attention pos ${pos} layer ${layer} ${i}: ${got[i]} vs ref ${outs[2][i]}`,
            );
          }
        }
      }
    }
    pos += nTok;
  }
  wasm.freeKvCache(caches[0]);
  wasmScalar.freeKvCache(caches[1]);
  ref.freeKvCache(caches[2]);
});

Deno.test("WasmBackend: slots survive memory growth; views are re-acquired", async () => {
  const be = await createWasmBackend();
  const rows = 4, cols = 64;
  const w = randomWeights(rng(1), GgmlType.Q8_0, rows, cols);
  const slot = upload(be, w, 0);
  const view = { slot, offset: 0, type: GgmlType.Q8_0, rows, cols };
  const x = randomActivations(rng(2), cols);
  const before = new Float32Array(rows);
  be.matmul(view, x, 1, before);
  const m0 = be.memoryBytes();
  const big = be.allocSlot(64 << 20); // forces growth
  assertEquals(be.memoryBytes() > m0, true);
  const after = new Float32Array(rows);
  be.matmul(view, x, 1, after);
  assertEquals(after.join(), before.join());
  be.freeSlot(big);
  be.dispose();
  assertThrows(
    () => be.matmul(view, x, 1, after),
    (e: unknown) => e instanceof BackendError && e.code === "disposed",
  );
});

Deno.test("WasmBackend: errors name the problem (range, freed slot, bad shape, cap, unsupported type)", async () => {
  const be: WasmBackend = await createWasmBackend({ maxMemoryBytes: 32 << 20 });
  const s = be.allocSlot(100);
  assertThrows(
    () => be.writeSlot(s, 90, new Uint8Array(20)),
    (e: unknown) => e instanceof BackendError && e.code === "out_of_range",
  );
  const view = { slot: s, offset: 0, type: GgmlType.Q8_0, rows: 3, cols: 32 };
  assertThrows(() => be.matmul(view, new Float32Array(32), 1, new Float32Array(3)), /exceeds slot/);
  assertThrows(
    () => be.matmul({ ...view, rows: 1, cols: 48 }, new Float32Array(48), 1, new Float32Array(1)),
    /whole number of Q8_0 blocks/,
  );
  assertThrows(
    () =>
      be.matmul(
        { ...view, type: GgmlType.Q8_K, rows: 0, cols: 256 },
        new Float32Array(256),
        1,
        new Float32Array(0),
      ),
    (e: unknown) => e instanceof BackendError && e.code === "unsupported_type",
  );
  assertThrows(
    () => be.allocSlot(64 << 20),
    (e: unknown) => e instanceof BackendError && e.code === "out_of_memory",
  );
  be.freeSlot(s);
  assertThrows(
    () => be.freeSlot(s),
    (e: unknown) => e instanceof BackendError && e.code === "bad_slot",
  );
  assertEquals(be.supportsOp("matmul", GgmlType.Q6_K), true);
  assertEquals(be.supportsOp("matmul", GgmlType.Q2_K), true);
  assertEquals(be.supportsOp("matmul", GgmlType.MXFP4), true);
  assertEquals(be.supportsOp("matmul", GgmlType.Q8_K), false);
  assertEquals(be.supportsOp("attention"), true);
  be.dispose();
});

Deno.test("WasmBackend.ffnSwiglu == matmul → swiglu → matmul, bit for bit (mixed types, SIMD and scalar)", () => {
  const nEmbd = 256, nFf = 512;
  for (const be of [wasm, wasmScalar]) checkFfn(be, nEmbd, nFf);
});

function checkFfn(be: WasmBackend, nEmbd: number, nFf: number): void {
  for (
    const [tg, td] of [[GgmlType.Q8_0, GgmlType.Q8_0], [GgmlType.Q4_K, GgmlType.Q6_K], [
      GgmlType.F16,
      GgmlType.Q4_0,
    ]]
  ) {
    for (const nTok of [1, 5]) {
      const r = rng(tg * 100 + td + nTok);
      const views = [[tg, nFf, nEmbd], [tg, nFf, nEmbd], [td, nEmbd, nFf]].map(
        ([type, rows, cols]) => {
          const w = randomWeights(r, type as GgmlType, rows, cols);
          return { slot: upload(be, w, 0), offset: 0, type: type as GgmlType, rows, cols };
        },
      );
      const x = new Float32Array(nTok * nEmbd);
      for (let t = 0; t < nTok; t++) x.set(randomActivations(r, nEmbd), t * nEmbd);
      const fused = new Float32Array(nTok * nEmbd);
      be.ffnSwiglu(views[0], views[1], views[2], x, nTok, fused);
      const g = new Float32Array(nTok * nFf), u = new Float32Array(nTok * nFf);
      be.matmul(views[0], x, nTok, g);
      be.matmul(views[1], x, nTok, u);
      be.swiglu(g, u, g);
      const want = new Float32Array(nTok * nEmbd);
      be.matmul(views[2], g, nTok, want);
      assertEquals(new Uint32Array(fused.buffer).join(), new Uint32Array(want.buffer).join());
      for (const v of views) be.freeSlot(v.slot);
    }
  }
}

Deno.test("registry: importing wasm/mod.ts registers 'wasm' and auto picks it", async () => {
  const be = await createBackend("auto");
  assertEquals(be.name, "wasm");
  be.dispose();
});
