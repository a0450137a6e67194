/**
 * Where a decoded token's time goes at one thread count, as exclusive time per
 * category (a stack of timers: a wrapped call's time minus that of the wrapped
 * calls inside it): the parallel regions (`pool.run`, fork to join), each
 * backend method's own serial work (building programs, converting
 * activations, copies, single-thread kernels), the MoE layer's core work
 * (routing, job lists, the weighted sum) and the rest of the step (residuals,
 * embedding, logits, session). Best pass of `--rounds` (lowest step total).
 *
 *   deno run -A wasm/bench/serial_profile.ts --model .cache/bench/moe-q4_0-….gguf
 *     [--threads 2] [--tokens 32] [--prompt 64] [--rounds 5] [--prefill]
 *
 * `--prefill` profiles the prompt's evaluation instead (figures per prompt, not per token).
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";
import { loadModel } from "../../core/model/model.ts";
import { MoeLayer } from "../../core/moe/moe_layer.ts";
import { Session } from "../../core/generate/session.ts";
import { createWasmBackend } from "../backend.ts";

const path = arg("model", "");
if (path === "") throw new Error("--model <gguf> is required");
const threads = Number(arg("threads", "2"));
const nTok = Number(arg("tokens", "32"));
const nPrompt = Number(arg("prompt", "64"));
const rounds = Number(arg("rounds", "5"));
const prefill = Deno.args.includes("--prefill");
/** Divisor of the figures: decoded tokens, or 1 (the whole prompt). */
const per = prefill ? 1 : nTok;
const unit = prefill ? "prompt" : "token";
const prompt = [1, ...Array.from({ length: nPrompt - 1 }, (_, i) => 300 + ((i * 37) % 200))];

const METHODS = [
  "matmul",
  "matmulMany",
  "ffnSwiglu",
  "ffnSwigluMany",
  "attention",
  "attentionOutput",
  "attentionBlock",
  "rmsnorm",
  "rope",
  "getRows",
  "swiglu",
] as const;

let on = false;
/** Per category: exclusive ms and calls, and every call's exclusive µs. */
let acc = new Map<string, { ms: number; n: number }>();
const calls = new Map<string, number[]>();
/** Child time of each open frame. */
const stack: number[] = [];

function timed<A extends unknown[], R>(name: string, f: (...a: A) => R): (...a: A) => R {
  return (...a: A): R => {
    if (!on) return f(...a);
    stack.push(0);
    const t0 = performance.now();
    const done = (): void => {
      const dt = performance.now() - t0;
      const child = stack.pop()!;
      if (stack.length > 0) stack[stack.length - 1] += dt;
      const s = acc.get(name) ?? { ms: 0, n: 0 };
      s.ms += dt - child;
      s.n++;
      acc.set(name, s);
      const c = calls.get(name) ?? [];
      c.push((dt - child) * 1000);
      calls.set(name, c);
    };
    let r: R;
    try {
      r = f(...a);
    } catch (e) {
      done();
      throw e;
    }
    if (r instanceof Promise) return r.finally(done) as R;
    done();
    return r;
  };
}

const be = await createWasmBackend({ threads });
const rec = be as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const m of METHODS) {
  if (typeof rec[m] === "function") rec[m] = timed(`be.${m} (serial part)`, rec[m].bind(be));
}
const pool = be.threadPool;
if (pool !== null) pool.run = timed("parallel regions (pool.run)", pool.run.bind(pool));
const fwd = MoeLayer.prototype.forward;
MoeLayer.prototype.forward = function (this: MoeLayer, ...a: Parameters<typeof fwd>) {
  return timed("MoeLayer.forward (core: routing, jobs, weighted sum)", fwd.bind(this))(...a);
};
const model = await loadModel(path, { backend: be });

function argmax(l: Float32Array): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[b]) b = i;
  return b;
}

let best = Infinity;
let bestAcc = new Map<string, { ms: number; n: number }>();
const load0 = Deno.loadavg();
for (let r = 0; r <= rounds; r++) {
  const sess = new Session(model, { nCtx: 256 });
  let l = prefill ? new Float32Array(0) : await sess.eval(prompt);
  acc = new Map();
  on = r > 0; // the first pass warms up
  const t0 = performance.now();
  if (prefill) await sess.eval(prompt);
  else for (let k = 0; k < nTok; k++) l = await sess.eval([argmax(l)]);
  const total = performance.now() - t0;
  on = false;
  sess.dispose();
  if (r > 0 && total < best) {
    best = total;
    bestAcc = acc;
  }
}
const load1 = Deno.loadavg();
let sum = 0;
console.log(
  `model ${path}; ${threads} threads; ${
    prefill ? `a ${nPrompt}-token prompt` : `decode ${nTok} tokens after a ${nPrompt}-token prompt`
  }; best of ${rounds}; ${navigator.hardwareConcurrency} CPUs (${cpuModel()})`,
);
console.log(`| category (exclusive) | calls/${unit} | µs/${unit} |`);
console.log("| -- | --: | --: |");
for (const [k, v] of [...bestAcc].sort((a, b) => b[1].ms - a[1].ms)) {
  sum += v.ms;
  console.log(`| ${k} | ${(v.n / per).toFixed(1)} | ${(v.ms * 1000 / per).toFixed(0)} |`);
}
console.log(
  `| rest of the step (residuals, embedding, logits, session) | | ${
    ((best - sum) * 1000 / per).toFixed(0)
  } |`,
);
console.log(`| step total | | ${(best * 1000 / per).toFixed(0)} |`);
console.log(`load average before ${load0.join(" ")}, after ${load1.join(" ")}`);
model.dispose();
be.dispose();

/** The `q` quantile of `a` (sorted copy). */
function quantile(a: number[], q: number): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
console.log(
  "\nper call, every profiled pass (exclusive µs): p10 / median, and p10 × calls per token",
);
console.log(`| category | calls/${unit} | p10 µs | median µs | p10 µs/${unit} |`);
console.log("| -- | --: | --: | --: | --: |");
for (const [k, v] of calls) {
  const n = v.length / (rounds * per);
  console.log(
    `| ${k} | ${n.toFixed(1)} | ${quantile(v, 0.1).toFixed(1)} | ${quantile(v, 0.5).toFixed(1)} | ${
      (quantile(v, 0.1) * n).toFixed(0)
    } |`,
  );
}
