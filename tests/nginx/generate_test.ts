/**
 * End to end: greedy tokens with an expert budget (100/50/25 %, and the
 * one-token minimum) from memory, a local file, a real nginx over HTTP Range
 * and a faulty HTTP server equal fully resident generation — or generation
 * fails with a typed error.
 */

import assert from "node:assert/strict";
import {
  buildExpertManifest,
  type CachePolicy,
  FileSource,
  generateText,
  HttpSource,
  loadModel,
  MemorySource,
  type Prefetcher,
  StoreError,
  type StreamingExpertStore,
} from "../../mod.ts";
import { createLruPolicy } from "../../plugins/cache-lru/mod.ts";
import { createLfuPolicy } from "../../plugins/cache-lfu/mod.ts";
import { createNextLayerPrefetcher } from "../../plugins/prefetch-next-layer/mod.ts";
import { startFaultServer } from "../../core/store/fault_server_test_util.ts";
import {
  ALL_EXPERT_BYTES,
  EXPERT_BYTES,
  modelBytes,
  N_TOKENS,
  PROMPT,
  residentTokens,
  SPEC,
  storeContext,
  tokensWith,
} from "../../core/store/store_test_util.ts";
import { startNginx } from "./nginx_test_util.ts";
import { createWasmBackend } from "../../wasm/mod.ts";

const BUDGETS: [string, number][] = [
  ["100%", ALL_EXPERT_BYTES],
  ["50%", Math.floor(ALL_EXPERT_BYTES / 2)],
  ["25%", Math.floor(ALL_EXPERT_BYTES / 4)],
  ["one token (k experts)", SPEC.nExpertUsed * EXPERT_BYTES],
];

const SETUPS: [string, () => { policy?: CachePolicy; prefetcher?: Prefetcher }][] = [
  ["default policy", () => ({})],
  [
    "lru + next-layer prefetch",
    () => ({ policy: createLruPolicy(), prefetcher: createNextLayerPrefetcher() }),
  ],
  [
    "lfu + wide prefetch",
    () => ({
      policy: createLfuPolicy(),
      prefetcher: createNextLayerPrefetcher({ topK: 4, lookahead: 2 }),
    }),
  ],
];

Deno.test("generate: from memory, every budget and policy gives the resident tokens", async () => {
  const want = await residentTokens();
  for (const [bname, budget] of BUDGETS) {
    for (const [sname, setup] of SETUPS) {
      const { tokens, model } = await tokensWith(modelBytes(), {
        expertBudgetBytes: budget,
        streaming: setup(),
      });
      assert.deepEqual(tokens, want, `${bname}, ${sname}`);
      const st = model.store.stats();
      if (budget < ALL_EXPERT_BYTES) assert.ok(st.evictions > 0, `${bname} evicts`);
      assert.ok(
        (model.store as StreamingExpertStore).memory().allocatedBytes <= budget,
        `${bname} stays in budget`,
      );
      model.dispose();
    }
  }
});

Deno.test("generate: from a local file at 100/50/25 % (with hash checks)", async () => {
  const want = await residentTokens();
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  try {
    await Deno.writeFile(path, modelBytes());
    const manifest = await buildExpertManifest(
      new MemorySource(modelBytes()),
      (await storeContext(new MemorySource(modelBytes()))).locations,
    );
    for (const [bname, budget] of BUDGETS.slice(0, 3)) {
      const src = await FileSource.open(path);
      try {
        const { tokens, model } = await tokensWith(src, {
          expertBudgetBytes: budget,
          streaming: { manifest, prefetcher: createNextLayerPrefetcher() },
        });
        assert.deepEqual(tokens, want, bname);
        model.dispose();
      } finally {
        src.close();
      }
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("generate: a file whose expert bytes differ from the manifest fails with 'integrity'", async () => {
  const good = modelBytes();
  const ctx = await storeContext(new MemorySource(good));
  const manifest = await buildExpertManifest(new MemorySource(good), ctx.locations);
  const bad = good.slice();
  for (const locs of ctx.locations) for (const l of locs) bad[l.up.fileOffset + 5] ^= 0x40;
  await assert.rejects(
    tokensWith(bad, { expertBudgetBytes: ALL_EXPERT_BYTES / 4, streaming: { manifest } }),
    (e) => e instanceof StoreError && e.code === "integrity",
  );
});

Deno.test("generate: over HTTP from nginx at 100/50/25 %, and a file replaced underneath is 'changed'", async () => {
  const want = await residentTokens();
  const ng = await startNginx({ "model.gguf": modelBytes() });
  try {
    const url = `${ng.baseUrl}model.gguf`;
    for (const [bname, budget] of BUDGETS.slice(0, 3)) {
      const { tokens, model } = await tokensWith(url, {
        expertBudgetBytes: budget,
        streaming: { policy: createLruPolicy(), prefetcher: createNextLayerPrefetcher() },
      });
      assert.deepEqual(tokens, want, bname);
      assert.ok(model.store.stats().bytesFetched >= ALL_EXPERT_BYTES / 4);
      model.dispose();
    }
    const src = await HttpSource.open(url);
    const model = await loadModel(src, { backend: "ref", expertBudgetBytes: ALL_EXPERT_BYTES / 4 });
    const later = new Date(Date.now() + 10_000);
    await Deno.utime(`${ng.root}/model.gguf`, later, later); // new mtime → new ETag
    // nothing is resident yet (no pins): the next load reads the changed file
    await assert.rejects(
      async () => await model.store.ensure(1, [0, 1]),
      (e) => e instanceof StoreError && e.code === "changed",
    );
    model.dispose();
  } finally {
    await ng.stop();
  }
});

Deno.test("generate: over a faulty HTTP server, retried faults still give the resident tokens", async () => {
  const want = await residentTokens();
  const srv = startFaultServer(modelBytes());
  try {
    const src = await HttpSource.open(srv.url, { backoffMs: 1, maxBackoffMs: 4, retries: 6 });
    const model = await loadModel(src, {
      backend: "ref",
      expertBudgetBytes: Math.floor(ALL_EXPERT_BYTES / 4),
    });
    // every few requests something goes wrong, then the retry succeeds
    srv.queue.push("drop", "503", "truncate", "500", "drop", "truncate", "503");
    const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    assert.deepEqual(r.tokens, want);
    assert.ok(src.stats().retries >= 7);
    model.dispose();
  } finally {
    await srv.stop();
  }
});

Deno.test("generate: wrong bytes from the server are caught by the manifest, never silently used", async () => {
  const srv = startFaultServer(modelBytes());
  try {
    const ctx = await storeContext(new MemorySource(modelBytes()));
    const manifest = await buildExpertManifest(new MemorySource(modelBytes()), ctx.locations);
    const src = await HttpSource.open(srv.url, { backoffMs: 1, maxBackoffMs: 4 });
    const model = await loadModel(src, {
      backend: "ref",
      expertBudgetBytes: ALL_EXPERT_BYTES / 4,
      streaming: { manifest },
    });
    srv.always = "wrong";
    await assert.rejects(
      generateText(model, [1, 2, 3], { maxTokens: 4, temperature: 0 }),
      (e) => e instanceof StoreError && e.code === "integrity",
    );
    model.dispose();
  } finally {
    await srv.stop();
  }
});

Deno.test("generate: the WASM backend streams through the same Slot API with the same tokens", async () => {
  const resident = await loadModel(modelBytes(), { backend: await createWasmBackend() });
  const want =
    (await generateText(resident, PROMPT, { maxTokens: N_TOKENS, temperature: 0 })).tokens;
  resident.dispose();
  for (const budget of [ALL_EXPERT_BYTES / 2, ALL_EXPERT_BYTES / 4]) {
    const model = await loadModel(modelBytes(), {
      backend: await createWasmBackend(),
      expertBudgetBytes: budget,
      streaming: { policy: createLfuPolicy(), prefetcher: createNextLayerPrefetcher() },
    });
    const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    assert.deepEqual(r.tokens, want, `budget ${budget}`);
    assert.ok(model.store.stats().evictions > 0);
    model.dispose();
  }
});
