/**
 * The WASM SIMD backend: moe-edge's portable engine (one WASM thread, as on
 * edge functions).
 *
 * Weights, KV caches and scratch live in the kernel instance's linear
 * memory, carved by a `SlotArena` (best fit + coalescing, bounded growth).
 * Activations cross the boundary as `Float32Array`s and are copied into one
 * reused scratch region per call; typed-array views over linear memory are
 * re-acquired only when the memory grows. Quantized matrices are repacked in
 * place on first use (or at `prepareWeights`) for the packed kernels, with
 * identical results (`weight_slots.ts`).
 *
 * @example
 * ```ts
 * import { createWasmBackend } from "./backend.ts";
 * import { GgmlType } from "../core/tensor/ggml_type.ts";
 * const be = await createWasmBackend();
 * const slot = be.allocSlot(2 * 4 * 4);
 * be.writeSlot(slot, 0, new Uint8Array(new Float32Array([1, 0, 0, 1, 2, 2, 2, 2]).buffer));
 * const out = new Float32Array(2);
 * be.matmul({ slot, offset: 0, type: GgmlType.F32, rows: 2, cols: 4 }, new Float32Array([1, 2, 3, 4]), 1, out);
 * console.log(out); // Float32Array [ 5, 20 ]
 * be.dispose();
 * ```
 *
 * @module
 */

import type {
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
import { type GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import type { ArenaStats } from "./arena.ts";
import {
  attentionOp,
  copyIn,
  copyOut,
  fail,
  need,
  type OpContext,
  readKvOp,
  rmsnormOp,
  ropeOp,
  swigluOp,
} from "./f32_ops.ts";
import { KvCaches } from "./kv_caches.ts";
import { KernelMemory } from "./memory.ts";
import {
  instantiateKernels,
  type KernelExports,
  type KernelVariant,
} from "./pkg/moe_edge_kernels.ts";
import { WASM_FORMATS, WeightSlots } from "./weight_slots.ts";

export { WASM_FORMATS };

/** Options of {@linkcode createWasmBackend}. */
export interface WasmBackendOptions {
  /** Cap on linear memory in bytes (default 4 GiB, the wasm32 limit). */
  readonly maxMemoryBytes?: number;
  /** Run the scalar twins instead of the SIMD kernels (testing/diagnosis). */
  readonly scalar?: boolean;
  /**
   * Kernel module: `"auto"` (default: relaxed SIMD when the engine supports
   * it), `"simd128"` or `"relaxed"`. Results are identical; only speed differs.
   */
  readonly variant?: KernelVariant;
  /** Repack quantized matrices for the packed kernels (default true; results are identical). */
  readonly packWeights?: boolean;
}

const F32_OPS: ReadonlySet<OpName> = new Set<OpName>(["rmsnorm", "rope", "attention", "swiglu"]);

/** Compute backend over the WASM SIMD kernels. */
export class WasmBackend implements Backend {
  /** Registry name. */
  readonly name: string = "wasm";
  /** Capabilities. */
  readonly caps: BackendCapabilities;
  /** Which kernel module runs: `"simd128"` or `"relaxed"`. */
  readonly variant: "simd128" | "relaxed";

  readonly #k: KernelExports;
  readonly #mem: KernelMemory;
  readonly #slots: WeightSlots;
  readonly #caches: KvCaches;
  readonly #scalar: boolean;
  readonly #ops: OpContext;
  #disposed = false;

  /** Use {@linkcode createWasmBackend}. */
  constructor(
    kernels: KernelExports,
    opts: WasmBackendOptions = {},
    variant: "simd128" | "relaxed" = "simd128",
  ) {
    this.#k = kernels;
    this.#scalar = opts.scalar ?? false;
    this.variant = variant;
    this.#mem = new KernelMemory(
      kernels.memory,
      kernels.heap_base(),
      opts.maxMemoryBytes ?? 4 * 1024 ** 3,
    );
    let id = 1;
    const nextId = () => id++;
    this.#slots = new WeightSlots(kernels, this.#mem, opts.packWeights ?? true, nextId);
    this.#caches = new KvCaches(this.#mem, nextId);
    this.#ops = { k: kernels, mem: this.#mem, scalar: this.#scalar, rope: null };
    this.caps = { formats: WASM_FORMATS, maxSlotBytes: this.#mem.arena.maxAllocBytes };
  }

  /** Whether `op` is supported (for weight type `type` when it takes one). */
  supportsOp(op: OpName, type?: GgmlType): boolean {
    if (op === "matmul" || op === "getRows") {
      return type === undefined || WASM_FORMATS.includes(type);
    }
    return F32_OPS.has(op);
  }

  // ------------------------------------------------------------------ slots

  /** Allocate a weight slot in linear memory. */
  allocSlot(bytes: number, opts?: SlotOptions): Slot {
    this.#live();
    return this.#slots.alloc(bytes, !opts?.lazyPrepare);
  }

  /** Copy `data` (standard ggml layout) into `slot` at byte `offset`. */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void {
    this.#live();
    this.#slots.write(slot, offset, data);
  }

  /** Release a slot. */
  freeSlot(slot: Slot): void {
    this.#live();
    this.#slots.free(slot);
  }

  /**
   * Repack a matrix in place for the packed kernels now rather than at its
   * first `matmul` (call after its bytes are written; a later write to its
   * range undoes it). Results never change. Returns whether it is packed
   * (false: no packed layout for its type, or a precondition such as
   * `rows % 4 == 0` or finite scales fails).
   */
  prepareWeights(w: WeightView): boolean {
    const bytes = this.#check(w, "prepareWeights");
    return this.#slots.prepare(w, bytes);
  }

  /** Linear-memory address of a slot (for fused callers and tests). */
  slotAddress(slot: Slot): number {
    this.#live();
    return this.#slots.address(slot);
  }

  /** Arena statistics (fragmentation, usage). */
  arenaStats(): ArenaStats {
    return this.#mem.arena.stats();
  }

  /** Matrices packed so far (diagnostics). */
  packedCount(): number {
    return this.#slots.packCount;
  }

  // ------------------------------------------------------------------ ops

  /** `out[t*rows + r] = Σ_c W[r,c]·x[t*cols + c]`, activations quantized to the vec_dot_type. */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void {
    const { rows, cols } = w;
    const bytes = this.#check(w, "matmul");
    need(
      x.length >= nTokens * cols,
      "matmul",
      `x has ${x.length} floats, need ${nTokens}×${cols}`,
    );
    need(
      out.length >= nTokens * rows,
      "matmul",
      `out has ${out.length} floats, need ${nTokens}×${rows}`,
    );
    if (nTokens === 0 || rows === 0) return;
    const { ptr, kernelType } = this.#slots.resolve(w, bytes, true);
    const ab = this.#k.matmul_scratch_bytes(kernelType, cols, nTokens);
    const [xp, ap, op] = this.#mem.scratch(nTokens * cols * 4, ab, nTokens * rows * 4);
    const f32 = this.#mem.f32;
    copyIn(f32, x, nTokens * cols, xp);
    const f = this.#scalar ? this.#k.matmul_scalar : this.#k.matmul;
    const rc = f(kernelType, ptr, rows, cols, xp, nTokens, op, ap);
    if (rc !== 0) fail("matmul", `kernel rejected type ${ggmlTypeName(w.type)} cols ${cols}`);
    copyOut(f32, op, nTokens * rows, out);
  }

  /** Dequantize rows `ids[i]` of `w` into `out[i*cols ..]`. */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void {
    const bytes = this.#check(w, "getRows");
    const n = ids.length;
    need(
      out.length >= n * w.cols,
      "getRows",
      `out has ${out.length} floats, need ${n}×${w.cols}`,
    );
    for (let i = 0; i < n; i++) {
      if (!(ids[i] >= 0 && ids[i] < w.rows)) {
        fail("getRows", `row id ${ids[i]} at ${i} outside [0, ${w.rows})`);
      }
    }
    if (n === 0) return;
    const { ptr, kernelType } = this.#slots.resolve(w, bytes, false);
    const [ip, op] = this.#mem.scratch(n * 4, n * w.cols * 4);
    this.#mem.i32.set(ids, ip >>> 2);
    if (this.#k.get_rows(kernelType, ptr, w.cols, ip, n, op) !== 0) {
      fail("getRows", "kernel rejected the type");
    }
    copyOut(this.#mem.f32, op, n * w.cols, out);
  }

  /** RMSNorm each row of `n`, times `weight` when given. */
  rmsnorm(
    x: Float32Array,
    n: number,
    eps: number,
    weight: Float32Array | null,
    out: Float32Array,
  ): void {
    this.#live();
    rmsnormOp(this.#ops, x, n, eps, weight, out);
  }

  /** Rotate `nTokens` rows of `nHeads` heads in place. */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    p: RopeParams,
  ): void {
    this.#live();
    ropeOp(this.#ops, x, nTokens, nHeads, headDim, positions, p);
  }

  /** `out[i] = silu(gate[i])·up[i]`. */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array): void {
    this.#live();
    swigluOp(this.#ops, gate, up, out);
  }

  /**
   * Fused SwiGLU expert FFN (optional in the `Backend` contract):
   * `out = down · (silu(gate·x) ⊙ (up·x))` for `nTokens` rows of `x`, with
   * gate/up `nFf × nEmbd` and down `nEmbd × nFf`. Bit-identical to
   * `matmul(gate)`, `matmul(up)`, `swiglu`, `matmul(down)` on this backend,
   * in one WASM call.
   */
  ffnSwiglu(
    gate: WeightView,
    up: WeightView,
    down: WeightView,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
  ): void {
    const gb = this.#check(gate, "ffnSwiglu");
    const ub = this.#check(up, "ffnSwiglu");
    const db = this.#check(down, "ffnSwiglu");
    const nEmbd = gate.cols, nFf = gate.rows;
    need(
      up.rows === nFf && up.cols === nEmbd && down.rows === nEmbd && down.cols === nFf,
      "ffnSwiglu",
      `shapes gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols}, down ${down.rows}×${down.cols} do not chain`,
    );
    need(
      x.length >= nTokens * nEmbd,
      "ffnSwiglu",
      `x has ${x.length} floats, need ${nTokens}×${nEmbd}`,
    );
    need(
      out.length >= nTokens * nEmbd,
      "ffnSwiglu",
      `out has ${out.length} floats, need ${nTokens}×${nEmbd}`,
    );
    if (nTokens === 0) return;
    const g = this.#slots.resolve(gate, gb, true);
    const u = this.#slots.resolve(up, ub, true);
    const d = this.#slots.resolve(down, db, true);
    const sb = this.#k.ffn_swiglu_scratch_bytes(
      g.kernelType,
      u.kernelType,
      d.kernelType,
      nEmbd,
      nFf,
      nTokens,
    );
    const [xp, op, sp] = this.#mem.scratch(nTokens * nEmbd * 4, nTokens * nEmbd * 4, sb);
    const f32 = this.#mem.f32;
    copyIn(f32, x, nTokens * nEmbd, xp);
    const f = this.#scalar ? this.#k.ffn_swiglu_scalar : this.#k.ffn_swiglu;
    const rc = f(
      g.kernelType,
      g.ptr,
      u.kernelType,
      u.ptr,
      d.kernelType,
      d.ptr,
      nEmbd,
      nFf,
      xp,
      nTokens,
      op,
      sp,
    );
    if (rc !== 0) fail("ffnSwiglu", "kernel rejected a weight type or shape");
    copyOut(f32, op, nTokens * nEmbd, out);
  }

  // ------------------------------------------------------------------ KV cache

  /** Create an f16 KV cache in linear memory (zeroed). */
  createKvCache(spec: KvCacheSpec): KvCache {
    this.#live();
    return this.#caches.create(spec);
  }

  /** Free a KV cache. */
  freeKvCache(cache: KvCache): void {
    this.#live();
    this.#caches.free(cache);
  }

  /** Store `k`/`v` at `startPos..` (f16) and run causal GQA attention. */
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
    this.#live();
    const e = this.#caches.get(cache);
    this.#caches.reserve(e, layer, startPos + nTokens); // the cache grows with use
    attentionOp(this.#ops, e, layer, startPos, nTokens, q, k, v, p, out);
  }

  /** Read back the cached K (`which = "k"`) or V rows of a layer as f32 (tests, debugging). */
  readKv(cache: KvCache, layer: number, which: "k" | "v", positions: number): Float32Array {
    this.#live();
    const e = this.#caches.get(cache);
    this.#caches.reserve(e, layer, positions);
    return readKvOp(this.#ops, e, layer, which, positions);
  }

  // ------------------------------------------------------------------ lifecycle

  /** Linear memory held, in bytes (slots + caches + scratch + the module's own data/stack). */
  memoryBytes(): number {
    return this.#disposed ? 0 : this.#mem.arena.memoryBytes;
  }

  /** Release everything; the instance and its memory become garbage. */
  dispose(): void {
    this.#disposed = true;
    this.#slots.clear();
    this.#caches.clear();
    this.#mem.release();
  }

  // ------------------------------------------------------------------ internals

  #live(): void {
    if (this.#disposed) {
      throw new BackendError("disposed", "Cannot use wasm backend: it was disposed");
    }
  }

  /** Validate a weight view for `op`; returns its byte size. */
  #check(w: WeightView, op: string): number {
    this.#live();
    return this.#slots.check(w, op);
  }
}

/**
 * Create a WASM backend: instantiates the kernels (the compiled module is
 * cached per isolate) with a fresh linear memory.
 */
export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const k = await instantiateKernels(opts.variant ?? "auto");
  return new WasmBackend(k.exports, opts, k.variant);
}
