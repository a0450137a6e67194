/**
 * Tests of the overlap rules of the streaming store: a prefetch may replace
 * the experts of the layer it predicts (not others the last token used),
 * and HTTP reads land straight in slot views (same bytes, same checks).
 */

import assert from "node:assert/strict";
import {
  generateText,
  GgmlType,
  HttpSource,
  IntegritySource,
  loadModel,
  MemorySource,
  StreamingExpertStore,
} from "../../mod.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import {
  EXPERT_BYTES,
  GatedSource,
  isStoreError,
  modelBytes,
  N_TOKENS,
  PROMPT,
  storeContext,
} from "./store_test_util.ts";
import type { ByteSource } from "./byte_source.ts";

Deno.test("prefetch: replaces unpredicted experts of the layer it predicts, never other layers' recent ones", async () => {
  for (const prefetchReplacesLayer of [true, false]) {
    const ctx = await storeContext(new MemorySource(modelBytes()));
    const s = await StreamingExpertStore.create(ctx, {
      expertBudgetBytes: 2 * EXPERT_BYTES,
      prefetchReplacesLayer,
    });
    await s.ensure(0, [0]);
    await s.ensure(1, [1]);
    // layer 2's guess may not push out layer 0's or layer 1's expert (used by the last token)
    s.prefetch(2, [5]);
    assert.equal(s.stats().prefetches, 0);
    // a guess for layer 1 that does not name expert 1 may take its slot (only when allowed)
    await s.ensure(0, [0]);
    s.prefetch(1, [4]);
    assert.equal(s.stats().prefetches, prefetchReplacesLayer ? 1 : 0);
    // a guess that names the resident expert keeps it: nothing to load, nothing evicted
    const ev = s.stats().evictions;
    s.prefetch(0, [0]);
    assert.equal(s.stats().evictions, ev);
    await s.ensure(1, [4]);
    const st = s.stats();
    if (prefetchReplacesLayer) assert.equal(st.prefetchHits! + st.prefetchLate!, 1);
    s.dispose();
  }
});

Deno.test("prefetch: next-layer guesses with layer replacement keep the resident tokens on WASM", async () => {
  const be0 = await createWasmBackend();
  const m0 = await loadModel(modelBytes(), { backend: be0 });
  const base = (await generateText(m0, PROMPT, { maxTokens: N_TOKENS, temperature: 0 })).tokens;
  m0.dispose();
  // guess: the next layer uses the same expert indices (any guess must leave tokens unchanged)
  const model = await loadModel(modelBytes(), {
    backend: await createWasmBackend(),
    expertBudgetBytes: 12 * EXPERT_BYTES,
    streaming: {
      prefetchReplacesLayer: true,
      prefetcher: {
        name: "same-index",
        observe: (layer, _t, route) => [{ layer: layer + 1, experts: route.experts }],
      },
    },
  });
  const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  assert.deepEqual(r.tokens, base);
  assert.ok(model.store.stats().prefetches! > 0);
  model.dispose();
});

/** A Range server with a strong ETag over `bytes` (Deno.serve on loopback). */
function rangeServer(bytes: Uint8Array<ArrayBuffer>): { url: string; close: () => Promise<void> } {
  const ac = new AbortController();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen: () => {} },
    (req) => {
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.get("range") ?? "");
      if (!m) return new Response(bytes, { headers: { etag: '"v1"' } });
      const a = Number(m[1]), b = Math.min(Number(m[2]), bytes.length - 1);
      return new Response(bytes.slice(a, b + 1), {
        status: 206,
        headers: {
          etag: '"v1"',
          "content-range": `bytes ${a}-${b}/${bytes.length}`,
        },
      });
    },
  );
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${addr.port}/f`,
    close: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

Deno.test("HttpSource.readInto: bytes land in the view; detached views and bad ranges are handled", async () => {
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 13 + 5) & 255);
  const srv = rangeServer(bytes);
  try {
    const src = await HttpSource.open(srv.url);
    const mem = new WebAssembly.Memory({ initial: 8, maximum: 64 });
    const v = new Uint8Array(mem.buffer, 1000, 200_000);
    await src.readInto(50_000, v);
    assert.deepEqual(v, bytes.subarray(50_000, 250_000));
    // detached before the body arrives: no error, no write; a fresh view reads again
    const d = new Uint8Array(mem.buffer, 0, 100_000);
    mem.grow(1);
    await src.readInto(7, d);
    assert.equal(d.byteLength, 0);
    await assert.rejects(src.readInto(299_990, new Uint8Array(20)), isStoreError("out_of_range"));
    await src.close();
    await assert.rejects(src.readInto(0, new Uint8Array(4)), isStoreError("closed"));
  } finally {
    await srv.close();
  }
});

Deno.test("prefetched re-reads are compared at first use: a changed file fails there; unused ones are never hashed", async () => {
  const bytes = modelBytes().slice();
  const src = new IntegritySource(new MemorySource(bytes));
  const ctx = { ...await storeContext(src), backend: await createWasmBackend() };
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 3 * EXPERT_BYTES });
  assert.ok(s.readsInPlace);
  for (let l = 0; l < 4; l++) await s.ensure(l, [l]); // expert 0 of layer 0 is read, then evicted
  for (let i = 0; i < 4; i++) await s.ensure(3, [3]);
  assert.equal(s.weights(3, 3).up.rows > 0, true);
  const recorded = src.stats().rangesRecorded;
  const loc = ctx.locations[0][0];
  bytes[loc.up.fileOffset + 5] ^= 0x40; // the file changes under a recorded range
  s.prefetch(0, [0]);
  assert.equal(s.stats().prefetches, 1);
  for (let i = 0; i < 20 && s.memory().loading > 0; i++) await new Promise((r) => setTimeout(r, 1));
  assert.equal(s.memory().loading, 0);
  const hashedAfterLoad = src.stats().bytesHashed;
  await s.ensure(0, [0]); // a hit: the bytes are in the slot, not yet compared
  assert.throws(() => s.weights(0, 0), isStoreError("integrity"));
  assert.ok(src.stats().bytesHashed > hashedAfterLoad, "compared at first use");
  // the expert was dropped: once the file is back, a demand reads it again and it matches
  bytes[loc.up.fileOffset + 5] ^= 0x40;
  await s.ensure(0, [0]);
  assert.ok(s.weights(0, 0));
  assert.equal(src.stats().rangesRecorded, recorded);
  // a prefetched re-read that is never used is never hashed
  for (let i = 0; i < 4; i++) await s.ensure(3, [3]);
  const before = src.stats().bytesHashed;
  s.prefetch(1, [1]);
  for (let i = 0; i < 20 && s.memory().loading > 0; i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(s.stats().prefetches! >= 2);
  assert.equal(src.stats().bytesHashed, before);
  s.dispose();
});

Deno.test("in place over HTTP: WASM streaming from a Range server gives the resident tokens", async () => {
  const bytes = modelBytes();
  const srv = rangeServer(bytes.slice());
  try {
    const m0 = await loadModel(bytes, { backend: await createWasmBackend() });
    const base = (await generateText(m0, PROMPT, { maxTokens: N_TOKENS, temperature: 0 })).tokens;
    m0.dispose();
    const src = await HttpSource.open(srv.url);
    const model = await loadModel(src, {
      backend: await createWasmBackend(),
      expertBudgetBytes: 4 * EXPERT_BYTES,
    });
    const store = model.store as StreamingExpertStore;
    assert.ok(store.readsInPlace);
    const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    assert.deepEqual(r.tokens, base);
    assert.ok(store.stats().misses > store.stats().hits, "mostly misses at this budget");
    model.dispose();
    await src.close();
  } finally {
    await srv.close();
  }
});

Deno.test('packAfterUses "auto": repacks at load once a layer reuses its loads, never for single uses', async () => {
  const packsFor = async (usesPerLoad: number, packAfterUses: number | "auto" = "auto") => {
    const ctx = await storeContext(new MemorySource(modelBytes()));
    const s = await StreamingExpertStore.create(ctx, {
      expertBudgetBytes: 3 * EXPERT_BYTES,
      packAfterUses,
    });
    // 6 experts in turn on 3 slots: every switch is a load, each load used `usesPerLoad` times
    for (let i = 0; i < 40 * usesPerLoad; i++) {
      await s.ensure(0, [Math.floor(i / usesPerLoad) % 6]);
    }
    const st = s.stats();
    s.dispose();
    return { packs: st.packs!, loads: st.loads! };
  };
  const once = await packsFor(1);
  assert.equal(once.packs, 0, "used once per load: never repacked");
  const twice = await packsFor(2);
  assert.equal(twice.loads, 40);
  assert.equal(twice.packs, twice.loads - 8, "repacked at load from the 9th load on");
  assert.equal((await packsFor(2, 3)).packs, 0, "the third use never comes");
  assert.equal((await packsFor(3, 3)).packs, 40);
});

Deno.test("idle-time repacking: a step waiting for a load repacks its resident experts; tokens unchanged", async () => {
  const gated = new GatedSource(new MemorySource(modelBytes()));
  const ctx = { ...await storeContext(gated), backend: await createWasmBackend() };
  const s = await StreamingExpertStore.create(ctx, {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    packAfterUses: "auto",
  });
  await s.ensure(0, [0]); // loaded, used once: not repacked ("auto", too few loads)
  assert.equal(s.stats().packs, 0);
  const l1 = ctx.locations[0][1];
  gated.hold(l1.gate!.fileOffset, l1.up.fileOffset, l1.down.fileOffset);
  const p = s.ensure(0, [0, 1]);
  for (let i = 0; i < 50 && s.idlePacks === 0; i++) await new Promise((r) => setTimeout(r, 1));
  assert.equal(s.idlePacks, 1, "expert 0 repacked while expert 1's reads were held");
  gated.release();
  await p;
  assert.equal(s.stats().packs, 1);
  s.dispose();

  // end to end with reads that take a while: same tokens as resident
  const m0 = await loadModel(modelBytes(), { backend: await createWasmBackend() });
  const base = (await generateText(m0, PROMPT, { maxTokens: N_TOKENS, temperature: 0 })).tokens;
  m0.dispose();
  const inner = new MemorySource(modelBytes());
  const slow: ByteSource = {
    size: inner.size,
    name: "slow",
    read: async (o, n) => {
      await new Promise((r) => setTimeout(r, 2));
      return await inner.read(o, n);
    },
  };
  const model = await loadModel(slow, {
    backend: await createWasmBackend(),
    expertBudgetBytes: 12 * EXPERT_BYTES,
    streaming: { packAfterUses: "auto" },
  });
  const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  assert.deepEqual(r.tokens, base);
  assert.ok((model.store as StreamingExpertStore).idlePacks > 0);
  model.dispose();
});

Deno.test("default repack point: the backend's repackAfterUses (smallest over an expert's matrices), else the third use", async () => {
  const packsFor = async (
    usesPerLoad: number,
    repackAfterUses?: (type: number) => number,
    packAfterUses?: number,
  ) => {
    const base = await storeContext(new MemorySource(modelBytes()));
    const types: number[] = [];
    const backend = repackAfterUses
      ? new Proxy(base.backend, {
        get(t, p) {
          if (p === "repackAfterUses") {
            return (ty: number) => (types.push(ty), repackAfterUses(ty));
          }
          const v = Reflect.get(t, p);
          return typeof v === "function" ? v.bind(t) : v;
        },
      })
      : base.backend;
    const s = await StreamingExpertStore.create({ ...base, backend }, {
      expertBudgetBytes: 3 * EXPERT_BYTES,
      ...(packAfterUses !== undefined ? { packAfterUses } : {}),
    });
    for (let i = 0; i < 40 * usesPerLoad; i++) {
      await s.ensure(0, [Math.floor(i / usesPerLoad) % 6]);
    }
    const st = s.stats();
    s.dispose();
    return { packs: st.packs!, loads: st.loads!, types };
  };
  assert.equal((await packsFor(3)).packs, 40, "no backend method: the third use");
  assert.equal((await packsFor(4, () => 5)).packs, 0, "the fifth use never comes");
  const five = await packsFor(5, () => 5);
  assert.equal(five.packs, 40);
  assert.ok(five.types.length > 0, "asked with the matrices' types");
  // the smallest over the expert's matrices (asked once per matrix): the up matrix asks for 2
  assert.equal(five.types.length, 3 * five.loads, "once per matrix of each load");
  let calls = 0;
  assert.equal((await packsFor(2, () => calls++ % 3 === 1 ? 2 : 100)).packs, 40);
  calls = 0;
  assert.equal((await packsFor(2, () => calls++ % 3 === 1 ? 3 : 100)).packs, 0);
  // an explicit packAfterUses wins
  assert.equal((await packsFor(5, () => 5, 6)).packs, 0);
  assert.equal((await packsFor(3, () => 5, 3)).packs, 40);
});

Deno.test("WASM backend: repack after 8 uses for the relaxed build's standard-layout decode types, else 3", async () => {
  const relaxed = await createWasmBackend({ variant: "relaxed" });
  const simd = await createWasmBackend({ variant: "simd128" });
  for (const t of [GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q8_0]) {
    assert.equal(relaxed.repackAfterUses(t), 8);
    assert.equal(simd.repackAfterUses(t), 3);
  }
  for (const t of [GgmlType.Q6_K, GgmlType.Q2_K, GgmlType.F16]) {
    assert.equal(relaxed.repackAfterUses(t), 3);
  }
  relaxed.dispose();
  simd.dispose();
});

Deno.test("a forward pass's first store step yields once while prefetches are in flight, so finished reads land even when every step is resident", async () => {
  const mem = new MemorySource(modelBytes());
  // reads whose completion, like a file read's, is delivered by the event loop (not a microtask)
  const src: ByteSource = {
    size: mem.size,
    name: "event-loop",
    read: (o, n) => mem.read(o, n),
    async readInto(offset, dest) {
      dest.set(await mem.read(offset, dest.byteLength));
      await new Promise((r) => setImmediate(r));
    },
  };
  for (const firstLayer of [true, false]) {
    const ctx = { ...await storeContext(src), backend: await createWasmBackend() };
    const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 4 * EXPERT_BYTES });
    await s.ensure(0, [0, 1]);
    await s.ensure(1, [0]);
    s.prefetch(2, [3]);
    assert.equal(s.memory().loading, 1);
    // (microtasks only, as synchronous compute: the prefetch's reads start, none lands)
    for (let i = 0; i < 10; i++) await null;
    assert.equal(s.memory().loading, 1);
    // layer 0 (the first MoE layer) is resident: one turn, in which the prefetch lands
    const r = firstLayer ? s.ensure(0, [0, 1]) : s.ensure(1, [0]);
    if (firstLayer) {
      assert.ok(r instanceof Promise, "yields one turn");
      await r;
      assert.equal(s.memory().loading, 0, "the prefetch landed");
      assert.equal(s.ensure(2, [3]), undefined, "resident: synchronous");
      assert.equal(s.stats().prefetchHits, 1);
    } else {
      assert.equal(r, undefined, "other layers never yield for it");
      assert.equal(s.memory().loading, 1);
    }
    s.dispose();
  }
});
