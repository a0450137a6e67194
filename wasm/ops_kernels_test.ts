/**
 * RMSNorm, RoPE, SwiGLU and attention kernels: SIMD vs scalar twin and vs
 * plain TS references of the ggml semantics (docs/specs-llamacpp.md §3-§4), on random shapes
 * with odd sizes and tails.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  bitsOf,
  fromF16,
  KernelHarness,
  randomActivations,
  rng,
  toF16,
} from "./kernel_test_util.ts";
import { RopeTable } from "./rope_table.ts";

const H = await KernelHarness.create();
const f = Math.fround;

function ulpDiff(a: number, b: number): number {
  if (Object.is(a, b)) return 0;
  return Math.abs(bitsOf(a) - bitsOf(b));
}

Deno.test("rmsnorm: SIMD vs scalar (≤1 ulp) vs TS reference (f64 sum), with/without weight", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 77 }),
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.integer(),
      (n, rows, withW, seed) => {
        const r = rng(seed);
        const x = randomActivations(r, n * rows);
        const w = randomActivations(r, n);
        const eps = [1e-5, 1e-6, 0][(seed >>> 0) % 3];
        H.reset();
        const xp = H.putF32(x);
        const wp = withW ? H.putF32(w) : 0;
        const a = H.alloc(4 * n * rows);
        const b = H.alloc(4 * n * rows);
        H.k.rmsnorm(xp, n, rows, eps, wp, a);
        H.k.rmsnorm_scalar(xp, n, rows, eps, wp, b);
        const ga = H.getF32(a, n * rows);
        const gb = H.getF32(b, n * rows);
        for (let ri = 0; ri < rows; ri++) {
          let sum = 0;
          for (let i = 0; i < n; i++) sum += f(x[ri * n + i] * x[ri * n + i]);
          const scale = f(1 / f(Math.sqrt(f(f(sum / n) + f(eps)))));
          for (let i = 0; i < n; i++) {
            const o = ri * n + i;
            let want = f(x[o] * scale);
            if (withW) want = f(want * w[i]);
            if (Number.isNaN(want)) continue; // all-zero row with eps 0
            if (ulpDiff(ga[o], gb[o]) > 1) throw new Error(`twin ${o}: ${ga[o]} vs ${gb[o]}`);
            if (ulpDiff(gb[o], want) > 1) throw new Error(`ref ${o}: ${gb[o]} vs ${want}`);
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("rope NORM/NEOX: SIMD == scalar bit-exact == TS reference, partial rotary passes through", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }).map((h) => 2 * h),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 4 }),
      fc.constantFrom(0 as const, 2 as const),
      fc.integer(),
      (hd, nHeads, nTok, mode, seed) => {
        const r = rng(seed);
        const nRot = 2 * (1 + Math.floor(r() * (hd / 2)));
        const p = {
          mode,
          nRot,
          freqBase: [10000, 1e6, 500000][seed & 1],
          freqScale: r() < 0.5 ? 1 : 0.25,
        };
        const x = randomActivations(r, nTok * nHeads * hd);
        const positions = Int32Array.from({ length: nTok }, () => Math.floor(r() * 5000));
        const table = new RopeTable(p);
        const cs = new Float32Array(nTok * nRot);
        for (let t = 0; t < nTok; t++) table.write(positions[t], cs, t * nRot);
        H.reset();
        const a = H.putF32(x);
        const b = H.putF32(x);
        const cp = H.putF32(cs);
        H.k.rope(a, nTok, nHeads, hd, nRot, mode, cp);
        H.k.rope_scalar(b, nTok, nHeads, hd, nRot, mode, cp);
        const ga = H.getF32(a, x.length);
        const gb = H.getF32(b, x.length);
        const half = nRot / 2;
        for (let t = 0; t < nTok; t++) {
          // Reference angles straight from ggml's loop.
          const ts = f(Math.pow(f(p.freqBase), f(-2 / nRot)));
          let theta = f(positions[t]);
          const cos: number[] = [];
          const sin: number[] = [];
          for (let j = 0; j < half; j++) {
            const th = f(f(p.freqScale) * theta);
            cos.push(f(Math.cos(th)));
            sin.push(f(Math.sin(th)));
            theta = f(theta * ts);
          }
          for (let h = 0; h < nHeads; h++) {
            const o = (t * nHeads + h) * hd;
            const want = x.slice(o, o + hd);
            for (let j = 0; j < half; j++) {
              const [i0, i1] = mode === 0 ? [2 * j, 2 * j + 1] : [j, j + half];
              const x0 = x[o + i0], x1 = x[o + i1];
              want[i0] = f(f(x0 * cos[j]) - f(x1 * sin[j]));
              want[i1] = f(f(x0 * sin[j]) + f(x1 * cos[j]));
            }
            for (let i = 0; i < hd; i++) {
              assertEquals(bitsOf(ga[o + i]), bitsOf(gb[o + i]), `twin t${t} h${h} i${i}`);
              assertEquals(bitsOf(ga[o + i]), bitsOf(want[i]), `ref t${t} h${h} i${i}`);
            }
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("swiglu: SIMD == scalar bit-exact, ≤ 2 ulp from f64-exp reference", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 67 }), fc.integer(), (n, seed) => {
      const r = rng(seed);
      const g = randomActivations(r, n);
      const u = randomActivations(r, n);
      if (n > 3) {
        g[0] = 100;
        g[1] = -100;
        g[2] = -0;
      }
      H.reset();
      const gp = H.putF32(g);
      const up = H.putF32(u);
      const a = H.alloc(4 * n);
      const b = H.alloc(4 * n);
      H.k.swiglu(gp, up, a, n);
      H.k.swiglu_scalar(gp, up, b, n);
      const ga = H.getF32(a, n);
      const gb = H.getF32(b, n);
      for (let i = 0; i < n; i++) {
        assertEquals(bitsOf(ga[i]), bitsOf(gb[i]), `twin ${i}`);
        const want = f(f(g[i] / f(1 + f(Math.exp(-g[i])))) * u[i]);
        if (ulpDiff(ga[i], want) > 2) {
          throw new Error(`swiglu(${g[i]}, ${u[i]}) = ${ga[i]}, want ${want}`);
        }
      }
    }),
    { numRuns: 300 },
  );
});

/** TS reference of llama.cpp's non-FA attention over an f16 cache (f64 dots). */
function refAttention(
  kc: Uint16Array,
  vc: Uint16Array,
  start: number,
  nTok: number,
  q: Float32Array,
  nh: number,
  nkv: number,
  hdk: number,
  hdv: number,
  scale: number,
): Float32Array {
  const out = new Float32Array(nTok * nh * hdv);
  const g = nh / nkv;
  for (let t = 0; t < nTok; t++) {
    const n = start + t + 1;
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / g);
      const s = new Float64Array(n);
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        let d = 0;
        for (let i = 0; i < hdk; i++) {
          d += fromF16(kc[(j * nkv + kvh) * hdk + i]) * fromF16(toF16(q[(t * nh + h) * hdk + i]));
        }
        s[j] = f(f(d) * scale);
        max = Math.max(max, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        s[j] = f(Math.exp(f(s[j] - max)));
        sum += s[j];
      }
      const inv = f(1 / sum);
      for (let j = 0; j < n; j++) s[j] = fromF16(toF16(f(s[j] * inv)));
      for (let d = 0; d < hdv; d++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += s[j] * fromF16(vc[(j * nkv + kvh) * hdv + d]);
        out[(t * nh + h) * hdv + d] = acc;
      }
    }
  }
  return out;
}

Deno.test("attention: SIMD vs scalar vs TS reference; decode and prefill; GQA; cache holds f16(K), f16(V)", () => {
  fc.assert(
    fc.property(
      fc.record({
        nkv: fc.integer({ min: 1, max: 3 }),
        group: fc.constantFrom(1, 2, 4),
        hdk: fc.integer({ min: 1, max: 40 }),
        hdv: fc.integer({ min: 1, max: 40 }),
        nCtx: fc.integer({ min: 1, max: 48 }),
        seed: fc.integer(),
      }),
      ({ nkv, group, hdk, hdv, nCtx, seed }) => {
        const r = rng(seed);
        const nh = nkv * group;
        const scale = 1 / Math.sqrt(hdk);
        H.reset();
        const kcBytes = nCtx * nkv * hdk * 2;
        const vcBytes = nCtx * nkv * hdv * 2;
        const kcA = H.alloc(kcBytes), vcA = H.alloc(vcBytes);
        const kcB = H.alloc(kcBytes), vcB = H.alloc(vcBytes);
        for (const [pp, nb] of [[kcA, kcBytes], [vcA, vcBytes], [kcB, kcBytes], [vcB, vcBytes]]) {
          H.u8().fill(0, pp, pp + nb);
        }
        const sb = H.k.attention_scratch_bytes(nCtx, nh, nkv, hdk, hdv);
        const scr = H.alloc(sb);
        // Fill the context in random chunks: a prefill, then decode steps / small batches.
        let pos = 0;
        while (pos < nCtx) {
          const nTok = Math.min(
            nCtx - pos,
            pos === 0 ? 1 + Math.floor(r() * nCtx) : 1 + Math.floor(r() * 3),
          );
          const q = randomActivations(r, nTok * nh * hdk);
          const k = randomActivations(r, nTok * nkv * hdk);
          const v = randomActivations(r, nTok * nkv * hdv);
          const qp = H.putF32(q), kp = H.putF32(k), vp = H.putF32(v);
          const oa = H.alloc(4 * nTok * nh * hdv), ob = H.alloc(4 * nTok * nh * hdv);
          assertEquals(
            H.k.attention(kcA, vcA, nCtx, pos, nTok, qp, kp, vp, nh, nkv, hdk, hdv, scale, oa, scr),
            0,
          );
          assertEquals(
            H.k.attention_scalar(
              kcB,
              vcB,
              nCtx,
              pos,
              nTok,
              qp,
              kp,
              vp,
              nh,
              nkv,
              hdk,
              hdv,
              scale,
              ob,
              scr,
            ),
            0,
          );
          const kc = H.getU16(kcA, nCtx * nkv * hdk);
          const vc = H.getU16(vcA, nCtx * nkv * hdv);
          assertEquals(kc.join(), H.getU16(kcB, nCtx * nkv * hdk).join(), "K caches");
          for (let i = 0; i < k.length; i++) assertEquals(kc[pos * nkv * hdk + i], toF16(k[i]));
          for (let i = 0; i < v.length; i++) assertEquals(vc[pos * nkv * hdv + i], toF16(v[i]));
          const ga = H.getF32(oa, nTok * nh * hdv);
          const gb = H.getF32(ob, nTok * nh * hdv);
          const want = refAttention(kc, vc, pos, nTok, q, nh, nkv, hdk, hdv, scale);
          for (let i = 0; i < want.length; i++) {
            // Σ p·|V| ≤ max|V|: tolerance relative to the V magnitudes, plus f16 flips of p.
            let vmax = 0;
            for (let j = 0; j < (pos + nTok) * nkv * hdv; j++) {
              vmax = Math.max(vmax, Math.abs(fromF16(vc[j])));
            }
            const tol = 2e-3 * vmax + 1e-30;
            if (!(Math.abs(ga[i] - want[i]) <= tol)) {
              throw new Error(`SIMD ${i}: ${ga[i]} vs ref ${want[i]} (tol ${tol})`);
            }
            if (!(Math.abs(gb[i] - want[i]) <= tol)) {
              throw new Error(`scalar ${i}: ${gb[i]} vs ref ${want[i]}`);
            }
          }
          pos += nTok;
        }
      },
    ),
    { numRuns: 80 },
  );
});

Deno.test("attention at real head sizes and contexts (hd 64/128, GQA 1/4/8, 150 positions): SIMD ≈ reference; an inf or NaN in the cache reaches the same outputs as the scalar twin", () => {
  for (const [hd, group, nkv] of [[64, 4, 2], [128, 1, 3], [128, 8, 1], [80, 2, 2]]) {
    const r = rng(hd * 31 + group);
    const nh = nkv * group, nCtx = 160, pos = 150, nTok = 2;
    const scale = 1 / Math.sqrt(hd);
    for (const poison of [0, 0x7c00, 0xfe00]) {
      H.reset();
      const kc = new Uint16Array(nCtx * nkv * hd), vc = new Uint16Array(nCtx * nkv * hd);
      for (let i = 0; i < pos * nkv * hd; i++) {
        kc[i] = toF16(r() - 0.5);
        vc[i] = toF16(2 * r() - 1);
      }
      // a poisoned V element of KV head 0 at position 37 (inf or NaN), and a K element
      // of the last KV head at position 12
      if (poison !== 0) {
        vc[(37 * nkv + 0) * hd + 5] = poison;
        kc[(12 * nkv + nkv - 1) * hd + 3] = poison;
      }
      const kcA = H.alloc(kc.byteLength), vcA = H.alloc(vc.byteLength);
      const kcB = H.alloc(kc.byteLength), vcB = H.alloc(vc.byteLength);
      for (const p of [kcA, kcB]) new Uint16Array(H.k.memory.buffer, p, kc.length).set(kc);
      for (const p of [vcA, vcB]) new Uint16Array(H.k.memory.buffer, p, vc.length).set(vc);
      const scr = H.alloc(H.k.attention_scratch_bytes(nCtx, nh, nkv, hd, hd));
      const q = randomActivations(r, nTok * nh * hd);
      const k = randomActivations(r, nTok * nkv * hd);
      const v = randomActivations(r, nTok * nkv * hd);
      const qp = H.putF32(q), kp = H.putF32(k), vp = H.putF32(v);
      const oa = H.alloc(4 * nTok * nh * hd), ob = H.alloc(4 * nTok * nh * hd);
      assertEquals(
        H.k.attention(kcA, vcA, nCtx, pos, nTok, qp, kp, vp, nh, nkv, hd, hd, scale, oa, scr),
        0,
      );
      assertEquals(
        H.k.attention_scalar(
          kcB,
          vcB,
          nCtx,
          pos,
          nTok,
          qp,
          kp,
          vp,
          nh,
          nkv,
          hd,
          hd,
          scale,
          ob,
          scr,
        ),
        0,
      );
      const ga = H.getF32(oa, nTok * nh * hd), gb = H.getF32(ob, nTok * nh * hd);
      const kcNow = H.getU16(kcA, kc.length), vcNow = H.getU16(vcA, vc.length);
      const want = refAttention(kcNow, vcNow, pos, nTok, q, nh, nkv, hd, hd, scale);
      let nonFinite = 0;
      for (let i = 0; i < want.length; i++) {
        if (!Number.isFinite(gb[i])) {
          nonFinite++;
          assertEquals(
            Number.isNaN(ga[i]),
            Number.isNaN(gb[i]),
            `hd ${hd} g ${group} poison ${poison} out ${i}: ${ga[i]} vs scalar ${gb[i]}`,
          );
          assertEquals(ga[i], Number.isNaN(gb[i]) ? ga[i] : gb[i], `hd ${hd} g ${group} out ${i}`);
          continue;
        }
        const tol = 2e-3;
        if (!(Math.abs(ga[i] - want[i]) <= tol)) {
          throw new Error(
            `hd ${hd} g ${group} poison ${poison} out ${i}: ${ga[i]} vs ref ${want[i]}`,
          );
        }
      }
      // the poison reaches outputs (every head of its KV head), and only then
      if (poison === 0) assertEquals(nonFinite, 0);
      else if (!(nonFinite > 0)) throw new Error(`hd ${hd} g ${group}: poison ${poison} vanished`);
    }
  }
});

Deno.test("attention: rejects bad shapes with -1", () => {
  H.reset();
  const p = H.alloc(4096);
  assertEquals(H.k.attention(p, p, 4, 3, 2, p, p, p, 2, 1, 4, 4, 1, p, p), -1); // past nCtx
  assertEquals(H.k.attention(p, p, 4, 0, 1, p, p, p, 3, 2, 4, 4, 1, p, p), -1); // 3 % 2 != 0
});
