/**
 * Memory above 4 GiB for the WASM backend: several kernel instances, each
 * with its own wasm32 linear memory (at most 4 GiB), holding disjoint
 * weights. The design was chosen by measurement (docs/memory.md, "Memory
 * above 4 GiB"): a Memory64 build would mean porting the Rust kernels to C,
 * while here every op already copies its activations from JS into the
 * instance's scratch, so running a matmul in the instance that holds its
 * weight costs no extra copy.
 *
 * - `allocSlot` places a slot in the first instance with room (first fit in
 *   instance order, so the slots of a layer loaded one after another stay
 *   together), keeping a per-instance reserve free for that instance's scratch
 *   and KV growth. One slot never spans instances: an expert's gate/up/down
 *   (one slot) always run fused.
 * - `matmul`, `getRows`, `prepareWeights` run in the instance holding the
 *   weight; `ffnSwiglu` runs fused when gate, up and down share an instance,
 *   else as `matmul`, `swiglu` per token row, `matmul` (bit-identical: the
 *   contract requires the fused op to equal the separate ones).
 * - The f32 ops (`rmsnorm`, `rope`, `swiglu`) run in instance 0.
 * - A KV cache is placed, by whole layers, in the instances with the most
 *   room, its full size (`nCtx`) counted against them so later slots leave
 *   room for it to grow; usually one instance holds all of it.
 *
 * Every instance runs the same kernel variant, so results are bit-identical
 * to a single {@linkcode WasmBackend} holding the same weights.
 *
 * @example
 * ```ts
 * import { createShardedWasmBackend } from "./sharded.ts";
 * const be = await createShardedWasmBackend({ instances: 2, instanceBytes: 64 << 20 });
 * console.log(be.instanceCount, be.caps.heapBytes! > be.caps.maxSlotBytes); // 2 true
 * be.dispose();
 * ```
 *
 * @module
 */

import type {
  AttentionExtras,
  AttentionParams,
  Backend,
  BackendCapabilities,
  KvCache,
  KvCacheSpec,
  OpName,
  RopeParams,
  Slot,
  SlotOptions,
  WeightView,
} from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import type { GgmlType } from "../core/tensor/ggml_type.ts";
import {
  createWasmBackend,
  type FfnJob,
  type WasmBackend,
  type WasmBackendOptions,
} from "./backend.ts";
import { fail } from "./f32_ops.ts";

const GIB = 1024 ** 3;
const MIB = 1 << 20;
/** Most instances one backend may hold (64 × 4 GiB = 256 GiB). */
export const MAX_INSTANCES = 64;
/** Smallest per-instance cap accepted (the module's own data plus a little heap). */
export const MIN_INSTANCE_BYTES = 4 * MIB;

/** Options of {@linkcode createShardedWasmBackend}. */
export interface ShardedWasmBackendOptions extends Omit<WasmBackendOptions, "maxMemoryBytes"> {
  /**
   * Heap bytes wanted in all (what a memory plan needs in the backend: weights, KV, scratch);
   * the backend creates enough instances that `caps.heapBytes` is at least this.
   * Ignored when `instances` is given. Default: one instance.
   */
  readonly heapBytes?: number;
  /** Number of instances (integer in [1, {@linkcode MAX_INSTANCES}]); wins over `heapBytes`. */
  readonly instances?: number;
  /** Cap on each instance's linear memory in bytes (default and maximum 4 GiB, the wasm32 limit). */
  readonly instanceBytes?: number;
  /**
   * Bytes kept free in each instance for its scratch and KV growth (default 1/16 of
   * `instanceBytes`; a memory plan passes its scratch size). At most half of `instanceBytes`.
   */
  readonly reserveBytes?: number;
}

/** One expert FFN of {@linkcode ShardedWasmBackend.ffnSwigluMany} (the WASM backend's type). */
export type { FfnJob };

/** Where a slot lives. */
interface SlotEntry {
  readonly inst: number;
  readonly inner: Slot;
  readonly charged: number;
}

/** One instance's share of a KV cache: layers `[first, first + inner.spec.layers)`. */
interface KvPart {
  readonly inst: number;
  readonly first: number;
  readonly inner: KvCache;
  readonly charged: number;
}

/** Where each byte of the backend lives (diagnostics, tests). */
export interface ShardStats {
  /** Per instance: bytes charged (slots rounded to 64 B, plus full-size KV caches). */
  readonly chargedBytes: readonly number[];
  /** Per instance: linear memory held now. */
  readonly memoryBytes: readonly number[];
  /** Per instance: bytes slots and KV caches may use (its cap less the reserve). */
  readonly capacityBytes: number;
}

function round64(n: number): number {
  return Math.ceil(n / 64) * 64;
}

function badOption(name: string, why: string, value: unknown): never {
  throw new BackendError("bad_options", `Cannot create sharded wasm backend: ${name} ${why}`, {
    [name]: value,
  });
}

/**
 * A backend over several {@linkcode WasmBackend} instances, each its own
 * wasm32 heap; see the module documentation. Create it with
 * {@linkcode createShardedWasmBackend}.
 */
export class ShardedWasmBackend implements Backend {
  /** Registry name: it is the WASM backend, with more heap. */
  readonly name: string = "wasm";
  /** Capabilities: `maxSlotBytes` per slot, `heapBytes` in all. */
  readonly caps: BackendCapabilities;

  readonly #be: readonly WasmBackend[];
  readonly #charged: number[];
  readonly #capacity: number;
  readonly #slots = new Map<number, SlotEntry>();
  readonly #caches = new Map<number, { cache: KvCache; parts: KvPart[] }>();
  #nextId = 1;
  #disposed = false;

  /**
   * Use {@linkcode createShardedWasmBackend}.
   * @param instances the instances (same kernel variant), instance 0 runs the f32 ops
   * @param reserveBytes bytes kept free in each instance
   */
  constructor(instances: readonly WasmBackend[], reserveBytes: number) {
    if (instances.length === 0) badOption("instances", "must hold at least one backend", 0);
    this.#be = instances;
    // what an instance holds before any slot (worker stacks when threaded) is charged up front
    this.#charged = instances.map((b) => b.arenaStats().usedBytes);
    const cap = Math.min(...instances.map((b) => b.caps.maxSlotBytes));
    this.#capacity = Math.max(0, cap - reserveBytes);
    this.caps = {
      formats: instances[0].caps.formats,
      maxSlotBytes: this.#capacity,
      heapBytes: heapFor(instances.length, cap, reserveBytes),
    };
  }

  /** Number of kernel instances (heaps). */
  get instanceCount(): number {
    return this.#be.length;
  }

  /** Threads each instance's ops run on. */
  get threads(): number {
    return this.#be[0].threads;
  }

  /** Kernel variant every instance runs. */
  get variant(): "simd128" | "relaxed" {
    return this.#be[0].variant;
  }

  /** Which instance holds `slot` (tests, diagnostics). */
  instanceOf(slot: Slot): number {
    return this.#slot(slot).inst;
  }

  /** Which instances hold a KV cache, as `[instance, firstLayer, layers]` parts. */
  kvPlacement(cache: KvCache): [number, number, number][] {
    return this.#cache(cache).parts.map((p) => [p.inst, p.first, p.inner.spec.layers]);
  }

  /** Bytes charged and held per instance. */
  stats(): ShardStats {
    return {
      chargedBytes: [...this.#charged],
      memoryBytes: this.#be.map((b) => b.memoryBytes()),
      capacityBytes: this.#capacity,
    };
  }

  /** Whether `op` is supported (for weight type `type` when it takes one). */
  supportsOp(op: OpName, type?: GgmlType): boolean {
    return this.#be[0].supportsOp(op, type);
  }

  // ------------------------------------------------------------------ slots

  /**
   * Allocate a slot in the first instance whose charged bytes plus this slot
   * stay under its capacity; `out_of_memory` when none has room.
   */
  allocSlot(bytes: number, opts?: SlotOptions): Slot {
    this.#live();
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new BackendError(
        "bad_size",
        `Cannot allocate slot: size must be a non-negative integer: received ${bytes}`,
        { bytes },
      );
    }
    const charge = round64(Math.max(1, bytes));
    for (let i = 0; i < this.#be.length; i++) {
      if (this.#charged[i] + charge > this.#capacity) continue;
      let inner: Slot;
      try {
        inner = this.#be[i].allocSlot(bytes, opts);
      } catch (e) {
        if (e instanceof BackendError && e.code === "out_of_memory") continue; // fragmented
        throw e;
      }
      this.#charged[i] += charge;
      const id = this.#nextId++;
      this.#slots.set(id, { inst: i, inner, charged: charge });
      return { id, bytes };
    }
    throw new BackendError(
      "out_of_memory",
      `Cannot allocate slot: ${bytes} bytes fit none of ${this.#be.length} wasm instances ` +
        `(${this.#capacity} bytes each for slots and KV; charged ${this.#charged.join(", ")})`,
      { bytes, instances: this.#be.length, capacityBytes: this.#capacity },
    );
  }

  /** Copy `data` into `slot` at byte `offset`. */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void {
    const e = this.#slot(slot);
    this.#be[e.inst].writeSlot(e.inner, offset, data);
  }

  /**
   * A writable view of `length` bytes of `slot` at `offset` in its instance's
   * memory (`Backend.slotBytes`); an allocation in that instance may detach it.
   */
  slotBytes(slot: Slot, offset: number, length: number): Uint8Array {
    const e = this.#slot(slot);
    return this.#be[e.inst].slotBytes(e.inner, offset, length);
  }

  /** Release a slot. */
  freeSlot(slot: Slot): void {
    const e = this.#slot(slot);
    this.#be[e.inst].freeSlot(e.inner);
    this.#charged[e.inst] -= e.charged;
    this.#slots.delete(slot.id);
  }

  /** Repack `w` now in its instance (results never change); whether it is packed. */
  prepareWeights(w: WeightView): boolean {
    const e = this.#slot(w.slot);
    return this.#be[e.inst].prepareWeights(inner(w, e));
  }

  // ------------------------------------------------------------------ ops

  /** `out = W·x` in the instance holding `w`. */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void {
    const e = this.#slot(w.slot);
    this.#be[e.inst].matmul(inner(w, e), x, nTokens, out);
  }

  /** Dequantize rows of `w` in the instance holding it. */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void {
    const e = this.#slot(w.slot);
    this.#be[e.inst].getRows(inner(w, e), ids, out);
  }

  /** RMSNorm (instance 0). */
  rmsnorm(
    x: Float32Array,
    n: number,
    eps: number,
    weight: Float32Array | null,
    out: Float32Array,
  ): void {
    this.#live();
    this.#be[0].rmsnorm(x, n, eps, weight, out);
  }

  /** RoPE in place (instance 0). */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    p: RopeParams,
  ): void {
    this.#live();
    this.#be[0].rope(x, nTokens, nHeads, headDim, positions, p);
  }

  /** `out[i] = silu(gate[i])·up[i]` (instance 0). */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array): void {
    this.#live();
    this.#be[0].swiglu(gate, up, out);
  }

  /**
   * Fused SwiGLU expert FFN: one call in the instance when gate, up and down
   * share it; otherwise `matmul(gate)`, `matmul(up)`, `swiglu` per token row,
   * `matmul(down)`, each in its weight's instance (the same bits).
   */
  ffnSwiglu(
    gate: WeightView,
    up: WeightView,
    down: WeightView,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
  ): void {
    const g = this.#slot(gate.slot), u = this.#slot(up.slot), d = this.#slot(down.slot);
    if (g.inst === u.inst && u.inst === d.inst) {
      this.#be[g.inst].ffnSwiglu(inner(gate, g), inner(up, u), inner(down, d), x, nTokens, out);
      return;
    }
    const nEmbd = gate.cols, nFf = gate.rows;
    if (!(up.rows === nFf && up.cols === nEmbd && down.rows === nEmbd && down.cols === nFf)) {
      fail(
        "ffnSwiglu",
        `shapes gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols}, down ${down.rows}×${down.cols} do not chain`,
      );
    }
    if (!(out.length >= nTokens * nEmbd)) {
      fail("ffnSwiglu", `out has ${out.length} floats, need ${nTokens}×${nEmbd}`);
    }
    if (nTokens === 0) return;
    const gb = new Float32Array(nTokens * nFf), ub = new Float32Array(nTokens * nFf);
    this.#be[g.inst].matmul(inner(gate, g), x, nTokens, gb);
    this.#be[u.inst].matmul(inner(up, u), x, nTokens, ub);
    // the fused kernel applies SwiGLU one token row at a time (SIMD tails per row)
    for (let t = 0; t < nTokens; t++) {
      const r = gb.subarray(t * nFf, (t + 1) * nFf);
      this.#be[0].swiglu(r, ub.subarray(t * nFf, (t + 1) * nFf), r);
    }
    this.#be[d.inst].matmul(inner(down, d), gb, nTokens, out);
  }

  /**
   * Several expert FFNs in one parallel region per instance (the WASM
   * backend's optional `ffnSwigluMany`, on threads): jobs are grouped by the
   * instance holding their weights; a group its instance declines, or a job
   * whose matrices straddle instances, runs as `ffnSwiglu` (the same bits).
   * Returns false, having done nothing, when no instance takes its group.
   */
  ffnSwigluMany(jobs: readonly FfnJob[]): boolean {
    this.#live();
    if (jobs.length === 0) return false;
    const groups = new Map<number, FfnJob[]>();
    const loose: FfnJob[] = [];
    for (const j of jobs) {
      const g = this.#slot(j.gate.slot), u = this.#slot(j.up.slot), d = this.#slot(j.down.slot);
      if (g.inst !== u.inst || u.inst !== d.inst) {
        loose.push(j);
        continue;
      }
      const list = groups.get(g.inst) ?? [];
      list.push({ ...j, gate: inner(j.gate, g), up: inner(j.up, u), down: inner(j.down, d) });
      groups.set(g.inst, list);
    }
    const declined: number[] = [];
    let ran = false;
    for (const [i, list] of groups) {
      const many = (this.#be[i] as { ffnSwigluMany?: (j: readonly FfnJob[]) => boolean })
        .ffnSwigluMany;
      if (many?.call(this.#be[i], list)) ran = true;
      else declined.push(i);
    }
    if (!ran) return false;
    for (const i of declined) {
      for (const j of groups.get(i)!) {
        this.#be[i].ffnSwiglu(j.gate, j.up, j.down, j.x, j.nTokens, j.out);
      }
    }
    for (const j of loose) this.ffnSwiglu(j.gate, j.up, j.down, j.x, j.nTokens, j.out);
    return true;
  }

  /**
   * Several matmuls over the same activations (Q/K/V) in one parallel region
   * of the instance holding every one of `ws` (`WasmBackend.matmulMany`);
   * false, having done nothing, when they straddle instances or that
   * instance declines (one thread, too small): the caller then runs them one
   * by one, with the same bits.
   */
  matmulMany(
    ws: readonly WeightView[],
    x: Float32Array,
    nTokens: number,
    outs: readonly Float32Array[],
  ): boolean {
    this.#live();
    if (ws.length === 0) return false;
    const first = this.#slot(ws[0].slot);
    const views: WeightView[] = [];
    for (const w of ws) {
      const e = this.#slot(w.slot);
      if (e.inst !== first.inst) return false;
      views.push(inner(w, e));
    }
    return this.#be[first.inst].matmulMany(views, x, nTokens, outs);
  }

  /**
   * Attention and the output projection in one parallel region
   * (`WasmBackend.attentionOutput`) when `wo` sits in the instance holding
   * `layer` of `cache`; false, having done nothing, otherwise (the caller
   * runs `attention` then `matmul`, with the same bits).
   */
  attentionOutput(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    wo: WeightView,
    out: Float32Array,
  ): boolean {
    this.#live();
    const part = this.#part(cache, layer, "attentionOutput");
    const e = this.#slot(wo.slot);
    if (e.inst !== part.inst) return false;
    return this.#be[part.inst].attentionOutput(
      part.inner,
      layer - part.first,
      startPos,
      nTokens,
      q,
      k,
      v,
      p,
      inner(wo, e),
      out,
    );
  }

  // ------------------------------------------------------------------ KV cache

  /**
   * Create a KV cache: whole layers go to the instances with the most room,
   * charged at full size (`nCtx`); nothing is allocated until used. When no
   * set of instances has room for all of it, it goes to the roomiest one and
   * grows with use as far as that instance allows (as on one instance).
   */
  createKvCache(spec: KvCacheSpec): KvCache {
    this.#live();
    // validate the shape the way one instance does (and learn the per-layer bytes)
    this.#be[0].freeKvCache(this.#be[0].createKvCache(spec));
    const layerBytes = round64(
      spec.nCtx * spec.nKvHeads * (spec.headDimK + spec.headDimV) * 2,
    );
    const order = this.#be.map((_, i) => i).sort((a, b) =>
      (this.#capacity - this.#charged[b]) - (this.#capacity - this.#charged[a]) || a - b
    );
    const room = (i: number) => Math.max(0, this.#capacity - this.#charged[i]);
    const plan: [number, number][] = []; // [instance, layers]
    let left = spec.layers;
    for (const i of order) {
      if (left === 0) break;
      const n = Math.min(left, Math.floor(room(i) / layerBytes));
      if (n > 0) {
        plan.push([i, n]);
        left -= n;
      }
    }
    if (left > 0) plan.splice(0, plan.length, [order[0], spec.layers]); // best effort, grows lazily
    const parts: KvPart[] = [];
    let first = 0;
    for (const [i, n] of plan) {
      const c = this.#be[i].createKvCache({ ...spec, layers: n });
      const charged = Math.min(room(i), n * layerBytes);
      this.#charged[i] += charged;
      parts.push({ inst: i, first, inner: c, charged });
      first += n;
    }
    const cache: KvCache = { id: this.#nextId++, spec: { ...spec } };
    this.#caches.set(cache.id, { cache, parts });
    return cache;
  }

  /** Free a KV cache (every part). */
  freeKvCache(cache: KvCache): void {
    const e = this.#cache(cache);
    for (const p of e.parts) {
      this.#be[p.inst].freeKvCache(p.inner);
      this.#charged[p.inst] -= p.charged;
    }
    this.#caches.delete(cache.id);
  }

  /** Causal attention in the instance holding `layer` of `cache`. */
  attention(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    out: Float32Array,
  ): void {
    const part = this.#part(cache, layer, "attention");
    this.#be[part.inst].attention(
      part.inner,
      layer - part.first,
      startPos,
      nTokens,
      q,
      k,
      v,
      p,
      out,
    );
  }

  /** `attention` with sinks and a sliding window, in the instance holding the layer's cache. */
  attentionExt(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    x: AttentionExtras,
    out: Float32Array,
  ): void {
    const part = this.#part(cache, layer, "attentionExt");
    this.#be[part.inst].attentionExt(
      part.inner,
      layer - part.first,
      startPos,
      nTokens,
      q,
      k,
      v,
      p,
      x,
      out,
    );
  }

  /** Read back cached K or V rows of a layer as f32 (tests, debugging). */
  readKv(cache: KvCache, layer: number, which: "k" | "v", positions: number): Float32Array {
    const part = this.#part(cache, layer, "readKv");
    return this.#be[part.inst].readKv(part.inner, layer - part.first, which, positions);
  }

  // ------------------------------------------------------------------ lifecycle

  /** Linear memory held by every instance, in bytes. */
  memoryBytes(): number {
    return this.#disposed ? 0 : this.#be.reduce((a, b) => a + b.memoryBytes(), 0);
  }

  /** Release every instance. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#slots.clear();
    this.#caches.clear();
    for (const b of this.#be) b.dispose();
  }

  // ------------------------------------------------------------------ internals

  #live(): void {
    if (this.#disposed) {
      throw new BackendError("disposed", "Cannot use wasm backend: it was disposed");
    }
  }

  #slot(slot: Slot): SlotEntry {
    this.#live();
    const e = this.#slots.get(slot.id);
    if (!e) {
      throw new BackendError(
        "bad_slot",
        `Cannot use slot ${slot.id}: it is not live in this backend`,
        { slot: slot.id },
      );
    }
    return e;
  }

  #cache(cache: KvCache): { cache: KvCache; parts: KvPart[] } {
    this.#live();
    const e = this.#caches.get(cache.id);
    if (!e) {
      throw new BackendError(
        "bad_cache",
        `Cannot use KV cache ${cache.id}: it is not live in this backend`,
        { cache: cache.id },
      );
    }
    return e;
  }

  #part(cache: KvCache, layer: number, op: string): KvPart {
    const e = this.#cache(cache);
    for (const p of e.parts) {
      if (layer >= p.first && layer < p.first + p.inner.spec.layers) return p;
    }
    throw new BackendError(
      "bad_shape",
      `Cannot run ${op} on wasm backend: layer ${layer} outside [0, ${cache.spec.layers})`,
      { op },
    );
  }
}

/** The view `w` with its slot replaced by the instance's own. */
function inner(w: WeightView, e: SlotEntry): WeightView {
  return { slot: e.inner, offset: w.offset, type: w.type, rows: w.rows, cols: w.cols };
}

/**
 * Heap bytes `n` instances of `cap` bytes offer a memory plan when each
 * keeps `reserve` free: the plan counts its scratch once (it fits one
 * reserve); 1/64 of each cap is a margin for the holes slots leave at its end.
 */
export function heapFor(n: number, cap: number, reserve: number): number {
  return n * Math.max(0, cap - reserve - Math.floor(cap / 64)) + reserve;
}

/**
 * Create a sharded WASM backend: `instances` (or as many as `heapBytes`
 * needs) {@linkcode WasmBackend}s of `instanceBytes` each, all running the
 * same kernel variant and thread count. Bad options give `BackendError`
 * `"bad_options"`; a heap past {@linkcode MAX_INSTANCES} instances gives
 * `"out_of_memory"`.
 */
export async function createShardedWasmBackend(
  opts: ShardedWasmBackendOptions = {},
): Promise<ShardedWasmBackend> {
  const instanceBytes = opts.instanceBytes ?? 4 * GIB;
  if (
    !Number.isSafeInteger(instanceBytes) || instanceBytes < MIN_INSTANCE_BYTES ||
    instanceBytes > 4 * GIB
  ) {
    badOption(
      "instanceBytes",
      `must be an integer in [${MIN_INSTANCE_BYTES}, 4 GiB]`,
      instanceBytes,
    );
  }
  const reserve = opts.reserveBytes ?? Math.floor(instanceBytes / 16);
  if (!Number.isSafeInteger(reserve) || reserve < 0 || reserve > instanceBytes / 2) {
    badOption("reserveBytes", "must be an integer in [0, instanceBytes / 2]", reserve);
  }
  let n = 1;
  if (opts.instances !== undefined) {
    n = opts.instances;
    if (!Number.isInteger(n) || n < 1 || n > MAX_INSTANCES) {
      badOption("instances", `must be an integer in [1, ${MAX_INSTANCES}]`, n);
    }
  } else if (opts.heapBytes !== undefined) {
    const h = opts.heapBytes;
    if (!Number.isFinite(h) || h <= 0) badOption("heapBytes", "must be a positive number", h);
  }
  const { heapBytes: _h, instances: _i, instanceBytes: _b, reserveBytes: _r, ...rest } = opts;
  const first = await createWasmBackend({ ...rest, maxMemoryBytes: instanceBytes });
  const all: WasmBackend[] = [first];
  try {
    if (opts.instances === undefined && opts.heapBytes !== undefined) {
      const cap = first.caps.maxSlotBytes;
      while (heapFor(n, cap, reserve) < opts.heapBytes) {
        if (++n > MAX_INSTANCES) {
          throw new BackendError(
            "out_of_memory",
            `Cannot create sharded wasm backend: a heap of ${
              Math.ceil(opts.heapBytes / MIB)
            } MiB needs more than ${MAX_INSTANCES} instances of ${Math.floor(cap / MIB)} MiB`,
            { heapBytes: opts.heapBytes, maxInstances: MAX_INSTANCES },
          );
        }
      }
    }
    for (let i = 1; i < n; i++) {
      all.push(await createWasmBackend({ ...rest, maxMemoryBytes: instanceBytes }));
    }
    if (all.some((b) => b.variant !== first.variant)) {
      throw new BackendError(
        "unavailable",
        `Cannot create sharded wasm backend: instances got different kernel variants (${
          all.map((b) => b.variant).join(", ")
        })`,
      );
    }
    return new ShardedWasmBackend(all, reserve);
  } catch (e) {
    for (const b of all) b.dispose();
    throw e;
  }
}
