/**
 * `loadFromManifest`: read a model manifest, validate it and every plugin it
 * names (all problems reported together, before any plugin code or weights
 * load), check the model's sha256, build the plugins, and load the model
 * with their hooks.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Backend } from "../backend/backend.ts";
import { ManifestError, MoeEdgeError } from "../errors.ts";
import { getNumber, getString } from "../formats/gguf_meta.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { loadModel, type Model, type ModelHooks, type StoreContext } from "../model/model.ts";
import type { LinearAdapter } from "../model/transformer.ts";
import type { LoadProgress } from "../model/weights.ts";
import { type ByteSource, FileSource } from "../store/byte_source.ts";
import type { ExpertStore } from "../store/expert_store.ts";
import { HttpSource } from "../store/http_source.ts";
import { PinnedSource } from "../store/pinned_source.ts";
import { streamingStoreFromRequest, type StreamingStoreRequest } from "../store/streaming_store.ts";
import type { FallbackCopiesOptions } from "../store/fallback_copies.ts";
import { type BackgroundLoadPolicy, parseBackgroundLoads } from "../store/streaming_options.ts";
import { type ExpertManifest, parseExpertManifest } from "../store/expert_manifest.ts";
import { parseGgmlType } from "../tensor/ggml_type.ts";
import {
  instantiatePlugins,
  type LoadedPlugin,
  type PluginLoaderOptions,
  type PreparedPlugin,
  preparePlugins,
} from "./loader.ts";
import {
  manifestError,
  type ManifestProblem,
  type ModelManifest,
  validateModelManifest,
} from "./manifest.ts";
import { PluginHost } from "./registry.ts";
import {
  byteReader,
  cwdUrl,
  dirUrl,
  MAX_MANIFEST_BYTES,
  parseJson,
  resolveUrl,
} from "./resolve.ts";

/**
 * `memory.expertFallback` / `expertFallbackFile` / `expertCriticalWeight` as
 * the store's fallback copies (HOBBIT). Throws `ManifestError` for an
 * unknown type or a side file that is not local.
 */
async function manifestFallback(
  mem: NonNullable<ModelManifest["memory"]>,
  base: URL,
  label: string,
): Promise<FallbackCopiesOptions | undefined> {
  if (mem.expertFallback === undefined && mem.expertFallbackFile === undefined) return undefined;
  const bad = (path: string, message: string): never => {
    throw manifestError(
      [{ path: `${label}: memory.${path}`, code: "bad_fallback", message }],
      label,
    );
  };
  let type: number | undefined;
  if (mem.expertFallback !== undefined) {
    type = parseGgmlType(mem.expertFallback);
    if (type === undefined) bad("expertFallback", `unknown ggml type '${mem.expertFallback}'`);
  }
  let loads: Pick<FallbackCopiesOptions, "loadOnFallback" | "backgroundLoads"> = {};
  if (mem.expertFallbackLoads !== undefined) {
    let p: BackgroundLoadPolicy | null = null;
    try {
      p = parseBackgroundLoads(mem.expertFallbackLoads);
    } catch (e) {
      bad("expertFallbackLoads", (e as Error).message);
    }
    loads = p === null ? { loadOnFallback: false } : { backgroundLoads: p };
  }
  let source: ByteSource | undefined;
  let manifest: ExpertManifest | undefined;
  if (mem.expertFallbackFile !== undefined) {
    const url = resolveUrl(mem.expertFallbackFile, base);
    if (url.protocol !== "file:") bad("expertFallbackFile", `must be a local file: ${url.href}`);
    const path = fileURLToPath(url);
    const text = await Deno.readTextFile(`${path}.manifest.json`).catch(() => undefined);
    if (text !== undefined) manifest = parseExpertManifest(JSON.parse(text));
    source = await FileSource.open(path);
  }
  return { type, source, manifest, criticalWeight: mem.expertCriticalWeight, ...loads };
}

/** Builds the expert store a manifest asks for (`memory` plus cache/prefetch plugins). */
export type ManifestStoreFactory = (
  ctx: StoreContext,
  req: StreamingStoreRequest,
) => ExpertStore | Promise<ExpertStore>;

/** Options of `loadFromManifest`. */
export interface LoadFromManifestOptions extends PluginLoaderOptions {
  /** Backend instance or name; overrides the manifest's `backend`. */
  backend?: Backend | string;
  /** Load progress (bytes). */
  onProgress?: LoadProgress;
  /** Store for a manifest with `memory` or cache/prefetch plugins (default: the streaming store). */
  createStore?: ManifestStoreFactory;
  /** The memory plan's limit, as `loadModel`'s `memoryBytes`. */
  memoryBytes?: number;
  /** Context the plan reserves per sequence, as `loadModel`'s `nCtx`. */
  nCtx?: number;
  /** Sequences the plan reserves, as `loadModel`'s `nSeq`. */
  nSeq?: number;
  /** Compute threads of the backend, as `loadModel`'s `threads`. */
  threads?: number;
}

/** One named adapter of a manifest (`adapters.<name>`), bound to the loaded model. */
export interface NamedAdapter {
  /** Its name (a request picks it as `<model>:<name>`). */
  readonly name: string;
  /** Its plugins, in manifest order. */
  readonly plugins: readonly LoadedPlugin[];
  /**
   * The linear adapters to add after the model's own for a request that picks
   * it (`Transformer.adapters` / `SequenceRequest.adapters`); the base
   * weights are shared by every adapter.
   */
  readonly adapters: readonly LinearAdapter[];
}

/** What `loadFromManifest` returns. */
export interface ManifestLoadResult {
  /** The loaded model, with every plugin's hooks in place. */
  readonly model: Model;
  /** The plugins, in manifest order. */
  readonly plugins: readonly LoadedPlugin[];
  /** The validated manifest. */
  readonly manifest: ModelManifest;
  /** The named adapters (`adapters`), in manifest order; empty when none. */
  readonly adapters: ReadonlyMap<string, NamedAdapter>;
}

/** Hex SHA-256 of a whole byte source, read in 8 MiB ranges. */
export async function sha256OfSource(src: ByteSource): Promise<string> {
  const h = createHash("sha256");
  const step = 8 << 20;
  for (let off = 0; off < src.size; off += step) {
    h.update(await src.read(off, Math.min(step, src.size - off)));
  }
  return h.digest("hex");
}

async function readManifest(
  input: unknown,
  opts: LoadFromManifestOptions,
): Promise<{ value: unknown; base: URL; label: string }> {
  if (typeof input !== "string" && !(input instanceof URL)) {
    return { value: input, base: opts.baseUrl ?? cwdUrl(), label: opts.source ?? "manifest" };
  }
  const url = input instanceof URL ? input : resolveUrl(input, opts.baseUrl ?? cwdUrl());
  const bytes = await byteReader(opts.fetch)(url, MAX_MANIFEST_BYTES);
  return {
    value: parseJson(bytes, url.href),
    base: opts.baseUrl ?? dirUrl(url),
    label: String(input),
  };
}

async function openModel(
  m: ModelManifest,
  base: URL,
  opts: LoadFromManifestOptions,
  problems: ManifestProblem[],
  label: string,
): Promise<ByteSource | null> {
  const url = resolveUrl(m.model.source, base);
  let src: ByteSource;
  try {
    if (url.protocol === "file:" && base.protocol !== "file:") {
      throw new ManifestError(
        "local_from_remote",
        `a manifest read from ${base.origin} cannot name a local file (${url.href})`,
      );
    }
    if (url.protocol === "file:") src = await FileSource.open(fileURLToPath(url));
    else if (url.protocol === "https:") {
      // with model.sha256 every byte is checked against the pinned content: validators optional
      const validators = m.model.sha256 ? "use" : "require";
      src = await HttpSource.open(url.href, { fetch: opts.fetch, validators });
    } else {
      const why = `scheme ${url.protocol} is not supported (use a path or https)`;
      throw new ManifestError("unsupported_scheme", why);
    }
  } catch (e) {
    const code = e instanceof MoeEdgeError ? e.code : "open_failed";
    problems.push({ path: `${label}: model.source`, code, message: (e as Error).message });
    return null;
  }
  if (typeof m.model.sha256 === "string" && m.model.sha256) {
    // one pass: the SHA-256, and block hashes that every later read is checked against
    const pinned = await PinnedSource.pin(src);
    const got = pinned.sha256;
    src = pinned.source;
    if (got !== m.model.sha256.toLowerCase()) {
      problems.push({
        path: `${label}: model.sha256`,
        code: "sha256_mismatch",
        message: `${src.name} hashes to ${got}`,
      });
    }
  }
  const raw = m.memory?.pinnedExperts;
  const pins = Array.isArray(raw) &&
      raw.every((p) => Array.isArray(p) && p.length === 2 && p.every(Number.isInteger))
    ? raw
    : [];
  if (pins.length) {
    try {
      const meta = (await readGguf(src)).metadata;
      const arch = getString(meta, "general.architecture");
      // block_count also counts NextN/MTP blocks (bailingmoe2's nextn_predict_layers), never run
      const nLayer = getNumber(meta, `${arch}.block_count`) -
        getNumber(meta, `${arch}.nextn_predict_layers`, 0);
      const nExpert = getNumber(meta, `${arch}.expert_count`, 0);
      pins.forEach(([l, e], i) => {
        if (l >= nLayer || e >= nExpert) {
          problems.push({
            path: `${label}: memory.pinnedExperts[${i}]`,
            code: "out_of_range",
            message: `[${l}, ${e}] is outside the model's ${nLayer} layers × ${nExpert} experts`,
          });
        }
      });
    } catch (e) {
      problems.push({
        path: `${label}: model.source`,
        code: (e as { code?: string }).code ?? "bad_model",
        message: (e as Error).message,
      });
    }
  }
  return src;
}

/**
 * Prepare the plugins of every named adapter (`adapters.<name>`), adding
 * their problems (paths `adapters.<name>: plugins[i]`) to `problems`. A named
 * adapter cannot change the weights, routers, experts or store that every
 * adapter shares: a plugin with a hook besides `adapter` (and `weights`, which
 * is never run for it: `lora` declares it for `merge`) is a problem
 * (`adapter_hooks_only`), and so is `merge: true` (`merge_shared`).
 */
async function prepareNamedAdapters(
  value: unknown,
  lopts: PluginLoaderOptions,
  label: string,
  problems: ManifestProblem[],
): Promise<Map<string, PreparedPlugin[]>> {
  const out = new Map<string, PreparedPlugin[]>();
  if (typeof value !== "object" || value === null || Array.isArray(value)) return out;
  for (const [name, refs] of Object.entries(value)) {
    if (!Array.isArray(refs)) continue; // the schema reports it
    const source = `${label}: adapters.${name}`;
    const { prepared, problems: pp } = await preparePlugins(refs, { ...lopts, source });
    problems.push(...pp);
    prepared.forEach((p, i) => {
      const at = `${source}: plugins[${i}] (${p.manifest.name})`;
      const other = p.manifest.hooks.filter((h) => h !== "adapter" && h !== "weights");
      if (other.length) {
        problems.push({
          path: at,
          code: "adapter_hooks_only",
          message: `a named adapter's plugins may only use the adapter hook (it shares the base ` +
            `weights with every other adapter): '${p.manifest.name}' also has ${other.join(", ")}`,
        });
      }
      if (p.config.merge === true) {
        problems.push({
          path: `${at}: config.merge`,
          code: "merge_shared",
          message: "a named adapter cannot be merged into the base weights every adapter shares; " +
            "drop merge (the adapter then runs unmerged, per request)",
        });
      }
    });
    out.set(name, prepared);
  }
  return out;
}

/**
 * Load a model and its plugins from a manifest (a path, URL, or the parsed
 * object). Throws one `ManifestError` listing every problem of the manifest,
 * the plugin manifests, their configs, integrity and the model's sha256 —
 * before any plugin code or weights load; plugin failures afterwards are
 * `PluginError`s stamped with the plugin and hook.
 *
 * @example
 * ```ts ignore
 * import { generateText, loadFromManifest } from "@moe-edge/runtime";
 * const { model, plugins } = await loadFromManifest("model.json");
 * console.log(plugins.map((p) => p.manifest.name));
 * console.log((await generateText(model, "Hello", { maxTokens: 8 })).text);
 * ```
 */
export async function loadFromManifest(
  pathOrObject: string | URL | ModelManifest,
  opts: LoadFromManifestOptions = {},
): Promise<ManifestLoadResult> {
  const { value, base, label } = await readManifest(pathOrObject, opts);
  // every stage runs on whatever is well-formed, so one error lists every problem
  const problems = validateModelManifest(value, label);
  const manifest = value as ModelManifest;
  const partial = (typeof value === "object" && value !== null ? value : {}) as Partial<
    ModelManifest
  >;
  const lopts: PluginLoaderOptions = { ...opts, baseUrl: base, source: label };
  const refs = Array.isArray(partial.plugins) ? partial.plugins : [];
  const { prepared, problems: pp } = await preparePlugins(refs, lopts);
  problems.push(...pp);
  const named = await prepareNamedAdapters(partial.adapters, lopts, label, problems);
  const source = typeof partial.model?.source === "string"
    ? await openModel(partial as ModelManifest, base, opts, problems, label)
    : null;
  const streaming = manifest.memory?.expertBudgetMb !== undefined ||
    (manifest.memory?.pinnedExperts?.length ?? 0) > 0 ||
    prepared.some((p) =>
      p.manifest.hooks.includes("cache") || p.manifest.hooks.includes("prefetch")
    );
  if (problems.length) {
    await source?.close?.();
    throw manifestError(problems, label);
  }
  try {
    const plugins = await instantiatePlugins(prepared, lopts);
    const host = new PluginHost(plugins.map((p) => p.plugin));
    const hooks: ModelHooks = host.modelHooks();
    if (streaming) {
      const mem = manifest.memory ?? {};
      const create = opts.createStore ?? streamingStoreFromRequest;
      const mb = mem.expertBudgetMb;
      const fallbackCopies = await manifestFallback(mem, base, label);
      hooks.createStore = (ctx) =>
        create(ctx, {
          budgetBytes: mb === undefined ? undefined : Math.floor(mb * 1024 * 1024),
          pinned: mem.pinnedExperts ?? [],
          policy: host.cachePolicy(ctx.hp),
          prefetcher: host.prefetcher(ctx.hp),
          fallbackCopies,
        });
    }
    const model = await loadModel(source!, {
      backend: opts.backend ?? manifest.backend ?? "auto",
      onProgress: opts.onProgress,
      hooks,
      memoryBytes: opts.memoryBytes,
      nCtx: opts.nCtx,
      nSeq: opts.nSeq,
      threads: opts.threads,
    });
    const adapters = new Map<string, NamedAdapter>();
    try {
      for (const [name, prep] of named) {
        const loaded = await instantiatePlugins(prep, lopts);
        const list = await new PluginHost(loaded.map((p) => p.plugin)).adapters({
          hp: model.hp,
          backend: model.backend,
        });
        adapters.set(name, { name, plugins: loaded, adapters: list });
      }
    } catch (e) {
      model.dispose();
      throw e;
    }
    return { model, plugins, manifest, adapters };
  } catch (e) {
    await source!.close?.();
    throw e;
  }
}
