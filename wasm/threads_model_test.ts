/**
 * End to end: a synthesized MoE model (Q4_K and Q8_0 weights, shapes large
 * enough that matmuls and the fused expert FFN run on the pool) gives the
 * same logits bit for bit and the same greedy tokens at 1, 2 and 4 threads,
 * through prefill and decode.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { Session } from "../core/generate/session.ts";
import { loadModel } from "../core/model/model.ts";
import type { LinearName } from "../core/model/transformer.ts";
import { synthesizeModel } from "../core/model/synthetic.ts";
import { GgmlType } from "../core/tensor/ggml_type.ts";
import { createWasmBackend } from "./backend.ts";
import { sharedMemorySupported } from "./pkg/moe_edge_kernels.ts";

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i;
  return b;
}

Deno.test({
  name:
    "logits and greedy tokens are identical at 1, 2 and 4 threads (Q4_K and Q8_0 MoE, NEOX and NORM RoPE), with the whole attention as one region",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const cases: ["qwen2moe" | "llama", GgmlType][] = [
      ["qwen2moe", GgmlType.Q4_K],
      ["qwen2moe", GgmlType.Q8_0],
      ["llama", GgmlType.Q4_K],
    ];
    for (const [arch, type] of cases) {
      const bytes = synthesizeModel({
        arch,
        nEmbd: 512,
        nHead: 4,
        nHeadKv: 2,
        nLayer: 2,
        nExpert: 4,
        nExpertUsed: 2,
        nFf: 1024,
        nVocab: 1024,
        type,
        seed: 5,
      });
      const runs: { logits: Uint32Array[]; tokens: number[] }[] = [];
      for (const threads of [1, 2, 4]) {
        const be = await createWasmBackend({ threads });
        equal(be.threads, threads);
        // count the attention blocks that ran as one region (none on 1 thread)
        let blocks = 0;
        const block = be.attentionBlock.bind(be);
        be.attentionBlock = (...a: Parameters<typeof block>) => {
          const done = block(...a);
          if (done) blocks++;
          return done;
        };
        const model = await loadModel(bytes, { backend: be });
        const s = new Session(model, { nCtx: 64 });
        const logits: Uint32Array[] = [];
        const tokens: number[] = [];
        let l = await s.eval([5, 77, 120, 9, 33, 250, 17]); // prefill
        for (let i = 0; i < 6; i++) {
          logits.push(new Uint32Array(Float32Array.from(l).buffer));
          const t = argmax(l);
          tokens.push(t);
          l = await s.eval([t]); // decode
        }
        ok(l.every(Number.isFinite));
        // 2 layers × (prefill + 6 decode steps)
        equal(blocks, threads === 1 ? 0 : 14, `${arch} attention blocks at ${threads} threads`);
        s.dispose();
        model.dispose();
        be.dispose();
        runs.push({ logits, tokens });
      }
      for (let i = 1; i < runs.length; i++) {
        deepEqual(runs[i].tokens, runs[0].tokens, `tokens, run ${i}`);
        runs[i].logits.forEach((l, j) =>
          deepEqual(l, runs[0].logits[j], `logits step ${j}, run ${i}`)
        );
      }
    }
  },
});

Deno.test({
  name:
    "with adapters on attn_k, attn_output and one expert, the fused paths step aside: same logits at 1 and 2 threads, and the adapters count",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const bytes = synthesizeModel({
      arch: "qwen2moe",
      nEmbd: 512,
      nHead: 4,
      nHeadKv: 2,
      nLayer: 2,
      nExpert: 4,
      nExpertUsed: 2,
      nFf: 1024,
      nVocab: 1024,
      type: GgmlType.Q4_K,
      seed: 9,
    });
    // out[t][i] += 0.01·x[t][i mod cols]·(i mod 7 − 3): deterministic, depends on x
    const touched: string[] = [];
    const adapter = {
      applies: (layer: number, proj: LinearName, expert?: number) =>
        (layer === 0 && proj === "attn_k") || (layer === 1 && proj === "attn_output") ||
        (layer === 1 && proj === "ffn_up_exps" && expert === 2),
      apply(
        layer: number,
        proj: LinearName,
        x: Float32Array,
        n: number,
        out: Float32Array,
        expert?: number,
      ) {
        touched.push(`${layer}:${proj}:${expert ?? -1}`);
        const cols = x.length / n, rows = out.length / n;
        for (let t = 0; t < n; t++) {
          for (let i = 0; i < rows; i++) {
            out[t * rows + i] += 0.01 * x[t * cols + (i % cols)] * ((i % 7) - 3);
          }
        }
      },
    };
    const run = async (threads: number, adapters: boolean) => {
      const be = await createWasmBackend({ threads });
      const model = await loadModel(bytes, {
        backend: be,
        hooks: adapters ? { adapters: [adapter] } : undefined,
      });
      const s = new Session(model, { nCtx: 64 });
      const out: Uint32Array[] = [];
      let l = await s.eval([5, 77, 120, 9, 33, 250, 17]);
      for (let i = 0; i < 4; i++) {
        out.push(new Uint32Array(Float32Array.from(l).buffer));
        l = await s.eval([argmax(l)]);
      }
      s.dispose();
      model.dispose();
      be.dispose();
      return out;
    };
    const one = await run(1, true);
    const n1 = touched.length;
    for (const t of ["0:attn_k:-1", "1:attn_output:-1", "1:ffn_up_exps:2"]) {
      ok(touched.includes(t), t);
    }
    const two = await run(2, true);
    equal(touched.length, 2 * n1, "the adapters ran as often at 2 threads");
    two.forEach((l, j) => deepEqual(l, one[j], `logits step ${j}`));
    const plain = await run(2, false);
    ok(plain.some((l, j) => l.some((b, i) => b !== one[j][i])), "the adapters change the logits");
  },
});

Deno.test({
  name:
    "a continuous batch (prefill chunk + decode rows of two sequences) is identical at 1 and 2 threads",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    const bytes = synthesizeModel({
      arch: "qwen2moe",
      nEmbd: 512,
      nHead: 4,
      nHeadKv: 2,
      nLayer: 2,
      nExpert: 4,
      nExpertUsed: 2,
      nFf: 1024,
      nVocab: 1024,
      type: GgmlType.Q8_0,
      seed: 13,
    });
    const run = async (threads: number) => {
      const be = await createWasmBackend({ threads });
      const model = await loadModel(bytes, { backend: be });
      const hp = model.hp;
      const spec = {
        layers: hp.nLayer,
        nCtx: 32,
        nKvHeads: hp.nHeadKv,
        headDimK: hp.headDimK,
        headDimV: hp.headDimV,
      };
      const a = be.createKvCache(spec), b = be.createKvCache(spec);
      const out: Uint32Array[] = [];
      const logits = new Float32Array(2 * hp.nVocab);
      // step 1: a's 6-token prompt with b's 3-token prompt; step 2: one decode row each
      await model.transformer.forwardBatch([
        { cache: a, tokens: Int32Array.from([5, 77, 120, 9, 33, 250]), startPos: 0 },
        { cache: b, tokens: Int32Array.from([8, 400, 17]), startPos: 0 },
      ], logits);
      out.push(new Uint32Array(logits.slice().buffer));
      await model.transformer.forwardBatch([
        { cache: a, tokens: Int32Array.from([argmax(logits.subarray(0, hp.nVocab))]), startPos: 6 },
        { cache: b, tokens: Int32Array.from([argmax(logits.subarray(hp.nVocab))]), startPos: 3 },
      ], logits);
      out.push(new Uint32Array(logits.slice().buffer));
      ok(logits.every(Number.isFinite));
      be.freeKvCache(a);
      be.freeKvCache(b);
      model.dispose();
      be.dispose();
      return out;
    };
    const one = await run(1), two = await run(2);
    one.forEach((l, i) => deepEqual(two[i], l, `step ${i}`));
  },
});
