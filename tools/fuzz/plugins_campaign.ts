/**
 * Mutation campaign over the plugin inputs: adapter safetensors, adapter
 * configs (`rank_pattern` keys included), plugin manifests and model
 * manifests. Every case is deterministic in `(seed, index)` and ends in one of
 * four outcomes: `ok`, a typed moe-edge error, an untyped error, or a silent
 * NaN (a load that succeeded but whose adapter output or logits are not
 * finite). Besides, each case records the largest single read any byte source
 * served (bound: the input's own size), wall time (hang watchdog in the
 * runner) and whether plugin code ran from outside its folder or despite a
 * manifest problem. Used in-process by `core/plugin/campaign_test.ts` (CI
 * size) and in workers by `tools/fuzz/plugins.ts` (large, time-boxed).
 *
 * @module
 */

import {
  type ByteSource,
  loadFromManifest,
  MemorySource,
  MoeEdgeError,
  preparePlugins,
  readPeftAdapter,
  readSafetensors,
  Session,
  sriSha256,
  synthesizeModel,
} from "../../mod.ts";
import { loraAdapter, loraModules } from "../../plugins/lora/mod.ts";
import { molaAdapter, molaModules } from "../../plugins/mola/mod.ts";
import { smoraAdapter, smoraModules } from "../../plugins/smora/mod.ts";
import { loraFixture, molaFixture, smoraFixture } from "../../core/plugin/adapters_test_util.ts";
import { adapterBytes, SPEC, type TestTensor } from "../../core/plugin/plugin_test_util.ts";
import { mulberry32 } from "../../core/util/rng.ts";

/** What one case ended in. */
export type Outcome = "ok" | "typed" | "untyped" | "silent_nan" | "code_escape";

/** One case's result. */
export interface CaseResult {
  /** Case index. */
  readonly index: number;
  /** Case family. */
  readonly family: string;
  /** Outcome. */
  readonly outcome: Outcome;
  /** `ErrorName:code` for typed errors, the message for untyped ones. */
  readonly detail: string;
  /** Wall time of the case (ms). */
  readonly ms: number;
  /** Largest single read any byte source served, divided by that source's size (≤ 1 is in bound). */
  readonly readRatio: number;
}

/** Campaign totals. */
export interface CampaignSummary {
  /** Cases run. */
  cases: number;
  /** Per outcome. */
  outcomes: Record<Outcome, number>;
  /** Typed error codes seen, with counts. */
  codes: Record<string, number>;
  /** Per family. */
  families: Record<string, number>;
  /** Cases slower than the hang bound (or killed by the watchdog). */
  hangs: number;
  /** Cases whose largest read exceeded their input's size. */
  overAlloc: number;
  /** Slowest case (ms). */
  maxMs: number;
  /** Index and family of the slowest case. */
  slowest: string;
  /** Up to 10 failing cases (untyped, silent NaN, code escape, hang, over-allocation). */
  failures: CaseResult[];
}

/** The model every case uses (the plugin tests' synthetic MoE). */
export const MODEL_BYTES: Uint8Array = synthesizeModel(SPEC);

/** Deterministic PRNG (mulberry32, `core/util/rng.ts`). */
const rng: (seed: number) => () => number = mulberry32;

class Rand {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const WEIRD_NUMBERS: Json[] = [
  0,
  -1,
  1,
  2,
  3,
  4,
  0.5,
  1e308,
  -1e308,
  2 ** 53,
  2 ** 31,
  1e-320,
  65536,
  4294967296,
  "4",
  null,
  true,
  [],
  {},
];

const PATTERN_KEYS = [
  "q_proj",
  "v_proj",
  "layers.0.self_attn.q_proj",
  "((.*)*)*X",
  "(a*)*b",
  "(a|a)*b",
  "(.+)+Q",
  "(x+x+)+y",
  "layers\\.\\d+\\..*",
  "(?=x)",
  "(",
  "[z-a]",
  "\\1",
  "x{99999}",
  ".*",
  "(?:q|k|v|o)_proj",
  "a".repeat(600),
];

/** Random mutation of a JSON document: replace, delete or add at a random node. */
function mutateJson(doc: Json, r: Rand, values: readonly Json[]): Json {
  const root = structuredClone(doc);
  const steps = 1 + r.int(3);
  for (let s = 0; s < steps; s++) {
    let node: Json = root;
    for (let d = 0; d < 4 && r.chance(0.6); d++) {
      const kids: Json[] = Array.isArray(node)
        ? node
        : node && typeof node === "object"
        ? Object.values(node)
        : [];
      const containers = kids.filter((k) => k !== null && typeof k === "object");
      if (!containers.length) break;
      node = r.pick(containers);
    }
    if (node === null || typeof node !== "object") continue;
    const keys = Array.isArray(node) ? node.map((_, i) => String(i)) : Object.keys(node);
    const t = node as Record<string, Json>;
    const op = r.int(3);
    const value = r.pick(values);
    if (op === 0 && keys.length) delete t[r.pick(keys)];
    else if (op === 1 && keys.length) t[r.pick(keys)] = structuredClone(value);
    else if (Array.isArray(t)) t.push(structuredClone(value)); // arrays: JSON has no named keys
    else {
      const k = r.pick(["extra", "__proto__", "0", "constructor", "r", "use", "entry"]);
      Object.defineProperty(t, k, {
        value: structuredClone(value),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  }
  return root;
}

/** A byte source that records the largest single read relative to its size. */
class CountingSource implements ByteSource {
  readonly inner: MemorySource;
  maxRead = 0;
  constructor(bytes: Uint8Array, readonly name: string) {
    this.inner = new MemorySource(bytes, name);
  }
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.maxRead = Math.max(this.maxRead, length);
    return this.inner.read(offset, length);
  }
}

type Kind = "lora" | "mola" | "smora";

function baseAdapter(r: Rand): { kind: Kind; cfg: Json; tensors: Record<string, TestTensor> } {
  const kind = r.pick<Kind>(["lora", "mola", "smora"]);
  const seed = r.int(1000);
  const dtype = r.pick(["F32", "F16", "BF16"] as const);
  const typed = (t: Record<string, TestTensor>) =>
    Object.fromEntries(Object.entries(t).map(([n, x]) => [n, { ...x, dtype }]));
  if (kind === "lora") {
    return {
      kind,
      cfg: { r: 4, lora_alpha: 8, peft_type: "LORA", target_modules: ["q_proj", "o_proj"] },
      tensors: typed(loraFixture(seed, ["0:q", "1:o", "0:lm_head"], 4).tensors),
    };
  }
  if (kind === "mola") {
    return {
      kind,
      cfg: { r: 2, lora_alpha: 8 },
      tensors: typed(molaFixture(seed, [2, 3], ["q", "v"], 2).tensors),
    };
  }
  return {
    kind,
    cfg: { r: 4, lora_alpha: 8, activate_r: 2 },
    tensors: typed(smoraFixture(seed, 2, ["k"], 4).tensors),
  };
}

/** Mutate tensor values: NaN, ±Inf, huge finite values, denormals. */
function poisonValues(t: Record<string, TestTensor>, r: Rand): Record<string, TestTensor> {
  const out = { ...t };
  const names = Object.keys(t);
  for (let k = 1 + r.int(3); k > 0; k--) {
    const n = r.pick(names);
    const data = out[n].data.slice();
    const v = r.pick([NaN, Infinity, -Infinity, 3e38, -3e38, 1e30, 65504, 1e-45]);
    if (r.chance(0.3)) data.fill(v);
    else data[r.int(data.length)] = v;
    out[n] = { ...out[n], data };
  }
  return out;
}

/** Mutate safetensors bytes: flips, truncation, insertion, header JSON edits. */
function mutateBytes(bytes: Uint8Array, r: Rand): Uint8Array {
  const op = r.int(4);
  if (op === 0) {
    const out = bytes.slice();
    for (let k = 1 + r.int(8); k > 0; k--) out[r.int(out.length)] = r.int(256);
    return out;
  }
  if (op === 1) return bytes.slice(0, r.int(bytes.length));
  if (op === 2) {
    const at = r.int(bytes.length), n = 1 + r.int(16);
    const out = new Uint8Array(bytes.length + n);
    out.set(bytes.subarray(0, at));
    for (let i = 0; i < n; i++) out[at + i] = r.int(256);
    out.set(bytes.subarray(at), at + n);
    return out;
  }
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Json;
  const h = new TextEncoder().encode(
    JSON.stringify(
      mutateJson(header, r, [...WEIRD_NUMBERS, "F64", "I8", "BOOL", [2 ** 40, 2 ** 40], [
        0,
        2 ** 53,
      ], [1e15]]),
    ),
  );
  const out = new Uint8Array(8 + h.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(bytes.subarray(8 + n), 8 + h.length);
  return out;
}

const HP = { value: undefined as undefined | import("../../mod.ts").HParams };

async function hparams(): Promise<import("../../mod.ts").HParams> {
  if (!HP.value) {
    const { loadModel } = await import("../../mod.ts");
    HP.value = (await loadModel(MODEL_BYTES, { backend: "ref" })).hp;
  }
  return HP.value;
}

/** Run an adapter end to end on finite input: returns false on a silent non-finite output. */
async function runAdapter(kind: Kind, cfg: Json, bytes: Uint8Array, r: Rand): Promise<boolean> {
  const src = new CountingSource(bytes, "adapter_model.safetensors");
  // the raw reader first (allocation bound), then the adapter pipeline on the same bytes
  const st = await readSafetensors(src);
  for (const [name, t] of st.tensors) {
    if (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16") await st.readF32(name);
  }
  lastReadRatio = src.maxRead / Math.max(1, src.size);
  const files: Record<string, Uint8Array> = {
    "adapter_config.json": new TextEncoder().encode(JSON.stringify(cfg)),
    "adapter_model.safetensors": bytes,
  };
  const ad = await readPeftAdapter((name) => Promise.resolve(files[name]), "fuzz");
  const hp = await hparams();
  const ctx = { hp, backend: null as never };
  const adapter = kind === "lora"
    ? loraAdapter(await loraModules(ad), ctx)
    : kind === "mola"
    ? molaAdapter(await molaModules(ad), hp, { topK: 2 })
    : smoraAdapter(await smoraModules(ad), ctx);
  const projs = ["attn_q", "attn_k", "attn_v", "attn_output", "output"] as const;
  for (let layer = -1; layer < hp.nLayer; layer++) {
    for (const p of projs) {
      if (!adapter.applies(layer, p)) continue;
      const dIn = p === "attn_output" ? hp.nHead * hp.headDimV : hp.nEmbd;
      const dOut = p === "output"
        ? hp.nVocab
        : p === "attn_q"
        ? hp.nHead * hp.headDimK
        : p === "attn_output"
        ? hp.nEmbd
        : hp.nHeadKv * hp.headDimK;
      const n = 2;
      const x = Float32Array.from({ length: n * dIn }, () => (r.next() - 0.5) * 4);
      const out = new Float32Array(n * dOut);
      adapter.apply(layer, p, x, n, out);
      if (out.some((v) => !Number.isFinite(v))) return false;
    }
  }
  return true;
}

let lastReadRatio = 0;

function pluginManifestJson(entry: string, extra: Record<string, Json> = {}): Record<string, Json> {
  return {
    name: "fz",
    version: "1.0.0",
    apiVersion: 1,
    hooks: ["router"],
    entry,
    config: { type: "object", properties: { k: { type: "integer", minimum: 1 } } },
    ...extra,
  };
}

const ENTRIES = [
  "mod.js",
  "%2e%2e/evil.js",
  ".%2E/evil.js",
  "..%2fevil.js",
  "../evil.js",
  "sub/../../evil.js",
  "link.js",
  "/tmp/evil.js",
  "file:///tmp/evil.js",
  "..\\evil.js",
  "mod.js?../evil.js",
  "data:text/javascript,globalThis.__fzEvil=1",
  "https://example.com/evil.js",
  "./mod.js",
  "sub/mod.js",
];

const flags = globalThis as unknown as { __fzRan?: number; __fzEvil?: number };

/** Plugin and model manifest cases in `dir` (a temp folder holding `model.gguf` and `evil.js`). */
async function manifestCase(dir: string, index: number, r: Rand): Promise<"ok" | "code_escape"> {
  const name = `p${index}`;
  const pdir = `${dir}/${name}`;
  await Deno.mkdir(`${pdir}/sub`, { recursive: true });
  const code = `globalThis.__fzRan = (globalThis.__fzRan ?? 0) + 1; // ${index}
export default (c) => ({ name: "fz", version: "1.0.0", hooks: { router: (r) => r } });
`;
  await Deno.writeTextFile(`${pdir}/mod.js`, code);
  await Deno.writeTextFile(`${pdir}/sub/mod.js`, code);
  await Deno.symlink(`${dir}/evil.js`, `${pdir}/link.js`).catch(() => {});
  const extra: Record<string, Json> = {};
  if (r.chance(0.4)) {
    extra.entryIntegrity = r.chance(0.5)
      ? await sriSha256(new TextEncoder().encode(code))
      : `sha256-${"A".repeat(43)}=`;
  }
  if (r.chance(0.2)) { // config schemas with backtracking-prone patterns, and data that trips them
    extra.config = {
      type: "object",
      properties: { k: { type: "string", pattern: r.pick(PATTERN_KEYS) } },
      patternProperties: { [r.pick(PATTERN_KEYS)]: { type: "number" } },
    };
  }
  let man: Json = pluginManifestJson(r.pick(ENTRIES), extra);
  if (r.chance(0.6)) man = mutateJson(man, r, [...WEIRD_NUMBERS, ...ENTRIES, ["router", "cache"]]);
  const manBytes = new TextEncoder().encode(JSON.stringify(man));
  await Deno.writeFile(`${pdir}/manifest.json`, manBytes);
  const ref: Record<string, Json> = {
    use: `./${name}`,
    config: extra.config ? { k: "a".repeat(40), ["x".repeat(40)]: "y", "a.b.q_proj": 1 } : { k: 2 },
  };
  if (r.chance(0.3)) ref.integrity = await sriSha256(manBytes);
  let model: Json = {
    manifestVersion: 1,
    model: { source: "model.gguf" },
    backend: "ref",
    plugins: [
      ref,
      r.pick<Json>([
        { use: "route-top-p", config: { p: 0.5, minK: 1 } },
        { use: "npm:left-pad" },
        { use: "npm:x@1.0.0" },
        { use: "jsr:@a/b@^1" },
        { use: "http://example.com/p/manifest.json", integrity: `sha256-${"A".repeat(43)}=` },
        { use: "/etc" },
        { use: "../../../../etc/passwd" },
        { use: "lora", config: { adapter: "ad" } },
        { use: "lora", config: { adapter: "ad", merge: true } },
        { use: "lora", config: { adapter: "huge" } },
        { use: "lora", config: { adapter: "huge", merge: true } },
      ]),
    ],
  };
  if (r.chance(0.5)) model = mutateJson(model, r, [...WEIRD_NUMBERS, ...ENTRIES, ref]);
  const base = new URL(`file://${dir}/`);
  const noFetch = (() => Promise.reject(new TypeError("offline"))) as typeof fetch;
  const before = flags.__fzRan ?? 0;
  const plugins = (model as { plugins?: unknown })?.plugins;
  // preparation alone never runs plugin code
  await preparePlugins(Array.isArray(plugins) ? plugins : [], { baseUrl: base, fetch: noFetch })
    .catch(() => {});
  if ((flags.__fzRan ?? 0) !== before || flags.__fzEvil) return "code_escape";
  try {
    const { model: m } = await loadFromManifest(model as never, { baseUrl: base, fetch: noFetch });
    if (flags.__fzEvil) return "code_escape";
    const s = new Session(m, { nCtx: 16 });
    try {
      const logits = await s.eval([1, 2, 3]);
      if (logits.some((v) => !Number.isFinite(v))) throw new Error("silent_nan");
    } finally {
      s.dispose();
    }
  } catch (e) {
    if (flags.__fzEvil) return "code_escape";
    if (
      e instanceof MoeEdgeError && e.name === "ManifestError" && (flags.__fzRan ?? 0) !== before
    ) {
      return "code_escape"; // code ran although the manifest had problems
    }
    throw e;
  } finally {
    await Deno.remove(pdir, { recursive: true }).catch(() => {});
  }
  return "ok";
}

/** Shared state of a campaign process: a temp dir with the model, an adapter and code outside every plugin. */
export interface CampaignEnv {
  /** The folder. */
  readonly dir: string;
}

/** Create the environment (call `closeEnv` when done). */
export async function openEnv(): Promise<CampaignEnv> {
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-fuzz-plugins-" });
  await Deno.writeFile(`${dir}/model.gguf`, MODEL_BYTES);
  await Deno.writeTextFile(
    `${dir}/evil.js`,
    `globalThis.__fzEvil = 1;
export default () => ({ name: "fz", version: "1.0.0", hooks: { router: (r) => r } });
`,
  );
  await Deno.mkdir(`${dir}/ad`);
  await Deno.writeTextFile(
    `${dir}/ad/adapter_config.json`,
    JSON.stringify({ r: 4, lora_alpha: 8 }),
  );
  await Deno.writeFile(
    `${dir}/ad/adapter_model.safetensors`,
    adapterBytes(loraFixture(3, ["0:q", "1:v"], 4).tensors),
  );
  // finite values whose products overflow f32: must fail typed at run time or merge
  const t = loraFixture(4, ["0:q", "1:o"], 4).tensors;
  await Deno.mkdir(`${dir}/huge`);
  await Deno.writeTextFile(`${dir}/huge/adapter_config.json`, JSON.stringify({ r: 4 }));
  await Deno.writeFile(
    `${dir}/huge/adapter_model.safetensors`,
    adapterBytes(
      Object.fromEntries(
        Object.entries(t).map(([n, x]) => [n, { ...x, data: x.data.map((v) => v * 1e20) }]),
      ),
    ),
  );
  return { dir };
}

/** Remove the environment. */
export async function closeEnv(env: CampaignEnv): Promise<void> {
  await Deno.remove(env.dir, { recursive: true }).catch(() => {});
}

const FAMILIES = ["safetensors", "adapter_config", "adapter_values", "manifest"] as const;

/** Run case `index` of campaign `seed`. Never throws. */
export async function runCase(env: CampaignEnv, seed: number, index: number): Promise<CaseResult> {
  const r = new Rand((seed * 0x9e3779b1) ^ (index * 0x85ebca6b));
  const family = FAMILIES[index % FAMILIES.length];
  lastReadRatio = 0;
  const t0 = performance.now();
  let outcome: Outcome = "ok";
  let detail = "";
  try {
    if (family === "manifest") {
      outcome = await manifestCase(env.dir, index, r);
    } else {
      const { kind, cfg, tensors } = baseAdapter(r);
      let c: Json = cfg;
      let t = tensors;
      if (family === "adapter_config") {
        c = mutateJson(cfg, r, WEIRD_NUMBERS);
        if (r.chance(0.6)) {
          const pat: Record<string, Json> = {};
          for (let k = r.int(3); k >= 0; k--) {
            pat[r.pick(PATTERN_KEYS)] = r.pick([4, 2, 8, -1, "4"]);
          }
          (c as Record<string, Json>)[r.pick(["rank_pattern", "alpha_pattern"])] = pat;
        }
      }
      if (family === "adapter_values") t = poisonValues(tensors, r);
      let bytes = adapterBytes(t);
      if (family === "safetensors") bytes = mutateBytes(bytes, r);
      if (!(await runAdapter(kind, c, bytes, r))) outcome = "silent_nan";
    }
  } catch (e) {
    if (e instanceof MoeEdgeError) {
      outcome = "typed";
      detail = `${e.name}:${e.code}`;
    } else if (e instanceof Error && e.message === "silent_nan") outcome = "silent_nan";
    else {
      outcome = "untyped";
      detail = e instanceof Error
        ? `${e.name}: ${e.message}`.slice(0, 300) +
          ` @ ${(e.stack ?? "").split("\n").slice(1, 4).map((l) => l.trim()).join(" < ")}`
        : String(e);
    }
  }
  if (flags.__fzEvil) {
    outcome = "code_escape";
    flags.__fzEvil = 0;
  }
  return { index, family, outcome, detail, ms: performance.now() - t0, readRatio: lastReadRatio };
}

/** Fold results into a summary; `hangMs` is the per-case bound. */
export function summarize(results: readonly CaseResult[], hangMs: number): CampaignSummary {
  const s: CampaignSummary = {
    cases: results.length,
    outcomes: { ok: 0, typed: 0, untyped: 0, silent_nan: 0, code_escape: 0 },
    codes: {},
    families: {},
    hangs: 0,
    overAlloc: 0,
    maxMs: 0,
    slowest: "",
    failures: [],
  };
  for (const r of results) {
    s.outcomes[r.outcome]++;
    s.families[r.family] = (s.families[r.family] ?? 0) + 1;
    if (r.outcome === "typed") s.codes[r.detail] = (s.codes[r.detail] ?? 0) + 1;
    const hang = r.ms > hangMs;
    const over = r.readRatio > 1;
    if (hang) s.hangs++;
    if (over) s.overAlloc++;
    if (r.ms > s.maxMs) {
      s.maxMs = r.ms;
      s.slowest = `case ${r.index} (${r.family}, ${r.outcome}${r.detail ? ` ${r.detail}` : ""})`;
    }
    const bad = hang || over || (r.outcome !== "ok" && r.outcome !== "typed");
    if (bad && s.failures.length < 10) s.failures.push(r);
  }
  return s;
}
