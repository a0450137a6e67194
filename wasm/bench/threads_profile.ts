/**
 * Per-op profile of decode (and optionally prefill) at several thread counts
 * in one process: the backend's methods are wrapped with timers and the
 * pool's `run` is counted (forks per token), then the same decode runs
 * unwrapped for the step time. Thread counts alternate round by round; best
 * of `--rounds` kept per op.
 *
 *   deno run -A wasm/bench/threads_profile.ts --model .cache/bench/moe-q4_0-….gguf
 *     [--threads 1,2] [--tokens 16] [--prompt 64] [--rounds 3] [--profile decode|prefill]
 *
 * `--profile prefill` times the ops of the prompt's evaluation instead (per
 * prompt, in µs, in the op table).
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";
import { loadModel, type Model } from "../../core/model/model.ts";
import { Session } from "../../core/generate/session.ts";
import { createWasmBackend, type WasmBackend } from "../backend.ts";

const path = arg("model", "");
if (path === "") throw new Error("--model <gguf> is required");
const counts = arg("threads", "1,2").split(",").map(Number);
const nTok = Number(arg("tokens", "16"));
const nPrompt = Number(arg("prompt", "64"));
const rounds = Number(arg("rounds", "3"));
const profMode = arg("profile", "decode");
if (profMode !== "decode" && profMode !== "prefill") throw new Error("--profile decode|prefill");
/** Divisor of the op table: decoded tokens, or 1 (the whole prompt). */
const per = profMode === "decode" ? nTok : 1;
const prompt = [1, ...Array.from({ length: nPrompt - 1 }, (_, i) => 300 + ((i * 37) % 200))];

const METHODS = [
  "matmul",
  "ffnSwiglu",
  "attention",
  "rmsnorm",
  "rope",
  "getRows",
  "swiglu",
  "ffnSwigluMany",
  "matmulMany",
  "attentionOutput",
  "attentionBlock",
] as const;

interface Setup {
  threads: number;
  be: WasmBackend;
  model: Model;
  stats: Map<string, { n: number; ms: number }>;
  forks: number;
  on: boolean;
  /** Gaps (µs) between the end of a fork and the start of the next: < 20, < 50, < 100, ≥ 100. */
  gaps: number[];
  lastEnd: number;
}

let depth = 0;

function instrument(s: Setup): void {
  const be = s.be as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const m of METHODS) {
    if (typeof be[m] !== "function") continue; // an older backend without it
    const f = be[m].bind(s.be);
    be[m] = (...a: unknown[]) => {
      if (!s.on || depth > 0) return f(...a); // nested calls count in their caller
      let key: string = m;
      if (m === "matmul") {
        const w = a[0] as { rows: number; cols: number };
        key = `matmul ${w.rows}×${w.cols}`;
      }
      if (m === "matmulMany") {
        key = `${m} ${(a[0] as { rows: number }[]).map((w) => w.rows).join("+")}×${
          (a[0] as { cols: number }[])[0].cols
        }`;
      }
      const t0 = performance.now();
      depth++;
      let r: unknown;
      try {
        r = f(...a);
      } finally {
        depth--;
      }
      const dt = performance.now() - t0;
      if (m === "ffnSwigluMany") key = `${m} (${(a[0] as unknown[]).length} experts)`;
      const st = s.stats.get(key) ?? { n: 0, ms: 0 };
      st.n++;
      st.ms += dt;
      s.stats.set(key, st);
      return r;
    };
  }
  const pool = s.be.threadPool;
  if (pool !== null) {
    const run = pool.run.bind(pool);
    pool.run = (...a: Parameters<typeof run>) => {
      if (!s.on) return run(...a);
      s.forks++;
      const t0 = performance.now();
      const g = (t0 - s.lastEnd) * 1000;
      s.gaps[g < 20 ? 0 : g < 50 ? 1 : g < 100 ? 2 : 3]++;
      const r = run(...a);
      s.lastEnd = performance.now();
      return r;
    };
  }
}

function argmax(l: Float32Array): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[b]) b = i;
  return b;
}

async function pass(s: Setup): Promise<{ prefill: number; decode: number; tokens: number[] }> {
  const sess = new Session(s.model, { nCtx: 256 });
  const t0 = performance.now();
  let l = await sess.eval(prompt);
  const prefill = performance.now() - t0;
  const tokens = [argmax(l)];
  const t1 = performance.now();
  for (let i = 0; i < nTok; i++) {
    l = await sess.eval([tokens.at(-1)!]);
    tokens.push(argmax(l));
  }
  const decode = performance.now() - t1;
  sess.dispose();
  return { prefill, decode, tokens };
}

const setups: Setup[] = [];
for (const threads of counts) {
  const be = await createWasmBackend({ threads });
  const model = await loadModel(path, { backend: be });
  const s: Setup = {
    threads,
    be,
    model,
    stats: new Map(),
    forks: 0,
    on: false,
    gaps: [0, 0, 0, 0],
    lastEnd: 0,
  };
  instrument(s);
  setups.push(s);
  await pass(s); // warm-up
}
const load0 = Deno.loadavg();
const best = setups.map(() => ({ prefill: Infinity, decode: Infinity, tokens: [] as number[] }));
const prof = setups.map(() => new Map<string, { n: number; ms: number }>());
const decProf = setups.map(() => ({ total: Infinity, forks: 0, gaps: [0, 0, 0, 0] }));
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < setups.length; i++) {
    const s = setups[i];
    const p = await pass(s);
    best[i].prefill = Math.min(best[i].prefill, p.prefill);
    best[i].decode = Math.min(best[i].decode, p.decode);
    best[i].tokens = p.tokens;
    // profiled decode only (prefill untimed)
    const sess = new Session(s.model, { nCtx: 256 });
    let l = profMode === "decode" ? await sess.eval(prompt) : new Float32Array(0);
    s.stats = new Map();
    s.forks = 0;
    s.gaps = [0, 0, 0, 0];
    s.lastEnd = performance.now();
    s.on = true;
    const t0 = performance.now();
    if (profMode === "prefill") await sess.eval(prompt);
    else for (let k = 0; k < nTok; k++) l = await sess.eval([argmax(l)]);
    const total = performance.now() - t0;
    s.on = false;
    sess.dispose();
    if (total < decProf[i].total) {
      decProf[i] = { total, forks: s.forks, gaps: s.gaps };
      prof[i] = s.stats;
    }
  }
}
const load1 = Deno.loadavg();
console.log(
  `model ${path}; prompt ${nPrompt}, decode ${nTok}; best of ${rounds}; ${navigator.hardwareConcurrency} CPUs (${cpuModel()})`,
);
console.log(`| threads | prefill ms | decode ms/token | vs ${counts[0]} (prefill, decode) |`);
console.log("| --: | --: | --: | --: |");
best.forEach((b, i) =>
  console.log(
    `| ${counts[i]} | ${b.prefill.toFixed(1)} | ${(b.decode / nTok).toFixed(3)} | ${
      (best[0].prefill / b.prefill).toFixed(2)
    }×, ${(best[0].decode / b.decode).toFixed(2)}× |`,
  )
);
console.log(
  `tokens identical: ${best.every((b) => b.tokens.join() === best[0].tokens.join())}`,
);
console.log(
  profMode === "decode"
    ? "\nprofiled decode, per token (µs), best profiled pass:"
    : `\nprofiled prefill of ${nPrompt} tokens, per prompt (µs), best profiled pass:`,
);
const keys = [...new Set(prof.flatMap((m) => [...m.keys()]))].sort();
console.log(`| op | calls/token | ${counts.map((t) => `${t}t µs/token`).join(" | ")} |`);
console.log(`| -- | --: | ${counts.map(() => "--:").join(" | ")} |`);
for (const k of keys) {
  const n = (prof[0].get(k)?.n ?? 0) / per;
  console.log(
    `| ${k} | ${n} | ${
      prof.map((m) => ((m.get(k)?.ms ?? 0) * 1000 / per).toFixed(0)).join(" | ")
    } |`,
  );
}
const opSum = prof.map((m) => [...m.values()].reduce((a, v) => a + v.ms, 0));
console.log(
  `| (sum of ops) | | ${opSum.map((v) => (v * 1000 / per).toFixed(0)).join(" | ")} |`,
);
console.log(
  `| (step total) | | ${decProf.map((d) => (d.total * 1000 / per).toFixed(0)).join(" | ")} |`,
);
console.log(
  `| (outside ops) | | ${
    decProf.map((d, i) => ((d.total - opSum[i]) * 1000 / per).toFixed(0)).join(" | ")
  } |`,
);
console.log(`| forks/token | | ${decProf.map((d) => (d.forks / per).toFixed(1)).join(" | ")} |`);
console.log(
  `| gaps before forks /token (<20, <50, <100, ≥100 µs) | | ${
    decProf.map((d) => d.gaps.map((g) => (g / per).toFixed(1)).join(", ")).join(" | ")
  } |`,
);
console.log(
  `load average before ${load0.map((v) => v.toFixed(2)).join(" ")}, after ${
    load1.map((v) => v.toFixed(2)).join(" ")
  }`,
);
for (const s of setups) {
  s.model.dispose();
  s.be.dispose();
}
