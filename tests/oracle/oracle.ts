/**
 * Deno side of the llama.cpp conformance oracle. It spawns
 * `node tests/oracle/oracle.mjs`, which drives llama.cpp through the pinned npm package
 * node-llama-cpp 3.22.1 (prebuilt CPU binaries, ggml-org/llama.cpp v0.5.0). The result is
 * llama.cpp's greedy tokens and raw f32 logits for a prompt given as raw token ids.
 *
 * Install the engine once with `npm ci --prefix tests/oracle`, or call
 * {@link ensureOracleInstalled}. See `tests/oracle/README.md` for the pinned options.
 *
 * @example
 * ```ts
 * import { ensureOracleInstalled, runOracle } from "./tests/oracle/oracle.ts";
 * await ensureOracleInstalled();
 * const r = await runOracle({ model: "/tmp/m.gguf", mode: "greedy", prompt: [1, 72], steps: 8 });
 * console.log(r.tokens, r.logits?.[0].length);
 * ```
 *
 * @module
 */

import { MoeEdgeError } from "../../core/errors.ts";

/** The oracle failed: not installed, timed out, crashed, or llama.cpp refused the request. */
export class OracleError extends MoeEdgeError {}

/** One oracle request. Token ids are passed as given: no BOS, no template, no tokenizer. */
export interface OracleRequest {
  /** Absolute or cwd-relative path of the .gguf model. */
  model: string;
  /**
   * `"greedy"`: evaluate `prompt` and generate `steps` tokens greedily. `"teacher"`: evaluate
   * `prompt`, then each of `forced` in turn, and return the logits after the prompt and after
   * every forced token (`forced.length + 1` steps; step i predicts `forced[i]`).
   */
  mode: "greedy" | "teacher";
  /** Prompt token ids (non-empty). */
  prompt: number[];
  /** Greedy mode: number of tokens to generate (>= 1). */
  steps?: number;
  /** Teacher mode: the tokens to force (may be empty). */
  forced?: number[];
  /** llama.cpp threads for decode and batch (default 1). */
  threads?: number;
  /** `"full"` (default): every logit of every step; `"top"`: top `topK` per step; `"none"`. */
  logits?: "full" | "top" | "none";
  /** Entries per step for `logits: "top"` (default 10). */
  topK?: number;
  /** KV cells (default: max(256, prompt + steps rounded up to 256)); never context-shifts. */
  contextSize?: number;
  /** Logical = physical batch size (default = contextSize); must be >= prompt length. */
  batchSize?: number;
  /** `"full"` (default): one llama_decode for the prompt; `"tokenwise"`: one per token. */
  promptBatch?: "full" | "tokenwise";
  /**
   * ggml CPU backend variant: `"haswell"` (default, AVX2+FMA+F16C; machine-independent), or
   * `"auto"` (ggml's best for this CPU, e.g. zen4/sapphirerapids on AVX-512), or another name.
   */
  cpuVariant?: string;
  /** Flash attention (default false: moe-edge replicates the non-FA attention path). */
  flashAttention?: boolean;
  /** KV cache element type for K and V (default "F16"). */
  kvCacheType?: string;
  /** Include llama.cpp's log lines in the result. */
  verbose?: boolean;
}

/** The context options the oracle ran with, and what llama.cpp's own log says it applied. */
export interface OracleContextOptions {
  contextSize: number;
  batchSize: number;
  ubatchSize: number | null;
  sequences: number;
  threads: number;
  threadsBatch: number;
  threadsInUse: number | null;
  flashAttention: boolean;
  kvCacheKeyType: string;
  kvCacheValueType: string;
  promptBatch: "full" | "tokenwise";
  forcedBatch: "tokenwise";
  sampler: string;
  addBos: false;
  verifiedFromLlamaCppLog: {
    n_ctx: number | null;
    n_batch: number | null;
    n_ubatch: number | null;
    flash_attn: string | null;
    kv_cache_k: string | null;
    kv_cache_v: string | null;
  };
}

/** llama.cpp's answer. */
export interface OracleResult {
  mode: "greedy" | "teacher";
  /** Greedy: generated ids. Teacher: llama.cpp's argmax at each step. */
  tokens: number[];
  /** Raw f32 logits per step (vocab-sized), or null unless `logits: "full"`. */
  logits: Float32Array[] | null;
  /** `logits: "top"`: per step, `[tokenId, logit]` pairs, best first. */
  top?: [number, number][][];
  /** Always "raw": the logits straight from llama_get_logits_ith (not probabilities). */
  logitsKind: "raw";
  nVocab: number;
  steps: number;
  /** e.g. `ggml-org/llama.cpp@v0.5.0`. */
  llamaCppVersion: string;
  nodeLlamaCppVersion: string;
  contextOptions: OracleContextOptions;
  cpu: {
    variant: string;
    backendLibrary: string | string[] | null;
    systemInfo: string;
  };
  timings: {
    startupMs: number;
    loadMs: number;
    evalMs: number;
    processUptimeMs: number;
  };
  logs?: string[];
}

/** How to run the oracle process. */
export interface OracleRunOptions {
  /** Kill the node process after this long (default 120000 ms). */
  timeoutMs?: number;
  /** The node executable (default `"node"` on PATH). */
  node?: string;
  /** Abort the run. */
  signal?: AbortSignal;
}

const ORACLE_DIR = new URL(".", import.meta.url);
const ORACLE_SCRIPT = new URL("oracle.mjs", ORACLE_DIR);
const ENGINE_PACKAGE_JSON = new URL(
  "node_modules/node-llama-cpp/package.json",
  ORACLE_DIR,
);
const INSTALL_HINT = "run `npm ci --prefix tests/oracle` from the repository root " +
  "(or call ensureOracleInstalled())";

function path(url: URL): string {
  return decodeURIComponent(url.pathname);
}

async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch {
    return false;
  }
}

/** True when node-llama-cpp is present under `tests/oracle/node_modules`. */
export async function isOracleInstalled(): Promise<boolean> {
  return await exists(ENGINE_PACKAGE_JSON);
}

/**
 * True when the oracle can run here: linux-x64, `node` on PATH, and node-llama-cpp installed.
 * Use it to skip oracle tests on machines without the engine.
 */
export async function oracleAvailable(node = "node"): Promise<boolean> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return false;
  if (!(await isOracleInstalled())) return false;
  try {
    const out = await new Deno.Command(node, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Install the pinned node-llama-cpp with `npm ci --prefix tests/oracle --no-audit --no-fund`
 * when `tests/oracle/node_modules/node-llama-cpp` is missing. It does nothing when the package is
 * already installed. npm needs the registry; nothing else is downloaded or compiled (the
 * package's postinstall is not needed and is skipped, see README.md).
 */
export async function ensureOracleInstalled(
  options: { npm?: string; quiet?: boolean } = {},
): Promise<void> {
  if (await isOracleInstalled()) return;
  const npm = options.npm ?? "npm";
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(npm, {
      args: ["ci", "--prefix", path(ORACLE_DIR), "--no-audit", "--no-fund"],
      stdout: options.quiet ? "piped" : "inherit",
      stderr: options.quiet ? "piped" : "inherit",
    }).output();
  } catch (e) {
    throw new OracleError(
      "npm_missing",
      `Cannot run \`${npm} ci\` to install the llama.cpp oracle: ${(e as Error).message}`,
    );
  }
  if (!out.success || !(await isOracleInstalled())) {
    const tail = options.quiet ? new TextDecoder().decode(out.stderr).slice(-2000) : "";
    throw new OracleError(
      "install_failed",
      `\`npm ci --prefix tests/oracle\` failed (exit ${out.code})${tail ? `:\n${tail}` : ""}`,
      { exitCode: out.code },
    );
  }
}

interface RawResult extends Omit<OracleResult, "logits"> {
  logits: string[] | number[][] | null;
  logitsEncoding: "json" | "f32-base64";
}

function decodeF32(b64: string): Float32Array {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  // Little-endian f32, as written by the oracle on x86-64.
  return new Float32Array(bytes.buffer, 0, bytes.length / 4);
}

/**
 * Run llama.cpp on one request and return its greedy tokens and raw logits.
 *
 * @throws {OracleError} `not_installed` (with the `npm ci` hint), `node_missing`, `timeout`,
 *   `crashed` (llama.cpp aborted, e.g. a GGML_ASSERT on a malformed model; stderr attached),
 *   `bad_response`, or the oracle's own codes (`model_load`, `bad_request`, `options_not_applied`, …).
 */
export async function runOracle(
  req: OracleRequest,
  options: OracleRunOptions = {},
): Promise<OracleResult> {
  if (!(await isOracleInstalled())) {
    throw new OracleError(
      "not_installed",
      `The llama.cpp oracle (node-llama-cpp) is not installed in tests/oracle/node_modules: ${INSTALL_HINT}.`,
    );
  }
  const timeoutMs = options.timeoutMs ?? 120_000;
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, timeoutMs);
  const onAbort = () => ac.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(options.node ?? "node", {
      args: [path(ORACLE_SCRIPT)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
    }).spawn();
  } catch (e) {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    throw new OracleError(
      "node_missing",
      `Cannot start \`${options.node ?? "node"}\` for the llama.cpp oracle: ${
        (e as Error).message
      }`,
    );
  }
  let out: Deno.CommandOutput;
  try {
    const writer = child.stdin.getWriter();
    await writer.write(
      new TextEncoder().encode(
        JSON.stringify({ ...req, logitsEncoding: "f32-base64" }),
      ),
    );
    await writer.close();
    out = await child.output();
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (timedOut) {
    throw new OracleError(
      "timeout",
      `The llama.cpp oracle did not finish within ${timeoutMs} ms.`,
      {
        timeoutMs,
      },
    );
  }
  if (options.signal?.aborted) {
    throw new OracleError("aborted", "The oracle run was aborted.");
  }
  // The response is the last line. Native code may print stray lines before it.
  const last = stdout.trimEnd().split("\n").pop() ?? "";
  let parsed: RawResult | { error: { code: string; message: string } };
  try {
    parsed = JSON.parse(last);
  } catch {
    throw new OracleError(
      out.code === 0 ? "bad_response" : "crashed",
      `The llama.cpp oracle exited with code ${out.code}` +
        (out.signal ? ` (signal ${out.signal})` : "") +
        ` without a JSON response. stderr:\n${stderr.slice(-4000)}`,
      { exitCode: out.code, signal: out.signal, stderr: stderr.slice(-4000) },
    );
  }
  if ("error" in parsed) {
    throw new OracleError(
      parsed.error.code,
      `llama.cpp oracle: ${parsed.error.message}` +
        (parsed.error.code === "not_installed" ? ` (${INSTALL_HINT})` : ""),
      { model: req.model },
    );
  }
  const raw = parsed;
  let logits: Float32Array[] | null = null;
  if (raw.logits !== null) {
    logits = raw.logitsEncoding === "f32-base64"
      ? (raw.logits as string[]).map(decodeF32)
      : (raw.logits as number[][]).map((a) => Float32Array.from(a));
    for (const [i, l] of logits.entries()) {
      if (l.length !== raw.nVocab) {
        throw new OracleError(
          "bad_response",
          `oracle step ${i} has ${l.length} logits, expected nVocab=${raw.nVocab}`,
        );
      }
    }
  }
  const { logitsEncoding: _enc, ...rest } = raw;
  return { ...rest, logits };
}
