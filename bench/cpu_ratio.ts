/**
 * moe-edge WASM vs llama.cpp (1 thread) on the bench MoE by **process CPU time** (not a test):
 * the same child processes as `deno task bench` (`bench/moe_edge_bench.ts`,
 * `bench/peers/llamacpp_bench.mjs`: 64-token prompt as one batch, then greedy single-token
 * decodes, warm-up discarded, best of `--passes` passes per process), alternating engines for
 * `--repeats` fresh processes each, and the ratios computed from CPU milliseconds (user + system
 * of the whole process) as well as from wall time.
 *
 * On a shared, oversubscribed machine (load average well above the CPU count) best-of wall
 * times mostly measure which engine got luckier slices; CPU time leaves out the slices other
 * processes took. It still counts cache and memory-bandwidth contention and any helper threads'
 * work (llama.cpp runs 1 compute thread here; moe-edge WASM one), so read it next to the wall
 * ratios, never alone.
 *
 * ```sh
 * deno run -A bench/cpu_ratio.ts [--types q4_0,q8_0,q4_K] [--repeats 2] [--passes 3] [--tokens 32]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { bannedTokens, benchPrompt, ensureBenchModel } from "./bench_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    types: { type: "string", default: "q4_0,q8_0,q4_K" },
    repeats: { type: "string", default: "2" },
    passes: { type: "string", default: "3" },
    tokens: { type: "string", default: "32" },
  },
});
const REPEATS = Number(values.repeats), PASSES = Number(values.passes);
const DECODE = Number(values.tokens);
if (![REPEATS, PASSES, DECODE].every((v) => Number.isInteger(v) && v > 0)) {
  throw new RangeError("--repeats, --passes and --tokens must be positive integers");
}
const HERE = new URL(".", import.meta.url).pathname;
const PROMPT = benchPrompt(64);
const BANNED = bannedTokens();

/** The figures this script reads from a child's JSON line. */
interface Measurement {
  prefillMs: number;
  decodeMs: number;
  prefillCpuMs: number;
  decodeCpuMs: number;
  prefillTokens: number;
  decodeSteps: number;
}

async function child(cmd: string, args: string[]): Promise<Measurement> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const res = JSON.parse(lines[lines.length - 1] || "{}");
  if (!out.success || "error" in res || typeof res.decodeCpuMs !== "number") {
    throw new Error(
      `${cmd} ${args[0]} failed: ${res.error ?? new TextDecoder().decode(out.stderr).slice(-800)}`,
    );
  }
  return res as Measurement;
}

/** Best (lowest) of each field over the runs. */
function best(ms: Measurement[]): Measurement {
  const m = (k: keyof Measurement): number => Math.min(...ms.map((x) => x[k]));
  return {
    prefillMs: m("prefillMs"),
    decodeMs: m("decodeMs"),
    prefillCpuMs: m("prefillCpuMs"),
    decodeCpuMs: m("decodeCpuMs"),
    prefillTokens: ms[0].prefillTokens,
    decodeSteps: ms[0].decodeSteps,
  };
}

const rows: string[] = [];
for (const type of values.types!.split(",")) {
  const { path } = await ensureBenchModel(type);
  const req = {
    model: path,
    prompt: PROMPT.ids,
    decode: DECODE,
    banned: BANNED.all,
    passes: PASSES,
  };
  const ours: Measurement[] = [], theirs: Measurement[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const runOurs = () =>
      child(Deno.execPath(), [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-sys",
        `${HERE}moe_edge_bench.ts`,
        JSON.stringify({ ...req, backend: "wasm" }),
      ]);
    const runTheirs = () =>
      child("node", [`${HERE}peers/llamacpp_bench.mjs`, JSON.stringify({ ...req, threads: 1 })]);
    // alternate which engine goes first
    if (r % 2 === 0) {
      ours.push(await runOurs());
      theirs.push(await runTheirs());
    } else {
      theirs.push(await runTheirs());
      ours.push(await runOurs());
    }
    console.error(`bench/cpu_ratio: ${type} repeat ${r + 1}/${REPEATS}`);
  }
  const a = best(ours), b = best(theirs);
  const tps = (n: number, ms: number) => (n / ms * 1000).toFixed(1);
  rows.push(
    `| ${type} | ${tps(a.decodeSteps, a.decodeCpuMs)} | ${tps(b.decodeSteps, b.decodeCpuMs)} | ${
      (b.decodeCpuMs / a.decodeCpuMs).toFixed(2)
    }× | ${(b.decodeMs / a.decodeMs).toFixed(2)}× | ${tps(a.prefillTokens, a.prefillCpuMs)} | ${
      tps(b.prefillTokens, b.prefillCpuMs)
    } | ${(b.prefillCpuMs / a.prefillCpuMs).toFixed(2)}× | ${
      (b.prefillMs / a.prefillMs).toFixed(2)
    }× |`,
  );
}
const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
console.log(
  `moe-edge WASM vs llama.cpp (1 thread), bench MoE, 64-token prompt + ${DECODE} decodes; best of ` +
    `${REPEATS} processes × ${PASSES} passes per engine; ${cpu}, ${navigator.hardwareConcurrency} CPUs; ` +
    `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")} at the end`,
);
console.log(
  "| type | moe-edge decode tok/s (CPU) | llama.cpp decode tok/s (CPU) | decode ratio (CPU) | decode ratio (wall) | moe-edge prefill tok/s (CPU) | llama.cpp prefill tok/s (CPU) | prefill ratio (CPU) | prefill ratio (wall) |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) console.log(r);
