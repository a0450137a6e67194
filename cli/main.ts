/**
 * The command line: `generate`, `chat`, `inspect`, `manifest`, `trace`. Options are
 * declared once with commander; help (`cli --help`, `cli generate --help`,
 * `cli help chat`) and value errors are generated from the declarations.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full npm: specifier, so the CLI works without the import map
import { Command, CommanderError, Option } from "npm:commander@^14.0.3";
// the engine without the server (no Hono at start-up); the WASM backend registers itself
import "../wasm/register.ts";
import { GenerationError, MoeEdgeError } from "../core/errors.ts";
import {
  generate,
  type GenerateOptions,
  type GenerateResult,
  generateText,
} from "../core/generate/generate.ts";
import {
  loadModel,
  type LoadModelOptions,
  type Model,
  openSource,
  type StoreContext,
} from "../core/model/model.ts";
import { loadFromManifest } from "../core/plugin/from_manifest.ts";
import {
  type ExpertManifest,
  type ExpertRef,
  parseExpertManifest,
} from "../core/store/expert_manifest.ts";
import { ResidentExpertStore } from "../core/store/expert_store.ts";
import { buildIntegrityManifest } from "../core/store/integrity.ts";
import { verifyModel } from "./verify.ts";
import { affinityFromTrace, RouteRecorder } from "../core/store/route_trace.ts";
import { statsJson } from "../core/store/store_stats.ts";
import { type ByteSource, FileSource, MemorySource } from "../core/store/byte_source.ts";
import type { FallbackCopiesOptions } from "../core/store/fallback_copies.ts";
import { parseBackgroundLoads } from "../core/store/streaming_options.ts";
import { parseGgmlType } from "../core/tensor/ggml_type.ts";
import { readLines, runChat, statsLine } from "./chat.ts";
import { formatInspect, inspectModel } from "./inspect.ts";
import {
  collect,
  EXIT,
  parseCount,
  parseInteger,
  parseNumber,
  parsePositive,
  parseThreads,
  parseTokenList,
  UsageError,
} from "./options.ts";

import denoJson from "../deno.json" with { type: "json" };

const enc = new TextEncoder();

function writeErr(s: string): void {
  Deno.stderr.writeSync(enc.encode(s));
}

async function writeOut(s: string): Promise<void> {
  const b = enc.encode(s);
  for (let off = 0; off < b.length;) off += await Deno.stdout.write(b.subarray(off));
}

function isTty(f: { isTerminal(): boolean }): boolean {
  try {
    return f.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Ctrl-C: during a generation the first one aborts it, as llama.cpp does; a second one, or one
 * while no generation runs (the chat prompt), exits with {@link EXIT.interrupted}.
 */
class Interrupt {
  #ctl = new AbortController();
  #listening = false;
  #busy = false;
  interrupted = false;
  readonly #onSignal = () => {
    this.interrupted = true;
    if (!this.#busy || this.#ctl.signal.aborted) Deno.exit(EXIT.interrupted);
    this.#ctl.abort();
  };
  /** No generation runs now (Ctrl-C exits). */
  idle(): void {
    this.#busy = false;
  }
  /** A fresh signal for the next generation. */
  signal(): AbortSignal {
    this.#busy = true;
    if (!this.#listening) {
      try {
        Deno.addSignalListener("SIGINT", this.#onSignal);
        this.#listening = true;
      } catch { /* no signals on this platform: Ctrl-C ends the process */ }
    }
    if (this.#ctl.signal.aborted) this.#ctl = new AbortController();
    return this.#ctl.signal;
  }
  dispose(): void {
    if (this.#listening) Deno.removeSignalListener("SIGINT", this.#onSignal);
    this.#listening = false;
  }
}

async function open(
  path: string | undefined,
  backend: string | undefined,
  extra: LoadModelOptions = {},
  integrity: IntegrityFlags = {},
): Promise<Model> {
  const tty = isTty(Deno.stderr);
  let last = 0;
  const model = await loadModel(path ?? (await defaultModelBytes()), {
    ...extra,
    integrity: integrity.verify === false ? "off" : integrity.pinContent ? "pin" : "verify",
    memoryBytes: integrity.memoryMb === undefined
      ? undefined
      : Math.floor(integrity.memoryMb * 1024 * 1024),
    nCtx: integrity.ctxSize,
    threads: integrity.threads ?? Math.max(1, Math.min(64, navigator.hardwareConcurrency || 1)),
    backend: backend ?? "auto",
    onProgress: tty
      ? (done, total) => {
        const pct = Math.min(100, Math.floor((done / Math.max(1, total)) * 100));
        if (pct !== last) {
          last = pct;
          const bar = "#".repeat(Math.floor(pct / 4)).padEnd(25, ".");
          writeErr(`\rloading [${bar}] ${pct}%`);
        }
      }
      : undefined,
  });
  if (tty) writeErr("\r\x1b[K");
  return model;
}

/** `--no-verify` / `--pin-content`. */
interface IntegrityFlags {
  /** false with `--no-verify`. */
  verify?: boolean;
  /** true with `--pin-content`. */
  pinContent?: boolean;
  /** `--memory-mb`: one limit on weights, KV cache, scratch and expert cache. */
  memoryMb?: number;
  /** `--ctx-size`: the memory plan reserves KV cache for it. */
  ctxSize?: number;
  /** `--threads`: WASM compute threads (default: the CPU count). */
  threads?: number;
}

interface StreamingFlags extends IntegrityFlags {
  expertBudgetMb?: number;
  expertManifest?: string;
  expertFallback?: string;
  expertFallbackFile?: string;
  expertCriticalWeight?: number;
  expertFallbackLoads?: string;
}

/** `--expert-fallback TYPE` / `--expert-fallback-file F` as the store's fallback copies (HOBBIT). */
async function fallbackOptions(v: StreamingFlags): Promise<FallbackCopiesOptions | undefined> {
  if (v.expertFallback === undefined && v.expertFallbackFile === undefined) return undefined;
  if (v.expertBudgetMb === undefined) {
    throw new UsageError(
      "bad_flag",
      "--expert-fallback needs --expert-budget-mb (copies serve misses)",
    );
  }
  let type: number | undefined;
  if (v.expertFallback !== undefined) {
    type = parseGgmlType(v.expertFallback);
    if (type === undefined) {
      throw new UsageError("bad_flag", `--expert-fallback: unknown type '${v.expertFallback}'`);
    }
  }
  const file = v.expertFallbackFile;
  let manifest: ExpertManifest | undefined;
  if (file !== undefined) {
    // the side file's own manifest, written beside it by quantize-experts, is checked when present
    const text = await Deno.readTextFile(`${file}.manifest.json`).catch(() => undefined);
    if (text !== undefined) manifest = parseExpertManifest(JSON.parse(text));
  }
  return {
    type,
    source: file === undefined ? undefined : await FileSource.open(file),
    manifest,
    criticalWeight: v.expertCriticalWeight,
    ...fallbackLoads(v.expertFallbackLoads),
  };
}

/** `--expert-fallback-loads POLICY` as `loadOnFallback` / `backgroundLoads` (`UsageError` on bad text). */
function fallbackLoads(
  text: string | undefined,
): Pick<FallbackCopiesOptions, "loadOnFallback" | "backgroundLoads"> {
  if (text === undefined) return {};
  let p;
  try {
    p = parseBackgroundLoads(text);
  } catch (e) {
    throw new UsageError("bad_flag", `--expert-fallback-loads: ${(e as Error).message}`);
  }
  return p === null ? { loadOnFallback: false } : { backgroundLoads: p };
}

/** `--expert-budget-mb` / `--expert-manifest` as load options (a manifest also checks resident loads). */
async function streamingOptions(v: StreamingFlags): Promise<LoadModelOptions> {
  const manifest = v.expertManifest === undefined
    ? undefined
    : parseExpertManifest(JSON.parse(await Deno.readTextFile(v.expertManifest)));
  const fallbackCopies = await fallbackOptions(v);
  if (v.expertBudgetMb === undefined) return { manifest };
  return {
    expertBudgetBytes: Math.floor(v.expertBudgetMb * 1024 * 1024),
    manifest,
    streaming: fallbackCopies ? { fallbackCopies } : undefined,
  };
}

interface SamplingFlags {
  temp?: number;
  nPredict?: number;
  reversePrompt?: string[];
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  seed?: number;
  ctxSize?: number;
  stop?: string[];
  ignoreEos?: boolean;
}

/** Generation options from the flags, with llama.cpp's conventions for out-of-range values. */
function generateOptions(flags: SamplingFlags, maxTokens: number): GenerateOptions {
  const v = {
    ...flags,
    temperature: flags.temperature ?? flags.temp,
    maxTokens: flags.nPredict ?? flags.maxTokens,
    stop: flags.stop || flags.reversePrompt
      ? [...(flags.stop ?? []), ...(flags.reversePrompt ?? [])]
      : undefined,
  };
  return {
    maxTokens: v.maxTokens ?? maxTokens,
    // llama.cpp: a temperature ≤ 0 samples greedily; top-k ≤ 0 is off; seed -1 is random
    temperature: v.temperature === undefined ? undefined : Math.max(0, v.temperature),
    topK: v.topK === undefined ? undefined : Math.max(0, v.topK),
    topP: v.topP,
    minP: v.minP,
    repetitionPenalty: v.repeatPenalty,
    seed: v.seed === -1 ? crypto.getRandomValues(new Uint32Array(1))[0] : v.seed,
    nCtx: v.ctxSize,
    stop: v.stop,
    ignoreEos: v.ignoreEos,
  };
}

/** Load `--manifest`, with its named adapter `adapter` applied (a usage error if it has none such). */
async function manifestModel(
  path: string,
  backend: string | undefined,
  adapter: string | undefined,
): Promise<Model> {
  const r = await loadFromManifest(path, { backend });
  if (adapter === undefined) return r.model;
  const named = r.adapters.get(adapter);
  if (!named) {
    r.model.dispose();
    const have = [...r.adapters.keys()].map((n) => `'${n}'`).join(", ") || "none";
    throw new UsageError(
      "bad_flag",
      `--adapter ${adapter}: the manifest has no such adapter (its adapters: ${have})`,
    );
  }
  r.model.transformer.adapters.push(...named.adapters);
  return r.model;
}

function modelOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("-m, --model <path>", "GGUF model file (default: the built-in model)"),
    )
    .addOption(
      new Option(
        "--no-verify",
        "opt out of the default integrity checks of weight reads (first-read hashes, HTTP " +
          "validators, file size/mtime); a given manifest is still checked",
      ),
    )
    .addOption(
      new Option(
        "--pin-content",
        "hash the whole file at open and check every later read against it (catches bytes " +
          "changed before their first read; reads the file once more)",
      ).conflicts("verify"),
    )
    .addOption(
      new Option("--backend <name>", "compute backend").choices(["auto", "wasm", "ref", "webgpu"]),
    )
    .addOption(
      new Option(
        "--threads <n>",
        "WASM compute threads, 1-64 (default: the CPU count; 1 where Workers or shared memory " +
          "are missing); results are identical at any count",
      ).argParser(parseThreads),
    )
    .addOption(
      new Option(
        "--memory-mb <mb>",
        "one memory limit for weights, KV cache, scratch and expert cache: experts stream " +
          "automatically when the model does not fit (default: what the machine and backend hold)",
      ).argParser(parsePositive),
    );
}

function samplingOptions(cmd: Command, maxTokens: number): Command {
  return cmd
    .addOption(
      new Option("-n, --max-tokens <n>", "most tokens to generate").argParser(parseCount)
        .default(maxTokens),
    )
    .addOption(
      new Option("--temperature <t>", "sampling temperature; ≤ 0 is greedy").argParser(
        parseNumber,
      ),
    )
    .addOption(new Option("--top-k <k>", "keep the k most likely tokens (≤ 0: off)").argParser(
      parseInteger,
    ))
    .addOption(new Option("--top-p <p>", "nucleus sampling, in (0, 1]").argParser(parseNumber))
    .addOption(new Option("--min-p <p>", "min-p sampling, in [0, 1]").argParser(parseNumber))
    .addOption(
      new Option("--repeat-penalty <r>", "repetition penalty, in (0, 10]").argParser(parseNumber),
    )
    .addOption(
      new Option("-s, --seed <n>", "sampling seed (-1: random)").argParser(parseInteger),
    )
    .addOption(
      new Option("-c, --ctx-size <n>", "context length (default: min(training context, 2048))")
        .argParser(parseCount),
    )
    .addOption(
      new Option("--stop <text>", "stop at this text (repeatable)").argParser(collect),
    )
    .addOption(new Option("--ignore-eos", "keep generating past end-of-generation tokens"))
    // llama.cpp's names for the same settings
    .addOption(
      new Option("--temp <t>", "= --temperature (llama.cpp)").argParser(parseNumber)
        .conflicts("temperature"),
    )
    .addOption(
      new Option("--n-predict <n>", "= --max-tokens (llama.cpp)").argParser(parseCount),
    )
    .addOption(
      new Option("-r, --reverse-prompt <text>", "= --stop (llama.cpp; repeatable)").argParser(
        collect,
      ),
    );
}

async function cmdGenerate(o: Record<string, unknown>): Promise<number> {
  const v = o as SamplingFlags & StreamingFlags & {
    model?: string;
    manifest?: string;
    adapter?: string;
    backend?: string;
    prompt?: string;
    promptTokens?: number[];
    json?: boolean;
    stats?: boolean;
  };
  if (
    v.manifest !== undefined &&
    (v.model ?? v.expertBudgetMb ?? v.expertManifest) !== undefined
  ) {
    throw new UsageError(
      "bad_flag",
      "--manifest cannot be combined with --model, --expert-budget-mb or --expert-manifest",
    );
  }
  if ((v.prompt === undefined) === (v.promptTokens === undefined)) {
    throw new UsageError("bad_flag", "generate needs exactly one of --prompt or --prompt-tokens");
  }
  const opts = generateOptions(v, 64);
  if (v.adapter !== undefined && v.manifest === undefined) {
    throw new UsageError("bad_flag", "--adapter picks a named adapter of --manifest: give both");
  }
  const model = v.manifest !== undefined
    ? await manifestModel(v.manifest, v.backend, v.adapter)
    : await open(v.model, v.backend, await streamingOptions(v), v);
  const interrupt = new Interrupt();
  try {
    const it = generate(model, v.prompt ?? v.promptTokens!, {
      ...opts,
      signal: v.json ? undefined : interrupt.signal(),
    });
    let result: GenerateResult;
    for (;;) {
      const r = await it.next();
      if (r.done) {
        result = r.value;
        break;
      }
      if (!v.json) await writeOut(r.value.text);
    }
    if (v.json) {
      console.log(JSON.stringify({
        prompt_tokens: result.promptTokens,
        tokens: result.tokens,
        text: result.text,
        finish_reason: result.finishReason,
        timings: {
          load_ms: model.loadMs,
          prefill_ms: result.timings.prefillMs,
          decode_ms: result.timings.decodeMs,
          decode_tokens_per_s: result.timings.decodeTokensPerS,
        },
        backend: model.backend.name,
        experts: statsJson(model.store.stats()),
      }));
    } else {
      await writeOut("\n");
      if (v.stats !== false) {
        writeErr(`${statsLine(result)} backend ${model.backend.name}\n`);
      }
    }
    return interrupt.interrupted ? EXIT.interrupted : EXIT.ok;
  } finally {
    interrupt.dispose();
    model.dispose();
  }
}

async function cmdChat(o: Record<string, unknown>): Promise<number> {
  const v = o as SamplingFlags & {
    model?: string;
    backend?: string;
    system?: string;
    stats?: boolean;
  };
  const opts = generateOptions(v, 256);
  const model = await open(v.model, v.backend, {}, o as IntegrityFlags);
  const interrupt = new Interrupt();
  try {
    await runChat(model, { ...opts, system: v.system, stats: v.stats !== false }, {
      lines: readLines(Deno.stdin.readable),
      write: writeOut,
      note: writeErr,
      interactive: isTty(Deno.stdin) && isTty(Deno.stderr),
    }, interrupt);
    return EXIT.ok;
  } finally {
    interrupt.dispose();
    model.dispose();
  }
}

/** The embedded default model, imported only when no model is named (2.8 MB of base64). */
async function defaultModelBytes(): Promise<Uint8Array> {
  return (await import("../core/model/default_model.ts")).defaultModelBytes();
}

async function cmdInspect(o: Record<string, unknown>): Promise<number> {
  const v = o as { model?: string; json?: boolean };
  const source: ByteSource = v.model === undefined
    ? new MemorySource(await defaultModelBytes(), "default model")
    : await openSource(v.model, false); // a path or an http(s) URL (index read by Range)
  try {
    const report = await inspectModel(source);
    if (v.json) console.log(JSON.stringify(report));
    else console.log(formatInspect(report));
    return EXIT.ok;
  } finally {
    await source.close?.();
  }
}

async function cmdManifest(o: Record<string, unknown>): Promise<number> {
  const v = o as { model?: string; backend?: string; pin?: string; out?: string };
  let locations: StoreContext["locations"] = [];
  const pinned: ExpertRef[] = (v.pin ?? "").split(",").filter((p) => p.trim()).map((p) => {
    const m = /^\s*(\d+):(\d+)\s*$/.exec(p);
    if (!m) throw new UsageError("bad_flag", `--pin expects LAYER:EXPERT pairs: received '${p}'`);
    return { layer: Number(m[1]), index: Number(m[2]) };
  });
  let manifest: ExpertManifest | null = null;
  const model = await open(v.model, v.backend ?? "ref", {
    hooks: {
      createStore: (ctx) => {
        for (const p of pinned) {
          if (!ctx.locations[p.layer]?.[p.index]) {
            throw new UsageError(
              "bad_flag",
              `--pin ${p.layer}:${p.index}: the model has no such expert`,
            );
          }
        }
        locations = ctx.locations;
        return new ResidentExpertStore([]);
      },
    },
  }, o as IntegrityFlags);
  try {
    // version 2: every expert, every other tensor and the header
    manifest = await buildIntegrityManifest(model.file, locations, pinned);
  } finally {
    model.dispose();
  }
  const json = JSON.stringify(manifest, null, 2) + "\n";
  if (v.out) await Deno.writeTextFile(v.out, json);
  else await writeOut(json);
  return EXIT.ok;
}

async function cmdTrace(o: Record<string, unknown>): Promise<number> {
  const v = o as {
    model?: string;
    backend?: string;
    prompt?: string[];
    promptTokens?: number[];
    maxTokens: number;
    out: string;
  };
  const prompts: (string | number[])[] = [...(v.prompt ?? [])];
  if (v.promptTokens !== undefined) prompts.push(v.promptTokens);
  if (prompts.length === 0) {
    throw new UsageError("bad_flag", "trace needs --prompt or --prompt-tokens");
  }
  const model = await open(v.model, v.backend, {}, o as IntegrityFlags);
  try {
    const hp = model.hp;
    const rec = new RouteRecorder(hp.nLayer, hp.nExpert, hp.nExpertUsed);
    for (const m of model.transformer.moe) m?.observers.push(rec.observe);
    for (const p of prompts) {
      await generateText(model, p, { maxTokens: v.maxTokens, temperature: 0 });
    }
    const trace = rec.trace();
    await Deno.writeTextFile(
      v.out,
      JSON.stringify({ ...trace, affinity: affinityFromTrace(trace, 0.5) }) + "\n",
    );
    writeErr(`traced ${trace.tokens.length} tokens × ${hp.nLayer} layers to ${v.out}\n`);
    return EXIT.ok;
  } finally {
    model.dispose();
  }
}

const EXIT_HELP = `
Without --model the built-in default model is used (a tiny MoE trained on short stories).

Exit codes:
  0    success (and --help)
  1    the model or the runtime failed (unreadable or malformed file, budget too small,
       invalid manifest); the message ends with [ErrorClass:code]
  2    usage error: unknown command or option, a bad or missing value, a bad prompt
  130  interrupted with Ctrl-C`;

/** Builds the program; `done` receives the exit code of the command that ran. */
export function buildProgram(done: (code: number) => void): Command {
  const run = async (p: Promise<number>) => done(await p);
  const program = new Command("moe-edge")
    .description("Mixture-of-Experts inference for Deno")
    .version(`${denoJson.name} ${denoJson.version}`, "-V, --version")
    .usage("<command> [options]")
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (s) => void Deno.stdout.writeSync(enc.encode(s)),
      writeErr,
    })
    .addHelpText("after", EXIT_HELP);

  const gen = program.command("generate")
    .description("generate text from a prompt (text is streamed to stdout, timings to stderr)")
    .addOption(new Option("-p, --prompt <text>", "prompt text (tokenized, BOS per the model)"))
    .addOption(
      new Option("--prompt-tokens <ids>", "prompt as token ids 1,2,3 (used as given, no BOS)")
        .argParser(parseTokenList),
    )
    .addOption(new Option("--manifest <path>", "a model manifest (model, backend, plugins)"))
    .addOption(
      new Option("--adapter <name>", "generate with this named adapter of --manifest's adapters"),
    );
  modelOptions(gen);
  samplingOptions(gen, 64)
    .addOption(
      new Option("--expert-budget-mb <mb>", "stream experts under this memory budget")
        .argParser(parsePositive),
    )
    .addOption(
      new Option(
        "--expert-manifest <file>",
        "integrity manifest (cli manifest): sha256 of every tensor, checked on every read",
      ),
    )
    .addOption(
      new Option(
        "--expert-fallback <type>",
        "keep a copy of every expert in this type (e.g. q2_k) resident; misses compute with it (HOBBIT)",
      ),
    )
    .addOption(
      new Option(
        "--expert-fallback-file <gguf>",
        "read the copies from this side file (plugins/quant-experts/quantize.ts; FILE.manifest.json checked)",
      ),
    )
    .addOption(
      new Option(
        "--expert-critical-weight <w>",
        "misses with a gate weight at or above this wait for full precision (default 0.8)",
      ).argParser(parseNumber),
    )
    .addOption(
      new Option(
        "--expert-fallback-loads <policy>",
        "which fallback uses load full precision in the background: all, none, or " +
          "weight=W,freq=F,per-token=N (default weight=inf,freq=2,per-token=k)",
      ),
    )
    .addOption(new Option("--json", "print one JSON object (tokens, text, timings) instead"))
    .addOption(new Option("--no-stats", "do not print tokens/s to stderr"))
    .action((o) => run(cmdGenerate(o)));

  const chat = program.command("chat")
    .description("chat with the model through its chat template (one line = one turn)")
    .addOption(new Option("--system <text>", "system prompt"));
  modelOptions(chat);
  samplingOptions(chat, 256)
    .addOption(new Option("--no-stats", "do not print tokens/s after each reply"))
    .addHelpText(
      "after",
      "\nIn the chat: /bye or Ctrl-D ends it, /clear forgets the conversation, " +
        "Ctrl-C stops a reply.",
    )
    .action((o) => run(cmdChat(o)));

  program.command("inspect")
    .description(
      "describe a model from its GGUF index (hyper-parameters, tensors, bytes per expert " +
        "per layer and type); no weight is read",
    )
    .addOption(
      new Option("-m, --model <path>", "GGUF file or http(s) URL (default: the built-in model)"),
    )
    .addOption(new Option("--backend <name>", "ignored (inspect loads no weights)").hideHelp())
    .addOption(new Option("--json", "print one JSON object"))
    .action((o) => run(cmdInspect(o)));

  modelOptions(
    program.command("manifest")
      .description(
        "write the integrity manifest: sha256 of every expert, every other tensor and the header",
      ),
  )
    .addOption(new Option("--pin <list>", "experts to keep resident, LAYER:EXPERT,…"))
    .addOption(new Option("--out <file>", "write to this file (default: stdout)"))
    .action((o) => run(cmdManifest(o)));

  program.command("verify")
    .description("check every byte of a model file against an integrity manifest")
    .requiredOption("-m, --model <path>", "GGUF model file or URL")
    .requiredOption("--expert-manifest <file>", "the manifest written by `manifest`")
    .addOption(new Option("--json", "print one JSON object"))
    .action((o) => run(verifyModel(o, writeOut)));

  modelOptions(
    program.command("trace")
      .description("record expert routing while generating (for prefetch/caching studies)"),
  )
    .addOption(
      new Option("-p, --prompt <text>", "a prompt (repeatable)").argParser(collect),
    )
    .addOption(
      new Option("--prompt-tokens <ids>", "a prompt as token ids 1,2,3").argParser(parseTokenList),
    )
    .addOption(
      new Option("-n, --max-tokens <n>", "tokens per prompt").argParser(parseCount).default(64),
    )
    .requiredOption("--out <file>", "trace file to write")
    .action((o) => run(cmdTrace(o)));

  return program;
}

/** Prints a typed error as `error: <message> [<Class>:<code>]` and returns its exit code. */
function report(e: unknown): number {
  if (e instanceof MoeEdgeError) {
    writeErr(`error: ${e.message} [${e.name}:${e.code}]\n`);
    return e instanceof UsageError || e instanceof GenerationError ? EXIT.usage : EXIT.error;
  }
  // the reader of stdout went away (`| head`): stop quietly, as a SIGPIPE would
  if (e instanceof Deno.errors.BrokenPipe) return EXIT.ok;
  if (e instanceof SyntaxError) { // e.g. a JSON file given to --expert-manifest
    writeErr(`error: ${e.message}\n`);
    return EXIT.error;
  }
  throw e;
}

/** Runs the CLI with `args` (without the program name); returns the exit code. */
export async function main(args: string[]): Promise<number> {
  if (args.length === 0) {
    buildProgram(() => {}).outputHelp({ error: true });
    return EXIT.usage;
  }
  let code: number = EXIT.ok;
  const program = buildProgram((c) => {
    code = c;
  });
  try {
    await program.parseAsync(args, { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version are successes; every other parse error is a usage error
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    return report(e);
  }
}
