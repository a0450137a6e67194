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
import { type GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import type { ArenaStats } from "./arena.ts";
import {
  attentionOp,
  copyIn,
  copyOut,
  fail,
  type OpContext,
  readKvOp,
  rmsnormOp,
  ropeOp,
  swigluOp,
} from "./f32_ops.ts";
import { attentionMismatch, KvCaches } from "./kv_caches.ts";
import { KernelMemory } from "./memory.ts";
import {
  instantiateKernels,
  kernelBytes,
  type KernelExports,
  type KernelVariant,
  PACKED_FLAG,
  sharedMemorySupported,
} from "./pkg/moe_edge_kernels.ts";
import {
  attentionHeads,
  f32Bits,
  itemRange,
  OP_ATTN,
  OP_PROGRAM,
  runTask,
  T_ATTN,
  T_FFN_UP,
  T_MATMUL,
  T_PREP,
  T_ROPE,
  T_ROPE_KV,
  TASK_INTS,
} from "./thread_split.ts";
import {
  acquirePool,
  callerCanWait,
  checkThreads,
  defaultThreads,
  type ThreadPool,
  WORKER_STACK_BYTES,
} from "./threads.ts";
import { WASM_FORMATS, WeightSlots } from "./weight_slots.ts";
import { RopeTable } from "./rope_table.ts";
import { hashInMemory } from "../core/store/hash_wide.ts";

export { WASM_FORMATS };

/** Options of {@linkcode createWasmBackend}. */
export interface WasmBackendOptions {
  /** Cap on linear memory in bytes (default 4 GiB, the wasm32 limit). */
  readonly maxMemoryBytes?: number;
  /** Run the scalar twins instead of the SIMD kernels (testing/diagnosis). */
  readonly scalar?: boolean;
  /**
   * Kernel module: `"auto"` (default: relaxed SIMD when the engine supports
   * it), `"simd128"` or `"relaxed"`. Results are identical except Q4_0, whose
   * f32 summation order differs between the two (relaxed: ggml's generic
   * block order; docs/quant-types.md); within one variant they never change.
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
  /**
   * Run on shared linear memory (the shared-memory build) even at one
   * thread, so a worker thread can write streamed experts straight into
   * their slots (`core/store/load_worker.ts`): slot views are then over a
   * `SharedArrayBuffer` and never detach. Default false; ignored where
   * shared memory is unavailable. Results are identical.
   */
  readonly sharedMemory?: boolean;
  /**
   * Hash views of this backend's memory in place (`hashInMemory`: streamed
   * experts' integrity hashes run over their slots, no copy). Default true;
   * false only to measure the copying path (A/B benchmarks). Same values.
   */
  readonly hashInPlace?: boolean;
}

/**
 * Work (rows × cols × tokens) below which an op stays on the calling thread:
 * a fork/join costs a few µs, a 256×1024 Q4_0 matvec ~15 µs.
 */
const THREAD_MIN_WORK = 1 << 18;

/**
 * Attention work (tokens × visible positions × heads × head dim) below which
 * it stays on the calling thread (decode on short contexts is split too: a
 * few KV heads per thread already outweigh a fork).
 */
const ATTN_MIN_WORK = 1 << 14;

/**
 * Smallest task of a program, in rows × cols × tokens (~2–4 µs of a
 * quantized matvec): tasks shrink as a phase runs out of work (guided
 * scheduling) so threads reach its barrier at nearly the same time.
 */
const MIN_TASK_WORK = 1 << 16;

/** One expert FFN of {@linkcode WasmBackend.ffnSwigluMany}. */
export interface FfnJob {
  /** `nFf × nEmbd`. */
  readonly gate: WeightView;
  /** `nFf × nEmbd`. */
  readonly up: WeightView;
  /** `nEmbd × nFf`. */
  readonly down: WeightView;
  /** `nTokens` rows of `nEmbd` (jobs may share one array: converted once). */
  readonly x: Float32Array;
  /** Rows of `x`. */
  readonly nTokens: number;
  /** `nTokens` rows of `nEmbd`. */
  readonly out: Float32Array;
}

/** The four projections of {@linkcode WasmBackend.attentionBlock} (`[rows][cols]` each). */
export interface AttentionWeights {
  /** `attn_q`: `nHeads·headDimK × nEmbd`. */
  readonly q: WeightView;
  /** `attn_k`: `nKvHeads·headDimK × nEmbd`. */
  readonly k: WeightView;
  /** `attn_v`: `nKvHeads·headDimV × nEmbd`. */
  readonly v: WeightView;
  /** `attn_output`: `rows × nHeads·headDimV`. */
  readonly o: WeightView;
}

/** A resolved weight (address and kernel type). */
interface Resolved {
  readonly ptr: number;
  readonly kernelType: number;
}

/**
 * A built `ffnSwigluMany` program for one shape: scratch layout, the caller's
 * activation conversions (`[type, x, nTok, dst]` each) and the task table
 * with, per task, the job whose weights it reads (-1: none) and the byte
 * offsets of its rows in them (gate/down, up), patched with each call's
 * weight addresses.
 */
interface FfnProgram {
  readonly sizes: number[];
  readonly p: number[];
  readonly stride: number;
  /** The first job of each distinct x. */
  readonly xJobs: number[];
  readonly preps: Int32Array;
  readonly table: Int32Array;
  readonly len: number;
  readonly job: Int32Array;
  readonly off1: Int32Array;
  readonly off2: Int32Array;
}

/**
 * A built `attentionBlock` program of one layer: the call signature it was
 * built for (cache region, tokens, threads, weights, shape), scratch layout,
 * the caller's activation conversions (`[type, dst]` each, from x), the task
 * table and the records whose first position is patched per call.
 */
interface AttnProgram {
  readonly sig: Float64Array;
  readonly sizes: number[];
  readonly p: number[];
  readonly stride: number;
  readonly preps: Int32Array;
  readonly table: Int32Array;
  readonly len: number;
  /** Record offsets (in i32s) of the tasks that carry the first position (args index 3). */
  readonly starts: Int32Array;
}

/** The threaded state of a backend. */
interface Threads {
  readonly pool: ThreadPool;
  readonly mem: number;
  readonly n: number;
  readonly stacks: number[];
}

const F32_OPS: ReadonlySet<OpName> = new Set<OpName>(["rmsnorm", "rope", "attention", "swiglu"]);

/** Compute backend over the WASM SIMD kernels. */
/** Types the relaxed build decodes from the standard layout with its packed kernels' arithmetic. */
const STD_DECODE_TYPES: ReadonlySet<number> = new Set([2, 12, 8]); // Q4_0, Q4_K, Q8_0
/**
 * Up to this many tokens, a fused FFN over standard-layout matrices of those types runs one
 * token per call: bench MoE Q4_0 expert (1024 → 2816 → 1024), best of 40, 2 tokens 1.23
 * against 1.85 ms batched, 4 tokens 2.42 against 2.68, 6 tokens 3.72 against 4.59, 8 tokens
 * equal (docs/streaming.md, session 8).
 */
const STD_TOKENS_MAX = 6;

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
  /** One-element argument arrays of `matmul` → `matmulMany` (reused). */
  readonly #w1: WeightView[] = [];
  readonly #o1: Float32Array[] = [];
  /** Per call of `ffnSwigluMany`: each job's gate, up and down, resolved (reused). */
  readonly #ffnRes: Resolved[] = [];
  /** `ffnSwigluMany` programs by shape (rebuilt when the scratch region moved). */
  readonly #ffnProgs = new Map<string, FfnProgram>();
  /** `attentionBlock` programs by layer, and the signature of a call (reused). */
  readonly #attnProgs: (AttnProgram | undefined)[] = [];
  readonly #attnSig = new Float64Array(22);
  /** Task records of the program being built (reused). */
  #prog = new Int32Array(64 * TASK_INTS);
  #progLen = 0;
  #phaseStart = 0;
  /** Linear-memory copy of the task table (grown as needed). */
  #tableOff = 0;
  #tableBytes = 0;

  /** Ends in-place hashing of this memory (`hashInMemory`). */
  readonly #unhash: () => void;

  /** Use {@linkcode createWasmBackend}. */
  constructor(
    kernels: KernelExports,
    opts: WasmBackendOptions = {},
    variant: "simd128" | "relaxed" = "simd128",
  ) {
    this.#k = kernels;
    this.#scalar = opts.scalar ?? false;
    this.variant = variant;
    // 64 bytes above the kernels' static data hold the in-place hash's state (below the arena)
    const hashState = Math.ceil(kernels.heap_base() / 64) * 64;
    if (kernels.memory.buffer.byteLength < hashState + 64) kernels.memory.grow(1);
    this.#mem = new KernelMemory(
      kernels.memory,
      hashState + 64,
      opts.maxMemoryBytes ?? 4 * 1024 ** 3,
    );
    let id = 1;
    const nextId = () => id++;
    this.#slots = new WeightSlots(kernels, this.#mem, opts.packWeights ?? true, nextId);
    this.#caches = new KvCaches(this.#mem, nextId);
    this.#ops = { k: kernels, mem: this.#mem, scalar: this.#scalar, rope: null };
    this.caps = { formats: WASM_FORMATS, maxSlotBytes: this.#mem.arena.maxAllocBytes };
    // integrity hashes of streamed experts run over their slots in place (no copy)
    this.#unhash = opts.hashInPlace === false ? () => {} : hashInMemory(kernels.memory, hashState);
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

  /** Whether one token over a matrix of `kernelType` with `rows` runs the standard-row decode kernels. */
  #stdDecode(kernelType: number, rows: number): boolean {
    return this.variant === "relaxed" && (kernelType & PACKED_FLAG) === 0 &&
      STD_DECODE_TYPES.has(kernelType) && rows % 4 === 0;
  }

  /**
   * Uses after which repacking a streamed matrix of `type` pays. The
   * relaxed build decodes Q4_0, Q4_K and Q8_0 straight from the standard
   * layout at 1.1–1.4× the packed kernel's time, so a repack (≈ 0.37 ms per
   * 2816×1024 Q4_0 matrix, about 9 uses' saving of 0.04 ms) pays only for
   * experts that stay hot: 8 (docs/streaming.md, session 8). Other types
   * and the simd128 build decode standard rows at 0.35–0.44× the packed
   * speed, where a repack pays from ~2 uses: 3.
   */
  repackAfterUses(type: number): number {
    return this.variant === "relaxed" && STD_DECODE_TYPES.has(type) ? 8 : 3;
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
        run: (a, sp, stride, sinks, window) =>
          this.#attentionThreaded(th, a, sp, stride, sinks, window),
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
    if (!(x.length >= nTokens * cols)) {
      fail("matmul", `x has ${x.length} floats, need ${nTokens}×${cols}`);
    }
    if (!(out.length >= nTokens * rows)) {
      fail("matmul", `out has ${out.length} floats, need ${nTokens}×${rows}`);
    }
    if (nTokens === 0 || rows === 0) return;
    const { ptr, kernelType } = this.#slots.resolve(w, bytes, true);
    const th = this.#threads;
    if (th !== null && !this.#scalar && rows >= 8 && rows * cols * nTokens >= THREAD_MIN_WORK) {
      this.#w1[0] = w;
      this.#o1[0] = out;
      if (this.matmulMany(this.#w1, x, nTokens, this.#o1)) return;
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
    if (!(out.length >= n * w.cols)) {
      fail("getRows", `out has ${out.length} floats, need ${n}×${w.cols}`);
    }
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
    if (!(up.rows === nFf && up.cols === nEmbd && down.rows === nEmbd && down.cols === nFf)) {
      fail(
        "ffnSwiglu",
        `shapes gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols}, down ${down.rows}×${down.cols} do not chain`,
      );
    }
    if (!(x.length >= nTokens * nEmbd)) {
      fail("ffnSwiglu", `x has ${x.length} floats, need ${nTokens}×${nEmbd}`);
    }
    if (!(out.length >= nTokens * nEmbd)) {
      fail("ffnSwiglu", `out has ${out.length} floats, need ${nTokens}×${nEmbd}`);
    }
    if (nTokens === 0) return;
    const g = this.#slots.resolve(gate, gb, true);
    const u = this.#slots.resolve(up, ub, true);
    const d = this.#slots.resolve(down, db, true);
    const th = this.#threads;
    if (th !== null && !this.#scalar && nFf >= 8 && nFf * nEmbd * nTokens >= THREAD_MIN_WORK) {
      if (this.ffnSwigluMany([{ gate, up, down, x, nTokens, out }])) return;
    }
    // a few tokens over standard-layout matrices (streamed experts not repacked): one call per
    // token runs the relaxed build's standard-row decode kernels, faster than its token tiles
    // below STD_TOKENS_MAX tokens (same values: every output is the same per-token dot)
    const perToken = nTokens > 1 && nTokens <= STD_TOKENS_MAX && !this.#scalar &&
      this.#stdDecode(g.kernelType, nFf) && this.#stdDecode(u.kernelType, nFf) &&
      this.#stdDecode(d.kernelType, nEmbd);
    const calls = perToken ? nTokens : 1, per = nTokens / calls;
    const sb = this.#k.ffn_swiglu_scratch_bytes(
      g.kernelType,
      u.kernelType,
      d.kernelType,
      nEmbd,
      nFf,
      per,
    );
    const [xp, op, sp] = this.#mem.scratch(nTokens * nEmbd * 4, nTokens * nEmbd * 4, sb);
    const f32 = this.#mem.f32;
    copyIn(f32, x, nTokens * nEmbd, xp);
    const f = this.#scalar ? this.#k.ffn_swiglu_scalar : this.#k.ffn_swiglu;
    const step = per * nEmbd * 4;
    for (let c = 0; c < calls; c++) {
      const rc = f(
        g.kernelType,
        g.ptr,
        u.kernelType,
        u.ptr,
        d.kernelType,
        d.ptr,
        nEmbd,
        nFf,
        xp + c * step,
        per,
        op + c * step,
        sp,
      );
      if (rc !== 0) fail("ffnSwiglu", "kernel rejected a weight type or shape");
    }
    copyOut(f32, op, nTokens * nEmbd, out);
  }

  /**
   * Several expert FFNs (the selected experts of a MoE layer) in one
   * parallel region when this backend runs threads: gate/up/SwiGLU rows of
   * every expert, then their `down` rows, split across threads with a
   * barrier in between (one fork instead of two per expert). Each job's
   * `out` is bit-identical to `ffnSwiglu` on it. Returns false, having done
   * nothing, on one thread or when the work is too small to split (the
   * caller then runs `ffnSwiglu` per job).
   */
  ffnSwigluMany(jobs: readonly FfnJob[]): boolean {
    this.#live();
    const th = this.#threads;
    if (th === null || this.#scalar || jobs.length === 0) return false;
    const nEmbd = jobs[0].gate.cols, nFf = jobs[0].gate.rows;
    let work = 0;
    for (const j of jobs) {
      const { gate, up, down } = j;
      if (
        !(gate.rows === nFf && gate.cols === nEmbd && up.rows === nFf && up.cols === nEmbd &&
          down.rows === nEmbd && down.cols === nFf)
      ) {
        fail(
          "ffnSwigluMany",
          `shapes gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols}, down ${down.rows}×${down.cols} do not chain (or differ between jobs)`,
        );
      }
      if (
        !(Number.isInteger(j.nTokens) && j.nTokens >= 0 && j.x.length >= j.nTokens * nEmbd &&
          j.out.length >= j.nTokens * nEmbd)
      ) fail("ffnSwigluMany", `x/out shorter than ${j.nTokens}×${nEmbd}`);
      work += nFf * nEmbd * j.nTokens;
    }
    if (nFf < 8 || work < THREAD_MIN_WORK) return false;
    const res = this.#ffnRes;
    res.length = 0;
    // the program's shape: threads, sizes, and per job its tokens, its x (first job with the
    // same rows) and its three kernel types; the weights' addresses are patched per call
    let key = `${th.n}|${nEmbd}|${nFf}`;
    for (let i = 0; i < jobs.length; i++) {
      const j = jobs[i];
      const gb = this.#check(j.gate, "ffnSwigluMany");
      const ub = this.#check(j.up, "ffnSwigluMany");
      const db = this.#check(j.down, "ffnSwigluMany");
      const g = this.#slots.resolve(j.gate, gb, true);
      const u = this.#slots.resolve(j.up, ub, true);
      const d = this.#slots.resolve(j.down, db, true);
      res.push(g, u, d);
      let xi = 0;
      while (xi < i && !(jobs[xi].x === j.x && jobs[xi].nTokens === j.nTokens)) xi++;
      key += `|${j.nTokens},${xi},${g.kernelType},${u.kernelType},${d.kernelType}`;
    }
    let prog = this.#ffnProgs.get(key);
    if (prog !== undefined && this.#mem.scratch(...prog.sizes)[0] !== prog.p[0]) prog = undefined;
    if (prog === undefined) {
      prog = this.#ffnBuild(th, jobs, res, nEmbd, nFf);
      if (this.#ffnProgs.size >= 64) this.#ffnProgs.clear(); // prefill shapes vary
      this.#ffnProgs.set(key, prog);
    }
    const { p, table, len, job, off1, off2 } = prog;
    // the weights of this call into the task records
    for (let t = 0; t < len; t++) {
      const i = job[t];
      if (i < 0) continue;
      const r = t * TASK_INTS;
      if (table[r] === T_FFN_UP) {
        table[r + 4] = res[3 * i].ptr + off1[t];
        table[r + 6] = res[3 * i + 1].ptr + off2[t];
      } else table[r + 4] = res[3 * i + 2].ptr + off1[t];
    }
    const f32 = this.#mem.f32;
    for (let xi = 0; xi < prog.xJobs.length; xi++) {
      const j = jobs[prog.xJobs[xi]];
      copyIn(f32, j.x, j.nTokens * nEmbd, p[xi]);
    }
    // activations of gate/up: converted on this thread (small), once per distinct x and type
    const k = this.#k, preps = prog.preps;
    for (let q = 0; q < preps.length; q += 4) {
      if (k.prepare_act(preps[q], preps[q + 1], nEmbd, preps[q + 2], preps[q + 3]) !== 0) {
        fail("ffnSwigluMany", `kernel rejected type ${preps[q]} cols ${nEmbd}`);
      }
    }
    this.#progRunTable(th, table, len, p[p.length - 1], prog.stride, "ffnSwigluMany");
    const nx = prog.xJobs.length;
    const f = this.#mem.f32;
    for (let i = 0; i < jobs.length; i++) {
      copyOut(f, p[nx + 6 * i + 5], jobs[i].nTokens * nEmbd, jobs[i].out);
    }
    return true;
  }

  /**
   * Build the program of {@linkcode ffnSwigluMany} for one shape (`res`: per
   * job its gate, up and down, resolved): its scratch layout, the activation
   * conversions the caller runs, and the task table, with per task the job
   * whose weights it reads and their byte offsets (patched per call).
   */
  #ffnBuild(
    th: Threads,
    jobs: readonly FfnJob[],
    res: readonly Resolved[],
    nEmbd: number,
    nFf: number,
  ): FfnProgram {
    const k = this.#k;
    const G = (i: number) => res[3 * i], U = (i: number) => res[3 * i + 1];
    const D = (i: number) => res[3 * i + 2];
    // scratch: per distinct x its rows; per job its activations, gate/up rows, down activations, out
    const sizes: number[] = [];
    const xIdx: number[] = [];
    const xJobs: number[] = [];
    let sb = 0;
    for (let i = 0; i < jobs.length; i++) {
      const j = jobs[i];
      let xi = xJobs.findIndex((o) => jobs[o].x === j.x && jobs[o].nTokens === j.nTokens);
      if (xi < 0) {
        xi = xJobs.length;
        xJobs.push(i);
        sizes.push(j.nTokens * nEmbd * 4);
      }
      xIdx.push(xi);
      sb = Math.max(
        sb,
        k.matmul_scratch_bytes(G(i).kernelType, nEmbd, j.nTokens),
        k.matmul_scratch_bytes(U(i).kernelType, nEmbd, j.nTokens),
        k.matmul_scratch_bytes(D(i).kernelType, nFf, j.nTokens),
      );
    }
    const nx = xJobs.length;
    for (let i = 0; i < jobs.length; i++) {
      const n = jobs[i].nTokens;
      sizes.push(
        this.#actBytes(G(i).kernelType, nEmbd, n),
        this.#actBytes(U(i).kernelType, nEmbd, n),
        n * nFf * 4,
        n * nFf * 4,
        this.#actBytes(D(i).kernelType, nFf, n),
        n * nEmbd * 4,
      );
    }
    const stride = Math.ceil((sb + 64) / 64) * 64;
    sizes.push(stride * th.n);
    const p = this.#mem.scratch(...sizes);
    // activations of gate/up: where each job's are, and the conversions that make them
    const acts: number[] = [];
    const preps: number[] = [];
    const prep = (kt: number, xp: number, n: number, dst: number): number => {
      const base = kt & ~PACKED_FLAG;
      if (base === 0) return xp; // F32 weights take the f32 rows
      preps.push(base, xp, n, dst);
      return dst;
    };
    for (let i = 0; i < jobs.length; i++) {
      const n = jobs[i].nTokens, b = nx + 6 * i, xp = p[xIdx[i]];
      let ag = -1, au = -1;
      const tg = G(i).kernelType & ~PACKED_FLAG, tu = U(i).kernelType & ~PACKED_FLAG;
      for (let i2 = 0; i2 < i && (ag < 0 || au < 0); i2++) {
        if (xIdx[i2] !== xIdx[i]) continue;
        const tg2 = G(i2).kernelType & ~PACKED_FLAG, tu2 = U(i2).kernelType & ~PACKED_FLAG;
        if (ag < 0 && tg2 === tg) ag = acts[2 * i2];
        else if (ag < 0 && tu2 === tg) ag = acts[2 * i2 + 1];
        if (au < 0 && tu2 === tu) au = acts[2 * i2 + 1];
        else if (au < 0 && tg2 === tu) au = acts[2 * i2];
      }
      if (ag < 0) ag = prep(tg, xp, n, p[b]);
      if (au < 0) au = tu === tg ? ag : prep(tu, xp, n, p[b + 1]);
      acts.push(ag, au);
    }
    const job: number[] = [], off1: number[] = [], off2: number[] = [];
    // phase 0: gate/up/SwiGLU rows of every expert
    this.#progBegin();
    this.#split(th.n, jobs.length, nFf, (i) => nEmbd * jobs[i].nTokens, (i, r0, r1) => {
      const n = jobs[i].nTokens, b = nx + 6 * i;
      const g = G(i), u = U(i);
      const rbG = k.weight_row_bytes(g.kernelType & ~PACKED_FLAG, nEmbd);
      const rbU = k.weight_row_bytes(u.kernelType & ~PACKED_FLAG, nEmbd);
      this.#progTask(
        T_FFN_UP,
        g.kernelType,
        g.ptr + r0 * rbG,
        u.kernelType,
        u.ptr + r0 * rbU,
        r1 - r0,
        nEmbd,
        acts[2 * i],
        acts[2 * i + 1],
        n,
        p[b + 2] + 4 * r0,
        p[b + 3] + 4 * r0,
        nFf,
      );
      job.push(i), off1.push(r0 * rbG), off2.push(r0 * rbU);
    });
    // phase 1: the down projections' activations
    this.#progPhase();
    const ad: number[] = [];
    for (let i = 0; i < jobs.length; i++) {
      const n = jobs[i].nTokens, b = nx + 6 * i;
      const td = D(i).kernelType & ~PACKED_FLAG;
      if (td === 0) {
        ad.push(p[b + 2]); // F32 weights take the f32 rows
        continue;
      }
      ad.push(p[b + 4]);
      if (n > 0) {
        this.#progTask(T_PREP, td, p[b + 2], nFf, n, p[b + 4]);
        job.push(-1), off1.push(0), off2.push(0);
      }
    }
    // phase 2: down rows of every expert
    this.#progPhase();
    this.#split(th.n, jobs.length, nEmbd, (i) => nFf * jobs[i].nTokens, (i, r0, r1) => {
      const d = D(i), b = nx + 6 * i;
      const rbD = k.weight_row_bytes(d.kernelType & ~PACKED_FLAG, nFf);
      this.#progTask(
        T_MATMUL,
        d.kernelType,
        d.ptr + r0 * rbD,
        r1 - r0,
        nFf,
        ad[i],
        jobs[i].nTokens,
        p[b + 5] + 4 * r0,
        nEmbd,
      );
      job.push(i), off1.push(r0 * rbD), off2.push(0);
    });
    this.#progPhase();
    const len = this.#progLen;
    return {
      sizes,
      p,
      stride,
      xJobs,
      preps: Int32Array.from(preps),
      table: this.#prog.slice(0, len * TASK_INTS),
      len,
      job: Int32Array.from(job),
      off1: Int32Array.from(off1),
      off2: Int32Array.from(off2),
    };
  }

  /**
   * Several matmuls over the same activations (Q/K/V of an attention block)
   * in one parallel region when this backend runs threads: the activations
   * are converted once per weight type, then the rows of every matrix are
   * split across threads. `outs[i]` is bit-identical to
   * `matmul(ws[i], x, nTokens, outs[i])`. Returns false, having done
   * nothing, on one thread or when the work is too small to split.
   */
  matmulMany(
    ws: readonly WeightView[],
    x: Float32Array,
    nTokens: number,
    outs: readonly Float32Array[],
  ): boolean {
    this.#live();
    const th = this.#threads;
    if (th === null || this.#scalar || ws.length === 0 || nTokens === 0) return false;
    const cols = ws[0].cols;
    if (!(ws.length === outs.length)) {
      fail("matmulMany", `${ws.length} matrices but ${outs.length} outputs`);
    }
    if (!(x.length >= nTokens * cols)) {
      fail("matmulMany", `x has ${x.length} floats, need ${nTokens}×${cols}`);
    }
    let work = 0;
    for (let i = 0; i < ws.length; i++) {
      if (!(ws[i].cols === cols)) {
        fail("matmulMany", `matrix ${i} has ${ws[i].cols} columns, not ${cols}`);
      }
      if (!(outs[i].length >= nTokens * ws[i].rows)) {
        fail("matmulMany", `out ${i} has ${outs[i].length} floats, need ${nTokens}×${ws[i].rows}`);
      }
      work += ws[i].rows * cols * nTokens;
    }
    if (work < THREAD_MIN_WORK) return false;
    const res: Resolved[] = [];
    for (const w of ws) res.push(this.#slots.resolve(w, this.#check(w, "matmulMany"), true));
    const k = this.#k;
    let sb = 0;
    const sizes = [nTokens * cols * 4];
    for (let i = 0; i < ws.length; i++) {
      sb = Math.max(sb, k.matmul_scratch_bytes(res[i].kernelType, cols, nTokens));
      sizes.push(this.#actBytes(res[i].kernelType, cols, nTokens), nTokens * ws[i].rows * 4);
    }
    const stride = Math.ceil((sb + 64) / 64) * 64;
    sizes.push(stride * th.n);
    const p = this.#mem.scratch(...sizes);
    const sp = p[p.length - 1];
    copyIn(this.#mem.f32, x, nTokens * cols, p[0]);
    const acts: number[] = [];
    for (let i = 0; i < ws.length; i++) {
      const t = res[i].kernelType & ~PACKED_FLAG;
      let a = -1;
      for (let i2 = 0; i2 < i && a < 0; i2++) {
        if ((res[i2].kernelType & ~PACKED_FLAG) === t) a = acts[i2];
      }
      acts.push(
        a >= 0
          ? a
          : this.#prepare("matmulMany", res[i].kernelType, p[0], cols, nTokens, p[1 + 2 * i]),
      );
    }
    this.#progBegin();
    this.#split(th.n, ws.length, (i) => ws[i].rows, () => cols * nTokens, (i, r0, r1) => {
      const r = res[i];
      const rb = k.weight_row_bytes(r.kernelType & ~PACKED_FLAG, cols);
      this.#progTask(
        T_MATMUL,
        r.kernelType,
        r.ptr + r0 * rb,
        r1 - r0,
        cols,
        acts[i],
        nTokens,
        p[2 + 2 * i] + 4 * r0,
        ws[i].rows,
      );
    });
    this.#progRun(th, sp, stride, "matmulMany");
    const f = this.#mem.f32;
    for (let i = 0; i < ws.length; i++) copyOut(f, p[2 + 2 * i], nTokens * ws[i].rows, outs[i]);
    return true;
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

  /**
   * `attention` with per-head sink logits and a sliding window (gpt-oss; see
   * `Backend.attentionExt`), into the same cache; split by KV heads over threads as `attention` is.
   * With `sinks` null and `window` 0 it equals `attention` bit for bit.
   */
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
    this.#live();
    const e = this.#caches.get(cache);
    this.#caches.reserve(e, layer, startPos + nTokens); // the cache grows with use
    attentionOp(this.#ops, e, layer, startPos, nTokens, q, k, v, p, out, x, "attentionExt");
  }

  /**
   * Attention followed by the output projection in one parallel region when
   * this backend runs threads: `out = wo · attention(…)` (the K/V rows are
   * stored first, on this thread), KV heads split across threads, a
   * barrier, the attention output's conversion, a barrier, then `wo`'s rows
   * split across threads. Bit-identical to `attention` then `matmul(wo)`.
   * Returns false, having done nothing, on one thread or when the work is
   * too small to split (the caller then runs the two ops).
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
    const th = this.#threads;
    if (th === null || this.#scalar || nTokens === 0) return false;
    const { nHeads, nKvHeads, headDimK, headDimV } = p;
    const nAtt = nHeads * headDimV;
    if (!(wo.cols === nAtt)) {
      fail("attentionOutput", `wo has ${wo.cols} columns, attention gives ${nAtt}`);
    }
    const rows = wo.rows;
    if (!(out.length >= nTokens * rows)) {
      fail("attentionOutput", `out has ${out.length} floats, need ${nTokens}×${rows}`);
    }
    if (rows * nAtt * nTokens < THREAD_MIN_WORK) return false;
    const e = this.#caches.get(cache);
    const bad = attentionMismatch(e, layer, startPos, nTokens, p);
    if (bad !== null) fail("attention", bad);
    const qn = nTokens * nHeads * headDimK;
    const kn = nTokens * nKvHeads * headDimK;
    const vn = nTokens * nKvHeads * headDimV;
    if (!(q.length >= qn && k.length >= kn && v.length >= vn)) {
      fail("attention", "q/k/v shorter than their shapes");
    }
    const wb = this.#check(wo, "attentionOutput");
    this.#caches.reserve(e, layer, startPos + nTokens); // the cache grows with use
    const L = e.layers[layer];
    if (!(startPos + nTokens <= L.cap)) {
      fail("attention", `KV layer ${layer} holds ${L.cap} positions`);
    }
    const r = this.#slots.resolve(wo, wb, true);
    const kk = this.#k;
    const sb = Math.max(
      kk.attention_scratch_bytes(L.cap, nHeads, nKvHeads, headDimK, headDimV),
      kk.matmul_scratch_bytes(r.kernelType, nAtt, nTokens),
    );
    const stride = Math.ceil((sb + 64) / 64) * 64;
    const [qp, kp, vp, ap, actp, op, sp] = this.#mem.scratch(
      qn * 4,
      kn * 4,
      vn * 4,
      nTokens * nAtt * 4,
      this.#actBytes(r.kernelType, nAtt, nTokens),
      nTokens * rows * 4,
      stride * th.n,
    );
    const f32 = this.#mem.f32;
    copyIn(f32, q, qn, qp);
    copyIn(f32, k, kn, kp);
    copyIn(f32, v, vn, vp);
    const kc = L.off, vc = L.off + L.cap * e.kRowBytes;
    // store the new K/V rows once, here (no heads computed)
    const scale = f32Bits(p.scale);
    const head = [
      kc,
      vc,
      L.cap,
      startPos,
      nTokens,
      qp,
      kp,
      vp,
      nHeads,
      nKvHeads,
      headDimK,
      headDimV,
      scale,
      ap,
    ];
    if (attentionHeads(kk, head, 0, sp, 0, 0, 1) !== 0) {
      fail("attention", "kernel rejected the shape");
    }
    // phases 0-2: KV heads, wo's activations, wo's rows
    this.#progBegin();
    this.#progAttnTail(th.n, head, nKvHeads, r, ap, actp, nAtt, nTokens, op, rows, null);
    this.#progRun(th, sp, stride, "attentionOutput");
    copyOut(this.#mem.f32, op, nTokens * rows, out);
    return true;
  }

  /**
   * A whole llama-style attention block in one parallel region when this
   * backend runs threads: `out = wo · attention(rope(wq·x), rope(wk·x), wv·x)`
   * over the KV cache. Phases: the rows of Q, K and V (activations converted
   * once per weight type, on this thread); RoPE of Q (by token ranges) and of
   * K followed by the store of the new K/V rows; KV heads; the attention
   * output's conversion; `wo`'s rows. Intermediate rows stay in linear memory
   * (no copies out and back, no fork between the projections and attention).
   * Bit-identical to `matmul` ×3, `rope` of Q and K, `attention`, then
   * `matmul(wo)`. Returns false, having done nothing, on one thread or when
   * the work is too small to split (the caller then runs those ops).
   */
  attentionBlock(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    x: Float32Array,
    w: AttentionWeights,
    positions: Int32Array,
    rope: RopeParams,
    p: AttentionParams,
    out: Float32Array,
  ): boolean {
    this.#live();
    const th = this.#threads;
    if (th === null || this.#scalar || nTokens === 0) return false;
    const { nHeads, nKvHeads, headDimK, headDimV } = p;
    const cols = w.q.cols;
    const qd = nHeads * headDimK, kd = nKvHeads * headDimK, vd = nKvHeads * headDimV;
    const nAtt = nHeads * headDimV;
    const op0 = "attentionBlock";
    if (
      !(w.k.cols === cols && w.v.cols === cols && w.q.rows === qd && w.k.rows === kd &&
        w.v.rows === vd && w.o.cols === nAtt)
    ) {
      fail(
        op0,
        `shapes q ${w.q.rows}×${w.q.cols}, k ${w.k.rows}×${w.k.cols}, v ${w.v.rows}×${w.v.cols}, ` +
          `o ${w.o.rows}×${w.o.cols} do not fit ${nHeads}/${nKvHeads} heads of ${headDimK}/${headDimV}`,
      );
    }
    const rows = w.o.rows;
    if (!(x.length >= nTokens * cols)) {
      fail(op0, `x has ${x.length} floats, need ${nTokens}×${cols}`);
    }
    if (!(out.length >= nTokens * rows)) {
      fail(op0, `out has ${out.length} floats, need ${nTokens}×${rows}`);
    }
    if (!(positions.length >= nTokens)) {
      fail(op0, `${positions.length} positions for ${nTokens} tokens`);
    }
    const nRot = rope.nRot;
    if (!(nRot > 0 && nRot % 2 === 0 && nRot <= headDimK)) {
      fail(op0, `nRot ${nRot} must be even and in (0, headDim=${headDimK}]`);
    }
    if (!(rope.mode === 0 || rope.mode === 2)) {
      fail(op0, `mode ${rope.mode} is neither NORM (0) nor NEOX (2)`);
    }
    for (let t = 0; t < nTokens; t++) {
      const pos = positions[t];
      if (!(Number.isInteger(pos) && pos >= 0)) fail(op0, `position ${pos} at ${t} is negative`);
    }
    if ((qd + kd + vd) * cols * nTokens < THREAD_MIN_WORK) return false;
    const e = this.#caches.get(cache);
    const bad = attentionMismatch(e, layer, startPos, nTokens, p);
    if (bad !== null) fail("attention", bad);
    const bq = this.#check(w.q, op0), bk = this.#check(w.k, op0);
    const bv = this.#check(w.v, op0), bo = this.#check(w.o, op0);
    this.#caches.reserve(e, layer, startPos + nTokens); // the cache grows with use
    const L = e.layers[layer];
    if (!(startPos + nTokens <= L.cap)) {
      fail("attention", `KV layer ${layer} holds ${L.cap} positions`);
    }
    const rq = this.#slots.resolve(w.q, bq, true), rk = this.#slots.resolve(w.k, bk, true);
    const rv = this.#slots.resolve(w.v, bv, true), ro = this.#slots.resolve(w.o, bo, true);
    // the layer's program is kept while its shape, weights, cache region and scratch stay
    const sig = this.#attnSig;
    sig[0] = L.off, sig[1] = L.cap, sig[2] = e.kRowBytes, sig[3] = nTokens, sig[4] = th.n;
    sig[5] = rq.ptr, sig[6] = rq.kernelType, sig[7] = rk.ptr, sig[8] = rk.kernelType;
    sig[9] = rv.ptr, sig[10] = rv.kernelType, sig[11] = ro.ptr, sig[12] = ro.kernelType;
    sig[13] = cols, sig[14] = rows, sig[15] = nHeads, sig[16] = nKvHeads, sig[17] = headDimK;
    sig[18] = headDimV, sig[19] = f32Bits(p.scale), sig[20] = nRot, sig[21] = rope.mode;
    let prog = this.#attnProgs[layer];
    if (prog !== undefined) {
      for (let i = 0; i < sig.length; i++) {
        if (prog.sig[i] !== sig[i]) {
          prog = undefined;
          break;
        }
      }
    }
    if (prog !== undefined && this.#mem.scratch(...prog.sizes)[0] !== prog.p[0]) prog = undefined;
    if (prog === undefined) {
      prog = this.#attnBuild(th, L, e.kRowBytes, nTokens, [rq, rk, rv, ro], cols, rows, p, rope);
      this.#attnProgs[layer] = prog;
    }
    const { p: sp, table, starts } = prog;
    const f32 = this.#mem.f32;
    copyIn(f32, x, nTokens * cols, sp[0]);
    // activations of Q/K/V: converted here (small), once per weight type
    const preps = prog.preps, kk = this.#k;
    for (let q = 0; q < preps.length; q += 2) {
      if (kk.prepare_act(preps[q], sp[0], cols, nTokens, preps[q + 1]) !== 0) {
        fail(op0, `kernel rejected type ${preps[q]} cols ${cols}`);
      }
    }
    // the cos/sin rows of the tokens' positions (the table `rope` uses)
    const ops = this.#ops;
    if (ops.rope === null || !ops.rope.matches(rope)) ops.rope = new RopeTable(rope);
    const rt = ops.rope, cp = sp[7] >>> 2;
    for (let t = 0; t < nTokens; t++) rt.write(positions[t], f32, cp + t * nRot);
    // this call's first position into the RoPE+store and attention tasks
    for (let i = 0; i < starts.length; i++) table[starts[i] + 6] = startPos;
    this.#progRunTable(th, table, prog.len, sp[11], prog.stride, op0);
    copyOut(this.#mem.f32, sp[10], nTokens * rows, out);
    return true;
  }

  /**
   * Build the program of {@linkcode attentionBlock} for one layer's shape
   * (`r`: Q, K, V and O resolved; `L` the layer's cache region): its scratch
   * layout (x, activations of Q/K/V, q, k, v, cos/sin rows, attention
   * output, its activations, out, per-thread scratch), the caller's
   * activation conversions (`[type, dst]` each, from x) and the task table,
   * with the records whose first position is patched per call.
   */
  #attnBuild(
    th: Threads,
    L: { readonly off: number; readonly cap: number },
    kRowBytes: number,
    nTokens: number,
    r: readonly Resolved[],
    cols: number,
    rows: number,
    p: AttentionParams,
    rope: RopeParams,
  ): AttnProgram {
    const { nHeads, nKvHeads, headDimK, headDimV } = p;
    const qd = nHeads * headDimK, kd = nKvHeads * headDimK, vd = nKvHeads * headDimV;
    const nAtt = nHeads * headDimV, nRot = rope.nRot;
    const [rq, rk, rv, ro] = r;
    const kk = this.#k;
    const tq = rq.kernelType & ~PACKED_FLAG, tk = rk.kernelType & ~PACKED_FLAG;
    const tv = rv.kernelType & ~PACKED_FLAG, to = ro.kernelType & ~PACKED_FLAG;
    const sb = Math.max(
      kk.matmul_scratch_bytes(rq.kernelType, cols, nTokens),
      kk.matmul_scratch_bytes(rk.kernelType, cols, nTokens),
      kk.matmul_scratch_bytes(rv.kernelType, cols, nTokens),
      kk.attention_scratch_bytes(L.cap, nHeads, nKvHeads, headDimK, headDimV),
      kk.matmul_scratch_bytes(ro.kernelType, nAtt, nTokens),
    );
    const stride = Math.ceil((sb + 64) / 64) * 64;
    const sizes = [
      nTokens * cols * 4,
      this.#actBytes(tq, cols, nTokens),
      tk === tq ? 0 : this.#actBytes(tk, cols, nTokens),
      tv === tq || tv === tk ? 0 : this.#actBytes(tv, cols, nTokens),
      nTokens * qd * 4,
      nTokens * kd * 4,
      nTokens * vd * 4,
      nTokens * nRot * 4,
      nTokens * nAtt * 4,
      this.#actBytes(to, nAtt, nTokens),
      nTokens * rows * 4,
      stride * th.n,
    ];
    const sp = this.#mem.scratch(...sizes);
    const [xp, aq, ak, av, qp, kp, vp, cp, ap, actp, op] = sp;
    // where the activations of Q/K/V are, and the conversions that make them (F32: x itself)
    const preps: number[] = [];
    const prep = (t: number, dst: number): number => {
      if (t === 0) return xp;
      preps.push(t, dst);
      return dst;
    };
    const actQ = prep(tq, aq);
    const actK = tk === tq ? actQ : prep(tk, ak);
    const actV = tv === tq ? actQ : tv === tk ? actK : prep(tv, av);
    // phase 0: the rows of Q, K and V
    this.#progBegin();
    const rs = [rq, rk, rv], outs = [qp, kp, vp], acts = [actQ, actK, actV], rws = [qd, kd, vd];
    this.#split(th.n, 3, (i) => rws[i], () => cols * nTokens, (i, r0, r1) => {
      const r = rs[i];
      this.#progTask(
        T_MATMUL,
        r.kernelType,
        r.ptr + r0 * kk.weight_row_bytes(r.kernelType & ~PACKED_FLAG, cols),
        r1 - r0,
        cols,
        acts[i],
        nTokens,
        outs[i] + 4 * r0,
        rws[i],
      );
    });
    // phase 1: RoPE of Q by token ranges; RoPE of K, then the new K/V rows into the cache
    this.#progPhase();
    const head = [
      L.off,
      L.off + L.cap * kRowBytes,
      L.cap,
      0, // the first position: patched per call
      nTokens,
      qp,
      kp,
      vp,
      nHeads,
      nKvHeads,
      headDimK,
      headDimV,
      f32Bits(p.scale),
      ap,
    ];
    const starts: number[] = [this.#progLen * TASK_INTS];
    this.#progTask(T_ROPE_KV, ...head, nRot, rope.mode, cp);
    const qParts = Math.min(nTokens, 2 * th.n);
    for (let t = 0; t < qParts; t++) {
      const [t0, t1] = itemRange(nTokens, qParts, t);
      if (t1 > t0) {
        this.#progTask(
          T_ROPE,
          qp + 4 * t0 * qd,
          t1 - t0,
          nHeads,
          headDimK,
          nRot,
          rope.mode,
          cp + 4 * t0 * nRot,
        );
      }
    }
    // phases 2-4: KV heads (their task offsets kept for the position patch), wo's activations, wo's rows
    this.#progPhase();
    this.#progAttnTail(th.n, head, nKvHeads, ro, ap, actp, nAtt, nTokens, op, rows, starts);
    this.#progPhase();
    const len = this.#progLen;
    return {
      sig: this.#attnSig.slice(),
      sizes,
      p: sp,
      stride,
      preps: Int32Array.from(preps),
      table: this.#prog.slice(0, len * TASK_INTS),
      len,
      starts: Int32Array.from(starts),
    };
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
    this.#unhash();
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

  /**
   * Attention over threads by KV heads (args in the kernel's order up to
   * `out`): the new K/V rows are stored once here, then each chunk of KV
   * heads runs `attention_heads` (heads are independent: bit-identical).
   * With `sinks` (an address, 0: none) or a `window` (gpt-oss) the heads run
   * as tasks of a program, which carry them. Returns false (nothing done)
   * when the layer is too small to split.
   */
  #attentionThreaded(
    th: Threads,
    a: readonly number[],
    sp: number,
    stride: number,
    sinks = 0,
    window = 0,
  ): boolean {
    const [kc, vc, cap, start, nTok, q, kk, v, nH, nKv, hdK, hdV, scale, out] = a;
    // work ≈ tokens × visible positions × heads × head dim
    if (nKv < 2 || this.#threads !== th || nTok * (start + nTok) * nH * hdK < ATTN_MIN_WORK) {
      return false;
    }
    const k = this.#k;
    const args = [kc, vc, cap, start, nTok, q, kk, v, nH, nKv, hdK, hdV, f32Bits(scale), out];
    if (attentionHeads(k, args, 0, sp, 0, 0, 1) !== 0) {
      fail("attention", "kernel rejected the shape");
    }
    if (sinks !== 0 || window !== 0) {
      this.#progBegin();
      const parts = Math.min(nKv, 4 * th.n);
      for (let t = 0; t < parts; t++) {
        const [h0, h1] = itemRange(nKv, parts, t);
        if (h1 > h0) this.#progTask(T_ATTN, ...args, h0, h1, sinks, window);
      }
      this.#progRun(th, sp, stride, "attentionExt");
      return true;
    }
    th.pool.run(th.mem, th.n, OP_ATTN, [...args, sp, stride], (chunk, chunks) => {
      const [h0, h1] = itemRange(nKv, chunks, chunk);
      return h1 <= h0 ? 0 : attentionHeads(k, args, 0, sp, h0, h1, 0);
    });
    return true;
  }

  /**
   * Cut the rows of `count` matrices (`rowsOf` each, `unit(i)` work per row of
   * matrix `i`; 0: skip it) into tasks of one phase, largest first and
   * shrinking with the work left (guided: `left / 2·threads`, at most a
   * `1/4·threads` share of the phase, at least `MIN_TASK_WORK`), on
   * multiples of 4 rows (a packed group); `emit` adds each task.
   */
  #split(
    threads: number,
    count: number,
    rowsOf: number | ((i: number) => number),
    unit: (i: number) => number,
    emit: (i: number, r0: number, r1: number) => void,
  ): void {
    const R = (i: number) => typeof rowsOf === "number" ? rowsOf : rowsOf(i);
    let left = 0;
    for (let i = 0; i < count; i++) left += R(i) * unit(i);
    // at most 1/(4·threads) of the phase per task: a thread descheduled while holding one
    // (other processes on the cores) delays the barrier by no more than that share
    const most = left / (4 * threads);
    for (let i = 0; i < count; i++) {
      const u = unit(i), rows = R(i);
      if (u <= 0) continue;
      for (let r0 = 0; r0 < rows;) {
        const w = Math.max(MIN_TASK_WORK, Math.min(most, left / (2 * threads)));
        let r1 = Math.min(rows, r0 + Math.max(4, Math.ceil(w / u / 4) * 4));
        if (rows - r1 < 4) r1 = rows;
        emit(i, r0, r1);
        left -= (r1 - r0) * u;
        r0 = r1;
      }
    }
  }

  /**
   * The tail every attention program shares, appended to the current phase:
   * the KV heads' tasks (one per head, or per group when there are many;
   * each task's offset pushed to `starts` when given, for later patches),
   * then a phase converting the attention output `ap` (`nTokens × nAtt`) to
   * `wo`'s activation type at `actp`, then a phase of `wo`'s row ranges into
   * `op` (`nTokens × rows`).
   */
  #progAttnTail(
    n: number,
    head: readonly number[],
    nKvHeads: number,
    wo: Resolved,
    ap: number,
    actp: number,
    nAtt: number,
    nTokens: number,
    op: number,
    rows: number,
    starts: number[] | null,
  ): void {
    const parts = Math.min(nKvHeads, 4 * n);
    for (let t = 0; t < parts; t++) {
      const [h0, h1] = itemRange(nKvHeads, parts, t);
      if (h1 > h0) {
        starts?.push(this.#progLen * TASK_INTS);
        this.#progTask(T_ATTN, ...head, h0, h1, 0, 0);
      }
    }
    this.#progPhase();
    const base = wo.kernelType & ~PACKED_FLAG;
    const act = base === 0 ? ap : actp;
    if (base !== 0) this.#progTask(T_PREP, base, ap, nAtt, nTokens, actp);
    this.#progPhase();
    const rb = this.#k.weight_row_bytes(base, nAtt);
    this.#split(n, 1, rows, () => nAtt * nTokens, (_i, r0, r1) => {
      this.#progTask(
        T_MATMUL,
        wo.kernelType,
        wo.ptr + r0 * rb,
        r1 - r0,
        nAtt,
        act,
        nTokens,
        op + 4 * r0,
        rows,
      );
    });
  }

  /** Start building a program (phase 0). */
  #progBegin(): void {
    this.#progLen = 0;
    this.#phaseStart = 0;
  }

  /** Close the current phase: the next tasks wait for every task so far. */
  #progPhase(): void {
    const n = this.#progLen;
    const a = this.#prog;
    for (let t = this.#phaseStart; t < n; t++) a[t * TASK_INTS + 2] = n;
    this.#phaseStart = n;
  }

  /** Append a task of the current phase. */
  #progTask(kind: number, ...args: number[]): void {
    if ((this.#progLen + 1) * TASK_INTS > this.#prog.length) {
      const b = new Int32Array(this.#prog.length * 2);
      b.set(this.#prog);
      this.#prog = b;
    }
    const r = this.#progLen++ * TASK_INTS;
    const a = this.#prog;
    a[r] = kind;
    a[r + 1] = this.#phaseStart;
    for (let i = 0; i < args.length; i++) a[r + 3 + i] = args[i] | 0;
  }

  /** Copy the program into linear memory and run it over the pool (this thread included). */
  #progRun(th: Threads, sp: number, stride: number, op: string): void {
    this.#progPhase();
    this.#progRunTable(th, this.#prog, this.#progLen, sp, stride, op);
  }

  /** Copy the first `n` task records of `prog` into linear memory and run them over the pool. */
  #progRunTable(
    th: Threads,
    prog: Int32Array,
    n: number,
    sp: number,
    stride: number,
    op: string,
  ): void {
    if (n === 0) return;
    const bytes = n * TASK_INTS * 4;
    if (bytes > this.#tableBytes) {
      const want = Math.max(bytes, 2 * this.#tableBytes, 4096);
      if (this.#tableBytes > 0) this.#mem.arena.free(this.#tableOff);
      this.#tableBytes = 0;
      this.#tableOff = this.#mem.arena.alloc(want);
      this.#tableBytes = want;
    }
    const tbl = this.#tableOff;
    const m = this.#mem.i32;
    m.set(n * TASK_INTS === prog.length ? prog : prog.subarray(0, n * TASK_INTS), tbl >>> 2);
    const k = this.#k;
    const pool = th.pool;
    const ctl = pool.control;
    const deadline = performance.now() + pool.watchdogMs;
    const canWait = callerCanWait();
    const alive = () => pool.alive;
    const base = tbl >>> 2;
    try {
      pool.run(
        th.mem,
        th.n,
        OP_PROGRAM,
        [tbl, n, sp, stride],
        (chunk) => {
          const s = sp; // part 0's scratch
          return runTask(k, ctl, m, base + chunk * TASK_INTS, s, deadline, canWait, alive) ? 0 : -1;
        },
        n,
        (chunk) => m[base + chunk * TASK_INTS + 2],
      );
    } catch (e) {
      if (e instanceof BackendError) throw e;
      fail(op, String(e));
    }
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
  if (threads <= 1 && !(sharedOk && opts.sharedMemory === true)) {
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
