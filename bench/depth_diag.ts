/**
 * Per-step conformance diagnosis of one model file against llama.cpp: for each
 * teacher-forced step, llama.cpp's argmax and top-2 margin, moe-edge's argmax,
 * max |Δlogit|, and the router near-ties (k-th/(k+1)-th gate-logit gap below
 * `ROUTER_TIE_TOL`) seen while evaluating the token that produced the step.
 * With `--force`, a step that misses the tolerance after near-ties is retried
 * with each tied layer's route flipped (tests/conformance/route_ties.ts), and
 * the run follows the route that matches llama.cpp.
 *
 * ```sh
 * deno run -A bench/depth_diag.ts --model /tmp/l4.gguf [--backend wasm|ref] [--force] [--oracle-cache F]
 * ```
 *
 * @module
 */

import { loadModel } from "../core/model/model.ts";
import { describePlan } from "../core/model/memory_plan.ts";
import { Session } from "../core/generate/session.ts";
import { argmax } from "../core/generate/sampler.ts";
import { runOracle } from "../tests/oracle/oracle.ts";
import { TieControl } from "../tests/conformance/route_ties.ts";
import "../wasm/register.ts";

const PROMPT = [5, 77, 120, 9, 33, 250, 17];
const TOL = 0.1;

/** llama.cpp's greedy tokens and logits, cached on disk (one llama.cpp run per file). */
async function oracle(
  model: string,
  steps: number,
  cache: string,
  cpuVariant?: string,
): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  try {
    const tokens = JSON.parse(await Deno.readTextFile(`${cache}.json`)) as number[];
    const raw = await Deno.readFile(`${cache}.bin`);
    const all = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const nv = all.length / tokens.length;
    return { tokens, logits: tokens.map((_, i) => all.slice(i * nv, (i + 1) * nv)) };
  } catch {
    const o = await runOracle(
      { model, mode: "greedy", prompt: PROMPT, steps, cpuVariant },
      { timeoutMs: 600_000 },
    );
    const nv = o.logits![0].length;
    const all = new Float32Array(nv * o.tokens.length);
    o.logits!.forEach((l, i) => all.set(l, i * nv));
    await Deno.writeFile(`${cache}.bin`, new Uint8Array(all.buffer));
    await Deno.writeTextFile(`${cache}.json`, JSON.stringify(o.tokens));
    return { tokens: o.tokens, logits: o.logits! };
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j] - b[j]));
  return d;
}

function margin(x: Float32Array): number {
  let a = -Infinity, b = -Infinity;
  for (const v of x) {
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) b = v;
  }
  return a - b;
}

async function main(): Promise<void> {
  const args = Deno.args;
  const get = (k: string) => {
    const i = args.indexOf(k);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const model = get("--model");
  if (!model) throw new Error("usage: --model FILE [--backend wasm] [--force] [--steps 16]");
  const backend = get("--backend") ?? "wasm";
  const steps = Number(get("--steps") ?? 16);
  const force = args.includes("--force");
  const cache = get("--oracle-cache") ?? model.replace(/\.gguf$/, "") + ".oracle";
  const t0 = performance.now();
  const variant = get("--variant");
  const o = await oracle(model, steps, cache, variant);
  if (args.includes("--oracle-only")) return;
  console.log(`oracle ${((performance.now() - t0) / 1000).toFixed(1)} s; tokens ${o.tokens}`);
  const ties = new TieControl();
  const mb = get("--memory-mb");
  const m = await loadModel(model, {
    backend,
    nCtx: 64,
    memoryBytes: mb === undefined ? undefined : Number(mb) * 1048576,
    hooks: { wrapRouter: ties.wrap },
  });
  console.log(m.memoryPlan ? describePlan(m.memoryPlan) : "(no plan)");
  const s = new Session(m);
  // prompt token by token, so that each token's near-ties are its own
  let logits!: Float32Array;
  let promptTies = 0;
  for (const t of PROMPT) {
    ties.reset();
    logits = await s.eval([t]);
    promptTies += ties.ties.length;
  }
  let agree = 0;
  const dump = get("--dump");
  const dumped: Float32Array[] = [];
  console.log(`prompt near-ties (all tokens): ${promptTies}`);
  console.log(
    "step | llama tok | margin | moe tok | max|Δ| | ties (layer:gap) of last token | forced",
  );
  for (let i = 0; i < steps; i++) {
    const ref = o.logits[i];
    let d = maxDiff(ref, logits);
    const seen = ties.ties.map((t) => `${t.layer}:${t.gap.toFixed(4)}`).join(" ");
    let forced = "";
    if (force && d > TOL && ties.ties.length > 0) {
      const layers = [...new Set([...ties.ties].sort((a, b) => a.gap - b.gap).map((t) => t.layer))];
      const last = i === 0 ? PROMPT[PROMPT.length - 1] : o.tokens[i - 1];
      let best = { d, layer: -1, logits };
      for (const layer of layers) {
        s.truncate(s.position - 1);
        ties.reset();
        ties.force.add(layer);
        const alt = await s.eval([last]);
        ties.force.clear();
        const da = maxDiff(ref, alt);
        if (da < best.d) best = { d: da, layer, logits: alt.slice() };
      }
      s.truncate(s.position - 1);
      ties.reset();
      if (best.layer >= 0) ties.force.add(best.layer);
      logits = await s.eval([last]);
      ties.force.clear();
      forced = best.layer >= 0
        ? `layer ${best.layer}: ${d.toFixed(3)} → ${best.d.toFixed(3)}`
        : "none better";
      d = maxDiff(ref, logits);
    }
    if (dump) dumped.push(logits.slice());
    const mine = argmax(logits);
    if (mine === o.tokens[i]) agree++;
    console.log(
      `${i} | ${o.tokens[i]} | ${margin(ref).toFixed(3)} | ${mine}${
        mine === o.tokens[i] ? "" : " ✗"
      } | ${d.toFixed(3)} | ${seen} | ${forced}`,
    );
    ties.reset();
    logits = await s.eval([o.tokens[i]]);
  }
  if (dump) {
    const all = new Float32Array(dumped.length * dumped[0].length);
    dumped.forEach((l, i) => all.set(l, i * l.length));
    await Deno.writeFile(dump, new Uint8Array(all.buffer));
  }
  console.log(`agreement ${agree}/${steps} (${backend}${force ? ", ties forced" : ""})`);
  s.dispose();
  m.dispose();
}

if (import.meta.main) await main();
