/**
 * WebGPU attention over its f16 KV cache against the reference backend:
 * random GQA shapes with odd head dims (padded cache rows), prefill then
 * decode steps across several layers, score chunking, and errors.
 */
import { throws as assertThrows } from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { Backend, KvCache } from "../core/backend/backend.ts";
import { createRefBackend } from "../core/backend/ref_backend.ts";
import { BackendError } from "../core/errors.ts";
import { assertClose, openGpu, randomActivations, rng } from "./gpu_test_util.ts";

/**
 * Attention, relative to max|V|: Q/K/V are rounded to f16 identically, but a
 * probability can land on the other side of an f16 rounding boundary (2^-11
 * relative) — the bound the WASM backend uses too.
 */
const ATTN_FLIP_TOL = 2e-3;
/**
 * Plus this much per unit of the largest possible score `dk·max|q|·max|k|·scale`:
 * the GPU sums q·k in ggml's `vec_dot_f16` order (f32 lanes) where the
 * reference sums in double, and exp() turns an absolute score difference of
 * ~2^-24·Σ|q·k| into that relative change of the probabilities.
 */
const ATTN_SCORE_TOL = 1e-6;
/** fast-check runs (each is a whole prefill + decode sequence). */
const RUNS = 12;

const gpu = await openGpu();
const ref = createRefBackend();
const skip = gpu === null;

interface Shape {
  nHeads: number;
  nKvHeads: number;
  headDimK: number;
  headDimV: number;
  layers: number;
  steps: number[];
}

function runSequence(be: Backend, caches: KvCache, s: Shape, seed: number): Float32Array[] {
  const r = rng(seed);
  const p = { ...s, scale: 1 / Math.sqrt(s.headDimK) };
  const outs: Float32Array[] = [];
  let pos = 0;
  for (const nTok of s.steps) {
    for (let layer = 0; layer < s.layers; layer++) {
      const q = randomActivations(r, nTok * s.nHeads * s.headDimK);
      const k = randomActivations(r, nTok * s.nKvHeads * s.headDimK);
      const v = randomActivations(r, nTok * s.nKvHeads * s.headDimV);
      const out = new Float32Array(nTok * s.nHeads * s.headDimV);
      be.attention(caches, layer, pos, nTok, q, k, v, p, out);
      outs.push(out, v, q, k);
    }
    pos += nTok;
  }
  return outs;
}

function check(s: Shape, seed: number, be = gpu!): void {
  const nCtx = s.steps.reduce((a, b) => a + b, 0) + 1;
  const spec = {
    layers: s.layers,
    nCtx,
    nKvHeads: s.nKvHeads,
    headDimK: s.headDimK,
    headDimV: s.headDimV,
  };
  const cg = be.createKvCache(spec), cr = ref.createKvCache(spec);
  try {
    const a = runSequence(be, cg, s, seed), b = runSequence(ref, cr, s, seed);
    // cached K/V persist across calls: their bounds only grow
    let vmax = 0, kmax = 0;
    const absMax = (m: number, x: Float32Array) => x.reduce((a, v) => Math.max(a, Math.abs(v)), m);
    for (let i = 0; i < a.length; i += 4) {
      vmax = absMax(vmax, a[i + 1]);
      kmax = absMax(kmax, a[i + 3]);
      const sMax = (s.headDimK * absMax(0, a[i + 2]) * kmax) / Math.sqrt(s.headDimK);
      const tol = vmax * (ATTN_FLIP_TOL + ATTN_SCORE_TOL * sMax);
      assertClose(`attention ${JSON.stringify(s)} call ${i / 4}`, a[i], b[i], () => tol);
    }
  } finally {
    be.freeKvCache(cg);
    ref.freeKvCache(cr);
  }
}

Deno.test({
  name:
    "webgpu attention == ref within max|V|·(ATTN_FLIP_TOL + ATTN_SCORE_TOL·max score) (GQA, odd dims, prefill + decode)",
  ignore: skip,
  fn() {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 33 }),
        fc.integer({ min: 1, max: 33 }),
        fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 4 }),
        fc.integer(),
        (nKvHeads, group, headDimK, headDimV, steps, seed) =>
          check({ nHeads: nKvHeads * group, nKvHeads, headDimK, headDimV, layers: 2, steps }, seed),
      ),
      { numRuns: RUNS },
    );
  },
});

Deno.test({
  name:
    "webgpu attention: a long prefill (> 64 keys per workgroup lane) and scores split into token chunks",
  ignore: skip,
  async fn() {
    check({ nHeads: 4, nKvHeads: 2, headDimK: 16, headDimV: 8, layers: 1, steps: [150, 1, 2] }, 1);
    // scores take 688 B per token: a 12 KiB binding splits the 40-token prefill into 3 dispatches
    const small = (await openGpu({ maxBindingBytes: 12288 }))!;
    try {
      check(
        { nHeads: 4, nKvHeads: 2, headDimK: 16, headDimV: 8, layers: 1, steps: [40, 3] },
        2,
        small,
      );
    } finally {
      small.dispose();
    }
  },
});

Deno.test({
  name: "webgpu attention errors: context_full, freed cache, shape mismatch",
  ignore: skip,
  fn() {
    const spec = { layers: 1, nCtx: 4, nKvHeads: 1, headDimK: 4, headDimV: 4 };
    const p = { nHeads: 2, nKvHeads: 1, headDimK: 4, headDimV: 4, scale: 0.5 };
    const c = gpu!.createKvCache(spec);
    const q = new Float32Array(5 * 8), kv = new Float32Array(5 * 4), out = new Float32Array(5 * 8);
    const code = (c: string) => (e: unknown) => e instanceof BackendError && e.code === c;
    assertThrows(() => gpu!.attention(c, 0, 2, 3, q, kv, kv, p, out), code("context_full"));
    assertThrows(() => gpu!.attention(c, 1, 0, 1, q, kv, kv, p, out), code("bad_shape"));
    assertThrows(
      () => gpu!.attention(c, 0, 0, 1, q, kv, kv, { ...p, headDimK: 2 }, out),
      code("bad_shape"),
    );
    gpu!.freeKvCache(c);
    assertThrows(() => gpu!.attention(c, 0, 0, 1, q, kv, kv, p, out), code("bad_cache"));
  },
});
