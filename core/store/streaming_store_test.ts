/** The streaming store's rules: budget, shared fetches, prefetch isolation, integrity, pinning, metrics. */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  beladySimulate,
  buildExpertManifest,
  MemorySource,
  PluginError,
  type Prefetcher,
  simulatePolicy,
  StreamingExpertStore,
} from "../../mod.ts";
import { createLruPolicy } from "../../plugins/cache-lru/mod.ts";
import {
  ALL_EXPERT_BYTES,
  EXPERT_BYTES,
  GatedSource,
  isStoreError,
  modelBytes,
  storeContext,
  tokensWith,
} from "./store_test_util.ts";

const tick = () => new Promise((r) => setTimeout(r, 0));

async function gated(): Promise<
  { src: GatedSource; ctx: Awaited<ReturnType<typeof storeContext>> }
> {
  const src = new GatedSource(new MemorySource(modelBytes()));
  return { src, ctx: await storeContext(src) };
}

Deno.test("store: a budget below one token's need fails at creation, not later", async () => {
  const { ctx } = await gated();
  await assert.rejects(
    StreamingExpertStore.create(ctx, { expertBudgetBytes: 2 * EXPERT_BYTES - 1 }),
    (e) => isStoreError("budget_too_small")(e) && /one token's need/.test((e as Error).message),
  );
  await assert.rejects(
    StreamingExpertStore.create(ctx, {
      expertBudgetBytes: 2 * EXPERT_BYTES,
      pinned: [{ layer: 0, index: 0 }],
    }),
    isStoreError("budget_too_small"),
  );
  for (const b of [0, -5, NaN, 1.5]) {
    await assert.rejects(
      StreamingExpertStore.create(ctx, { expertBudgetBytes: b }),
      isStoreError("bad_budget"),
    );
  }
  await assert.rejects(
    StreamingExpertStore.create(ctx, {
      expertBudgetBytes: ALL_EXPERT_BYTES,
      pinned: [{ layer: 0, index: 99 }],
    }),
    isStoreError("no_expert"),
  );
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 2 * EXPERT_BYTES });
  assert.equal(s.capacity, 2);
  assert.equal(s.maxEnsureExperts(0), 2);
});

Deno.test("store: concurrent requests for one expert share one fetch", async () => {
  const { src, ctx } = await gated();
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 4 * EXPERT_BYTES });
  const a = s.ensure(1, [2, 5]);
  const b = s.ensure(1, [5, 2]);
  assert.ok(a instanceof Promise && b instanceof Promise);
  await Promise.all([a, b]);
  assert.equal(src.total, 6, "3 matrices × 2 experts, once each");
  assert.equal(s.ensure(1, [2, 5]), undefined, "resident: synchronous");
  const st = s.stats();
  // b either joined a's loads (misses) or found them landed after yielding (hits)
  assert.equal(st.hits + st.misses, 6);
  assert.ok(st.misses >= 2);
  assert.equal(st.bytesFetched, 2 * EXPERT_BYTES);
  assert.equal(st.perLayer![1].misses, st.misses);
});

Deno.test("store: a pending prefetch never blocks ensure of other experts; demand joins it when needed", async () => {
  const { src, ctx } = await gated();
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 6 * EXPERT_BYTES });
  const loc3 = ctx.locations[2][3];
  src.hold(loc3.up.fileOffset);
  s.prefetch(2, [3]);
  assert.equal(s.memory().loading, 1);
  await s.ensure(2, [4, 6]); // resolves with the prefetch still held
  assert.equal(s.memory().loading, 1);
  const join = s.ensure(2, [3]);
  assert.ok(join instanceof Promise);
  let done = false;
  join.then(() => done = true);
  await tick();
  assert.equal(done, false, "waits for the one fetch it needs");
  src.release();
  await join;
  assert.equal(src.reads.get(loc3.up.fileOffset), 1, "demand joined the prefetch: one fetch");
  const st = s.stats();
  assert.deepEqual([st.prefetches, st.prefetchLate, st.prefetchHits], [1, 1, 0]);
});

Deno.test("store: a demand load takes the slot of an unneeded prefetch in flight instead of waiting", async () => {
  const { src, ctx } = await gated();
  const writes: number[] = [];
  const backend = new Proxy(ctx.backend, {
    get(t, p) {
      if (p === "writeSlot") {
        return (slot: { id: number }, off: number, d: Uint8Array) => {
          if (off === 0) writes.push(slot.id); // one write at offset 0 per expert load (its gate)
          t.writeSlot(slot as never, off, d);
        };
      }
      const v = Reflect.get(t, p);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  const s = await StreamingExpertStore.create({ ...ctx, backend }, {
    expertBudgetBytes: 2 * EXPERT_BYTES,
  });
  await s.ensure(0, [0]);
  src.hold(ctx.locations[1][5].gate!.fileOffset);
  s.prefetch(1, [5]);
  assert.equal(s.memory().loading, 1);
  await s.ensure(3, [6, 7]); // needs both slots: evicts 0:0 and cancels the held prefetch
  assert.equal(s.stats().wastedPrefetches, 1);
  s.weights(3, 6);
  s.weights(3, 7);
  src.release();
  await tick();
  await tick();
  assert.equal(writes.length, 3, "the cancelled load never wrote into the reused slot");
  assert.throws(() => s.weights(1, 5), isStoreError("not_resident"));
  assert.ok(s.memory().allocatedBytes <= 2 * EXPERT_BYTES);
});

Deno.test("store: wrong bytes fail with 'integrity' and stay non-resident", async () => {
  const good = modelBytes();
  const { ctx } = await gated();
  const manifest = await buildExpertManifest(new MemorySource(good), ctx.locations);
  const bad = good.slice();
  bad[ctx.locations[1][3].down.fileOffset + 17] ^= 1;
  const s = await StreamingExpertStore.create({ ...ctx, source: new MemorySource(bad) }, {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    manifest,
  });
  await s.ensure(1, [2]);
  await assert.rejects(async () => await s.ensure(1, [3]), isStoreError("integrity"));
  assert.throws(() => s.weights(1, 3), isStoreError("not_resident"));
  await assert.rejects(async () => await s.ensure(1, [3]), isStoreError("integrity"));
  s.weights(1, 2);
  await assert.rejects(
    StreamingExpertStore.create({
      ...ctx,
      source: new MemorySource(good.subarray(0, good.length - 1)),
    }, {
      expertBudgetBytes: 4 * EXPERT_BYTES,
      manifest,
    }),
    isStoreError("manifest_mismatch"),
  );
});

Deno.test("store: pinned experts are loaded up front, always hit, never evicted", async () => {
  const { ctx } = await gated();
  const s = await StreamingExpertStore.create(ctx, {
    expertBudgetBytes: 3 * EXPERT_BYTES,
    pinned: [{ layer: 0, index: 0 }],
  });
  assert.equal(s.memory().pinnedBytes, EXPERT_BYTES);
  for (let l = 0; l < 4; l++) {
    for (let e = 0; e < 8; e += 2) await s.ensure(l, [e, e + 1]);
  }
  s.weights(0, 0);
  assert.ok(s.memory().allocatedBytes + s.memory().pinnedBytes <= 3 * EXPERT_BYTES);
  assert.equal(s.stats().perLayer![0].hits, 1, "the pinned expert's lookup");
});

Deno.test("store: slots stay within the budget under random ensure/prefetch sequences", async () => {
  const { ctx } = await gated();
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 9 }),
      fc.array(
        fc.tuple(
          fc.boolean(),
          fc.integer({ min: 0, max: 3 }),
          fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 2 }),
        ),
        { maxLength: 40 },
      ),
      async (cap, ops) => {
        const budget = cap * EXPERT_BYTES;
        const s = await StreamingExpertStore.create(ctx, {
          expertBudgetBytes: budget,
          policy: createLruPolicy(),
        });
        for (const [pre, layer, ex] of ops) {
          if (pre) s.prefetch(layer, ex);
          else {
            await s.ensure(layer, ex);
            for (const e of ex) s.weights(layer, e);
          }
          assert.ok(s.memory().allocatedBytes <= budget);
        }
        s.dispose();
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("store: hits, misses and evictions equal a replay of its own trace with the same policy", async () => {
  const steps: [number, number[]][] = [];
  const { model } = await tokensWith(modelBytes(), {
    expertBudgetBytes: Math.floor(ALL_EXPERT_BYTES / 2),
    streaming: { policy: createLruPolicy(), onStep: (l, keys) => steps.push([l, [...keys]]) },
  });
  const st = model.store.stats();
  const sim = simulatePolicy(steps.map(([, k]) => k), 16, createLruPolicy());
  assert.deepEqual([st.hits, st.misses, st.evictions], [sim.hits, sim.misses, sim.evictions]);
  const opt = beladySimulate(steps.map(([, k]) => k), 16);
  assert.ok(opt.hits >= st.hits);
  const perLayer = st.perLayer!;
  assert.equal(perLayer.reduce((a, l) => a + l.hits, 0), st.hits);
  assert.equal(perLayer.reduce((a, l) => a + l.bytesFetched, 0), st.bytesFetched);
  assert.equal(st.bytesFetched, st.misses * EXPERT_BYTES);
  model.dispose();
});

Deno.test("store: bad requests, aborts and disposal are typed", async () => {
  const { src, ctx } = await gated();
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 4 * EXPERT_BYTES });
  assert.throws(() => s.ensure(0, [8]), isStoreError("no_expert"));
  assert.throws(() => s.ensure(9, [0]), isStoreError("no_expert"));
  assert.throws(() => s.weights(0, 1), isStoreError("not_resident"));
  src.hold(ctx.locations[0][1].up.fileOffset);
  const ac = new AbortController();
  const p = s.ensure(0, [1], ac.signal);
  ac.abort();
  await assert.rejects(async () => await p, isStoreError("aborted"));
  src.release();
  s.dispose();
  assert.throws(() => s.ensure(0, [1]), isStoreError("closed"));
});

Deno.test("store: a throwing prefetcher is a PluginError naming it", async () => {
  const bad: Prefetcher = {
    name: "broken",
    observe() {
      throw new Error("nope");
    },
  };
  await assert.rejects(
    tokensWith(modelBytes(), {
      expertBudgetBytes: ALL_EXPERT_BYTES,
      streaming: { prefetcher: bad },
    }),
    (e) => e instanceof PluginError && /broken/.test(e.message) && /observe/.test(e.message),
  );
});

Deno.test("store: a prefetch whose bytes landed during compute counts as a hit after a short settle", async () => {
  const { src, ctx } = await gated();
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 4 * EXPERT_BYTES });
  src.hold(ctx.locations[3][1].up.fileOffset);
  s.prefetch(3, [1]);
  src.release(); // the bytes are there; the JS side has not applied them yet
  const p = s.ensure(3, [1]);
  assert.ok(p instanceof Promise, "yields instead of checking too early");
  await p;
  const st = s.stats();
  assert.deepEqual([st.hits, st.misses, st.prefetchHits, st.prefetchLate], [1, 0, 1, 0]);
});
