/**
 * The moe-edge command line.
 *
 * ```sh
 * deno task cli generate --model model.gguf --prompt "Hello" --max-tokens 32 --json
 * deno task cli inspect --model model.gguf
 * deno task cli manifest --model model.gguf --out experts.json
 * deno task cli trace --model model.gguf --prompt "Hello" --out trace.json
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  affinityFromTrace,
  buildExpertManifest,
  type ExpertManifest,
  type ExpertRef,
  generate,
  type GenerateResult,
  generateText,
  GenerationError,
  ggmlTypeName,
  loadFromManifest,
  loadModel,
  type LoadModelOptions,
  type Model,
  MoeEdgeError,
  parseExpertManifest,
  ResidentExpertStore,
  RouteRecorder,
  statsJson,
} from "./mod.ts";
import { defaultModelBytes } from "./core/model/default_model.ts";

const USAGE = `moe-edge — Mixture-of-Experts inference for Deno

Usage:
  deno task cli generate [--model PATH | --manifest PATH] (--prompt TEXT | --prompt-tokens 1,2,3) [--max-tokens N]
                         [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]
                         [--seed S] [--backend NAME] [--json]
                         [--expert-budget-mb N] [--expert-manifest FILE]
  deno task cli inspect [--model PATH]
  deno task cli manifest [--model PATH] [--pin L:E,L:E] [--out FILE]
  deno task cli trace [--model PATH] (--prompt TEXT... | --prompt-tokens 1,2,3) [--max-tokens N] --out FILE

Without --model the built-in default model is used.`;

/** A CLI usage error (exit code 2). */
export class UsageError extends MoeEdgeError {}

function num(name: string, v: string | undefined, int: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (int && !Number.isInteger(n))) {
    throw new UsageError(
      "bad_flag",
      `--${name} expects ${int ? "an integer" : "a number"}: received '${v}'`,
    );
  }
  return n;
}

function isTty(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

async function open(
  path: string | undefined,
  backend: string | undefined,
  extra: LoadModelOptions = {},
): Promise<Model> {
  const tty = isTty();
  let last = 0;
  const enc = new TextEncoder();
  const model = await loadModel(path ?? defaultModelBytes(), {
    ...extra,
    backend: backend ?? "auto",
    onProgress: tty
      ? (done, total) => {
        const pct = Math.min(100, Math.floor((done / Math.max(1, total)) * 100));
        if (pct !== last) {
          last = pct;
          const bar = "#".repeat(Math.floor(pct / 4)).padEnd(25, ".");
          Deno.stderr.writeSync(enc.encode(`\rloading [${bar}] ${pct}%`));
        }
      }
      : undefined,
  });
  if (tty) Deno.stderr.writeSync(enc.encode("\r\x1b[K"));
  return model;
}

async function cmdGenerate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      "prompt-tokens": { type: "string" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      "min-p": { type: "string" },
      "repeat-penalty": { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      json: { type: "boolean" },
      "expert-budget-mb": { type: "string" },
      "expert-manifest": { type: "string" },
      manifest: { type: "string" },
    },
  });
  if (
    values.manifest !== undefined &&
    (values.model ?? values["expert-budget-mb"] ?? values["expert-manifest"])
  ) {
    throw new UsageError(
      "bad_flag",
      "--manifest cannot be combined with --model, --expert-budget-mb or --expert-manifest",
    );
  }
  if ((values.prompt === undefined) === (values["prompt-tokens"] === undefined)) {
    throw new UsageError("bad_flag", "generate needs exactly one of --prompt or --prompt-tokens");
  }
  let prompt: string | number[];
  if (values["prompt-tokens"] !== undefined) {
    prompt = values["prompt-tokens"].split(",").map((s) => num("prompt-tokens", s.trim(), true)!);
  } else prompt = values.prompt!;
  const model = values.manifest !== undefined
    ? (await loadFromManifest(values.manifest, { backend: values.backend })).model
    : await open(values.model, values.backend, await streamingFlags(values));
  const opts = {
    maxTokens: num("max-tokens", values["max-tokens"], true) ?? 64,
    temperature: num("temperature", values.temperature, false),
    topK: num("top-k", values["top-k"], true),
    topP: num("top-p", values["top-p"], false),
    minP: num("min-p", values["min-p"], false),
    repetitionPenalty: num("repeat-penalty", values["repeat-penalty"], false),
    seed: num("seed", values.seed, true),
  };
  const it = generate(model, prompt, opts);
  let result: GenerateResult;
  const enc = new TextEncoder();
  for (;;) {
    const r = await it.next();
    if (r.done) {
      result = r.value;
      break;
    }
    if (!values.json) await Deno.stdout.write(enc.encode(r.value.text));
  }
  if (values.json) {
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
    console.log();
  }
}

async function cmdInspect(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { model: { type: "string" }, backend: { type: "string" }, json: { type: "boolean" } },
  });
  const model = await open(values.model, values.backend ?? "ref");
  const hp = model.hp;
  const experts = model.transformer.weights.layers.flatMap((l) => l.experts);
  const bytesPerExpert = experts.length ? experts[0].bytes : 0;
  const info = {
    architecture: hp.arch.name,
    hparams: { ...hp, arch: undefined },
    tensors: model.file.tensors.map((t) => ({
      name: t.name,
      type: ggmlTypeName(t.type),
      dims: t.dims,
      bytes: t.nbytes,
    })),
    expert_count: hp.nExpert,
    experts_total: experts.length,
    bytes_per_expert: bytesPerExpert,
    expert_bytes_total: experts.reduce((a, e) => a + e.bytes, 0),
    file_bytes: model.file.source.size,
  };
  if (values.json) {
    console.log(JSON.stringify(info));
    return;
  }
  console.log(`architecture   ${info.architecture}`);
  for (const [k, v] of Object.entries(info.hparams)) {
    if (v !== undefined) console.log(`${k.padEnd(15)}${v}`);
  }
  console.log(
    `experts        ${hp.nExpert} per layer, ${hp.nExpertUsed} used, ${bytesPerExpert} bytes each`,
  );
  console.log(`expert bytes   ${info.expert_bytes_total} of ${info.file_bytes} in the file`);
  console.log("\ntensors:");
  for (const t of info.tensors) {
    console.log(`  ${t.name.padEnd(34)} ${t.type.padEnd(6)} [${t.dims.join(", ")}]  ${t.bytes} B`);
  }
}

/** `--expert-budget-mb` / `--expert-manifest` as load options. */
async function streamingFlags(v: Record<string, unknown>): Promise<LoadModelOptions> {
  const mb = num("expert-budget-mb", v["expert-budget-mb"] as string | undefined, false);
  const path = v["expert-manifest"] as string | undefined;
  if (mb === undefined) {
    if (path !== undefined) {
      throw new UsageError("bad_flag", "--expert-manifest needs --expert-budget-mb");
    }
    return {};
  }
  if (mb <= 0) {
    throw new UsageError("bad_flag", `--expert-budget-mb must be positive: received ${mb}`);
  }
  const manifest = path === undefined
    ? undefined
    : parseExpertManifest(JSON.parse(await Deno.readTextFile(path)));
  return { expertBudgetBytes: Math.floor(mb * 1024 * 1024), streaming: { manifest } };
}

async function cmdManifest(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      backend: { type: "string" },
      pin: { type: "string" },
      out: { type: "string" },
    },
  });
  const pinned: ExpertRef[] = (values.pin ?? "").split(",").filter((p) => p.trim()).map((p) => {
    const m = /^\s*(\d+):(\d+)\s*$/.exec(p);
    if (!m) throw new UsageError("bad_flag", `--pin expects LAYER:EXPERT pairs: received '${p}'`);
    return { layer: Number(m[1]), index: Number(m[2]) };
  });
  let manifest: ExpertManifest | null = null;
  const model = await open(values.model, values.backend ?? "ref", {
    hooks: {
      createStore: async (ctx) => {
        for (const p of pinned) {
          if (!ctx.locations[p.layer]?.[p.index]) {
            throw new UsageError(
              "bad_flag",
              `--pin ${p.layer}:${p.index}: the model has no such expert`,
            );
          }
        }
        manifest = await buildExpertManifest(ctx.source, ctx.locations, pinned);
        return new ResidentExpertStore([]);
      },
    },
  });
  model.dispose();
  const json = JSON.stringify(manifest, null, 2) + "\n";
  if (values.out) await Deno.writeTextFile(values.out, json);
  else await Deno.stdout.write(new TextEncoder().encode(json));
}

async function cmdTrace(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      backend: { type: "string" },
      prompt: { type: "string", multiple: true },
      "prompt-tokens": { type: "string" },
      "max-tokens": { type: "string" },
      out: { type: "string" },
    },
  });
  if (!values.out) throw new UsageError("bad_flag", "trace needs --out FILE");
  const prompts: (string | number[])[] = [...(values.prompt ?? [])];
  if (values["prompt-tokens"] !== undefined) {
    prompts.push(
      values["prompt-tokens"].split(",").map((s) => num("prompt-tokens", s.trim(), true)!),
    );
  }
  if (prompts.length === 0) {
    throw new UsageError("bad_flag", "trace needs --prompt or --prompt-tokens");
  }
  const model = await open(values.model, values.backend);
  const hp = model.hp;
  const rec = new RouteRecorder(hp.nLayer, hp.nExpert, hp.nExpertUsed);
  for (const m of model.transformer.moe) m?.observers.push(rec.observe);
  const maxTokens = num("max-tokens", values["max-tokens"], true) ?? 64;
  for (const p of prompts) await generateText(model, p, { maxTokens, temperature: 0 });
  const trace = rec.trace();
  await Deno.writeTextFile(
    values.out,
    JSON.stringify({ ...trace, affinity: affinityFromTrace(trace, 0.5) }) + "\n",
  );
  console.error(`traced ${trace.tokens.length} tokens × ${hp.nLayer} layers to ${values.out}`);
}

/** Run the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  try {
    if (cmd === "generate") await cmdGenerate(rest);
    else if (cmd === "inspect") await cmdInspect(rest);
    else if (cmd === "manifest") await cmdManifest(rest);
    else if (cmd === "trace") await cmdTrace(rest);
    else if (cmd === undefined || cmd === "help" || cmd === "--help") {
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    } else throw new UsageError("unknown_command", `unknown command '${cmd}'`);
    return 0;
  } catch (e) {
    if (e instanceof MoeEdgeError) {
      console.error(`error: ${e.message} [${e.name}:${e.code}]`);
      return e instanceof UsageError || e instanceof GenerationError ? 2 : 1;
    }
    if (e instanceof TypeError && (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`error: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
