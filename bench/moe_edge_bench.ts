/**
 * One moe-edge measurement in a fresh process (so the WASM compile is a cold
 * one): `deno run -A bench/moe_edge_bench.ts '<json request>'` prints one JSON
 * line. Request: `{ model, backend: "wasm"|"ref", prompt: number[], decode: number,
 * banned: number[], warmup: boolean, passes: number }`.
 *
 * Measures backend creation (for wasm: module compile, then instantiate),
 * `loadModel`, a warm-up pass (8-token prompt + 4 decodes, discarded), then on
 * a fresh session: prefill = one `Session.eval(prompt)`, decode = `decode`
 * single-token evals, each fed the greedy token (first argmax over the
 * logits with `banned` ids excluded) of the previous step. With `passes` > 1
 * the measured pass repeats on fresh sessions and the fastest prefill and
 * decode are reported (all samples under `passes`).
 *
 * @module
 */

import process from "node:process";
import { createBackend, loadModel, Session } from "../mod.ts";
import { compileKernels } from "../wasm/pkg/moe_edge_kernels.ts";

interface Request {
  model: string;
  backend: string;
  prompt: number[];
  decode: number;
  banned: number[];
  warmup?: boolean;
  /** Measured passes in this process, each on a fresh session (default 1); the best is reported. */
  passes?: number;
  /** WASM compute threads (default 1). */
  threads?: number;
}

function argmaxAllowed(logits: Float32Array, banned: Uint8Array): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (banned[i] === 0 && (best < 0 || logits[i] > bestV)) {
      best = i;
      bestV = logits[i];
    }
  }
  return best;
}

async function main(req: Request): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  let compileMs: number | null = null;
  if (req.backend === "wasm") {
    await compileKernels(); // first call in this isolate: decodes and compiles the module
    compileMs = performance.now() - t0;
  }
  const t1 = performance.now();
  // wasm: instantiate the compiled module (threads > 1: the shared-memory build + worker pool)
  const backend = await createBackend(req.backend, { threads: req.threads ?? 1 });
  const instantiateMs = performance.now() - t1;
  const t2 = performance.now();
  const model = await loadModel(req.model, { backend });
  const loadMs = performance.now() - t2;
  const banned = new Uint8Array(model.hp.nVocab);
  for (const id of req.banned) banned[id] = 1;
  const nCtx = Math.max(256, Math.ceil((req.prompt.length + req.decode + 1) / 256) * 256);

  let warmupMs: number | null = null;
  if (req.warmup ?? true) {
    const tw = performance.now();
    const s = new Session(model, { nCtx });
    let logits = await s.eval(req.prompt.slice(0, 8));
    for (let i = 0; i < 4; i++) logits = await s.eval([argmaxAllowed(logits, banned)]);
    s.dispose();
    warmupMs = performance.now() - tw;
  }

  // Process CPU time (user + system) next to wall time: on a shared machine it leaves out the
  // time slices other processes took.
  const cpuMs = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const prefills: number[] = [], decodes: number[] = [];
  const prefillsCpu: number[] = [], decodesCpu: number[] = [];
  let tokens: number[] = [];
  for (let pass = 0; pass < (req.passes ?? 1); pass++) {
    const s = new Session(model, { nCtx });
    const tp = performance.now(), cp = cpuMs();
    let logits = await s.eval(req.prompt);
    prefills.push(performance.now() - tp);
    prefillsCpu.push(cpuMs() - cp);
    tokens = [argmaxAllowed(logits, banned)];
    const td = performance.now(), cd = cpuMs();
    for (let i = 0; i < req.decode; i++) {
      logits = await s.eval([tokens[tokens.length - 1]]);
      tokens.push(argmaxAllowed(logits, banned));
    }
    decodes.push(performance.now() - td);
    decodesCpu.push(cpuMs() - cd);
    s.dispose();
  }
  return {
    engine: `moe-edge/${req.backend}`,
    backend: backend.name,
    threads: (backend as { threads?: number }).threads ?? 1,
    compileMs,
    instantiateMs,
    loadMs,
    warmupMs,
    prefillMs: Math.min(...prefills),
    prefillTokens: req.prompt.length,
    decodeMs: Math.min(...decodes),
    decodeSteps: req.decode,
    prefillCpuMs: Math.min(...prefillsCpu),
    decodeCpuMs: Math.min(...decodesCpu),
    passes: {
      prefillMs: prefills,
      decodeMs: decodes,
      prefillCpuMs: prefillsCpu,
      decodeCpuMs: decodesCpu,
    },
    tokens,
  };
}

const req = JSON.parse(Deno.args[0] ?? (await new Response(Deno.stdin.readable).text()));
try {
  console.log(JSON.stringify(await main(req)));
} catch (e) {
  console.log(JSON.stringify({ error: String((e as Error)?.stack ?? e) }));
  Deno.exit(1);
}
