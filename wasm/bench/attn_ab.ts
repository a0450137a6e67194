/**
 * The small decode regions at 1 and 2 threads on the bench MoE's shapes (16
 * heads / 4 KV heads of 64, Q4_0): `attention` then `matmul(attn_output)` at
 * 1 thread vs `attentionOutput` at 2, the parts alone, and Q/K/V (1024 + 256
 * + 256 rows × 1024) as three matmuls vs one `matmulMany`. Decode at a given
 * position; best of rounds, µs per call.
 *
 *   deno run -A wasm/bench/attn_ab.ts [pos=72] [rounds=20]
 *
 * @module
 */
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { randomActivations, randomWeights, rng } from "../kernel_test_util.ts";
import { createWasmBackend, type WasmBackend } from "../backend.ts";
import type { WeightView } from "../../core/backend/backend.ts";

const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`${k}=`))?.slice(k.length + 1) ?? d;
const POS = Number(opt("pos", "72")), ROUNDS = Number(opt("rounds", "20"));
const nKv = 4, g = 4, hd = 64, nAtt = nKv * g * hd, rows = 1024;
const p = { nHeads: nKv * g, nKvHeads: nKv, headDimK: hd, headDimV: hd, scale: 1 / Math.sqrt(hd) };
const r = rng(7);
const wb = randomWeights(r, GgmlType.Q4_0, rows, nAtt);
const upload = (be: WasmBackend, bytes = wb, r = rows): WeightView => {
  const slot = be.allocSlot(bytes.length);
  be.writeSlot(slot, 0, bytes);
  return { slot, offset: 0, type: GgmlType.Q4_0, rows: r, cols: nAtt };
};
const wk = randomWeights(r, GgmlType.Q4_0, 256, nAtt),
  wv = randomWeights(r, GgmlType.Q4_0, 256, nAtt);
const one = await createWasmBackend({ threads: 1 });
const two = await createWasmBackend({ threads: 2 });
const spec = { layers: 1, nCtx: POS + 8, nKvHeads: nKv, headDimK: hd, headDimV: hd };
const c1 = one.createKvCache(spec), c2 = two.createKvCache(spec);
const w1 = upload(one), w2 = upload(two);
const qkv1 = [upload(one), upload(one, wk, 256), upload(one, wv, 256)];
const qkv2 = [upload(two), upload(two, wk, 256), upload(two, wv, 256)];
const x1 = randomActivations(r, nAtt);
const qkvOut = [new Float32Array(rows), new Float32Array(256), new Float32Array(256)];
const q = randomActivations(r, POS * p.nHeads * hd);
const k = randomActivations(r, POS * nKv * hd);
const v = randomActivations(r, POS * nKv * hd);
const att = new Float32Array(POS * nAtt);
one.attention(c1, 0, 0, POS, q, k, v, p, att);
two.attention(c2, 0, 0, POS, q, k, v, p, att);
const q1 = q.subarray(0, p.nHeads * hd), k1 = k.subarray(0, nKv * hd), v1 = v.subarray(0, nKv * hd);
const a1 = new Float32Array(nAtt), out = new Float32Array(rows);
const cases: Record<string, () => void> = {
  "1t attention": () => one.attention(c1, 0, POS, 1, q1, k1, v1, p, a1),
  "1t matmul wo": () => one.matmul(w1, a1, 1, out),
  "1t attention+matmul": () => {
    one.attention(c1, 0, POS, 1, q1, k1, v1, p, a1);
    one.matmul(w1, a1, 1, out);
  },
  "1t Q, K, V matmuls": () => {
    for (let i = 0; i < 3; i++) one.matmul(qkv1[i], x1, 1, qkvOut[i]);
  },
  "2t matmulMany Q/K/V": () => {
    if (!two.matmulMany(qkv2, x1, 1, qkvOut)) throw new Error("not fused");
  },
  "2t attention": () => two.attention(c2, 0, POS, 1, q1, k1, v1, p, a1),
  "2t matmul wo": () => two.matmul(w2, a1, 1, out),
  "2t attentionOutput": () => {
    if (!two.attentionOutput(c2, 0, POS, 1, q1, k1, v1, p, w2, out)) throw new Error("not fused");
  },
};
const best: Record<string, number> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, f] of Object.entries(cases)) {
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < 20) {
      f();
      n++;
    }
    best[name] = Math.min(best[name] ?? Infinity, ((performance.now() - t0) / n) * 1000);
  }
}
for (const [name, us] of Object.entries(best)) {
  console.log(`${name.padEnd(22)} ${us.toFixed(1)} µs`);
}
one.dispose();
two.dispose();
