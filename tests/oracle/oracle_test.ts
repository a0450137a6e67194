/**
 * Tests of the llama.cpp oracle itself (not of moe-edge): it loads tiny MoE GGUFs, returns
 * vocab-sized finite raw logits, greedy = first argmax, teacher-forcing reproduces greedy
 * bit-for-bit, runs are deterministic, and the pinned options take effect.
 * Skipped when the oracle is not installed (`npm ci --prefix tests/oracle`) or not linux-x64.
 */

import assert from "node:assert/strict";
import { oracleAvailable, OracleError, type OracleResult, runOracle } from "./oracle.ts";
import { TINY_VOCAB_SIZE, tinyMoeGguf, type TinyMoeOptions } from "./tiny_model.ts";

const available = await oracleAvailable();
const ignore = !available;
if (!available) {
  console.warn(
    "oracle_test: skipped (run `npm ci --prefix tests/oracle` on linux-x64 with node)",
  );
}

const PROMPT = [1, 72, 101, 108, 108, 111];

async function withModel<T>(
  opts: TinyMoeOptions,
  fn: (path: string) => Promise<T>,
): Promise<T> {
  const path = await Deno.makeTempFile({
    prefix: "moe-edge-oracle-",
    suffix: ".gguf",
  });
  try {
    await Deno.writeFile(path, tinyMoeGguf(opts));
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

function firstArgmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

function assertSane(r: OracleResult, steps: number): Float32Array[] {
  assert.equal(r.steps, steps);
  assert.equal(r.nVocab, TINY_VOCAB_SIZE);
  assert.ok(r.logits);
  assert.equal(r.logits.length, steps);
  for (const [i, l] of r.logits.entries()) {
    assert.equal(l.length, TINY_VOCAB_SIZE);
    assert.ok(l.every(Number.isFinite), `step ${i} has non-finite logits`);
    assert.equal(
      r.tokens[i],
      firstArgmax(l),
      `step ${i}: token is not the first argmax`,
    );
  }
  return r.logits;
}

function sameBits(a: Float32Array[], b: Float32Array[]): boolean {
  return a.length === b.length &&
    a.every((x, i) => {
      const y = b[i];
      const xa = new Uint32Array(x.buffer, x.byteOffset, x.length);
      const ya = new Uint32Array(y.buffer, y.byteOffset, y.length);
      return xa.length === ya.length && xa.every((v, j) => v === ya[j]);
    });
}

Deno.test({
  name: "oracle: greedy + teacher on a llama MoE, pinned options, determinism",
  ignore,
  fn: () =>
    withModel({ arch: "llama" }, async (model) => {
      const g1 = await runOracle({
        model,
        mode: "greedy",
        prompt: PROMPT,
        steps: 8,
      });
      const l1 = assertSane(g1, 8);
      // The pinned options are what llama.cpp reports it applied.
      const c = g1.contextOptions;
      assert.equal(c.verifiedFromLlamaCppLog.flash_attn, "disabled");
      assert.equal(c.verifiedFromLlamaCppLog.kv_cache_k, "f16");
      assert.equal(c.verifiedFromLlamaCppLog.kv_cache_v, "f16");
      assert.equal(c.threadsInUse, 1);
      assert.ok((c.verifiedFromLlamaCppLog.n_ubatch ?? 0) >= PROMPT.length);
      assert.equal(g1.cpu.backendLibrary, "libggml-cpu-haswell.so");
      assert.match(g1.llamaCppVersion, /llama\.cpp@v0\.5\.0$/);

      // Deterministic: a second process gives the same bits.
      const g2 = await runOracle({
        model,
        mode: "greedy",
        prompt: PROMPT,
        steps: 8,
      });
      assert.deepEqual(g2.tokens, g1.tokens);
      assert.ok(sameBits(g2.logits!, l1), "two greedy runs differ");

      // Teacher-forcing the greedy tokens takes the same decode path: identical bits, plus one
      // extra step (the logits after the last forced token).
      const t = await runOracle({
        model,
        mode: "teacher",
        prompt: PROMPT,
        forced: g1.tokens.slice(0, 8),
      });
      const lt = assertSane(t, 9);
      assert.deepEqual(t.tokens.slice(0, 8), g1.tokens);
      assert.ok(
        sameBits(lt.slice(0, 8), l1),
        "teacher-forced logits differ from greedy ones",
      );

      // "top" returns the best logits, best first, matching the full vector.
      const top = await runOracle({
        model,
        mode: "greedy",
        prompt: PROMPT,
        steps: 2,
        logits: "top",
        topK: 3,
      });
      assert.equal(top.logits, null);
      assert.equal(top.top![0][0][0], g1.tokens[0]);
      assert.equal(top.top![0][0][1], l1[0][g1.tokens[0]]);
    }),
});

Deno.test({
  name: "oracle: flash attention and KV type options change the numbers (they take effect)",
  ignore,
  fn: () =>
    withModel({ arch: "llama", seed: 3 }, async (model) => {
      const base = await runOracle({
        model,
        mode: "teacher",
        prompt: PROMPT,
        forced: [32, 119],
      });
      const fa = await runOracle({
        model,
        mode: "teacher",
        prompt: PROMPT,
        forced: [32, 119],
        flashAttention: true,
      });
      const kv32 = await runOracle({
        model,
        mode: "teacher",
        prompt: PROMPT,
        forced: [32, 119],
        kvCacheType: "F32",
      });
      assert.equal(
        fa.contextOptions.verifiedFromLlamaCppLog.flash_attn,
        "enabled",
      );
      assert.equal(
        kv32.contextOptions.verifiedFromLlamaCppLog.kv_cache_k,
        "f32",
      );
      assert.ok(
        !sameBits(fa.logits!, base.logits!),
        "flashAttention had no effect",
      );
      assert.ok(
        !sameBits(kv32.logits!, base.logits!),
        "kvCacheType had no effect",
      );
    }),
});

for (const arch of ["qwen2moe", "qwen3moe", "olmoe"] as const) {
  Deno.test({
    name: `oracle: loads and runs a ${arch} MoE`,
    ignore,
    fn: () =>
      withModel({ arch }, async (model) => {
        const r = await runOracle({
          model,
          mode: "greedy",
          prompt: PROMPT,
          steps: 4,
        });
        assertSane(r, 4);
      }),
  });
}

Deno.test({
  name: "oracle: errors carry codes and llama.cpp's reason",
  ignore,
  fn: async () => {
    await assert.rejects(
      runOracle({
        model: "/nonexistent.gguf",
        mode: "greedy",
        prompt: [1],
        steps: 1,
      }),
      (e: unknown) => e instanceof OracleError && e.code === "model_not_found",
    );
    await withModel(
      { arch: "llama", omit: ["blk.0.ffn_norm.weight"] },
      async (model) => {
        await assert.rejects(
          runOracle({ model, mode: "greedy", prompt: [1], steps: 1 }),
          (e: unknown) =>
            e instanceof OracleError && e.code === "model_load" &&
            e.message.includes("missing tensor 'blk.0.ffn_norm.weight'"),
        );
      },
    );
  },
});
