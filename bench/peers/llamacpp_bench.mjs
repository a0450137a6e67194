#!/usr/bin/env node
// One native llama.cpp measurement for bench/run.ts, through node-llama-cpp 3.22.1 (prebuilt CPU
// binaries, reused from tests/oracle/node_modules: `npm ci --prefix tests/oracle`).
//
//   node bench/peers/llamacpp_bench.mjs '<json request>'   -> one JSON line on stdout
//
// Request: { model, prompt: number[], decode: number, banned: number[], threads?: 1,
//            cpuVariant?: "auto" | "<variant>", flashAttention?: false, passes?: 1 }
//
// Settings: getLlama({ gpu: false, build: "never" }); 1 thread for decode and batch; flash attention
// OFF (the non-FA attention path, the one moe-edge replicates; llama.cpp's default "auto" would turn
// it on for the CPU); F16 K/V cache; n_batch = n_ubatch = n_ctx so the prompt is one llama_decode;
// ggml's own CPU variant choice ("auto") unless cpuVariant names one. Timed: one controlledEvaluate of
// the whole prompt (prefill), then `decode` single-token controlledEvaluate calls, each fed the greedy
// token of the previous step. Greedy = llama.cpp's sampler chain with a token bias of -inf on `banned`
// (set directly for EOG ids, which TokenBias.set() skips). A warm-up pass (8-token prompt + 4 decodes)
// runs first and is discarded (clearHistory). With passes > 1 the timed pass repeats after a
// clearHistory and the fastest prefill and decode are reported (all samples under `passes`).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ORACLE = path.join(HERE, "..", "..", "tests", "oracle");

function loadedCpuBackends() {
  const maps = fs.readFileSync("/proc/self/maps", "utf8");
  const libs = new Set();
  for (const line of maps.split("\n")) {
    const m = /(\S*libggml-cpu-[\w-]+\.so)$/.exec(line);
    if (m) libs.add(path.basename(m[1]));
  }
  return [...libs];
}

async function importEngine() {
  const require = createRequire(path.join(ORACLE, "package.json"));
  const entry = require.resolve("node-llama-cpp");
  const version = JSON.parse(
    fs.readFileSync(path.join(path.dirname(entry), "..", "package.json"), "utf8"),
  ).version;
  const mod = await import(pathToFileURL(entry).href);
  const prebuilt = await import(pathToFileURL(require.resolve("@node-llama-cpp/linux-x64")).href);
  const binsDir = path.join(prebuilt.getBinsDir().binsDir, "linux-x64");
  return { mod, version, binsDir, require };
}

/** Load one named CPU variant into ggml's registry before node-llama-cpp initialises (as oracle.mjs). */
function pinCpuVariant(engine, variant) {
  if (variant === "auto") return;
  const file = `libggml-cpu-${variant}.so`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moe-edge-bench-"));
  fs.symlinkSync(path.join(engine.binsDir, file), path.join(dir, file));
  try {
    const addon = engine.require(path.join(engine.binsDir, "llama-addon.node"));
    addon.setLoggerLogLevel(0);
    addon.loadBackends(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function run(req) {
  const threads = req.threads ?? 1;
  const flashAttention = req.flashAttention ?? false;
  const cpuVariant = req.cpuVariant ?? "auto";
  const t0 = performance.now();
  const engine = await importEngine();
  pinCpuVariant(engine, cpuVariant);
  const { getLlama, LlamaLogLevel, TokenBias } = engine.mod;
  const logs = [];
  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: threads,
    logLevel: LlamaLogLevel.debug,
    logger: (level, msg) => logs.push(`[${level}] ${msg}`),
  });
  const startupMs = performance.now() - t0;
  const t1 = performance.now();
  const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0, useMmap: true });
  const contextSize = Math.max(256, Math.ceil((req.prompt.length + req.decode + 1) / 256) * 256);
  const context = await model.createContext({
    contextSize,
    batchSize: contextSize,
    sequences: 1,
    threads,
    flashAttention,
    experimentalKvCacheKeyType: "F16",
    experimentalKvCacheValueType: "F16",
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
  });
  const sequence = context.getSequence({ contextShift: { size: 0, strategy: "eraseBeginning" } });
  const loadMs = performance.now() - t1;

  const bias = new TokenBias(model.tokenizer);
  for (const id of req.banned) {
    if (model.tokenizer.isEogToken(id)) bias._biases.set(id, -Infinity);
    else bias.set(id, "never");
  }
  const next = { generateNext: { token: true, options: { tokenBias: bias } } };
  const step = async (tokens) => {
    const input = tokens.map((t, i) => (i === tokens.length - 1 ? [t, next] : t));
    const res = await sequence.controlledEvaluate(input);
    return res[tokens.length - 1].next.token;
  };

  // warm-up, discarded
  let tok = await step(req.prompt.slice(0, 8));
  for (let i = 0; i < 4; i++) tok = await step([tok]);
  await sequence.clearHistory();

  // Process CPU time (user + system, all threads) next to wall time: on a shared machine it
  // leaves out the time slices other processes took.
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const prefills = [], decodes = [], prefillsCpu = [], decodesCpu = [];
  let tokens = [];
  for (let pass = 0; pass < (req.passes ?? 1); pass++) {
    if (pass > 0) await sequence.clearHistory();
    const tp = performance.now(), cp = cpuMs();
    tok = await step(req.prompt);
    prefills.push(performance.now() - tp);
    prefillsCpu.push(cpuMs() - cp);
    tokens = [tok];
    const td = performance.now(), cd = cpuMs();
    for (let i = 0; i < req.decode; i++) {
      tok = await step([tok]);
      tokens.push(tok);
    }
    decodes.push(performance.now() - td);
    decodesCpu.push(cpuMs() - cd);
  }

  const fa = logs.map((l) => /flash_attn\s*=\s*(\w+)/.exec(l)).find((m) => m);
  const res = {
    engine: "llama.cpp",
    nodeLlamaCppVersion: engine.version,
    llamaCppVersion: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    cpuVariant,
    cpuBackend: loadedCpuBackends().join("+"),
    systemInfo: llama.systemInfo.trim(),
    threads,
    threadsInUse: context._ctx?.getThreads?.() ?? null,
    flashAttention: fa ? fa[1] : null,
    startupMs,
    loadMs,
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
  await sequence.dispose();
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return res;
}

try {
  const req = JSON.parse(process.argv[2] ?? fs.readFileSync(0, "utf8"));
  process.stdout.write(JSON.stringify(await run(req)) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e?.stack ?? e) }) + "\n");
  process.exitCode = 1;
}
