/**
 * Tests of per-expert readiness (`ensureEach`): the MoE layer computes each
 * missed expert as soon as its own load lands, while the step's other loads
 * are still in flight, with the resident tokens.
 */

import assert from "node:assert/strict";
import {
  type ByteSource,
  generateText,
  loadModel,
  MemorySource,
  StreamingExpertStore,
  type StreamingStoreContext,
} from "../../mod.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import { EXPERT_BYTES, modelBytes, PROMPT, SPEC, storeContext } from "./store_test_util.ts";
import type { ExpertStore } from "./expert_store.ts";

/**
 * A source whose reads of each expert wait until the test lets that expert
 * go; logs `read:K` when an expert's first range is asked for and `done:K`
 * when one of its ranges has landed (K = layer·nExpert + index).
 */
class StagedSource implements ByteSource {
  readonly size: number;
  readonly name = "staged";
  readonly #inner: ByteSource;
  readonly #keyOf: Map<number, number>;
  readonly log: string[];
  /** Keys with reads held, in order of their first read. */
  readonly held: number[] = [];
  readonly #waiting = new Map<number, (() => void)[]>();
  readonly #free = new Set<number>();

  constructor(inner: ByteSource, keyOf: Map<number, number>, log: string[]) {
    this.#inner = inner;
    this.size = inner.size;
    this.#keyOf = keyOf;
    this.log = log;
  }

  /** Let the reads of `key` go (now and later). */
  release(key: number): void {
    this.#free.add(key);
    const i = this.held.indexOf(key);
    if (i >= 0) this.held.splice(i, 1);
    for (const w of this.#waiting.get(key)?.splice(0) ?? []) w();
  }

  async #gate(offset: number): Promise<number | undefined> {
    const key = this.#keyOf.get(offset);
    if (key === undefined || this.#free.has(key)) return key;
    if (!this.#waiting.has(key)) this.#waiting.set(key, []);
    if (!this.held.includes(key)) {
      this.held.push(key);
      this.log.push(`read:${key}`);
    }
    await new Promise<void>((r) => this.#waiting.get(key)!.push(r));
    return key;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const key = await this.#gate(offset);
    const b = await this.#inner.read(offset, length, signal);
    if (key !== undefined) this.log.push(`done:${key}`);
    return b;
  }

  async readInto(offset: number, dest: Uint8Array, signal?: AbortSignal): Promise<void> {
    const key = await this.#gate(offset);
    const b = await this.#inner.read(offset, dest.byteLength, signal);
    if (dest.byteLength === b.byteLength) dest.set(b);
    if (key !== undefined) this.log.push(`done:${key}`);
  }
}

/** Matrix file offset → expert key, from a store context. */
function offsetKeys(ctx: StreamingStoreContext): Map<number, number> {
  const m = new Map<number, number>();
  ctx.locations.forEach((layer, l) =>
    layer.forEach((loc, e) => {
      if (!loc) return;
      for (const p of [loc.gate, loc.up, loc.down]) {
        if (p) m.set(p.fileOffset, l * SPEC.nExpert + e);
      }
    })
  );
  return m;
}

/**
 * Decode on WASM from a staged source: whenever two or more experts' reads
 * are held, only the first is let go; the others follow once it has been
 * used by compute (or after `patienceMs`). Returns the tokens and, per such
 * group, whether the first expert was computed while the others still waited.
 */
async function stagedRun(perExpertReady: boolean, patienceMs: number, maxTokens: number) {
  // every read of a step starts at once (the default), so the test decides which lands first
  const keyOf = offsetKeys(await storeContext(new MemorySource(modelBytes())));
  const log: string[] = [];
  const src = new StagedSource(new MemorySource(modelBytes()), keyOf, log);
  const model = await loadModel(src, {
    backend: await createWasmBackend(),
    integrity: "off",
    hooks: {
      createStore: async (ctx) => {
        const s = await StreamingExpertStore.create(ctx, {
          expertBudgetBytes: 10 * EXPERT_BYTES,
          perExpertReady,
          staggerLoads: false,
        });
        // record each use of an expert by compute (the MoE layer reads its weights)
        const store: ExpertStore = {
          ensure: (l, e, sig) => s.ensure(l, e, sig),
          ensureEach: (l, e, sig) => s.ensureEach(l, e, sig),
          weights: (l, i) => {
            log.push(`use:${l * SPEC.nExpert + i}`);
            return s.weights(l, i);
          },
          stats: () => s.stats(),
          maxEnsureExperts: (l) => s.maxEnsureExperts(l),
          attach: (ls) => s.attach(ls),
          dispose: () => s.dispose(),
        };
        return store;
      },
    },
  });
  let running = true;
  const groups: boolean[] = [];
  const control = (async () => {
    const tick = () => new Promise((r) => setTimeout(r, 1));
    while (running) {
      await tick();
      if (src.held.length === 0) continue;
      // let the batch of reads of this step start, then stage them
      await tick();
      const [first, ...rest] = src.held.slice();
      src.release(first);
      if (rest.length === 0) continue;
      const t0 = performance.now();
      while (running && !log.includes(`use:${first}`) && performance.now() - t0 < patienceMs) {
        await tick();
      }
      // computed while the others were still held?
      const usedAt = log.lastIndexOf(`use:${first}`);
      groups.push(usedAt >= 0 && rest.every((k) => !log.slice(0, usedAt).includes(`done:${k}`)));
      for (const k of rest) src.release(k);
    }
  })();
  try {
    const r = await generateText(model, PROMPT, { maxTokens, temperature: 0 });
    return { tokens: r.tokens, groups, log, stats: model.store.stats() };
  } finally {
    running = false;
    await control;
    model.dispose();
  }
}

Deno.test("per-expert readiness: a missed expert is computed while the step's other loads are held; resident tokens", async () => {
  const m0 = await loadModel(modelBytes(), { backend: await createWasmBackend() });
  const base = (await generateText(m0, PROMPT, { maxTokens: 4, temperature: 0 })).tokens;
  m0.dispose();

  const each = await stagedRun(true, 2000, 4);
  assert.deepEqual(each.tokens, base);
  assert.ok(each.groups.length > 0, "some steps missed two or more experts");
  // every time: the first expert's compute came before the others' reads landed
  assert.ok(each.groups.every((g) => g), `groups: ${each.groups}`);
  assert.ok(each.stats.misses > 0);

  // the previous behaviour (wait for all of a step's loads) never computes early
  const all = await stagedRun(false, 30, 4);
  assert.deepEqual(all.tokens, base);
  assert.ok(all.groups.length > 0);
  assert.ok(all.groups.every((g) => !g), `groups: ${all.groups}`);
});

Deno.test("per-expert readiness: ensureEach reports ready experts, then each load as it lands; errors are typed", async () => {
  const ctx0 = await storeContext(new MemorySource(modelBytes()));
  const log: string[] = [];
  const src = new StagedSource(new MemorySource(modelBytes()), offsetKeys(ctx0), log);
  // in place (WASM slot views): each expert's reads are its own (the batched copy path of
  // backends without slot views reads a step's misses as one coalesced batch)
  const ctx = { ...await storeContext(src), backend: await createWasmBackend() };
  const s = await StreamingExpertStore.create(ctx, {
    expertBudgetBytes: 4 * EXPERT_BYTES,
    staggerLoads: false,
  });
  const n = SPEC.nExpert;
  src.release(0 * n + 1);
  await s.ensure(0, [1]);
  const arr = await s.ensureEach(0, [3, 1, 5]);
  assert.ok(arr);
  assert.deepEqual(arr.ready, [1]);
  assert.equal(arr.pending, 2);
  // expert 5's load lands first: it arrives first, while expert 3 is still held
  src.release(5);
  assert.equal(await arr.next(), 2);
  assert.ok(s.weights(0, 5).up);
  assert.ok(!log.includes("done:3"));
  src.release(3);
  assert.equal(await arr.next(), 0);
  assert.ok(s.weights(0, 3).up);
  await assert.rejects(arr.next(), (e: Error) => e.name === "StoreError");
  // all resident: nothing to wait for
  assert.equal(s.ensureEach(0, [1, 3]), undefined);
  // an aborted wait rejects; the load it waited for still lands and is usable later
  const ac = new AbortController();
  const arr2 = await s.ensureEach(1, [2], ac.signal);
  assert.ok(arr2);
  const p = arr2.next();
  ac.abort();
  await assert.rejects(p);
  src.release(n + 2);
  await s.ensure(1, [2]);
  assert.ok(s.weights(1, 2).up);
  assert.ok(s.stats().stallMs >= 0);
  s.dispose();
});

/** A source whose every read takes `delayMs`, logging which experts' reads overlap in time. */
class SlowSource implements ByteSource {
  readonly size: number;
  readonly name = "slow";
  readonly #inner: ByteSource;
  readonly #keyOf: Map<number, number>;
  readonly log: string[];
  readonly #inflight = new Map<number, number>();
  /** Reads that started while another expert's reads were in flight. */
  overlaps = 0;

  constructor(inner: ByteSource, keyOf: Map<number, number>, log: string[], readonly delayMs = 4) {
    this.#inner = inner;
    this.size = inner.size;
    this.#keyOf = keyOf;
    this.log = log;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const key = this.#keyOf.get(offset);
    if (key === undefined) return await this.#inner.read(offset, length, signal);
    if ([...this.#inflight.keys()].some((k) => k !== key)) this.overlaps++;
    this.#inflight.set(key, (this.#inflight.get(key) ?? 0) + 1);
    this.log.push(`read:${key}`);
    await new Promise((r) => setTimeout(r, this.delayMs));
    const b = await this.#inner.read(offset, length, signal);
    const n = this.#inflight.get(key)! - 1;
    if (n === 0) this.#inflight.delete(key);
    else this.#inflight.set(key, n);
    this.log.push(`done:${key}`);
    return b;
  }
}

Deno.test("staggered loads: one expert reads after another, and is computed while the next one reads", async () => {
  const keyOf = offsetKeys(await storeContext(new MemorySource(modelBytes())));
  const m0 = await loadModel(modelBytes(), { backend: await createWasmBackend() });
  const base = (await generateText(m0, PROMPT, { maxTokens: 3, temperature: 0 })).tokens;
  m0.dispose();
  for (const staggerLoads of [true, false]) {
    const log: string[] = [];
    const src = new SlowSource(new MemorySource(modelBytes()), keyOf, log);
    const model = await loadModel(src, {
      backend: await createWasmBackend(),
      integrity: "off",
      hooks: {
        createStore: async (ctx) => {
          const s = await StreamingExpertStore.create(ctx, {
            expertBudgetBytes: 10 * EXPERT_BYTES,
            staggerLoads,
          });
          const store: ExpertStore = {
            ensure: (l, e, sig) => s.ensure(l, e, sig),
            ensureEach: (l, e, sig) => s.ensureEach(l, e, sig),
            weights: (l, i) => {
              log.push(`use:${l * SPEC.nExpert + i}`);
              return s.weights(l, i);
            },
            stats: () => s.stats(),
            maxEnsureExperts: (l) => s.maxEnsureExperts(l),
            attach: (ls) => s.attach(ls),
            dispose: () => s.dispose(),
          };
          return store;
        },
      },
    });
    const r = await generateText(model, PROMPT, { maxTokens: 3, temperature: 0 });
    model.dispose();
    assert.deepEqual(r.tokens, base, `staggerLoads ${staggerLoads}`);
    // an expert used while another expert's reads were still in flight
    let early = 0;
    log.forEach((ev, i) => {
      if (!ev.startsWith("use:")) return;
      const open = new Map<string, number>();
      for (const e of log.slice(0, i)) {
        const [kind, k] = e.split(":");
        if (kind === "read") open.set(k, (open.get(k) ?? 0) + 1);
        if (kind === "done") open.set(k, open.get(k)! - 1);
      }
      if ([...open.values()].some((n) => n > 0)) early++;
    });
    if (staggerLoads) {
      assert.equal(src.overlaps, 0, "one expert's reads at a time");
      assert.ok(early > 0, "computed while the next expert reads");
    } else assert.ok(src.overlaps > 0, "a step's reads at once");
  }
});
