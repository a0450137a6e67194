/**
 * `Transformer.forwardBatch` (continuous batching) against `forward` on each sequence alone:
 * sequences join and leave, prefill chunks and decode tokens mix in one batch, each attends only
 * to its own cache. On the reference backend the logits are identical bit for bit; on WASM the
 * multi-row matmul tiles may sum in another order than matvec, within {@link WASM_TOL}.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import type { KvCache } from "../backend/backend.ts";
import { ModelError } from "../errors.ts";
import { loadModel, loadResidentStore, type Model } from "../model/model.ts";
import type { ExpertStore } from "../store/expert_store.ts";
import { synthesizeModel, type SyntheticModelSpec } from "../model/synthetic.ts";
import type { ArchSpec } from "../model/arch/types.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import "../../wasm/register.ts";

/**
 * Largest |Δlogit| between a batched row and the same row alone on the WASM backend, relative
 * to the row's largest |logit|, for F32 weights (measured worst 2.3e-4 on qwen3moe, ≤ 5e-7 on the
 * others; see docs/batching.md). Quantized weights: 0 (integer block sums, exact).
 */
export const WASM_TOL = 1e-3;

/** One sequence of a schedule: its chunks (prompt chunks, then decode tokens), joining at `join`. */
interface Plan {
  join: number;
  prompt: number[];
  chunk: number;
  decode: number;
}

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i;
  return b;
}

function newCache(m: Model, nCtx: number): KvCache {
  const hp = m.hp;
  return m.backend.createKvCache({
    layers: hp.nLayer,
    nCtx,
    nKvHeads: hp.nHeadKv,
    headDimK: hp.headDimK,
    headDimV: hp.headDimV,
  });
}

/**
 * Run `plans` alone (greedy, recording each chunk's tokens and last-row logits), then batched
 * step by step with the same chunks; return the largest |Δlogit| / max|logit| over all rows.
 */
async function compare(m: Model, plans: readonly Plan[]): Promise<number> {
  const nVocab = m.hp.nVocab;
  const tf = m.transformer;
  const chunks: Int32Array[][] = [];
  const want: Float32Array[][] = [];
  for (const p of plans) {
    const cache = newCache(m, p.prompt.length + p.decode + 1);
    const cs: Int32Array[] = [];
    const ls: Float32Array[] = [];
    let pos = 0;
    for (let i = 0; i < p.prompt.length; i += p.chunk) {
      cs.push(Int32Array.from(p.prompt.slice(i, i + p.chunk)));
    }
    for (let k = 0; k <= p.decode; k++) {
      if (k > 0) cs.push(Int32Array.of(argmax(ls[ls.length - 1])));
      while (ls.length < cs.length) {
        const c = cs[ls.length];
        const lg = new Float32Array(nVocab);
        await tf.forward(cache, c, pos, lg);
        pos += c.length;
        ls.push(lg);
      }
    }
    m.backend.freeKvCache(cache);
    chunks.push(cs);
    want.push(ls);
  }
  const caches = plans.map((p) => newCache(m, p.prompt.length + p.decode + 1));
  const pos = plans.map(() => 0);
  const steps = Math.max(...plans.map((p, i) => p.join + chunks[i].length));
  let worst = 0;
  try {
    for (let s = 0; s < steps; s++) {
      const live = plans.map((_, i) => i).filter((i) =>
        s >= plans[i].join && s - plans[i].join < chunks[i].length
      );
      if (live.length === 0) continue;
      const logits = new Float32Array(live.length * nVocab);
      await tf.forwardBatch(
        live.map((i) => ({
          cache: caches[i],
          tokens: chunks[i][s - plans[i].join],
          startPos: pos[i],
        })),
        logits,
      );
      live.forEach((i, j) => {
        const ref = want[i][s - plans[i].join];
        let scale = 0, d = 0;
        for (let v = 0; v < nVocab; v++) {
          scale = Math.max(scale, Math.abs(ref[v]));
          d = Math.max(d, Math.abs(ref[v] - logits[j * nVocab + v]));
        }
        assert.ok(Number.isFinite(d), `sequence ${i} step ${s}: non-finite logits`);
        worst = Math.max(worst, d / Math.max(scale, 1e-6));
        pos[i] += chunks[i][s - plans[i].join].length;
      });
    }
  } finally {
    for (const c of caches) m.backend.freeKvCache(c);
  }
  return worst;
}

const planArb = (nVocab: number): fc.Arbitrary<Plan[]> =>
  fc.array(
    fc.record({
      join: fc.integer({ min: 0, max: 3 }),
      prompt: fc.array(fc.integer({ min: 0, max: nVocab - 1 }), { minLength: 1, maxLength: 7 }),
      chunk: fc.integer({ min: 1, max: 4 }),
      decode: fc.integer({ min: 0, max: 4 }),
    }),
    { minLength: 1, maxLength: 5 },
  );

const CASES: { name: string; spec: SyntheticModelSpec }[] = [
  { name: "llama F32", spec: { arch: "llama", type: GgmlType.F32 } },
  { name: "llama Q4_0", spec: { arch: "llama", type: GgmlType.Q4_0, embdType: GgmlType.Q8_0 } },
  {
    name: "qwen2moe Q8_0 (shared expert, biases)",
    spec: { arch: "qwen2moe", type: GgmlType.Q8_0, qkvBias: true },
  },
  { name: "qwen3moe F32 (per-head Q/K norm)", spec: { arch: "qwen3moe", type: GgmlType.F32 } },
  { name: "olmoe Q8_0", spec: { arch: "olmoe", type: GgmlType.Q8_0 } },
  { name: "granitemoe F32 (scales)", spec: { arch: "granitemoe", type: GgmlType.F32 } },
  { name: "deepseek2 F32 (MLA)", spec: { arch: "deepseek2", type: GgmlType.F32 } },
  { name: "gpt-oss Q8_0 (sinks, window)", spec: { arch: "gpt-oss", type: GgmlType.Q8_0 } },
  {
    name: "ernie4_5-moe F32 (dense lead, exp_probs_b, shared expert)",
    spec: { arch: "ernie4_5-moe", type: GgmlType.F32 },
  },
  {
    name: "bailingmoe2 Q8_0 (fused QKV, partial rotary, NextN)",
    spec: { arch: "bailingmoe2", type: GgmlType.Q8_0 },
  },
];

for (const c of CASES) {
  Deno.test(`forwardBatch ${c.name}: ref backend rows equal forward alone exactly`, async () => {
    const m = await loadModel(synthesizeModel({ ...c.spec, seed: 3 }), { backend: "ref" });
    try {
      await fc.assert(
        fc.asyncProperty(planArb(m.hp.nVocab), async (plans) => {
          assert.equal(await compare(m, plans), 0);
        }),
        { numRuns: 6, seed: 11 },
      );
    } finally {
      m.dispose();
    }
  });
}

Deno.test("forwardBatch WASM: quantized rows equal forward alone exactly, F32 within WASM_TOL", async () => {
  let worst = 0;
  for (const c of CASES) {
    const m = await loadModel(synthesizeModel({ ...c.spec, seed: 5 }), { backend: "wasm" });
    let perCase = 0;
    try {
      await fc.assert(
        fc.asyncProperty(planArb(m.hp.nVocab), async (plans) => {
          const d = await compare(m, plans);
          worst = Math.max(worst, d);
          perCase = Math.max(perCase, d);
          const tol = c.spec.type === GgmlType.F32 ? WASM_TOL : 0;
          assert.ok(d <= tol, `${c.name}: relative |Δlogit| ${d} > ${tol}`);
        }),
        { numRuns: 4, seed: 13 },
      );
      console.log(`  ${c.name}: worst relative |Δlogit| ${perCase.toExponential(2)}`);
    } finally {
      m.dispose();
    }
  }
  console.log(`forwardBatch WASM: worst relative |Δlogit| ${worst.toExponential(2)}`);
});

Deno.test("forwardBatch: an architecture reading one cache per block runs sequence by sequence", async () => {
  const m = await loadModel(synthesizeModel({ type: GgmlType.F32, seed: 2 }), { backend: "ref" });
  // a block that reads the single-sequence fields, as an architecture without batch support would
  const hp = m.transformer.hp as { arch: ArchSpec };
  const orig = hp.arch;
  let reads = 0;
  hp.arch = {
    ...orig,
    forwardLayer: (c, l) => {
      if (c.seqs) {
        try {
          void c.cache;
        } catch (e) {
          reads++;
          throw e;
        }
      }
      return orig.forwardLayer(c, l);
    },
  };
  try {
    await fc.assert(
      fc.asyncProperty(planArb(m.hp.nVocab), async (plans) => {
        assert.equal(await compare(m, plans), 0);
      }),
      { numRuns: 3, seed: 17 },
    );
    // rejected once (batch_unsupported), then remembered: later batches run sequence by sequence
    assert.equal(reads, 1);
  } finally {
    hp.arch = orig;
    m.dispose();
  }
});

Deno.test("forwardBatch: bad batches get typed errors", async () => {
  const m = await loadModel(synthesizeModel({ seed: 1 }), { backend: "ref" });
  const nVocab = m.hp.nVocab;
  const a = newCache(m, 4), b = newCache(m, 4);
  const tf = m.transformer;
  const one = Int32Array.of(1);
  try {
    await assert.rejects(() => tf.forwardBatch([], new Float32Array(nVocab)), {
      name: "ModelError",
      code: "empty_batch",
    });
    await assert.rejects(
      () =>
        tf.forwardBatch([{ cache: a, tokens: one, startPos: 0 }, {
          cache: b,
          tokens: new Int32Array(0),
          startPos: 0,
        }], new Float32Array(2 * nVocab)),
      (e) => e instanceof ModelError && e.code === "empty_batch",
    );
    await assert.rejects(
      () =>
        tf.forwardBatch([{ cache: a, tokens: one, startPos: 0 }, {
          cache: a,
          tokens: one,
          startPos: 1,
        }], new Float32Array(2 * nVocab)),
      (e) => e instanceof ModelError && e.code === "bad_batch",
    );
    await assert.rejects(
      () =>
        tf.forwardBatch([{ cache: a, tokens: one, startPos: 0 }, {
          cache: b,
          tokens: Int32Array.of(1, 2),
          startPos: 3,
        }], new Float32Array(2 * nVocab)),
      (e) => e instanceof ModelError && e.code === "context_full",
    );
    await assert.rejects(
      () =>
        tf.forwardBatch(
          [{ cache: a, tokens: one, startPos: 0 }, { cache: b, tokens: one, startPos: 0 }],
          new Float32Array(nVocab),
        ),
      RangeError,
    );
  } finally {
    m.backend.freeKvCache(a);
    m.backend.freeKvCache(b);
    m.dispose();
  }
});

Deno.test("forwardBatch: each layer's experts are ensured once per step for the whole batch", async () => {
  const calls: { layer: number; experts: number[] }[] = [];
  const m = await loadModel(synthesizeModel({ nExpert: 8, nExpertUsed: 2, nLayer: 3, seed: 9 }), {
    backend: "ref",
    hooks: {
      createStore: async (ctx) => {
        const inner = await loadResidentStore(ctx, []);
        const store: ExpertStore = {
          ensure: (layer, experts) => {
            calls.push({ layer, experts: Array.from(experts) });
            return inner.ensure(layer, experts);
          },
          weights: (l, e) => inner.weights(l, e),
          stats: () => inner.stats(),
        };
        return store;
      },
    },
  });
  const caches = [0, 1, 2, 3, 4, 5].map(() => newCache(m, 8));
  try {
    const logits = new Float32Array(6 * m.hp.nVocab);
    await m.transformer.forwardBatch(
      caches.map((cache, i) => ({ cache, tokens: Int32Array.of(3 + 17 * i, 5 + i), startPos: 0 })),
      logits,
    );
    // one ensure per MoE layer, with each routed expert once (12 tokens route to ≥ 2 experts)
    assert.deepEqual(calls.map((c) => c.layer), [0, 1, 2]);
    for (const c of calls) {
      assert.equal(new Set(c.experts).size, c.experts.length, `layer ${c.layer} repeats an expert`);
      assert.ok(c.experts.length >= 2 && c.experts.length <= 8);
    }
  } finally {
    for (const c of caches) m.backend.freeKvCache(c);
    m.dispose();
  }
});

Deno.test("forwardBatch under an expert-streaming budget equals forward alone (ref)", async () => {
  const bytes = synthesizeModel({ nExpert: 8, nExpertUsed: 2, type: GgmlType.Q8_0, seed: 4 });
  const full = await loadModel(bytes, { backend: "ref" });
  const perExpert = full.transformer.weights.layers[0].experts[0].bytes;
  full.dispose();
  // room for 3 experts: a batch's experts are ensured in chunks the budget holds
  const m = await loadModel(bytes, { backend: "ref", expertBudgetBytes: 3 * perExpert });
  try {
    await fc.assert(
      fc.asyncProperty(planArb(m.hp.nVocab), async (plans) => {
        assert.equal(await compare(m, plans), 0);
      }),
      { numRuns: 4, seed: 19 },
    );
    assert.ok(m.store.stats().misses > 0, "experts were streamed");
  } finally {
    m.dispose();
  }
});
