/**
 * Tests of off-thread expert loads (`offThreadLoads`, `core/store/load_worker.ts`):
 * the resident tokens at small budgets, a byte changed in the file after the
 * first read still fails with `StoreError` `"integrity"`, the manifest's
 * SHA-256 is checked, a dead worker fails its loads with a typed error (no
 * hang) and later loads run on the JS thread.
 */

import assert from "node:assert/strict";
import {
  FileSource,
  generateText,
  IntegritySource,
  loadModel,
  type StreamingExpertStore,
} from "../../mod.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import { sharedMemorySupported } from "../../wasm/pkg/moe_edge_kernels.ts";
import { expertLayout } from "./expert_loader.ts";
import { sha256Hex } from "./expert_manifest.ts";
import { readExpertInPlace } from "./in_place_load.ts";
import { LoadWorker, sharedLoadWorker } from "./load_worker.ts";
import {
  ALL_EXPERT_BYTES,
  EXPERT_BYTES,
  isStoreError,
  modelBytes,
  modelFile,
  N_TOKENS,
  PROMPT,
} from "./store_test_util.ts";
import type { ExpertLocation } from "./expert_location.ts";
import { expertLocations } from "../../plugins/quant-experts/mod.ts";

const ignore = !sharedMemorySupported();
async function residentTokens(): Promise<number[]> {
  const m = await loadModel(modelBytes(), { backend: await createWasmBackend() });
  const r = await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  m.dispose();
  return r.tokens;
}

/** A streamed model over `src` with off-thread loads on a shared-memory backend. */
async function streamed(src: FileSource, frac: number, extra = {}) {
  return await loadModel(src, {
    backend: await createWasmBackend({ sharedMemory: true }),
    expertBudgetBytes: Math.max(2 * EXPERT_BYTES, Math.floor(ALL_EXPERT_BYTES * frac)),
    streaming: { offThreadLoads: true, ...extra },
  });
}

Deno.test({
  name:
    "off-thread loads: resident tokens at 25 % and 50 %, every miss loaded and hashed on the worker",
  ignore,
  async fn() {
    const path = await modelFile();
    try {
      const base = await residentTokens();
      for (const frac of [0.25, 0.5]) {
        const src = await FileSource.open(path);
        const m = await streamed(src, frac);
        const r = await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
        assert.deepEqual(r.tokens, base, `budget ${frac}`);
        const store = m.store as StreamingExpertStore;
        const st = store.stats();
        assert.ok(st.loads! > 0 && st.misses > 0);
        assert.equal(store.offThreadLoads, st.loads, "every load ran on the worker");
        assert.ok(st.verifyMs! > 0, "the worker hashed them");
        m.dispose();
        src.close();
      }
      // off by default: a plain backend, loads on this thread
      const src = await FileSource.open(path);
      const m = await loadModel(src, {
        backend: await createWasmBackend(),
        expertBudgetBytes: 2 * EXPERT_BYTES,
      });
      const r = await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
      assert.deepEqual(r.tokens, base);
      assert.equal((m.store as StreamingExpertStore).offThreadLoads, 0);
      m.dispose();
      src.close();
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "off-thread loads: a byte changed after the first read fails with 'integrity'",
  ignore,
  async fn() {
    const path = await modelFile();
    try {
      // no size/mtime check: only the hashes can see the change
      const src = await FileSource.open(path, { checkChanges: false });
      const m = await streamed(src, 0.25);
      await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
      const store = m.store as StreamingExpertStore;
      assert.ok(store.offThreadLoads > 0);
      // flip one byte inside every expert's gate matrix: whichever is re-read next differs
      const f = await Deno.open(path, { read: true, write: true });
      const locs = (await expertLocations(src)).flat().filter((l) => l.gate);
      for (const loc of locs) {
        const at = loc.gate!.fileOffset + 17;
        const b = new Uint8Array(1);
        await f.seek(at, Deno.SeekMode.Start);
        await f.read(b);
        b[0] ^= 0x40;
        await f.seek(at, Deno.SeekMode.Start);
        await f.write(b);
      }
      f.close();
      await assert.rejects(
        generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 }),
        isStoreError("integrity"),
      );
      m.dispose();
      src.close();
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "off-thread loads: the manifest SHA-256 is taken on the worker over the slot",
  ignore,
  async fn() {
    const path = await modelFile();
    try {
      const probe = await FileSource.open(path);
      const loc: ExpertLocation = (await expertLocations(probe)).flat()[0];
      const bytes = modelBytes();
      const lay = expertLayout(loc);
      const whole = new Uint8Array(loc.bytes);
      for (const p of ["gate", "up", "down"] as const) {
        const r = loc[p];
        if (r) whole.set(bytes.subarray(r.fileOffset, r.fileOffset + r.nbytes), lay[p]);
      }
      const good = await sha256Hex(whole);
      const be = await createWasmBackend({ sharedMemory: true });
      const worker = await sharedLoadWorker();
      const source = new IntegritySource(probe);
      const slot = be.allocSlot(loc.bytes);
      const t = await readExpertInPlace({ source, backend: be, sha256: good, worker }, loc, slot);
      assert.equal(t.offThread, true);
      assert.deepEqual(be.slotBytes(slot, 0, loc.bytes), whole);
      await assert.rejects(
        readExpertInPlace({ source, backend: be, sha256: "0".repeat(64), worker }, loc, slot),
        isStoreError("integrity"),
      );
      be.dispose();
      probe.close();
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "off-thread loads: a demand load queued behind background ones starts before them",
  ignore,
  async fn() {
    const path = await modelFile();
    try {
      const w = await LoadWorker.start();
      const src = await FileSource.open(path);
      const file = src.offThreadFile()!;
      const mem = new WebAssembly.Memory({ initial: 64, maximum: 64, shared: true });
      const buf = mem.buffer as SharedArrayBuffer;
      const n = Math.min(src.size, 256 << 10);
      const load = (i: number, urgent: boolean) =>
        w.load(file, buf, [{ offset: 0, at: (i % 8) * n, length: n }], {
          hash: true,
          sha256: null,
          urgent,
        }).done;
      // everything arrives while the worker is blocked: 4 background loads start, 4 queue
      w.stallForTest(300);
      const bg = Array.from({ length: 8 }, (_, i) => load(i, false));
      const demand = load(8, true);
      // a queued background load raised to demand later also goes first
      const t = w.load(file, buf, [{ offset: 0, at: 0, length: n }], { hash: true, sha256: null });
      t.urgent();
      const [b, d, raised] = await Promise.all([Promise.all(bg), demand, t.done]);
      const lastBg = Math.max(...b.map((r) => r.started));
      assert.ok(d.started < lastBg, `demand started ${d.started}, background up to ${lastBg}`);
      assert.ok(raised.started < lastBg, `raised started ${raised.started}`);
      assert.equal(new Set([...b, d, raised].map((r) => r.started)).size, 10);
      assert.ok(b.every((r) => r.hashes[0] === d.hashes[0]), "same range, same hash");
      await w.terminate();
      src.close();
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name:
    "off-thread loads: a worker that dies fails its loads with 'load_failed' (no hang); later loads run here",
  ignore,
  async fn() {
    const path = await modelFile();
    try {
      // a lone worker killed with loads outstanding
      const w = await LoadWorker.start();
      assert.ok(w.alive);
      const mem = new WebAssembly.Memory({ initial: 64, maximum: 64, shared: true });
      const src = await FileSource.open(path);
      const file = src.offThreadFile()!;
      const ranges = [{ offset: 0, at: 0, length: Math.min(src.size, 1 << 20) }];
      const tickets = Array.from(
        { length: 8 },
        () => w.load(file, mem.buffer as SharedArrayBuffer, ranges, { hash: true, sha256: null }),
      );
      await w.terminate();
      assert.equal(w.alive, false);
      const settled = await Promise.allSettled(tickets.map((t) => t.done));
      for (const s of settled) {
        if (s.status === "rejected") assert.ok(isStoreError("load_failed")(s.reason));
      }
      assert.ok(settled.some((s) => s.status === "rejected"), "loads in flight were failed");
      await assert.rejects(
        w.load(file, mem.buffer as SharedArrayBuffer, ranges, { hash: true, sha256: null }).done,
        isStoreError("load_failed"),
      );
      src.close();

      // the store's worker killed mid-generation: a typed error, then the JS thread takes over
      const base = await residentTokens();
      const src2 = await FileSource.open(path);
      const shared = await sharedLoadWorker();
      let steps = 0;
      const m = await streamed(src2, 0.25, {
        onStep: () => {
          if (++steps !== 6) return;
          // the step's loads are sent while the worker is blocked, then it is stopped
          shared.stallForTest(2000);
          setTimeout(() => void shared.terminate(), 50);
        },
      });
      await assert.rejects(
        generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 }),
        isStoreError("load_failed"),
      );
      const before = (m.store as StreamingExpertStore).offThreadLoads;
      const r = await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
      assert.deepEqual(r.tokens, base, "same tokens once loads run on the JS thread");
      assert.equal((m.store as StreamingExpertStore).offThreadLoads, before);
      m.dispose();
      src2.close();
      // a fresh worker starts for the next store
      assert.ok((await sharedLoadWorker()).alive);
    } finally {
      await Deno.remove(path);
    }
  },
});
