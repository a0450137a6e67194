/**
 * Same-process A/B of two checkouts of moe-edge (e.g. a worktree of an older
 * commit against this one): both module graphs load in one process, each
 * loads the model at each thread count, and short decode passes alternate
 * between them (interleaved, so load from other processes hits both alike);
 * the best pass of each is kept. Prints decode and prefill per checkout and
 * thread count, and the ratios in the same run.
 *
 *   deno run -A wasm/bench/threads_ab.ts --model .cache/bench/moe-q4_0-….gguf
 *     --a /path/to/old/checkout [--b .] [--threads 1,2] [--tokens 16] [--prompt 64] [--rounds 8]
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";
import { cpuCeiling } from "./cpu_ceiling.ts";

const path = arg("model", "");
const dirA = arg("a", "");
if (path === "" || dirA === "") throw new Error("--model <gguf> and --a <checkout> are required");
const dirB = arg("b", new URL("../../", import.meta.url).pathname);
const counts = arg("threads", "1,2").split(",").map(Number);
const nTok = Number(arg("tokens", "16"));
const nPrompt = Number(arg("prompt", "64"));
const rounds = Number(arg("rounds", "8"));
const prompt = [1, ...Array.from({ length: nPrompt - 1 }, (_, i) => 300 + ((i * 37) % 200))];

interface Model {
  dispose(): void;
}
interface SessionLike {
  eval(tokens: number[]): Promise<Float32Array>;
  dispose(): void;
}
interface Checkout {
  name: string;
  loadModel(src: string, opts: { backend: unknown }): Promise<Model>;
  Session: new (m: Model, o: { nCtx: number }) => SessionLike;
  createWasmBackend(o: { threads: number }): Promise<{ dispose(): void; threads: number }>;
}

async function checkout(dir: string, name: string): Promise<Checkout> {
  const root = new URL(`file://${dir.endsWith("/") ? dir : dir + "/"}`);
  const model = await import(new URL("core/model/model.ts", root).href);
  const session = await import(new URL("core/generate/session.ts", root).href);
  const wasm = await import(new URL("wasm/backend.ts", root).href);
  return {
    name,
    loadModel: model.loadModel,
    Session: session.Session,
    createWasmBackend: wasm.createWasmBackend,
  };
}

function argmax(l: Float32Array): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[b]) b = i;
  return b;
}

const cos = [await checkout(dirA, "a"), await checkout(dirB, "b")];
interface Setup {
  co: Checkout;
  threads: number;
  model: Model;
  be: { dispose(): void; threads: number };
  prefill: number;
  decode: number;
  tokens: string;
}
const setups: Setup[] = [];
for (const threads of counts) {
  for (const co of cos) {
    const be = await co.createWasmBackend({ threads });
    const model = await co.loadModel(path, { backend: be });
    setups.push({ co, threads, model, be, prefill: Infinity, decode: Infinity, tokens: "" });
  }
}

async function pass(s: Setup): Promise<void> {
  const sess = new s.co.Session(s.model, { nCtx: 256 });
  const t0 = performance.now();
  let l = await sess.eval(prompt);
  const p = performance.now() - t0;
  const toks = [argmax(l)];
  const t1 = performance.now();
  for (let i = 0; i < nTok; i++) {
    l = await sess.eval([toks[toks.length - 1]]);
    toks.push(argmax(l));
  }
  const d = performance.now() - t1;
  sess.dispose();
  s.prefill = Math.min(s.prefill, p);
  s.decode = Math.min(s.decode, d);
  s.tokens = toks.join();
}

for (const s of setups) await pass(s); // warm-up
for (const s of setups) {
  s.prefill = Infinity;
  s.decode = Infinity;
}
const load0 = Deno.loadavg();
const ceil0 = await cpuCeiling();
for (let r = 0; r < rounds; r++) {
  const order = r % 2 === 0 ? setups : [...setups].reverse();
  for (const s of order) await pass(s);
}
const load1 = Deno.loadavg();
const ceil1 = await cpuCeiling();
console.log(
  `model ${path}; prompt ${nPrompt}, decode ${nTok}; best of ${rounds} interleaved passes; a = ${dirA}, b = ${dirB}`,
);
console.log(
  "| checkout | threads | prefill tok/s | decode tok/s | prefill vs 1 thread | decode vs 1 thread | decode b/a | tokens = a, 1 thread |",
);
console.log("| -- | --: | --: | --: | --: | --: | --: | -- |");
const ref = setups.find((s) => s.co.name === "a" && s.threads === counts[0])!;
for (const s of setups) {
  const one = setups.find((x) => x.co === s.co && x.threads === counts[0])!;
  const a = setups.find((x) => x.co.name === "a" && x.threads === s.threads)!;
  console.log(
    `| ${s.co.name} | ${s.be.threads} | ${(nPrompt / s.prefill * 1000).toFixed(1)} | ${
      (nTok / s.decode * 1000).toFixed(2)
    } | ${(one.prefill / s.prefill).toFixed(2)}× | ${(one.decode / s.decode).toFixed(2)}× | ${
      (a.decode / s.decode).toFixed(3)
    } | ${s.tokens === ref.tokens ? "yes" : "no"} |`,
  );
}
console.log(
  `load average before ${load0.map((v) => v.toFixed(2)).join(" ")}, after ${
    load1.map((v) => v.toFixed(2)).join(" ")
  }; ${navigator.hardwareConcurrency} CPUs (${cpuModel()}); 2-thread ceiling of an integer loop (wasm/bench/cpu_ceiling.ts) before ${
    ceil0.toFixed(2)
  }×, after ${ceil1.toFixed(2)}×`,
);
for (const s of setups) {
  s.model.dispose();
  s.be.dispose();
}
