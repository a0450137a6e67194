/**
 * The memory plan: one limit, everything inside it; auto-streaming when the
 * resident model does not fit; typed errors at open naming what fits; KV
 * caches that grow with use.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { BackendError, GenerationError, ModelError } from "../errors.ts";
import type { Slot } from "../backend/backend.ts";
import { type ModelNeeds, modelNeeds, planMemory } from "./memory_plan.ts";
import { loadModel } from "./model.ts";
import type { StreamingExpertStore } from "../store/streaming_store.ts";
import { synthesizeModel } from "./synthetic.ts";
import { generateText } from "../generate/generate.ts";
import { Session } from "../generate/session.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { MemorySource } from "../store/byte_source.ts";
import { readHParams } from "./hparams.ts";
import { createWasmBackend } from "../../wasm/backend.ts";
import "../../wasm/register.ts";

const MIB = 1 << 20;

/** Needs with linear KV/scratch/host terms (property tests). */
function needs(p: {
  resident: number;
  experts: number;
  maxExpert: number;
  k: number;
  kvTok: number;
  host: number;
}): ModelNeeds {
  return {
    residentBytes: p.resident,
    expertBytes: p.experts,
    maxExpertBytes: p.maxExpert,
    expertsPerToken: p.k,
    expertCount: Math.max(1, Math.floor(p.experts / p.maxExpert)),
    kvBytesPerToken: p.kvTok * 4,
    kvLayerBytesPerToken: p.kvTok,
    scratchBytes: (n, c) => 1000 * n + 10 * c + MIB,
    hostBytes: (c) => p.host + 100 * c,
  };
}

const arbNeeds = fc.record({
  resident: fc.integer({ min: 1, max: 2000 * MIB }),
  experts: fc.integer({ min: 64 * MIB, max: 20000 * MIB }),
  maxExpert: fc.integer({ min: 1 * MIB, max: 20 * MIB }),
  k: fc.integer({ min: 1, max: 8 }),
  kvTok: fc.integer({ min: 1024, max: 64 * 1024 }),
  host: fc.integer({ min: 0, max: 200 * MIB }),
});

Deno.test("memory plan: every plan fits its limit and heap; every refusal names a context that fits", () => {
  fc.assert(
    fc.property(
      arbNeeds,
      fc.integer({ min: 1, max: 8192 }),
      fc.option(fc.integer({ min: 64, max: 32768 }), { nil: undefined }),
      fc.integer({ min: 256, max: 4096 }),
      (p, nCtx, limitMb, heapMb) => {
        const n = needs(p);
        const opts = {
          nCtx,
          heapBytes: heapMb * MIB,
          memoryBytes: limitMb === undefined ? undefined : limitMb * MIB,
        };
        let plan;
        try {
          plan = planMemory(n, opts);
        } catch (e) {
          assert.ok(e instanceof ModelError && e.code === "memory_too_small", String(e));
          const d = e.details as { maxCtx: number; minMemoryBytes: number };
          assert.ok(d.maxCtx < nCtx, "refused although the asked context fits");
          if (d.maxCtx >= 1) {
            // the named context does fit
            const ok = planMemory(n, { ...opts, nCtx: d.maxCtx });
            assert.ok(ok.expertBudgetBytes >= Math.min(p.experts, p.k * p.maxExpert));
          }
          assert.match(e.message, /context of at most \d+|no context fits/);
          return;
        }
        assert.ok(plan.totalBytes <= (opts.memoryBytes ?? Infinity) + 1, "over the limit");
        assert.ok(plan.totalBytes - plan.hostBytes <= opts.heapBytes + 1, "over the heap");
        if (plan.mode === "resident") assert.equal(plan.expertBudgetBytes, p.experts);
        else {
          assert.ok(plan.expertBudgetBytes < p.experts, "streams although everything fits");
          assert.ok(
            plan.expertBudgetBytes >= Math.min(p.experts, p.k * p.maxExpert),
            "budget below one token's need",
          );
        }
        assert.ok(plan.maxCtx >= nCtx);
      },
    ),
    { numRuns: 400 },
  );
});

Deno.test("memory plan: an explicit budget wins when it fits and fails at plan time when it does not", () => {
  const n = needs({
    resident: 500 * MIB,
    experts: 8000 * MIB,
    maxExpert: 4 * MIB,
    k: 8,
    kvTok: 16 * 1024,
    host: 100 * MIB,
  });
  const p = planMemory(n, { nCtx: 2048, heapBytes: 4096 * MIB, expertBudgetBytes: 1000 * MIB });
  assert.equal(p.mode, "streaming");
  assert.equal(p.reason, "explicit_budget");
  assert.equal(p.expertBudgetBytes, 1000 * MIB);
  assert.throws(
    () => planMemory(n, { nCtx: 2048, heapBytes: 4096 * MIB, expertBudgetBytes: 4000 * MIB }),
    (e: unknown) =>
      e instanceof ModelError && e.code === "memory_too_small" &&
      /a budget of at most \d+ MiB fits/.test(e.message) &&
      (e.details as { maxExpertBudgetBytes: number }).maxExpertBudgetBytes < 4000 * MIB,
  );
  // resident does not fit the heap: experts stream automatically (the wasm32 case)
  const auto = planMemory(n, { nCtx: 2048, heapBytes: 4096 * MIB });
  assert.equal(auto.mode, "streaming");
  assert.equal(auto.reason, "heap_limit");
  // a user limit below the heap: the limit decides
  const lim = planMemory(n, { nCtx: 2048, heapBytes: 4096 * MIB, memoryBytes: 2048 * MIB });
  assert.equal(lim.reason, "memory_limit");
  assert.ok(lim.totalBytes <= 2048 * MIB);
  assert.throws(() => planMemory(n, { nCtx: 2048, heapBytes: 4096 * MIB, memoryBytes: -1 }), {
    code: "bad_memory",
  });
});

// a small quantized MoE: 4 layers × 8 experts
const SPEC = {
  nEmbd: 64,
  nLayer: 4,
  nExpert: 8,
  nExpertUsed: 2,
  nFf: 128,
  type: GgmlType.Q8_0,
  seed: 5,
} as const;
const PROMPT = [1, 17, 42, 99, 250, 3, 77];

function needsOf(bytes: Uint8Array) {
  return readGguf(new MemorySource(bytes)).then((f) =>
    modelNeeds(f, readHParams(f.metadata, f.tensor("token_embd.weight").dims[1]))
  );
}

Deno.test("loadModel: a limit below the resident size streams experts, with the resident tokens", async () => {
  const bytes = synthesizeModel(SPEC);
  const resident = await loadModel(bytes, { backend: "wasm" });
  assert.equal(resident.memoryPlan?.mode, "resident");
  const want = (await generateText(resident, PROMPT, { maxTokens: 10, temperature: 0 })).tokens;
  const plan = resident.memoryPlan!;
  resident.dispose();
  const n = await needsOf(bytes);
  // leave room for a quarter of the experts
  const limit = plan.minTotalBytes - n.expertsPerToken * n.maxExpertBytes + n.expertBytes / 4;
  const m = await loadModel(bytes, { backend: "wasm", memoryBytes: limit });
  assert.equal(m.memoryPlan?.mode, "streaming");
  assert.equal(m.memoryPlan?.reason, "memory_limit");
  assert.ok(m.memoryPlan!.expertBudgetBytes < n.expertBytes);
  const got = (await generateText(m, PROMPT, { maxTokens: 10, temperature: 0 })).tokens;
  assert.deepEqual(got, want);
  assert.ok(m.store.stats().evictions > 0, "the store evicted under the limit");
  m.dispose();
});

Deno.test("loadModel: a limit that cannot work fails at open, naming a context and a limit that fit", async () => {
  const bytes = synthesizeModel(SPEC);
  const n = await needsOf(bytes);
  const plan = planMemory(n, { nCtx: 512, heapBytes: 4 * 1024 ** 3 });
  await assert.rejects(
    loadModel(bytes, { backend: "wasm", memoryBytes: plan.hostBytes + n.residentBytes }),
    (e: unknown) =>
      e instanceof ModelError && e.code === "memory_too_small" &&
      /memory limit/.test(e.message) &&
      typeof (e.details as { minMemoryBytes: number }).minMemoryBytes === "number",
  );
  // an explicit budget larger than the limit leaves: refused at open, not mid-run
  await assert.rejects(
    loadModel(bytes, {
      backend: "wasm",
      memoryBytes: plan.minTotalBytes,
      expertBudgetBytes: n.expertBytes,
    }),
    { code: "memory_too_small" },
  );
});

Deno.test("Session: a context beyond what the plan has room for is refused at creation", async () => {
  const bytes = synthesizeModel(SPEC);
  const roomy = await loadModel(bytes, { backend: "wasm", nCtx: 64 });
  assert.equal(roomy.nCtx, 64);
  assert.equal(new Session(roomy).nCtx, 64);
  // a 4 GiB heap has room for far more than 64 positions of this model
  assert.equal(new Session(roomy, { nCtx: 2048 }).nCtx, 2048);
  const plan = roomy.memoryPlan!;
  roomy.dispose();
  // a limit that leaves exactly the planned context: one more position is refused
  const tight = await loadModel(bytes, {
    backend: "wasm",
    nCtx: 64,
    memoryBytes: plan.totalBytes,
  });
  const lim = tight.memoryPlan!.ctxLimit;
  assert.ok(lim >= 64 && lim < 2048, `ctxLimit ${lim}`);
  assert.equal(new Session(tight, { nCtx: lim }).nCtx, lim);
  assert.throws(
    () => new Session(tight, { nCtx: lim + 1 }),
    (e: unknown) =>
      e instanceof GenerationError && e.code === "context_too_large" &&
      new RegExp(`at most ${lim}`).test(e.message),
  );
  tight.dispose();
});

Deno.test("wasm KV cache: nothing is allocated at creation; it grows with use, same results", async () => {
  const be = await createWasmBackend();
  const used0 = be.arenaStats().usedBytes;
  const spec = { layers: 3, nCtx: 4096, nKvHeads: 2, headDimK: 64, headDimV: 64 };
  const cache = be.createKvCache(spec);
  assert.equal(be.arenaStats().usedBytes, used0, "a 4096-position cache allocated up front");
  const full = spec.layers * spec.nCtx * 2 * 64 * 2 * 2;
  const p = { nHeads: 4, nKvHeads: 2, headDimK: 64, headDimV: 64, scale: 0.125 };
  const q = new Float32Array(4 * 64).map((_, i) => Math.sin(i));
  const k = new Float32Array(2 * 64).map((_, i) => Math.cos(i));
  const out = new Float32Array(4 * 64);
  const outs: Float32Array[] = [];
  for (let pos = 0; pos < 100; pos++) {
    for (let l = 0; l < spec.layers; l++) be.attention(cache, l, pos, 1, q, k, k, p, out);
    outs.push(out.slice());
  }
  const grown = be.arenaStats().usedBytes - used0;
  assert.ok(grown > 0 && grown < full / 16, `grew ${grown} of ${full}`);
  // the same sequence in a cache made at its final size gives the same outputs
  const small = be.createKvCache({ ...spec, nCtx: 100 });
  for (let pos = 0; pos < 100; pos++) {
    for (let l = 0; l < spec.layers; l++) be.attention(small, l, pos, 1, q, k, k, p, out);
    assert.deepEqual(out, outs[pos]);
  }
  // past nCtx: a typed error, no growth
  assert.throws(() => be.attention(small, 0, 100, 1, q, k, k, p, out), { code: "bad_shape" });
  const before = be.arenaStats().usedBytes;
  be.freeKvCache(cache);
  assert.equal(before - be.arenaStats().usedBytes, be.arenaStats().usedBytes >= 0 ? grownKv() : 0);
  be.dispose();

  function grownKv(): number {
    // 100 positions rounded to the growth steps (32 → 64 → 128) per layer
    return spec.layers * 128 * (2 * 64 * 2) * 2;
  }
});

Deno.test("streaming store: a heap that fills up (a shared backend) makes it evict instead of failing; prefaulted slots are held from the start", async () => {
  const bytes = synthesizeModel(SPEC);
  const SHORT = [1, 17]; // few experts resident when the heap fills
  const ref = await loadModel(bytes, { backend: "wasm", nCtx: 64 });
  const want = (await generateText(ref, SHORT, { maxTokens: 10, temperature: 0 })).tokens;
  ref.dispose();
  const n = await needsOf(bytes);
  for (const prefaultSlots of [false, true]) {
    const be = await createWasmBackend({ maxMemoryBytes: 64 * MIB });
    // the plan allows every expert (the heap is large enough) …
    const m = await loadModel(bytes, {
      backend: be,
      nCtx: 64,
      expertBudgetBytes: n.expertBytes,
      streaming: { prefaultSlots },
    });
    const atLoad = (m.store as StreamingExpertStore).memory().allocatedBytes;
    assert.ok(prefaultSlots ? atLoad > 0 && atLoad <= n.expertBytes : atLoad === 0);
    const s = new Session(m);
    let logits = await s.eval(SHORT);
    const got = [argmaxOf(logits)];
    // … then something else takes the rest of the heap, leaving room for a handful of experts
    const fillers: Slot[] = [];
    for (;;) {
      try {
        fillers.push(be.allocSlot(64 * 1024));
      } catch (e) {
        assert.ok(e instanceof BackendError && e.code === "out_of_memory");
        break;
      }
    }
    be.freeSlot(fillers.pop()!); // room for 2 experts: one token's need
    for (let i = 1; i < 10; i++) {
      logits = await s.eval([got[i - 1]]);
      got.push(argmaxOf(logits));
    }
    assert.deepEqual(got, want, `prefaultSlots ${prefaultSlots}`);
    const store = m.store as StreamingExpertStore;
    if (prefaultSlots) {
      // every slot of the budget was taken at creation: the filler never competes with it
      assert.equal(store.prefaultedSlots, SPEC.nLayer * SPEC.nExpert);
      assert.equal(store.memory().allocatedBytes, atLoad);
      assert.equal(store.stats().evictions, 0, "nothing to evict: the budget holds every expert");
    } else assert.ok(store.stats().evictions > 0, "the store evicted when the heap was full");
    s.dispose();
    m.dispose();
    be.dispose();
  }
});

function argmaxOf(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

Deno.test("CLI --memory-mb and MOE_EDGE_MEMORY_MB reach the plan; a limit that cannot work exits with the typed error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-mem-" });
  try {
    const path = `${dir}/m.gguf`;
    await Deno.writeFile(path, synthesizeModel(SPEC));
    const cli = (extra: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../cli.ts", import.meta.url).pathname,
          "generate",
          "-m",
          path,
          "--prompt-tokens",
          "1,17,42",
          "-n",
          "3",
          "--temperature",
          "0",
          "--json",
          ...extra,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const bad = await cli(["--memory-mb", "50"]);
    assert.notEqual(bad.code, 0);
    assert.match(
      new TextDecoder().decode(bad.stderr),
      /memory_too_small.*|do not fit the memory limit of 50 MiB/,
    );
    const good = await cli(["--memory-mb", "4096", "--ctx-size", "128"]);
    assert.equal(good.code, 0, new TextDecoder().decode(good.stderr));
    assert.equal(JSON.parse(new TextDecoder().decode(good.stdout)).tokens.length, 3);
    const nonPositive = await cli(["--memory-mb", "0"]);
    assert.notEqual(nonPositive.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const { readConfig, ConfigError } = await import("../../serve/config.ts");
  const env = (kv: Record<string, string>) => (k: string) => kv[k];
  assert.equal(readConfig(env({ MOE_EDGE_MEMORY_MB: "2048" })).memoryBytes, 2048 * MIB);
  assert.equal(readConfig(env({})).memoryBytes, undefined);
  assert.throws(() => readConfig(env({ MOE_EDGE_MEMORY_MB: "lots" })), ConfigError);
  assert.throws(() => readConfig(env({ MOE_EDGE_MEMORY_MB: "0" })), ConfigError);
});

Deno.test("loadModel: with a custom store, the resident part, KV and scratch are still checked at open", async () => {
  const bytes = synthesizeModel(SPEC);
  const n = await needsOf(bytes);
  await assert.rejects(
    loadModel(bytes, {
      backend: "wasm",
      memoryBytes: n.hostBytes(512) + n.residentBytes / 2,
      hooks: { createStore: () => Promise.reject(new Error("must not be reached")) },
    }),
    { code: "memory_too_small" },
  );
});

Deno.test("a whole-context prompt runs inside a heap the plan filled with streaming experts", async () => {
  const bytes = synthesizeModel(SPEC);
  const n = await needsOf(bytes);
  const nCtx = 512;
  const prompt = Array.from({ length: 504 }, (_, i) => (i * 37 + 11) % 500);
  const ref = await loadModel(bytes, { backend: "wasm", nCtx });
  const want = (await generateText(ref, prompt, { maxTokens: 8, temperature: 0 })).tokens;
  ref.dispose();
  const fixed = n.residentBytes + (n.kvBytesPerToken + n.kvLayerBytesPerToken) * nCtx +
    n.scratchBytes(nCtx, nCtx);
  // the module's own data and stack sit below the arena
  const probe = await createWasmBackend({ maxMemoryBytes: 64 * MIB });
  const base = 64 * MIB - probe.caps.maxSlotBytes;
  probe.dispose();
  // a heap (its cap) that holds the fixed part and half of the experts: the plan streams them and
  // fills the heap with the expert budget; the prompt's scratch and KV must still fit beside it
  const be = await createWasmBackend({ maxMemoryBytes: base + fixed + n.expertBytes / 2 });
  const m = await loadModel(bytes, { backend: be, nCtx });
  assert.equal(m.memoryPlan?.mode, "streaming");
  assert.equal(m.memoryPlan?.reason, "heap_limit");
  const got = (await generateText(m, prompt, { maxTokens: 8, temperature: 0 })).tokens;
  assert.deepEqual(got, want);
  m.dispose();
  be.dispose();
});
