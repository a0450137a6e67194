/**
 * End-to-end thread scaling: moe-edge wasm at each thread count and native
 * llama.cpp (node-llama-cpp, same thread counts) on one GGUF, each
 * measurement a fresh child process (`bench/moe_edge_bench.ts`,
 * `bench/peers/llamacpp_bench.mjs`), engines and thread counts alternating
 * over `--repeats` rounds, best kept. Prints a markdown table with the load
 * average before and after.
 *
 *   deno run -A wasm/bench/threads_e2e.ts --model .cache/bench/moe-q4_0-….gguf
 *     [--threads 1,2] [--prompt 64] [--tokens 16] [--repeats 2] [--no-llama]
 *
 * @module
 */

import { arg, cpuModel } from "./bench_args.ts";

const model = arg("model", "");
if (model === "") throw new Error("--model <gguf> is required");
const counts = arg("threads", "1,2").split(",").map(Number);
const nPrompt = Number(arg("prompt", "64"));
const decode = Number(arg("tokens", "16"));
const repeats = Number(arg("repeats", "2"));
const llama = !Deno.args.includes("--no-llama");
const root = new URL("../../", import.meta.url);
// BOS then ids from the middle of a small vocabulary (no control or byte tokens)
const prompt = [1, ...Array.from({ length: nPrompt - 1 }, (_, i) => 300 + ((i * 37) % 200))];
const banned = [0, 1, 2];

interface Result {
  prefillMs: number;
  decodeMs: number;
  tokens: number[];
  threads?: number;
  error?: string;
}

async function child(cmd: string, args: string[]): Promise<Result> {
  const out = await new Deno.Command(cmd, { args, cwd: root, stdout: "piped", stderr: "null" })
    .output();
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "{}";
  const r = JSON.parse(line) as Result;
  if (r.error) throw new Error(r.error);
  return r;
}

const req = (threads: number) =>
  JSON.stringify({ model, prompt, decode, banned, threads, passes: 2, backend: "wasm" });
const engines: { name: string; threads: number; run: () => Promise<Result> }[] = [];
for (const t of counts) {
  engines.push({
    name: "moe-edge wasm",
    threads: t,
    run: () => child(Deno.execPath(), ["run", "-A", "bench/moe_edge_bench.ts", req(t)]),
  });
  if (llama) {
    engines.push({
      name: "llama.cpp",
      threads: t,
      run: () => child("node", ["bench/peers/llamacpp_bench.mjs", req(t)]),
    });
  }
}
const load0 = Deno.loadavg();
const best = engines.map(() => ({ prefill: Infinity, decode: Infinity, tokens: [] as number[] }));
for (let k = 0; k < repeats; k++) {
  const order = k % 2 === 0 ? engines.map((_, i) => i) : engines.map((_, i) => i).reverse();
  for (const i of order) {
    const r = await engines[i].run();
    best[i].prefill = Math.min(best[i].prefill, r.prefillMs);
    best[i].decode = Math.min(best[i].decode, r.decodeMs);
    best[i].tokens = r.tokens;
    console.error(
      `${engines[i].name} t=${engines[i].threads}: prefill ${r.prefillMs.toFixed(0)} ms, decode ${
        r.decodeMs.toFixed(0)
      } ms`,
    );
  }
}
const load1 = Deno.loadavg();
const tps = (i: number) => ({
  p: nPrompt / (best[i].prefill / 1000),
  d: decode / (best[i].decode / 1000),
});
const base = (name: string) => engines.findIndex((e) => e.name === name && e.threads === counts[0]);
console.log(
  `model ${model}, prompt ${nPrompt}, decode ${decode}, best of ${repeats} processes × 2 passes`,
);
console.log(
  "| engine | threads | prefill tok/s | decode tok/s | prefill vs 1 thread | decode vs 1 thread | decode vs llama.cpp same threads | tokens = wasm 1 thread |",
);
console.log("| -- | --: | --: | --: | --: | --: | --: | --: |");
engines.forEach((e, i) => {
  const b = tps(base(e.name));
  const me = tps(i);
  const li = engines.findIndex((x) => x.name === "llama.cpp" && x.threads === e.threads);
  const vsL = e.name === "moe-edge wasm" && li >= 0 ? `${(me.d / tps(li).d).toFixed(2)}×` : "—";
  const same = best[i].tokens.join() === best[base("moe-edge wasm")].tokens.join();
  console.log(
    `| ${e.name} | ${e.threads} | ${me.p.toFixed(1)} | ${me.d.toFixed(2)} | ${
      (me.p / b.p).toFixed(2)
    }× | ${(me.d / b.d).toFixed(2)}× | ${vsL} | ${same ? "yes" : "no"} |`,
  );
});
console.log(
  `load average before ${load0.map((v) => v.toFixed(2)).join(" ")}, after ${
    load1.map((v) => v.toFixed(2)).join(" ")
  }; ${navigator.hardwareConcurrency} CPUs (${cpuModel()})`,
);
