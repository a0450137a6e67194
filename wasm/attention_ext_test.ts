/**
 * `WasmBackend.attentionExt` (per-head sinks and a sliding window, gpt-oss):
 * SIMD and scalar twin against core's composition (core/model/arch/attention.ts,
 * llama.cpp's non-flash `soft_max_ext` with sinks) over prompt chunks and
 * decode steps; without sinks and window it equals `attention` bit for bit;
 * bad extras are typed errors.
 *
 * @module
 */

import { deepEqual, ok, throws } from "node:assert/strict";
import { attentionExt as coreAttentionExt } from "../core/model/arch/attention.ts";
import { BackendError } from "../core/errors.ts";
import type { AttentionExtras, KvCache } from "../core/backend/backend.ts";
import { randomActivations, rng } from "./kernel_test_util.ts";
import { createWasmBackend } from "./backend.ts";
import { sharedMemorySupported } from "./pkg/moe_edge_kernels.ts";

const bits = (a: Float32Array): number[] =>
  Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

Deno.test("attentionExt: sinks and sliding window ≈ core's composition (SIMD and scalar twin), chunks and decode steps", async () => {
  const simd = await createWasmBackend();
  const scalar = await createWasmBackend({ scalar: true });
  try {
    // [heads, kv heads, head dim, window, sinks]
    const cases: [number, number, number, number, boolean][] = [
      [8, 2, 64, 8, true],
      [8, 2, 64, 0, true],
      [6, 3, 32, 5, false],
      [4, 4, 40, 3, true], // head dim not a multiple of 8: the general path
      [16, 4, 64, 128, true],
    ];
    for (const [nh, nkv, hd, window, withSinks] of cases) {
      const r = rng(nh * 100 + hd + window);
      const p = { nHeads: nh, nKvHeads: nkv, headDimK: hd, headDimV: hd, scale: 1 / Math.sqrt(hd) };
      const sinks = withSinks ? randomActivations(r, nh).map((x) => 4 * x) : null;
      const x: AttentionExtras = { sinks, window };
      const spec = { layers: 2, nCtx: 160, nKvHeads: nkv, headDimK: hd, headDimV: hd };
      const bes = [simd, scalar];
      const caches = bes.map((be) => be.createKvCache(spec));
      // core keeps its own f16 rows per cache object: any distinct KvCache serves as its key
      const coreCache: KvCache = simd.createKvCache(spec);
      let pos = 0;
      for (const nTok of [37, 1, 1, 9, 1, 64, 1]) {
        for (let layer = 0; layer < 2; layer++) {
          const q = randomActivations(r, nTok * nh * hd);
          const k = randomActivations(r, nTok * nkv * hd);
          const v = randomActivations(r, nTok * nkv * hd);
          const want = new Float32Array(nTok * nh * hd);
          coreAttentionExt(coreCache, layer, pos, nTok, q, k, v, p, x, want);
          ok(want.every(Number.isFinite));
          let vmax = 0;
          for (const a of v) vmax = Math.max(vmax, Math.abs(a));
          bes.forEach((be, i) => {
            const got = new Float32Array(nTok * nh * hd).fill(Number.NaN);
            be.attentionExt(caches[i], layer, pos, nTok, q, k, v, p, x, got);
            for (let j = 0; j < want.length; j++) {
              // Σ p·|V| ≤ max|V|: relative to the V magnitudes, plus f16 flips of p
              if (!(Math.abs(got[j] - want[j]) <= 2e-3 * Math.max(vmax, 1))) {
                throw new Error(
                  `${
                    i === 0 ? "SIMD" : "scalar"
                  } nh ${nh} window ${window} pos ${pos} +${nTok} [${j}]: ${got[j]} vs core ${
                    want[j]
                  }`,
                );
              }
            }
          });
        }
        pos += nTok;
      }
      simd.freeKvCache(caches[0]);
      scalar.freeKvCache(caches[1]);
      simd.freeKvCache(coreCache);
    }
  } finally {
    simd.dispose();
    scalar.dispose();
  }
});

Deno.test("attentionExt: without sinks or window it is attention, bit for bit; bad extras are BackendErrors", async () => {
  for (const threads of [1, 2]) {
    const be = await createWasmBackend({ threads });
    try {
      const r = rng(5 + threads);
      const p = { nHeads: 8, nKvHeads: 2, headDimK: 64, headDimV: 64, scale: 0.125 };
      const spec = { layers: 1, nCtx: 64, nKvHeads: 2, headDimK: 64, headDimV: 64 };
      const a = be.createKvCache(spec), b = be.createKvCache(spec);
      let pos = 0;
      for (const nTok of [20, 1, 1, 5]) {
        const q = randomActivations(r, nTok * 8 * 64);
        const k = randomActivations(r, nTok * 2 * 64);
        const v = randomActivations(r, nTok * 2 * 64);
        const o1 = new Float32Array(nTok * 8 * 64), o2 = new Float32Array(nTok * 8 * 64);
        be.attention(a, 0, pos, nTok, q, k, v, p, o1);
        be.attentionExt(b, 0, pos, nTok, q, k, v, p, { sinks: null, window: 0 }, o2);
        deepEqual(bits(o2), bits(o1), `threads ${threads} pos ${pos}`);
        pos += nTok;
      }
      const q = new Float32Array(8 * 64),
        k = new Float32Array(2 * 64),
        v = new Float32Array(2 * 64);
      const out = new Float32Array(8 * 64);
      const bad = (x: AttentionExtras) => () => be.attentionExt(b, 0, pos, 1, q, k, v, p, x, out);
      const typed = (e: unknown) => e instanceof BackendError;
      throws(bad({ sinks: new Float32Array(3), window: 0 }), typed);
      throws(bad({ sinks: new Float32Array(8).fill(Number.NaN), window: 0 }), typed);
      throws(bad({ sinks: new Float32Array(8).fill(Infinity), window: 0 }), typed);
      throws(bad({ sinks: null, window: -1 }), typed);
      throws(bad({ sinks: null, window: 1.5 }), typed);
      throws(
        () => be.attentionExt(b, 0, 64, 1, q, k, v, p, { sinks: null, window: 0 }, out),
        typed,
      );
    } finally {
      be.dispose();
    }
  }
});

Deno.test({
  name: "attentionExt split by KV heads over 2 and 4 threads equals 1 thread, bit for bit",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const bes = await Promise.all([1, 2, 4].map((threads) => createWasmBackend({ threads })));
    try {
      for (const [nh, nkv, hd, window] of [[16, 4, 64, 24], [8, 8, 32, 0], [12, 3, 64, 5]]) {
        const r = rng(nh + nkv + window);
        const p = { nHeads: nh, nKvHeads: nkv, headDimK: hd, headDimV: hd, scale: 0.1 };
        const x: AttentionExtras = { sinks: randomActivations(r, nh), window };
        const spec = { layers: 1, nCtx: 128, nKvHeads: nkv, headDimK: hd, headDimV: hd };
        const caches = bes.map((be) => be.createKvCache(spec));
        let pos = 0;
        for (const nTok of [40, 1, 1, 17, 1]) {
          const q = randomActivations(r, nTok * nh * hd);
          const k = randomActivations(r, nTok * nkv * hd);
          const v = randomActivations(r, nTok * nkv * hd);
          const outs = bes.map((be, i) => {
            const o = new Float32Array(nTok * nh * hd).fill(Number.NaN);
            be.attentionExt(caches[i], 0, pos, nTok, q, k, v, p, x, o);
            return o;
          });
          ok(outs[0].every(Number.isFinite));
          for (let i = 1; i < bes.length; i++) {
            deepEqual(bits(outs[i]), bits(outs[0]), `threads ${bes[i].threads} pos ${pos}`);
            deepEqual(
              bits(bes[i].readKv(caches[i], 0, "v", pos + nTok)),
              bits(bes[0].readKv(caches[0], 0, "v", pos + nTok)),
            );
          }
          pos += nTok;
        }
        bes.forEach((be, i) => be.freeKvCache(caches[i]));
      }
    } finally {
      for (const be of bes) be.dispose();
    }
  },
});
