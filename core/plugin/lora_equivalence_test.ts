/**
 * Equivalences between the LoRA-expert methods, as fast-check properties
 * over random shapes: SMoRA with every rank active is plain LoRA; MoLA with
 * one expert and k=1 is plain LoRA; SMoRA gating rank blocks of size r is a
 * MoE of rank-r LoRA experts; merged weights equal the unmerged update.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { addLoraDelta, type LoraPair, mergeLora, mergeLoraBytes } from "../../mod.ts";
import { addMixDelta, type LoraMix, mixRoute } from "../../plugins/mola/mod.ts";
import { addSmoraDelta, type SmoraModule, smoraRoute } from "../../plugins/smora/mod.ts";
import { gaussian } from "./plugin_test_util.ts";

const RUNS = { numRuns: 100 };

interface Case {
  dIn: number;
  dOut: number;
  rank: number;
  n: number;
  seed: number;
  alpha: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  dIn: fc.integer({ min: 1, max: 24 }),
  dOut: fc.integer({ min: 1, max: 24 }),
  rank: fc.integer({ min: 1, max: 8 }),
  n: fc.integer({ min: 1, max: 4 }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  alpha: fc.double({ min: 0.25, max: 32, noNaN: true }),
});

function close(a: Float32Array, b: Float32Array, tol = 2e-5): void {
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `[${i}] ${a[i]} vs ${b[i]}`);
  }
}

function pair(g: ReturnType<typeof gaussian>, c: Case, rank = c.rank): LoraPair {
  return { rank, dIn: c.dIn, dOut: c.dOut, a: g(rank * c.dIn), b: g(c.dOut * rank) };
}

function lora(p: LoraPair, scale: number, x: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * p.dOut);
  addLoraDelta(p, scale, x, n, out);
  return out;
}

Deno.test("equivalence: SMoRA with all ranks active (one gate block) == plain LoRA with alpha/r", () => {
  fc.assert(
    fc.property(caseArb, fc.double({ min: 0, max: 2, noNaN: true }), (c, b) => {
      const g = gaussian(c.seed);
      const p = pair(g, c);
      const x = g(c.n * c.dIn);
      const m: SmoraModule = {
        layer: 0,
        proj: "attn_q",
        rank: c.rank,
        dIn: c.dIn,
        dOut: c.dOut,
        a: p.a,
        b: p.b,
        router: g(c.dIn),
        partition: c.rank,
        bias: new Float32Array(c.rank).fill(b),
        k: c.rank,
        alpha: c.alpha,
      };
      const out = new Float32Array(c.n * c.dOut);
      addSmoraDelta(m, x, c.n, out);
      close(out, lora(p, c.alpha / c.rank, x, c.n));
    }),
    RUNS,
  );
});

Deno.test("equivalence: MoLA with one expert and k=1 == plain LoRA", () => {
  fc.assert(
    fc.property(caseArb, (c) => {
      const g = gaussian(c.seed);
      const p = pair(g, c);
      const x = g(c.n * c.dIn);
      const s = c.alpha / c.rank;
      const mix: LoraMix = {
        dIn: c.dIn,
        dOut: c.dOut,
        router: g(c.dIn),
        experts: [p],
        topK: 1,
        scale: s,
      };
      const out = new Float32Array(c.n * c.dOut);
      addMixDelta(mix, x, c.n, out);
      close(out, lora(p, s, x, c.n));
    }),
    RUNS,
  );
});

Deno.test("equivalence: SMoRA gating rank blocks of size r == a MoE of rank-r LoRA experts", () => {
  fc.assert(
    fc.property(
      caseArb,
      fc.integer({ min: 2, max: 6 }),
      fc.integer({ min: 1, max: 6 }),
      (c, experts, kb) => {
        const m = Math.min(kb, experts);
        const g = gaussian(c.seed);
        const r = c.rank, R = r * experts;
        const big = pair(g, c, R);
        const x = g(c.n * c.dIn);
        const router = g(experts * c.dIn, 2);
        const blockBias = g(experts, 0.1);
        const smora: SmoraModule = {
          layer: 0,
          proj: "attn_q",
          rank: R,
          dIn: c.dIn,
          dOut: c.dOut,
          a: big.a,
          b: big.b,
          router,
          partition: r,
          bias: Float32Array.from({ length: R }, (_, i) => blockBias[Math.floor(i / r)]),
          k: m * r,
          alpha: c.alpha,
        };
        // expert e = ranks [e·r, (e+1)·r): rows of A, columns of B
        const ex: LoraPair[] = Array.from({ length: experts }, (_, e) => ({
          rank: r,
          dIn: c.dIn,
          dOut: c.dOut,
          a: big.a.slice(e * r * c.dIn, (e + 1) * r * c.dIn),
          b: Float32Array.from(
            { length: c.dOut * r },
            (_, i) => big.b[Math.floor(i / r) * R + e * r + (i % r)],
          ),
        }));
        const mix: LoraMix = {
          dIn: c.dIn,
          dOut: c.dOut,
          router,
          experts: ex,
          topK: m,
          scale: c.alpha / r,
          gating: "sigmoid",
          bias: blockBias,
        };
        for (let t = 0; t < c.n; t++) {
          const ranks = [...smoraRoute(smora, x, t * c.dIn).ranks].map((i) => Math.floor(i / r));
          const blocks = [...mixRoute(mix, x, t * c.dIn).experts];
          assert.deepEqual([...new Set(ranks)].sort(), [...blocks].sort(), "same experts chosen");
        }
        const a = new Float32Array(c.n * c.dOut), b = new Float32Array(c.n * c.dOut);
        addSmoraDelta(smora, x, c.n, a);
        addMixDelta(mix, x, c.n, b);
        close(a, b, 1e-4);
      },
    ),
    RUNS,
  );
});

/** `W·x` for a `[dOut][dIn]` f32 matrix. */
function matvec(w: Float32Array, c: Case, x: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * c.dOut);
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < c.dOut; r++) {
      let s = 0;
      for (let i = 0; i < c.dIn; i++) s += w[r * c.dIn + i] * x[t * c.dIn + i];
      out[t * c.dOut + r] = s;
    }
  }
  return out;
}

Deno.test("equivalence: merged weights == unmerged update (LoRA, and per token for MoLA and SMoRA)", () => {
  fc.assert(
    fc.property(caseArb, fc.integer({ min: 1, max: 4 }), (c, e) => {
      const g = gaussian(c.seed);
      const w0 = g(c.dOut * c.dIn);
      const x = g(c.n * c.dIn);
      const s = c.alpha / c.rank;
      const p = pair(g, c);
      // plain LoRA, both in f32 arrays and through GGUF F32 bytes
      const unmerged = matvec(w0, c, x, c.n);
      addLoraDelta(p, s, x, c.n, unmerged);
      const merged = mergeLora(w0.slice(), p, s);
      close(matvec(merged, c, x, c.n), unmerged, 1e-4);
      const bytes = mergeLoraBytes(
        { name: "w", type: 0, dims: [c.dIn, c.dOut] },
        new Uint8Array(w0.slice().buffer),
        p,
        s,
      );
      assert.deepEqual(new Float32Array(bytes.buffer), merged);
      // MoLA and SMoRA: merge the token's routed experts / ranks, then one matvec
      const mix: LoraMix = {
        dIn: c.dIn,
        dOut: c.dOut,
        router: g(e * c.dIn),
        experts: Array.from({ length: e }, () => pair(g, c)),
        topK: Math.min(2, e),
        scale: s,
      };
      const sm: SmoraModule = {
        layer: 0,
        proj: "attn_q",
        rank: c.rank,
        dIn: c.dIn,
        dOut: c.dOut,
        a: p.a,
        b: p.b,
        router: g(c.rank * c.dIn),
        partition: 1,
        bias: g(c.rank, 0.1),
        k: Math.max(1, c.rank >> 1),
        alpha: c.alpha,
      };
      for (let t = 0; t < c.n; t++) {
        const xt = x.subarray(t * c.dIn, (t + 1) * c.dIn);
        const um = matvec(w0, c, xt, 1), us = matvec(w0, c, xt, 1);
        addMixDelta(mix, xt, 1, um);
        addSmoraDelta(sm, xt, 1, us);
        const wm = w0.slice(), ws = w0.slice();
        const route = mixRoute(mix, xt, 0);
        route.experts.forEach((ex, j) => mergeLora(wm, mix.experts[ex], route.weights[j] * s));
        const { ranks, gates } = smoraRoute(sm, xt, 0);
        ranks.forEach((i, j) => {
          const one: LoraPair = {
            rank: 1,
            dIn: c.dIn,
            dOut: c.dOut,
            a: p.a.slice(i * c.dIn, (i + 1) * c.dIn),
            b: Float32Array.from({ length: c.dOut }, (_, r) => p.b[r * c.rank + i]),
          };
          mergeLora(ws, one, c.alpha * gates[j]);
        });
        close(matvec(wm, c, xt, 1), um, 1e-4);
        close(matvec(ws, c, xt, 1), us, 1e-4);
      }
    }),
    RUNS,
  );
});
