/**
 * The miss path of the streaming store: coalesced range reads (merging,
 * per-range integrity checks kept), lazily repacked streamed experts on the
 * WASM backend (same results, packed once hot), and the miss cost
 * breakdown in the store's counters.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  type ByteSource,
  GgmlType,
  IntegritySource,
  MemorySource,
  StreamingExpertStore,
} from "../../mod.ts";
import { mergeRanges, readRanges } from "./read_ranges.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import { traitsOf } from "../tensor/traits.ts";
import {
  EXPERT_BYTES,
  isStoreError,
  modelBytes,
  storeContext,
  tokensWith,
} from "./store_test_util.ts";

/** A memory source that counts its reads. */
function counting(bytes: Uint8Array): ByteSource & { reads: [number, number][] } {
  const inner = new MemorySource(bytes);
  const reads: [number, number][] = [];
  return {
    size: inner.size,
    name: "counting",
    reads,
    read(offset: number, length: number) {
      reads.push([offset, length]);
      return inner.read(offset, length);
    },
  };
}

Deno.test("readRanges: every range gets exactly its bytes; touching ranges share one read", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ offset: fc.nat(500), length: fc.nat(40) }), { maxLength: 12 }),
      async (ranges) => {
        const file = new Uint8Array(600).map((_, i) => (i * 7 + 3) & 255);
        const src = counting(file);
        const got = await readRanges(src, ranges);
        assert.equal(got.length, ranges.length);
        ranges.forEach((r, i) =>
          assert.deepEqual(got[i], file.subarray(r.offset, r.offset + r.length))
        );
        const spans = mergeRanges(ranges);
        assert.equal(src.reads.length, spans.length);
        // spans are disjoint, separated by gaps, and cover every range
        for (let j = 1; j < spans.length; j++) assert.ok(spans[j].offset > spans[j - 1].end);
        for (const [i, r] of ranges.entries()) {
          const s = spans.find((s) => s.members.includes(i))!;
          assert.ok(s.offset <= r.offset && r.offset + r.length <= s.end);
        }
      },
    ),
  );
  assert.throws(() => mergeRanges([{ offset: -1, length: 2 }]), isStoreError("out_of_range"));
  assert.throws(() => mergeRanges([{ offset: 0.5, length: 2 }]), isStoreError("out_of_range"));
});

Deno.test("IntegritySource.readRanges: each range is checked on its own, in any grouping", async () => {
  const file = new Uint8Array(1000).map((_, i) => i & 255);
  const src = new IntegritySource(new MemorySource(file));
  const a = { offset: 100, length: 50 },
    b = { offset: 150, length: 50 },
    c = { offset: 400, length: 10 };
  // first reads: coalesced (a+b adjacent) — the records are per range
  await src.readRanges([a, b, c]);
  assert.equal(src.stats().rangesRecorded, 3);
  // re-read alone: compared with the record made inside the coalesced read
  await src.read(b.offset, b.length);
  assert.equal(src.stats().rereadsMatched, 1);
  // the file changes under range a: a later grouped read fails, whichever grouping
  file[120] ^= 0xff;
  await assert.rejects(src.readRanges([c, a]), isStoreError("integrity"));
  await assert.rejects(src.read(a.offset, a.length), isStoreError("integrity"));
  const timing = { verifyMs: 0 };
  await src.readRanges([b, c], undefined, timing);
  assert.ok(timing.verifyMs >= 0);
});

Deno.test("store: one layer's misses are one batch of reads; the miss breakdown is counted", async () => {
  const src = counting(modelBytes());
  const ctx = await storeContext(src);
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 4 * EXPERT_BYTES });
  src.reads.length = 0;
  await s.ensure(1, [2, 3]);
  // experts 2 and 3 of a layer are adjacent in each stacked tensor: 3 reads, not 6
  assert.equal(src.reads.length, 3);
  const st = s.stats();
  assert.equal(st.loads, 2);
  assert.equal(st.bytesFetched, 2 * EXPERT_BYTES);
  for (const k of ["readMs", "verifyMs", "repackMs", "stallMs"] as const) {
    assert.ok(Number.isFinite(st[k]!) && st[k]! >= 0, k);
  }
  src.reads.length = 0;
  await s.ensure(1, [0, 5]); // not adjacent: 6 reads
  assert.equal(src.reads.length, 6);
  s.dispose();
});

Deno.test("store on WASM: streamed experts give resident tokens, repacked only from packAfterUses", async () => {
  const resident = await tokensWith(modelBytes(), { backend: await createWasmBackend() });
  resident.model.dispose();
  const base = resident.tokens;
  for (const packAfterUses of [1, 3, Infinity]) {
    const { tokens, model } = await tokensWith(modelBytes(), {
      backend: await createWasmBackend(),
      expertBudgetBytes: 5 * EXPERT_BYTES,
      streaming: { packAfterUses },
    });
    assert.deepEqual(tokens, base, `packAfterUses ${packAfterUses}`);
    const st = model.store.stats();
    if (packAfterUses === 1) assert.equal(st.packs, st.loads);
    else if (packAfterUses === Infinity) assert.equal(st.packs, 0);
    else assert.ok(st.packs! < st.loads!);
    model.dispose();
  }
  await assert.rejects(
    tokensWith(modelBytes(), {
      expertBudgetBytes: 5 * EXPERT_BYTES,
      streaming: { packAfterUses: 0 },
    }),
    isStoreError("bad_option"),
  );
});

Deno.test("WASM lazy slots: not repacked at first use, repacked by prepareWeights, same results", async () => {
  const be = await createWasmBackend();
  const rows = 8, cols = 64, t = traitsOf(GgmlType.Q4_0);
  const f = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37));
  const rb = (cols / t.blockSize) * t.typeSize;
  const w = new Uint8Array(rb * rows);
  for (let r = 0; r < rows; r++) t.quantize(f, r * cols, cols, w, r * rb);
  const x = new Float32Array(cols).map((_, i) => Math.cos(i));
  const run = (lazy: boolean, prepare: boolean): Float32Array => {
    const slot = be.allocSlot(w.length, { lazyPrepare: lazy });
    be.writeSlot(slot, 0, w);
    const v = { slot, offset: 0, type: GgmlType.Q4_0, rows, cols };
    const before = be.packedCount();
    if (prepare) be.prepareWeights(v);
    const out = new Float32Array(rows);
    be.matmul(v, x, 1, out);
    const packed = be.packedCount() - before;
    assert.equal(packed, lazy && !prepare ? 0 : 1, `lazy ${lazy} prepare ${prepare}`);
    be.freeSlot(slot);
    return out;
  };
  const eager = run(false, false);
  assert.deepEqual(run(true, false), eager);
  assert.deepEqual(run(true, true), eager);
  be.dispose();
});

Deno.test("store: a prefetch never evicts an expert the last token used", async () => {
  const ctx = await storeContext(new MemorySource(modelBytes()));
  const s = await StreamingExpertStore.create(ctx, { expertBudgetBytes: 2 * EXPERT_BYTES });
  await s.ensure(0, [0]);
  await s.ensure(1, [1]);
  s.prefetch(2, [5]); // both slots hold experts used within the last 4 steps (one per MoE layer)
  assert.equal(s.stats().prefetches, 0);
  assert.equal(s.memory().resident, 2);
  // once one is older than a token (4 steps), a prefetch may take its slot
  for (let i = 0; i < 4; i++) await s.ensure(1, [1]);
  s.prefetch(2, [5]);
  assert.equal(s.stats().prefetches, 1);
  assert.equal(s.stats().evictions, 1, "expert 0 of layer 0 made room");
  await s.ensure(2, [5]);
  assert.equal(s.stats().prefetchHits! + s.stats().prefetchLate!, 1);
  s.dispose();
});
