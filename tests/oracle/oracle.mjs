#!/usr/bin/env node
// llama.cpp conformance oracle for moe-edge.
//
// Reads ONE JSON request on stdin and writes ONE JSON response on stdout. Run it as
// `node tests/oracle/oracle.mjs < request.json`. Install the pinned engine first:
// `npm ci --prefix tests/oracle`.
//
// It drives llama.cpp through node-llama-cpp 3.22.1 (prebuilt CPU binaries from
// @node-llama-cpp/linux-x64, ggml-org/llama.cpp release v0.5.0). It never downloads
// or compiles anything: getLlama({ gpu: false, build: "never", skipDownload: true }).
//
// How the logits are obtained: LlamaContextSequence.controlledEvaluate() with
// `generateNext: { token: true, logits: true }` on the tokens whose next-token
// distribution we want. Down in the addon (AddonContext::SampleToken) this copies
// llama_get_logits_ith() for every vocab id into the candidate array, runs the sampler
// chain, and returns every (token, logit) pair. With no sampler options the chain is
// only llama_sampler_greedy: argmax with strict `>` over token-id order, so the first
// maximum wins. It has no temperature, top-k/p, repetition penalty or grammar, so the
// returned values are the raw f32 logits, bit-exact. See README.md.
//
// Request (all fields except model/mode/prompt are optional):
//   { model, mode: "greedy"|"teacher", prompt: number[], steps?: number, forced?: number[],
//     threads?: 1, logits?: "full"|"top"|"none", topK?: 10, logitsEncoding?: "json"|"f32-base64",
//     contextSize?: number, batchSize?: number, promptBatch?: "full"|"tokenwise",
//     cpuVariant?: "haswell"|"auto"|<variant>, flashAttention?: false, kvCacheType?: "F16",
//     verbose?: false }
// Response:
//   { tokens, logits, top?, nVocab, steps, mode, llamaCppVersion, nodeLlamaCppVersion,
//     contextOptions, cpu, timings, logs? }   or   { error: { code, message } } with exit code 1.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_LLAMA_CPP_VERSION = "3.22.1";

/** Every llama.cpp/ggml log line of this run, "[level] message". */
const logs = [];

function pushLog(level, message) {
  const text = String(message).trimEnd();
  if (text !== "") logs.push(`[${level}] ${text}`);
}

class OracleError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function fail(code, message) {
  throw new OracleError(code, message);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function isTokenArray(v) {
  return Array.isArray(v) && v.every((t) => Number.isInteger(t) && t >= 0);
}

function validateRequest(req) {
  if (req === null || typeof req !== "object") {
    fail("bad_request", "request must be a JSON object");
  }
  if (typeof req.model !== "string" || req.model === "") {
    fail("bad_request", "`model` must be a path to a .gguf file");
  }
  if (!fs.existsSync(req.model)) {
    fail("model_not_found", `model file not found: ${req.model}`);
  }
  if (req.mode !== "greedy" && req.mode !== "teacher") {
    fail("bad_request", '`mode` must be "greedy" or "teacher"');
  }
  if (!isTokenArray(req.prompt) || req.prompt.length === 0) {
    fail("bad_request", "`prompt` must be a non-empty array of token ids");
  }
  if (
    req.mode === "greedy" && !(Number.isInteger(req.steps) && req.steps >= 1)
  ) {
    fail("bad_request", "greedy mode needs `steps` (integer >= 1)");
  }
  if (req.mode === "teacher" && !isTokenArray(req.forced)) {
    fail(
      "bad_request",
      "teacher mode needs `forced` (array of token ids, may be empty)",
    );
  }
  const logits = req.logits ?? "full";
  if (!["full", "top", "none"].includes(logits)) {
    fail("bad_request", '`logits` must be "full", "top" or "none"');
  }
  const enc = req.logitsEncoding ?? "json";
  if (enc !== "json" && enc !== "f32-base64") {
    fail("bad_request", '`logitsEncoding` must be "json" or "f32-base64"');
  }
  const promptBatch = req.promptBatch ?? "full";
  if (promptBatch !== "full" && promptBatch !== "tokenwise") {
    fail("bad_request", '`promptBatch` must be "full" or "tokenwise"');
  }
  const threads = req.threads ?? 1;
  if (!(Number.isInteger(threads) && threads >= 1)) {
    fail("bad_request", "`threads` must be an integer >= 1");
  }
}

/** Import node-llama-cpp from tests/oracle/node_modules, with a helpful error if missing. */
async function importNodeLlamaCpp() {
  const require = createRequire(path.join(HERE, "package.json"));
  let entry;
  let pkgJsonPath;
  try {
    entry = require.resolve("node-llama-cpp");
    pkgJsonPath = path.join(path.dirname(entry), "..", "package.json");
  } catch {
    fail(
      "not_installed",
      "node-llama-cpp is not installed in tests/oracle/node_modules. " +
        "Run `npm ci --prefix tests/oracle` (from the repository root).",
    );
  }
  const version = JSON.parse(fs.readFileSync(pkgJsonPath, "utf8")).version;
  if (version !== NODE_LLAMA_CPP_VERSION) {
    fail(
      "wrong_version",
      `node-llama-cpp ${version} is installed but the oracle pins ${NODE_LLAMA_CPP_VERSION}. ` +
        "Run `npm ci --prefix tests/oracle`.",
    );
  }
  const mod = await import(pathToFileURL(entry).href);
  let binsDir;
  try {
    const prebuilt = await import(
      pathToFileURL(require.resolve("@node-llama-cpp/linux-x64")).href
    );
    binsDir = path.join(prebuilt.getBinsDir().binsDir, "linux-x64");
  } catch {
    fail(
      "not_installed",
      "@node-llama-cpp/linux-x64 (the prebuilt llama.cpp CPU binaries) is not installed. " +
        "The oracle supports linux-x64 (glibc) only. Run `npm ci --prefix tests/oracle`.",
    );
  }
  return { mod, version, binsDir };
}

/**
 * The linux-x64 prebuilt is a GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS build: one
 * libggml-cpu-<variant>.so per x86 ISA level, and ggml dlopens the one that scores
 * highest on this CPU (zen4/sapphirerapids on AVX-512 machines, haswell on AVX2 machines).
 * The variants differ only in float summation order (and the AVX512-BF16 bf16 dot), not in
 * the activation quantization (all x86 variants use the `__AVX2__` Q8_0/Q8_1 quantizers,
 * 127/amax with ties-to-even). To get the same numbers on every CI machine, the
 * default pins the `haswell` (AVX2+FMA+F16C) variant. It loads that one variant into
 * ggml's backend registry before node-llama-cpp initialises, and node-llama-cpp then sees
 * a CPU backend and loads no other. "auto" keeps ggml's own choice.
 */
function pinCpuVariant(binsDir, variant) {
  if (variant === "auto") return;
  const file = `libggml-cpu-${variant}.so`;
  if (
    !/^[a-z0-9_]+$/.test(variant) || !fs.existsSync(path.join(binsDir, file))
  ) {
    const have = fs.readdirSync(binsDir).filter((f) => f.startsWith("libggml-cpu-"));
    fail(
      "bad_request",
      `unknown cpuVariant "${variant}"; available: ${have.join(", ")}`,
    );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moe-edge-oracle-"));
  fs.symlinkSync(path.join(binsDir, file), path.join(dir, file));
  try {
    const require = createRequire(import.meta.url);
    const addon = require(path.join(binsDir, "llama-addon.node"));
    // Silence the addon's fallback logger while no JS logger is set: it would print to stdout.
    // (Installing our own JS logger here breaks node-llama-cpp's later one.) Which variant got
    // loaded is checked afterwards from /proc/self/maps.
    addon.setLoggerLogLevel(0);
    addon.loadBackends(dir); // ggml_backend_load_all_from_path(dir): only this variant exists there
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The ggml CPU backend libraries mapped into this process (the variant actually in use). */
function loadedCpuBackends() {
  try {
    const maps = fs.readFileSync("/proc/self/maps", "utf8");
    const libs = new Set();
    for (const line of maps.split("\n")) {
      const m = /(\S*libggml-cpu-[\w-]+\.so)$/.exec(line);
      if (m) libs.add(path.basename(m[1]));
    }
    return [...libs];
  } catch {
    return null;
  }
}

function encodeLogits(arr, encoding) {
  if (encoding === "f32-base64") {
    return Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength).toString(
      "base64",
    );
  }
  return Array.from(arr); // f32 values widened to f64: exact, JSON round-trips them exactly
}

/** First maximum wins (strict >), like llama_sampler_greedy. */
function argmax(arr) {
  let best = 0;
  for (let i = 1; i < arr.length; i++) if (arr[i] > arr[best]) best = i;
  return best;
}

function topOf(arr, k) {
  const idx = Array.from(arr.keys());
  idx.sort((a, b) => arr[b] - arr[a] || a - b);
  return idx.slice(0, k).map((i) => [i, arr[i]]);
}

/** Turn node-llama-cpp's Map<token, logit> into a dense Float32Array over the vocabulary. */
function denseLogits(map, nVocab, step) {
  if (!(map instanceof Map) || map.size !== nVocab) {
    fail(
      "no_logits",
      `step ${step}: expected ${nVocab} logits from llama.cpp, got ${map?.size ?? "none"}`,
    );
  }
  const out = new Float32Array(nVocab);
  for (const [tok, v] of map) out[tok] = v;
  return out;
}

function parseLogsForVerification(logs) {
  const find = (re) => {
    for (const line of logs) {
      const m = re.exec(line);
      if (m) return m;
    }
    return null;
  };
  const num = (re) => {
    const m = find(re);
    return m ? Number(m[1]) : null;
  };
  const kv = find(/llama_kv_cache: size = .*K \((\w+)\):.*V \((\w+)\)/);
  const fa = find(/llama_context: flash_attn\s*=\s*(\w+)/);
  return {
    nCtx: num(/llama_context: n_ctx\s*=\s*(\d+)/),
    nBatch: num(/llama_context: n_batch\s*=\s*(\d+)/),
    nUbatch: num(/llama_context: n_ubatch\s*=\s*(\d+)/),
    flashAttn: fa ? fa[1] : null,
    kvCacheK: kv ? kv[1] : null,
    kvCacheV: kv ? kv[2] : null,
  };
}

async function run(req) {
  const t0 = performance.now();
  validateRequest(req);
  const mode = req.mode;
  const prompt = req.prompt;
  const forced = req.forced ?? [];
  const threads = req.threads ?? 1;
  const logitsMode = req.logits ?? "full";
  const encoding = req.logitsEncoding ?? "json";
  const topK = req.topK ?? 10;
  const promptBatch = req.promptBatch ?? "full";
  const cpuVariant = req.cpuVariant ?? "haswell";
  // Flash attention OFF: moe-edge replicates the non-FA path (Q rounded to f16, K/V cache f16,
  // softmax probabilities rounded to f16 by the V·P mul_mat). llama.cpp's default is AUTO,
  // which turns FA on for the CPU and changes the numerics (fp16 V accumulator, online softmax).
  const flashAttention = req.flashAttention ?? false;
  // KV cache in F16 is llama.cpp's default; pinned so a changed default cannot shift the numbers.
  const kvCacheType = req.kvCacheType ?? "F16";
  // Decode steps after the prompt: greedy generates `steps` tokens. Teacher mode returns logits
  // after the prompt and after every forced token, so it has forced.length + 1 steps.
  const nSteps = mode === "greedy" ? req.steps : forced.length + 1;
  const nTokensTotal = prompt.length + nSteps;
  // No context shift may ever happen: size the context to hold everything (at least 256).
  const contextSize = req.contextSize ??
    Math.max(256, Math.ceil((nTokensTotal + 1) / 256) * 256);
  if (contextSize < nTokensTotal) {
    fail(
      "bad_request",
      `contextSize ${contextSize} < prompt + steps (${nTokensTotal})`,
    );
  }
  // One llama_decode for the whole prompt. node-llama-cpp sets n_ubatch = n_batch, so a
  // prompt of <= batchSize tokens is one ubatch, with no split points that could change numerics.
  const batchSize = req.batchSize ?? contextSize;
  if (promptBatch === "full" && batchSize < prompt.length) {
    fail(
      "bad_request",
      `batchSize ${batchSize} < prompt length ${prompt.length}`,
    );
  }

  const { mod, version: nlcVersion, binsDir } = await importNodeLlamaCpp();
  const { getLlama, LlamaLogLevel } = mod;
  pinCpuVariant(binsDir, cpuVariant);

  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: threads,
    logLevel: LlamaLogLevel.debug,
    logger: pushLog,
  });
  if (llama.gpu !== false) {
    fail("engine", `expected a CPU-only llama.cpp, got gpu=${llama.gpu}`);
  }
  const tReady = performance.now();

  const model = await llama.loadModel({
    modelPath: req.model,
    gpuLayers: 0,
    useMmap: true,
    checkTensors: false,
  }).catch((e) => {
    // llama.cpp's own reason (e.g. "missing tensor 'blk.0.ffn_norm.weight'") is in its log.
    const reasons = logs.filter((l) => /^\[(error|warn|fatal)\]/.test(l));
    fail(
      "model_load",
      `llama.cpp could not load ${req.model}: ${e?.message ?? e}\n${reasons.join("\n")}`,
    );
  });
  const context = await model.createContext({
    contextSize,
    batchSize,
    sequences: 1,
    threads,
    flashAttention,
    experimentalKvCacheKeyType: kvCacheType,
    experimentalKvCacheValueType: kvCacheType,
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
  });
  // llama.cpp logs arrive through a thread-safe function, a few event-loop turns late; wait for
  // the context's summary lines, which the option checks below parse.
  for (
    let i = 0;
    i < 100 && !logs.some((l) => l.includes("llama_kv_cache: size ="));
    i++
  ) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const sequence = context.getSequence({
    contextShift: { size: 0, strategy: "eraseBeginning" },
  });
  const tLoaded = performance.now();

  // Always fetch the full logits: even with logits "none"/"top" the oracle checks that llama.cpp's
  // greedy token is the first argmax of the raw logits.
  const want = { generateNext: { token: true, logits: true } };
  const steps = []; // { token, logits: Float32Array }
  let vocab = null; // llama_vocab_n_tokens, learned from the first step

  async function evalTokens(tokens, wantLastLogits) {
    const input = tokens.map((
      t,
      i,
    ) => (i === tokens.length - 1 && wantLastLogits ? [t, want] : t));
    const res = await sequence.controlledEvaluate(input);
    if (!wantLastLogits) return null;
    const next = res[tokens.length - 1]?.next;
    if (next == null || next.logits == null) {
      fail("no_logits", "llama.cpp returned no logits");
    }
    if (vocab == null) vocab = next.logits.size;
    const dense = denseLogits(next.logits, vocab, steps.length);
    const mine = argmax(dense);
    if (next.token !== mine) {
      fail(
        "sampler_mismatch",
        `step ${steps.length}: llama.cpp greedy picked ${next.token} but the first argmax is ${mine}`,
      );
    }
    steps.push({ token: next.token, logits: dense });
    return next.token;
  }

  async function evalPrompt() {
    if (promptBatch === "full") return await evalTokens(prompt, true);
    let tok = null;
    for (let i = 0; i < prompt.length; i++) {
      tok = await evalTokens([prompt[i]], i === prompt.length - 1);
    }
    return tok;
  }

  const tEval0 = performance.now();
  if (mode === "greedy") {
    let tok = await evalPrompt();
    for (let i = 1; i < nSteps; i++) tok = await evalTokens([tok], true);
  } else {
    await evalPrompt();
    for (const f of forced) await evalTokens([f], true); // one decode per forced token, as in greedy
  }
  const tEval1 = performance.now();

  const threadsAfter = context._ctx?.getThreads?.() ?? null;
  const verified = parseLogsForVerification(logs);
  const cpuBackends = loadedCpuBackends();
  const response = {
    mode,
    tokens: steps.map((s) => s.token),
    logits: logitsMode === "full" ? steps.map((s) => encodeLogits(s.logits, encoding)) : null,
    ...(logitsMode === "top" ? { top: steps.map((s) => topOf(s.logits, topK)) } : {}),
    logitsKind: "raw",
    logitsEncoding: encoding,
    nVocab: vocab,
    steps: steps.length,
    llamaCppVersion: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    nodeLlamaCppVersion: nlcVersion,
    contextOptions: {
      contextSize: context.contextSize,
      batchSize: context.batchSize,
      ubatchSize: verified.nUbatch,
      sequences: 1,
      threads,
      threadsBatch: threads,
      threadsInUse: threadsAfter,
      flashAttention,
      kvCacheKeyType: kvCacheType,
      kvCacheValueType: kvCacheType,
      promptBatch,
      forcedBatch: "tokenwise",
      sampler: "greedy (llama_sampler_greedy, first max wins), no other samplers",
      addBos: false,
      verifiedFromLlamaCppLog: {
        n_ctx: verified.nCtx,
        n_batch: verified.nBatch,
        n_ubatch: verified.nUbatch,
        flash_attn: verified.flashAttn,
        kv_cache_k: verified.kvCacheK,
        kv_cache_v: verified.kvCacheV,
      },
    },
    cpu: {
      variant: cpuVariant,
      backendLibrary: cpuBackends?.length === 1 ? cpuBackends[0] : cpuBackends,
      systemInfo: llama.systemInfo.trim(),
    },
    timings: {
      startupMs: +(tReady - t0).toFixed(1),
      loadMs: +(tLoaded - tReady).toFixed(1),
      evalMs: +(tEval1 - tEval0).toFixed(1),
      processUptimeMs: +(process.uptime() * 1000).toFixed(1),
    },
    ...(req.verbose ? { logs } : {}),
  };

  // The pinned options must really be in effect; refuse to answer otherwise.
  const problems = [];
  const faWanted = flashAttention ? "enabled" : "disabled";
  if (verified.flashAttn !== faWanted) {
    problems.push(`flash_attn=${verified.flashAttn}`);
  }
  const kvWanted = kvCacheType.toLowerCase();
  if (verified.kvCacheK !== kvWanted || verified.kvCacheV !== kvWanted) {
    problems.push(`kv cache K=${verified.kvCacheK} V=${verified.kvCacheV}`);
  }
  if (threadsAfter !== null && threadsAfter !== threads) {
    problems.push(`threads=${threadsAfter}`);
  }
  if (
    cpuVariant !== "auto" && cpuBackends !== null &&
    (cpuBackends.length !== 1 ||
      cpuBackends[0] !== `libggml-cpu-${cpuVariant}.so`)
  ) {
    problems.push(`cpu backend=${cpuBackends.join("+")}`);
  }
  if (
    verified.nUbatch !== null && promptBatch === "full" &&
    verified.nUbatch < prompt.length
  ) {
    problems.push(`n_ubatch=${verified.nUbatch}`);
  }
  if (problems.length > 0) {
    fail(
      "options_not_applied",
      `llama.cpp did not apply the pinned options: ${problems.join(", ")}`,
    );
  }

  await sequence.dispose();
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return response;
}

async function main() {
  let req;
  try {
    req = JSON.parse(await readStdin());
  } catch (e) {
    process.stdout.write(
      JSON.stringify({ error: { code: "bad_request", message: String(e) } }),
    );
    process.exitCode = 1;
    return;
  }
  try {
    const res = await run(req);
    process.stdout.write(JSON.stringify(res) + "\n");
  } catch (e) {
    const code = e instanceof OracleError ? e.code : "internal";
    // Our own refusals carry their reason; anything else gets its stack for debugging.
    const message = e instanceof OracleError
      ? e.message
      : e instanceof Error
      ? (e.stack ?? e.message)
      : String(e);
    process.stdout.write(JSON.stringify({ error: { code, message } }) + "\n");
    process.exitCode = 1;
  }
}

await main();
