#!/usr/bin/env node
// llama.cpp's batched decode for bench/load.ts --streams: node-llama-cpp 3.22.1 (prebuilt CPU
// binaries from tests/oracle/node_modules) with one context of several sequences; concurrent
// controlledEvaluate calls on different sequences are dispatched together, one llama_decode per
// step over all of them (node-llama-cpp's batching), as llama.cpp's server does.
//
//   node bench/peers/llamacpp_batch.mjs '<json request>'   -> one JSON line on stdout
//
// Request: { model, prompts: number[][] (one per stream, at least max(streams)), streams: number[],
//            decode, banned: number[], threads?: 1, rounds?: 1 }
// For each stream count c: c sequences start together (history cleared), each evaluates its
// prompt, then `decode` greedy single-token steps (banned ids biased to -inf). Per stream: time to
// first token (from the common start), time of its last token, tokens. Flash attention off, F16
// K/V cache (as bench/peers/llamacpp_bench.mjs). A warm-up round (2 streams, 4 tokens) runs first.

import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ORACLE = path.join(HERE, "..", "..", "tests", "oracle");

async function run(req) {
  const threads = req.threads ?? 1;
  const require = createRequire(path.join(ORACLE, "package.json"));
  const mod = await import(pathToFileURL(require.resolve("node-llama-cpp")).href);
  const { getLlama, LlamaLogLevel, TokenBias } = mod;
  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: threads,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0, useMmap: true });
  const maxStreams = Math.max(...req.streams, 2);
  const perSeq = Math.max(...req.prompts.map((p) => p.length)) + req.decode + 8;
  const contextSize = Math.ceil((perSeq * maxStreams) / 256) * 256;
  const context = await model.createContext({
    contextSize,
    batchSize: Math.min(contextSize, 2048),
    sequences: maxStreams,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: "F16",
    experimentalKvCacheValueType: "F16",
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
  });
  const seqs = [];
  for (let i = 0; i < maxStreams; i++) {
    seqs.push(context.getSequence({ contextShift: { size: 0, strategy: "eraseBeginning" } }));
  }
  const bias = new TokenBias(model.tokenizer);
  for (const id of req.banned) {
    if (model.tokenizer.isEogToken(id)) bias._biases.set(id, -Infinity);
    else bias.set(id, "never");
  }
  const next = { generateNext: { token: true, options: { tokenBias: bias } } };
  const step = async (seq, tokens) => {
    const input = tokens.map((t, i) => (i === tokens.length - 1 ? [t, next] : t));
    const res = await seq.controlledEvaluate(input);
    return res[tokens.length - 1].next.token;
  };
  const round = async (c, decode) => {
    await Promise.all(seqs.slice(0, c).map((s) => s.clearHistory()));
    const t0 = performance.now();
    return await Promise.all(
      seqs.slice(0, c).map(async (s, i) => {
        let tok = await step(s, req.prompts[i]);
        const first = performance.now() - t0;
        for (let k = 0; k < decode; k++) tok = await step(s, [tok]);
        return { first, end: performance.now() - t0, tokens: decode + 1 };
      }),
    );
  };
  await round(2, 4);
  const rows = [];
  // process CPU ms (user + system, all threads) per round, next to the wall timings
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  for (const c of req.streams) {
    const rounds = [], cpu = [];
    for (let r = 0; r < (req.rounds ?? 1); r++) {
      const c0 = cpuMs();
      rounds.push(await round(c, req.decode));
      cpu.push(cpuMs() - c0);
    }
    rows.push({ streams: c, rounds, cpuMs: cpu });
  }
  const res = {
    engine: "llama.cpp",
    llamaCppVersion: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    threads,
    threadsInUse: context._ctx?.getThreads?.() ?? null,
    contextSize,
    rows,
  };
  for (const s of seqs) await s.dispose();
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
