/**
 * Loading a GGUF MoE model onto a backend: parse the index, check the
 * architecture and tensors, upload non-expert weights, hand experts to an
 * expert store, and assemble routers, experts and the transformer.
 *
 * @module
 */

import type { Backend, Slot } from "../backend/backend.ts";
import { createBackend } from "../backend/registry.ts";
import { type GgufFile, readGguf } from "../formats/gguf_reader.ts";
import { type Expert, Scratch, SwigluExpert } from "../moe/expert.ts";
import { type Router, TopKRouter } from "../moe/router.ts";
import { type ByteSource, FileSource, MemorySource } from "../store/byte_source.ts";
import {
  type ExpertBytesHook,
  expertViews,
  loadExpertInto,
  prepareExpert,
} from "../store/expert_loader.ts";
import { type ExpertStore, ResidentExpertStore } from "../store/expert_store.ts";
import { HttpSource } from "../store/http_source.ts";
import { fetchExpert } from "../store/expert_fetch.ts";
import type { ExpertManifest } from "../store/expert_manifest.ts";
import { beginVerifiedLoad, type IntegrityMode } from "../store/integrity.ts";
import { IntegritySource } from "../store/integrity_source.ts";
import { createStreamingStore, type StreamingStoreOptions } from "../store/streaming_store.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";
import { type HParams, readHParams } from "./hparams.ts";
import {
  backendHeapBytes,
  type MemoryPlan,
  modelNeeds,
  planMemory,
  widerHeap,
} from "./memory_plan.ts";
import { type LinearAdapter, Transformer } from "./transformer.ts";
import { tokenizerFromGguf } from "./vocab.ts";
import {
  checkFiniteBytes,
  type ExpertLocation,
  type LoadProgress,
  loadWeights,
  type ModelWeights,
  type TensorBytesHook,
  WeightLoader,
} from "./weights.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import { GgufError, ModelError } from "../errors.ts";

/** What the caller can customise when a model is assembled (plugins use these). */
export interface ModelHooks {
  /** Build the expert store; default: every expert resident. */
  createStore?: (ctx: StoreContext) => ExpertStore | Promise<ExpertStore>;
  /** Wrap or replace the router of a layer. */
  wrapRouter?: (router: Router, layer: number, hp: HParams) => Router;
  /** Wrap or replace an expert. */
  wrapExpert?: (expert: Expert, hp: HParams) => Expert;
  /** Linear-layer adapters (LoRA mixes). */
  adapters?:
    | readonly LinearAdapter[]
    | ((hp: HParams, backend: Backend) => Promise<readonly LinearAdapter[]>);
  /** Check or transform tensor bytes before upload (experts too, through `StoreContext.expertBytes`). */
  transformBytes?: TensorBytesHook;
}

/** What an expert store factory gets. */
export interface StoreContext {
  /** Backend holding the slots. */
  readonly backend: Backend;
  /** File the experts come from. */
  readonly source: ByteSource;
  /** `locations[l][e]`. */
  readonly locations: readonly (readonly ExpertLocation[])[];
  /** Hyper-parameters. */
  readonly hp: HParams;
  /** Pass to `loadExpertInto` so `transformBytes` sees expert bytes. */
  readonly expertBytes?: ExpertBytesHook;
}

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /** A backend instance, or a registered name / `"auto"` (default). */
  backend?: Backend | string;
  /**
   * Compute threads of a backend created here (the WASM backend: a Worker
   * pool over shared memory; results are identical at any count). Default:
   * the CPU count (`navigator.hardwareConcurrency`), 1 where Workers or
   * shared memory are missing (edge isolates).
   */
  threads?: number;
  /** Load progress callback (bytes). */
  onProgress?: LoadProgress;
  /** Assembly hooks. */
  hooks?: ModelHooks;
  /** Stream experts on demand under this many bytes of slots (default: all resident). Ignored with `hooks.createStore`. */
  expertBudgetBytes?: number;
  /** Cache policy, prefetcher, manifest… of the streaming store when `expertBudgetBytes` is set. */
  streaming?: Omit<StreamingStoreOptions, "expertBudgetBytes">;
  /**
   * `"verify"` (default): every byte read after open is checked (first-read
   * hashes, HTTP validators, file size/mtime; see docs/integrity.md);
   * `"pin"`: the whole file is hashed at open (per 64 KiB block) and every
   * later read checked against it; `"off"`: the explicit opt-out. A
   * manifest, when given, is checked either way.
   */
  integrity?: IntegrityMode;
  /** Integrity manifest (`cli manifest`): SHA-256 of every tensor, expert and the header. */
  manifest?: ExpertManifest;
  /**
   * Scan every weight for NaN and ±Infinity at load (`ModelError` `"non_finite_weight"`).
   * Default false: it reads every byte once more (seconds for a multi-GB file), and generation's
   * logit guard (`GenerationError` `"non_finite_logits"`) already catches a poisoned weight the
   * first time it is used. Norm weights and biases are always checked: they are tiny.
   */
  checkWeights?: boolean;
  /**
   * One limit on everything the model holds, in bytes: weights, KV cache, scratch, expert cache
   * and host overhead (docs/memory.md). When every expert does not fit, experts stream
   * automatically under what is left (`expertBudgetBytes` still wins). Default: what the backend
   * heap (wasm32: 4 GiB) and the machine hold. Checked at open: `ModelError` `"memory_too_small"`
   * names the context, budget and limit that would fit.
   */
  memoryBytes?: number;
  /**
   * Context length the memory plan reserves KV cache for (default `min(training context, 2048)`);
   * sessions default to it and may not exceed the plan's `maxCtx`.
   */
  nCtx?: number;
  /** Sessions alive at once the memory plan reserves KV caches for (default 1). */
  nSeq?: number;
}

/** Default context length: `min(training context, 2048)`. */
export function defaultContext(hp: HParams): number {
  return Math.max(1, Math.min(hp.nCtxTrain, 2048));
}

/** Bytes of physical memory of this machine, or Infinity where it cannot be read. */
function machineBytes(): number {
  try {
    const total = Deno.systemMemoryInfo().total;
    return total > 0 ? total : Infinity;
  } catch {
    return Infinity;
  }
}

/**
 * Bound on what loading a file may allocate, slots and f32 vectors together:
 * `LOAD_BUDGET.perFileByte × file size + LOAD_BUDGET.overheadBytes`. Each tensor is loaded at
 * most once and tensors cannot overlap (`GgufError` `"overlapping_tensors"`), so backend slots
 * never exceed the file's size; the f32 copies of norm weights and biases take the rest.
 */
export const LOAD_BUDGET = { perFileByte: 2, overheadBytes: 1 << 20 } as const;

/** A model source: a path, a `ByteSource`, or the file's bytes. */
export type ModelSource = string | ByteSource | Uint8Array;

/** A loaded model. */
export class Model {
  /** Parsed GGUF index. */
  readonly file: GgufFile;
  /** Hyper-parameters. */
  readonly hp: HParams;
  /** Tokenizer from the GGUF metadata. */
  readonly tokenizer: Tokenizer;
  /** The forward pass. */
  readonly transformer: Transformer;
  /** Expert residency. */
  readonly store: ExpertStore;
  /** Backend. */
  readonly backend: Backend;
  /** Milliseconds spent loading. */
  readonly loadMs: number;
  /** Bytes the loader allocated: weight slots plus f32 norm/bias vectors (≤ `LOAD_BUDGET`). */
  readonly loadAllocatedBytes: number;
  /** The memory plan checked at open (null with a custom `hooks.createStore`). */
  readonly memoryPlan: MemoryPlan | null;
  /** Context length sessions default to (the plan's). */
  readonly nCtx: number;
  readonly #slots: Slot[];
  readonly #ownsSource: boolean;

  /** Use `loadModel`. */
  constructor(
    parts: {
      file: GgufFile;
      hp: HParams;
      tokenizer: Tokenizer;
      transformer: Transformer;
      store: ExpertStore;
      backend: Backend;
      loadMs: number;
      slots: Slot[];
      /** Bytes the loader allocated. */
      loadAllocatedBytes?: number;
      /** Close the file source on dispose (loadModel opened it from a path or URL). */
      ownsSource?: boolean;
      /** The memory plan checked at open. */
      memoryPlan?: MemoryPlan | null;
      /** Default context length. */
      nCtx?: number;
    },
  ) {
    this.file = parts.file;
    this.hp = parts.hp;
    this.tokenizer = parts.tokenizer;
    this.transformer = parts.transformer;
    this.store = parts.store;
    this.backend = parts.backend;
    this.loadMs = parts.loadMs;
    this.#slots = parts.slots;
    this.loadAllocatedBytes = parts.loadAllocatedBytes ?? 0;
    this.#ownsSource = parts.ownsSource ?? false;
    this.memoryPlan = parts.memoryPlan ?? null;
    this.nCtx = parts.nCtx ?? this.memoryPlan?.nCtx ?? defaultContext(parts.hp);
  }

  /** Architecture name. */
  get arch(): string {
    return this.hp.arch.name;
  }

  /** Free the model's slots. The backend stays usable. */
  dispose(): void {
    for (const s of this.#slots) this.backend.freeSlot(s);
    this.#slots.length = 0;
    this.store.dispose?.();
    if (this.#ownsSource) void this.file.source.close?.();
  }
}

/** Open a source for reading (`checked` false: no validator requirement or file stat checks). */
export async function openSource(src: ModelSource, checked = true): Promise<ByteSource> {
  if (typeof src === "string") {
    return /^https?:\/\//i.test(src)
      ? await HttpSource.open(src, { validators: checked ? "require" : "use" })
      : await FileSource.open(src, { checkChanges: checked });
  }
  if (src instanceof Uint8Array) return new MemorySource(src);
  return src;
}

/** Load every expert into its own slot (the default store). */
export async function loadResidentStore(
  ctx: StoreContext,
  slots: Slot[],
  progress?: (n: number) => void,
  reserve?: (bytes: number, what: string) => void,
  manifest?: ExpertManifest,
): Promise<ResidentExpertStore> {
  const layers: ExpertWeights[][] = [];
  for (const locs of ctx.locations) {
    const ws: ExpertWeights[] = [];
    for (const loc of locs) {
      reserve?.(loc.bytes, `blk.${loc.layer} expert ${loc.index}`);
      const slot = ctx.backend.allocSlot(loc.bytes);
      slots.push(slot);
      const sha256 = manifest?.experts[loc.layer]?.[loc.index];
      if (sha256 !== undefined) {
        // a manifest's expert hash covers the three matrices back to back
        const { source, expertBytes } = ctx;
        ctx.backend.writeSlot(slot, 0, await fetchExpert({ source, expertBytes, sha256 }, loc));
        ws.push(prepareExpert(ctx.backend, expertViews(loc, slot)));
      } else {
        ws.push(
          await loadExpertInto(ctx.source, ctx.backend, slot, loc, undefined, ctx.expertBytes),
        );
      }
      progress?.(loc.bytes);
    }
    layers.push(ws);
  }
  return new ResidentExpertStore(layers);
}

/**
 * Load a GGUF MoE model.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("model.gguf", { backend: "auto" });
 * console.log(model.arch, model.hp.nExpert);
 * ```
 */
export async function loadModel(src: ModelSource, opts: LoadModelOptions = {}): Promise<Model> {
  const t0 = performance.now();
  const manifest = opts.manifest ?? opts.streaming?.manifest;
  // validators and file checks back the default mode; a v2 manifest or pinned content checks every byte
  const everyByte = manifest?.version === 2 || opts.integrity === "pin";
  const source = await openSource(src, (opts.integrity ?? "verify") !== "off" && !everyByte);
  try {
    return await assemble(source, typeof src === "string", opts, t0);
  } catch (e) {
    // a source we opened from a path or URL must not leak when loading fails
    if (typeof src === "string") await source.close?.();
    throw e;
  }
}

async function assemble(
  raw: ByteSource,
  ownsSource: boolean,
  opts: LoadModelOptions,
  t0: number,
): Promise<Model> {
  const manifest = opts.manifest ?? opts.streaming?.manifest;
  const rereads = opts.hooks?.createStore !== undefined || opts.expertBudgetBytes !== undefined;
  const verified = await beginVerifiedLoad(raw, opts.integrity, manifest, rereads);
  const source = verified.source;
  const file = await readGguf(source);
  verified.indexed(file);
  // readGguf keeps tensors in order without overlap; check the total anyway before allocating
  const total = file.tensors.reduce((a, t) => a + t.nbytes, 0);
  const dataBytes = source.size - file.dataOffset;
  if (total > dataBytes) {
    throw new GgufError(
      "overlapping_tensors",
      `GGUF ${source.name}: tensors claim ${total} bytes but the data section holds ${dataBytes}`,
      { total, dataBytes },
    );
  }
  const embd = file.tensor("token_embd.weight");
  if (embd.dims.length < 2) {
    throw new ModelError(
      "shape_mismatch",
      `Cannot load tensor 'token_embd.weight': expected 2 dims, got ${embd.dims.length}`,
    );
  }
  const hp = readHParams(file.metadata, embd.dims[1]);
  const tokenizer = tokenizerFromGguf(file.metadata);
  if (tokenizer.vocabSize !== hp.nVocab) {
    throw new ModelError(
      "vocab_mismatch",
      `Cannot load model: tokenizer has ${tokenizer.vocabSize} tokens but token_embd has ${hp.nVocab} rows`,
    );
  }
  let backend = typeof opts.backend === "object"
    ? opts.backend
    : await createBackend(opts.backend ?? "auto", {
      threads: opts.threads,
      // streamed experts load on a worker writing into shared memory (core/store/load_worker.ts)
      sharedMemory: opts.expertBudgetBytes !== undefined && opts.streaming?.offThreadLoads === true,
    });
  const nCtx = opts.nCtx ?? defaultContext(hp);
  let memoryPlan: MemoryPlan | null = null;
  try {
    // the whole budget is checked before a single weight is uploaded (docs/memory.md)
    // the reference and WASM backends run sink/window attention themselves (`attentionExt`);
    // only a backend without it makes core keep a second K/V copy
    const needs = modelNeeds(file, hp, { coreKvCopy: backend.attentionExt === undefined });
    const planOpts = {
      memoryBytes: opts.memoryBytes,
      heapBytes: backendHeapBytes(backend),
      machineBytes: machineBytes(),
      nCtx,
      nSeq: opts.nSeq,
      // a custom store sizes itself: only the resident part, KV and scratch are checked
      expertBudgetBytes: opts.hooks?.createStore ? 0 : opts.expertBudgetBytes,
    };
    // past one wasm32 heap but inside the limit and the machine: a WASM backend we created
    // becomes several instances (wasm/sharded.ts); a model that fits keeps the single one
    const wide = typeof opts.backend !== "object" && backend.name === "wasm" &&
        backend.caps.heapBytes === undefined
      ? widerHeap(needs, planOpts)
      : null;
    if (wide !== null) {
      // (it cannot be made: the plan on the one heap below says what fits)
      const bigger = await createBackend(backend.name, {
        threads: opts.threads,
        heapBytes: wide.heapBytes,
        reserveBytes: wide.reserveBytes,
      }).catch(() => null);
      if (bigger !== null && backendHeapBytes(bigger) > planOpts.heapBytes) {
        backend.dispose();
        backend = bigger;
        planOpts.heapBytes = backendHeapBytes(bigger);
      } else bigger?.dispose();
    }
    const planned = planMemory(needs, planOpts);
    memoryPlan = opts.hooks?.createStore ? null : planned;
  } catch (e) {
    if (typeof opts.backend !== "object") backend.dispose();
    throw e;
  }
  const budget = memoryPlan?.mode === "streaming" ? memoryPlan.expertBudgetBytes : undefined;
  const tb = opts.hooks?.transformBytes;
  const checkWeights = opts.checkWeights ?? false;
  const loader = new WeightLoader(file, backend, total, opts.onProgress, tb, {
    checkFinite: checkWeights,
    budgetBytes: LOAD_BUDGET.perFileByte * source.size + LOAD_BUDGET.overheadBytes,
  });
  let store: ExpertStore | undefined;
  try {
    const weights: ModelWeights = await loadWeights(loader, hp);
    const locations = weights.layers.map((l) => l.experts);
    verified.located(file, locations);
    // experts that stream are read again later: their first reads are recorded and compared
    if (
      budget !== undefined && !rereads && source instanceof IntegritySource &&
      (opts.integrity ?? "verify") === "verify"
    ) source.recordFirstReads = true;
    const expertBytes: ExpertBytesHook | undefined = (tb || checkWeights)
      ? (loc, part, bytes) => {
        const m = loc[part]!;
        const out = tb?.({ name: m.name, type: m.type, dims: [m.cols, m.rows] }, bytes) ?? bytes;
        if (checkWeights) checkFiniteBytes(m.name, m.type, out, m.rows, m.cols);
        return out;
      }
      : undefined;
    const ctx: StoreContext = { backend, source, locations, hp, expertBytes };
    store = opts.hooks?.createStore
      ? await opts.hooks.createStore(ctx)
      : budget !== undefined
      ? await createStreamingStore(ctx, {
        ...opts.streaming,
        manifest,
        expertBudgetBytes: budget,
      })
      : await loadResidentStore(
        ctx,
        loader.slots,
        (n) => loader.advance(n),
        (n, what) => loader.reserve(n, what),
        manifest,
      );
    const scratch = new Scratch();
    const routers: Router[] = [];
    const experts: Expert[][] = [];
    for (let l = 0; l < hp.nLayer; l++) {
      let r: Router = new TopKRouter({
        k: hp.nExpertUsed || 1,
        gating: hp.routing.gating,
        normalize: hp.routing.normTopK,
        scale: hp.routing.weightsScale,
        selectionBias: weights.layers[l].expProbsB ?? undefined,
        groups: hp.routing.nGroups,
        groupsUsed: hp.routing.nGroupUsed,
      });
      if (opts.hooks?.wrapRouter) r = opts.hooks.wrapRouter(r, l, hp);
      routers.push(r);
      const st = store;
      experts.push(locations[l].map((loc) => {
        const resolve = () => st.weights(loc.layer, loc.index);
        let e: Expert = hp.arch.createExpert?.(loc, backend, resolve, scratch, weights.layers[l]) ??
          new SwigluExpert(loc, backend, resolve, scratch);
        if (opts.hooks?.wrapExpert) e = opts.hooks.wrapExpert(e, hp);
        return e;
      }));
    }
    const hook = opts.hooks?.adapters;
    const adapters = typeof hook === "function" ? await hook(hp, backend) : hook ?? [];
    const transformer = new Transformer({
      backend,
      hp,
      weights,
      store,
      routers,
      experts,
      scratch,
      adapters,
    });
    store.attach?.(transformer.moe);
    return new Model({
      file,
      hp,
      tokenizer,
      transformer,
      store,
      backend,
      loadMs: performance.now() - t0,
      slots: loader.slots,
      loadAllocatedBytes: loader.allocatedBytes,
      ownsSource,
      memoryPlan,
      nCtx,
    });
  } catch (e) {
    // every slot allocated so far goes back, whether the backend is ours or the caller's
    try {
      store?.dispose?.();
    } catch { /* the load error matters more */ }
    loader.free();
    if (typeof opts.backend !== "object") {
      try {
        backend.dispose();
      } catch { /* ditto */ }
    }
    throw e;
  }
}
