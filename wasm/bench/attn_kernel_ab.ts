/**
 * A/B of the attention kernel of two module builds: one decode step (1 new
 * token) at a few cache lengths, GQA shapes of real models, round-robin in
 * one process; reports the time per call of A and B (best wall of 15 × 30 ms,
 * or with `clock=cpu` the mean process CPU time) and the largest output
 * difference between them relative to max|V|.
 *
 *   git show <rev>:wasm/pkg/moe_edge_kernels_relaxed.wasm > /tmp/old.wasm
 *   deno run -A wasm/bench/attn_kernel_ab.ts /tmp/old.wasm wasm/pkg/moe_edge_kernels_relaxed.wasm \
 *     [pos=64,512,2048] [tokens=1] [clock=wall|cpu]
 *
 * `tokens=N` times N new tokens at once (a prompt chunk) after `pos` cached ones.
 *
 * @module
 */

import process from "node:process";
import { randomActivations, rng } from "../kernel_test_util.ts";

interface Raw {
  memory: WebAssembly.Memory;
  heap_base(): number;
  attention_scratch_bytes(nCtx: number, nh: number, nkv: number, hdk: number, hdv: number): number;
  attention(...a: number[]): number;
}

if (Deno.args.length < 2) throw new Error("usage: attn_kernel_ab.ts A.wasm B.wasm [pos=..]");
const opt = (k: string, d: string): string =>
  Deno.args.find((a) => a.startsWith(`${k}=`))?.slice(k.length + 1) ?? d;
const POS = opt("pos", "64,512,2048").split(",").map(Number);
const CPU = opt("clock", "wall") === "cpu";
const NTOK = Number(opt("tokens", "1"));
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const insts = Deno.args.slice(0, 2).map((p) =>
  new WebAssembly.Instance(new WebAssembly.Module(Deno.readFileSync(p)), {})
    .exports as unknown as Raw
);
// [heads, kv heads, head dim]: bench MoE / OLMoE-ish, Qwen3-30B-A3B, Mixtral
const SHAPES: [number, number, number][] = [[16, 4, 64], [32, 4, 128], [32, 8, 128]];
for (const [nh, nkv, hd] of SHAPES) {
  for (const pos of POS) {
    const nCtx = pos + NTOK;
    const r = rng(pos + nh);
    const q = randomActivations(r, NTOK * nh * hd);
    const kAll = randomActivations(r, nCtx * nkv * hd);
    const vAll = randomActivations(r, nCtx * nkv * hd);
    const outs: Float32Array[] = [];
    const runs = insts.map((k) => {
      const kvBytes = nCtx * nkv * hd * 2;
      const sb = k.attention_scratch_bytes(nCtx, nh, nkv, hd, hd);
      const base = (k.heap_base() + 63) & ~63;
      const need = base + 2 * kvBytes + (nCtx * nkv * hd * 8) + NTOK * nh * hd * 8 + sb + 4096;
      const cur = k.memory.buffer.byteLength;
      if (need > cur) k.memory.grow(Math.ceil((need - cur) / 65536));
      const kc = base, vc = (kc + kvBytes + 63) & ~63;
      const kp = (vc + kvBytes + 63) & ~63, vp = kp + nCtx * nkv * hd * 4;
      const qp = vp + nCtx * nkv * hd * 4,
        op = qp + NTOK * nh * hd * 4,
        sp = (op + NTOK * nh * hd * 4 + 63) & ~63;
      const f32 = new Float32Array(k.memory.buffer);
      f32.set(kAll, kp >> 2);
      f32.set(vAll, vp >> 2);
      f32.set(q, qp >> 2);
      /** Attention for `n` new tokens at position `p0` (their K/V rows come from kAll/vAll). */
      const attend = (p0: number, n: number) =>
        k.attention(
          kc,
          vc,
          nCtx,
          p0,
          n,
          qp,
          kp + p0 * nkv * hd * 4,
          vp + p0 * nkv * hd * 4,
          nh,
          nkv,
          hd,
          hd,
          1 / Math.sqrt(hd),
          op,
          sp,
        );
      // fill the cache with `pos` rows (their queries do not matter)
      for (let p0 = 0; p0 < pos; p0++) attend(p0, 1);
      const call = () => attend(pos, NTOK);
      if (call() !== 0) throw new Error("attention rejected the shape");
      outs.push(new Float32Array(k.memory.buffer, op, NTOK * nh * hd).slice());
      return call;
    });
    let vmax = 0;
    for (const x of vAll) vmax = Math.max(vmax, Math.abs(x));
    let diff = 0;
    for (let i = 0; i < outs[0].length; i++) {
      diff = Math.max(diff, Math.abs(outs[0][i] - outs[1][i]));
    }
    const best = [Infinity, Infinity], cpu = [0, 0], calls = [0, 0];
    for (let round = 0; round < 15; round++) {
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now(), c0 = CPU ? cpuMs() : 0;
        let n = 0;
        while (performance.now() - t0 < 30) {
          runs[i]();
          n++;
        }
        best[i] = Math.min(best[i], ((performance.now() - t0) / n) * 1000);
        cpu[i] += CPU ? cpuMs() - c0 : 0;
        calls[i] += n;
      }
    }
    const t = CPU ? cpu.map((c, i) => (c / calls[i]) * 1000) : best;
    console.log(
      `heads ${nh}/${nkv} hd ${hd} pos ${pos}${NTOK > 1 ? ` +${NTOK} tokens` : ""}: A ${
        t[0].toFixed(1)
      } us, B ${t[1].toFixed(1)} us (B/A ${(t[1] / t[0]).toFixed(3)}), max|A−B| / max|V| = ${
        (diff / vmax).toExponential(2)
      }`,
    );
  }
}
