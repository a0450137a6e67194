/**
 * End to end: a synthesized MoE model (Q4_K and Q8_0 weights, shapes large
 * enough that matmuls and the fused expert FFN run on the pool) gives the
 * same logits bit for bit and the same greedy tokens at 1, 2 and 4 threads,
 * through prefill and decode.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { Session } from "../core/generate/session.ts";
import { loadModel } from "../core/model/model.ts";
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
  name: "logits and greedy tokens are identical at 1, 2 and 4 threads (Q4_K and Q8_0 MoE)",
  ignore: !sharedMemorySupported(),
  fn: async () => {
    for (const type of [GgmlType.Q4_K, GgmlType.Q8_0]) {
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
        type,
        seed: 5,
      });
      const runs: { logits: Uint32Array[]; tokens: number[] }[] = [];
      for (const threads of [1, 2, 4]) {
        const be = await createWasmBackend({ threads });
        equal(be.threads, threads);
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
