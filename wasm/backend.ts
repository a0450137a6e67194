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
  kernelBytes,
  type KernelExports,
  type KernelVariant,
  PACKED_FLAG,
  sharedMemorySupported,
} from "./pkg/moe_edge_kernels.ts";
import { f32Bits, itemRange, OP_ATTN, OP_FFN_UP, OP_MATMUL, rowRange } from "./thread_split.ts";
import {
  acquirePool,
  checkThreads,
  defaultThreads,
  type ThreadPool,
  WORKER_STACK_BYTES,
} from "./threads.ts";
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
  /**
   * Threads for matmul and the fused FFN (integer in [1, 64]; results are
   * bit-identical at any count). Default 1; `"auto"` =
   * `navigator.hardwareConcurrency`. Above 1 the kernels run the
   * shared-memory build with a process-wide pool of Web Workers; where shared
   * memory or Workers are unavailable it falls back to 1 thread.
   */
  readonly threads?: number | "auto";
}

/**
 * Work (rows × cols × tokens) below which an op stays on the calling thread:
 * a fork/join costs a few µs, a 256×1024 Q4_0 matvec ~15 µs.
 */
const THREAD_MIN_WORK = 1 << 18;

/** The threaded state of a backend. */
interface Threads {
  readonly pool: ThreadPool;
  readonly mem: number;
  readonly n: number;
  readonly stacks: number[];
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
  #threads: Threads | null = null;
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

  /**
   * A writable view of `length` bytes of `slot` at `offset` over linear
   * memory (`Backend.slotBytes`: streamed experts are read into it in place).
   * Any later allocation may grow the memory and detach it.
   */
  slotBytes(slot: Slot, offset: number, length: number): Uint8Array {
    this.#live();
    return this.#slots.view(slot, offset, length);
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

  /** Threads ops run on (1 = the calling thread only). */
  get threads(): number {
    return this.#threads?.n ?? 1;
  }

  /** The worker pool this backend runs on, or null with one thread (diagnostics, fault tests). */
  get threadPool(): ThreadPool | null {
    return this.#threads?.pool ?? null;
  }

  /**
   * Attach this backend's shared memory to the process pool with `n` threads
   * (called by {@linkcode createWasmBackend}; `kernels` must be the
   * shared-memory build).
   */
  async attachThreads(n: number): Promise<void> {
    this.#live();
    if (n <= 1 || this.#threads !== null) return;
    if (!(this.#k.memory.buffer instanceof SharedArrayBuffer)) {
      throw new BackendError(
        "bad_threads",
        "Cannot attach threads: this backend runs the single-threaded module (create it with threads > 1)",
      );
    }
    const pool = acquirePool();
    const stacks: number[] = [];
    try {
      await pool.ensureWorkers(n - 1);
      for (let i = 0; i < pool.workers; i++) stacks.push(this.#mem.arena.alloc(WORKER_STACK_BYTES));
      const key = `${this.variant}-mt`;
      const mem = await pool.attach(
        this.#k.memory,
        key,
        kernelBytes(this.variant, true),
        stacks.map((s) => s + WORKER_STACK_BYTES),
      );
      this.#threads = { pool, mem, n, stacks };
      const th = this.#threads;
      this.#ops.attnThreads = {
        parts: n,
        run: (a, sp, stride) => this.#attentionThreaded(th, a, sp, stride),
      };
    } catch (e) {
      for (const s of stacks) this.#mem.arena.free(s);
      pool.unref();
      throw e;
    }
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
    const th = this.#threads;
    if (th !== null && !this.#scalar && rows >= 8 && rows * cols * nTokens >= THREAD_MIN_WORK) {
      this.#matmulThreaded(th, kernelType, ptr, rows, cols, x, nTokens, out);
      return;
    }
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
    const th = this.#threads;
    if (th !== null && !this.#scalar && nFf >= 8 && nFf * nEmbd * nTokens >= THREAD_MIN_WORK) {
      this.#ffnThreaded(th, g, u, d, nEmbd, nFf, x, nTokens, out);
      return;
    }
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

  /** Release everything; the instance and its memory become garbage (the last threaded backend stops the pool). */
  dispose(): void {
    if (this.#disposed) return;
    const th = this.#threads;
    if (th !== null) {
      this.#threads = null;
      this.#ops.attnThreads = undefined;
      th.pool.detach(th.mem);
      th.pool.unref();
    }
    this.#disposed = true;
    this.#slots.clear();
    this.#caches.clear();
    this.#mem.release();
  }

  // ------------------------------------------------------------------ internals

  /**
   * Convert `nTok` rows at `xp` to the activation format of `kernelType`
   * into `dst` (F32 needs none: returns `xp`).
   */
  #prepare(
    op: string,
    kernelType: number,
    xp: number,
    cols: number,
    nTok: number,
    dst: number,
  ): number {
    const base = kernelType & ~PACKED_FLAG;
    if (base === 0) return xp; // F32
    if (this.#k.prepare_act(base, xp, cols, nTok, dst) !== 0) {
      fail(op, `kernel rejected type ${base} cols ${cols}`);
    }
    return dst;
  }

  /** Activation bytes of `nTok` rows for `kernelType` (0 for F32). */
  #actBytes(kernelType: number, cols: number, nTok: number): number {
    const base = kernelType & ~PACKED_FLAG;
    return base === 0 ? 0 : nTok * this.#k.act_row_bytes(base, cols);
  }

  /** Row-split matmul: activations converted once, each thread a row range (bit-identical). */
  #matmulThreaded(
    th: Threads,
    kernelType: number,
    ptr: number,
    rows: number,
    cols: number,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
  ): void {
    const k = this.#k;
    const sb = k.matmul_scratch_bytes(kernelType, cols, nTokens) + 64;
    const stride = Math.ceil(sb / 64) * 64;
    const [xp, ap, op, sp] = this.#mem.scratch(
      nTokens * cols * 4,
      this.#actBytes(kernelType, cols, nTokens),
      nTokens * rows * 4,
      stride * th.n,
    );
    const f32 = this.#mem.f32;
    copyIn(f32, x, nTokens * cols, xp);
    const act = this.#prepare("matmul", kernelType, xp, cols, nTokens, ap);
    const wrb = k.weight_row_bytes(kernelType & ~PACKED_FLAG, cols);
    this.#rowJob(th, [kernelType, ptr, rows, cols, act, nTokens, op, wrb, sp, stride]);
    copyOut(this.#mem.f32, op, nTokens * rows, out);
  }

  /**
   * Attention over threads by KV heads (args in the kernel's order up to
   * `out`): the new K/V rows are stored once here, then each chunk of KV
   * heads runs `attention_heads` (heads are independent: bit-identical).
   * Returns false (nothing done) when the layer is too small to split.
   */
  #attentionThreaded(th: Threads, a: readonly number[], sp: number, stride: number): boolean {
    const [kc, vc, cap, start, nTok, q, kk, v, nH, nKv, hdK, hdV, scale, out] = a;
    // work ≈ tokens × visible positions × heads × head dim
    if (nKv < 2 || this.#threads !== th || nTok * (start + nTok) * nH * hdK < THREAD_MIN_WORK) {
      return false;
    }
    const k = this.#k;
    const rc = k.attention_heads(
      kc,
      vc,
      cap,
      start,
      nTok,
      q,
      kk,
      v,
      nH,
      nKv,
      hdK,
      hdV,
      scale,
      out,
      sp,
      0,
      0,
      1,
    );
    if (rc !== 0) fail("attention", "kernel rejected the shape");
    const args = [
      kc,
      vc,
      cap,
      start,
      nTok,
      q,
      kk,
      v,
      nH,
      nKv,
      hdK,
      hdV,
      f32Bits(scale),
      out,
      sp,
      stride,
    ];
    th.pool.run(th.mem, th.n, OP_ATTN, args, (chunk, chunks) => {
      const [h0, h1] = itemRange(nKv, chunks, chunk);
      if (h1 <= h0) return 0;
      return k.attention_heads(
        kc,
        vc,
        cap,
        start,
        nTok,
        q,
        kk,
        v,
        nH,
        nKv,
        hdK,
        hdV,
        scale,
        out,
        sp,
        h0,
        h1,
        0,
      );
    });
    return true;
  }

  /** Run an `OP_MATMUL` job (args as in `thread_split.ts`); part 0 on this thread. */
  #rowJob(th: Threads, a: number[]): void {
    const k = this.#k;
    th.pool.run(th.mem, th.n, OP_MATMUL, a, (chunk, chunks) => {
      const [r0, r1] = rowRange(a[2], chunks, chunk);
      if (r1 <= r0) return 0;
      return k.matmul_prepared_ld(
        a[0],
        a[1] + r0 * a[7],
        r1 - r0,
        a[3],
        a[4],
        a[5],
        a[6] + 4 * r0,
        a[2],
        a[8],
      );
    });
  }

  /** Fused FFN over threads: gate/up/SwiGLU by `nFf` row ranges, then down by `nEmbd` row ranges. */
  #ffnThreaded(
    th: Threads,
    g: { ptr: number; kernelType: number },
    u: { ptr: number; kernelType: number },
    d: { ptr: number; kernelType: number },
    nEmbd: number,
    nFf: number,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
  ): void {
    const k = this.#k;
    const sameAct = (g.kernelType & ~PACKED_FLAG) === (u.kernelType & ~PACKED_FLAG);
    const sb = Math.max(
      k.matmul_scratch_bytes(g.kernelType, nEmbd, nTokens),
      k.matmul_scratch_bytes(u.kernelType, nEmbd, nTokens),
      k.matmul_scratch_bytes(d.kernelType, nFf, nTokens),
    ) + 64;
    const stride = Math.ceil(sb / 64) * 64;
    const [xp, op, gp, up, agp, aup, adp, sp] = this.#mem.scratch(
      nTokens * nEmbd * 4,
      nTokens * nEmbd * 4,
      nTokens * nFf * 4,
      nTokens * nFf * 4,
      this.#actBytes(g.kernelType, nEmbd, nTokens),
      sameAct ? 0 : this.#actBytes(u.kernelType, nEmbd, nTokens),
      this.#actBytes(d.kernelType, nFf, nTokens),
      stride * th.n,
    );
    copyIn(this.#mem.f32, x, nTokens * nEmbd, xp);
    const ag = this.#prepare("ffnSwiglu", g.kernelType, xp, nEmbd, nTokens, agp);
    const au = sameAct ? ag : this.#prepare("ffnSwiglu", u.kernelType, xp, nEmbd, nTokens, aup);
    const rbG = k.weight_row_bytes(g.kernelType & ~PACKED_FLAG, nEmbd);
    const rbU = k.weight_row_bytes(u.kernelType & ~PACKED_FLAG, nEmbd);
    const a = [
      g.kernelType,
      g.ptr,
      u.kernelType,
      u.ptr,
      nFf,
      nEmbd,
      ag,
      au,
      nTokens,
      gp,
      up,
      rbG,
      rbU,
      sp,
      stride,
    ];
    th.pool.run(th.mem, th.n, OP_FFN_UP, a, (chunk, chunks) => {
      const [r0, r1] = rowRange(nFf, chunks, chunk);
      if (r1 <= r0) return 0;
      const rc1 = k.matmul_prepared_ld(
        g.kernelType,
        g.ptr + r0 * rbG,
        r1 - r0,
        nEmbd,
        ag,
        nTokens,
        gp + 4 * r0,
        nFf,
        sp,
      );
      const rc2 = k.matmul_prepared_ld(
        u.kernelType,
        u.ptr + r0 * rbU,
        r1 - r0,
        nEmbd,
        au,
        nTokens,
        up + 4 * r0,
        nFf,
        sp,
      );
      if (rc1 !== 0 || rc2 !== 0) return -1;
      for (let t = 0; t < nTokens; t++) {
        const o = 4 * (t * nFf + r0);
        k.swiglu(gp + o, up + o, gp + o, r1 - r0);
      }
      return 0;
    });
    const ad = this.#prepare("ffnSwiglu", d.kernelType, gp, nFf, nTokens, adp);
    const rbD = k.weight_row_bytes(d.kernelType & ~PACKED_FLAG, nFf);
    this.#rowJob(th, [d.kernelType, d.ptr, nEmbd, nFf, ad, nTokens, op, rbD, sp, stride]);
    copyOut(this.#mem.f32, op, nTokens * nEmbd, out);
  }

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
  const sharedOk = sharedMemorySupported();
  const want = opts.threads === undefined
    ? 1
    : opts.threads === "auto"
    ? defaultThreads(sharedOk)
    : checkThreads(opts.threads, "threads");
  const threads = sharedOk ? want : 1;
  if (threads <= 1) {
    const k = await instantiateKernels(opts.variant ?? "auto");
    return new WasmBackend(k.exports, opts, k.variant);
  }
  const maxBytes = opts.maxMemoryBytes ?? 4 * 1024 ** 3;
  const memory = new WebAssembly.Memory({
    initial: 32,
    maximum: Math.max(32, Math.min(65536, Math.ceil(maxBytes / 65536))),
    shared: true,
  });
  const k = await instantiateKernels(opts.variant ?? "auto", { sharedMemory: memory });
  const be = new WasmBackend(k.exports, opts, k.variant);
  try {
    await be.attachThreads(threads);
    return be;
  } catch (e) {
    // Workers could not start here (e.g. the worker module cannot be loaded): run on one
    // thread, which computes the same results; `threads` reports 1.
    be.dispose();
    if (!(e instanceof BackendError)) throw e;
    const k1 = await instantiateKernels(opts.variant ?? "auto");
    return new WasmBackend(k1.exports, opts, k1.variant);
  }
}
