/**
 * The WASM SIMD backend: moe-edge's portable engine (one WASM thread, as on
 * edge functions).
 *
 * Weights, KV caches and scratch live in the kernel instance's linear
 * memory, carved by a {@linkcode SlotArena} (best fit + coalescing, bounded
 * growth). Activations cross the boundary as `Float32Array`s and are copied
 * into one reused scratch region per call; typed-array views over linear
 * memory are re-acquired only when the memory grows.
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
  WeightView,
} from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { ARENA_ALIGN, SlotArena } from "./arena.ts";
import { instantiateKernels, type KernelExports } from "./pkg/moe_edge_kernels.ts";
import { RopeTable } from "./rope_table.ts";

/** Weight types the WASM kernels run. */
export const WASM_FORMATS: readonly GgmlType[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
];

/** Options of {@linkcode createWasmBackend}. */
export interface WasmBackendOptions {
  /** Cap on linear memory in bytes (default 4 GiB, the wasm32 limit). */
  readonly maxMemoryBytes?: number;
  /** Run the scalar twins instead of the SIMD kernels (testing/diagnosis). */
  readonly scalar?: boolean;
}

interface KvEntry {
  readonly cache: KvCache;
  readonly off: number;
  readonly layerBytes: number;
  readonly kBytes: number;
}

const F32_OPS: ReadonlySet<OpName> = new Set<OpName>(["rmsnorm", "rope", "attention", "swiglu"]);

/** Compute backend over the WASM SIMD kernels. */
export class WasmBackend implements Backend {
  /** Registry name. */
  readonly name: string = "wasm";
  /** Capabilities. */
  readonly caps: BackendCapabilities;

  readonly #k: KernelExports;
  readonly #arena: SlotArena;
  readonly #scalar: boolean;
  readonly #slots = new Map<number, { off: number; bytes: number }>();
  readonly #caches = new Map<number, KvEntry>();
  #nextId = 1;
  #gen = -1;
  #u8: Uint8Array = new Uint8Array(0);
  #f32: Float32Array = new Float32Array(0);
  #i32: Int32Array = new Int32Array(0);
  #scratchOff = 0;
  #scratchBytes = 0;
  #rope: RopeTable | null = null;
  #disposed = false;

  /** Use {@linkcode createWasmBackend}. */
  constructor(kernels: KernelExports, opts: WasmBackendOptions = {}) {
    this.#k = kernels;
    this.#scalar = opts.scalar ?? false;
    this.#arena = new SlotArena(
      kernels.memory,
      kernels.heap_base(),
      opts.maxMemoryBytes ?? 4 * 1024 ** 3,
    );
    this.caps = { formats: WASM_FORMATS, maxSlotBytes: this.#arena.maxAllocBytes };
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
  allocSlot(bytes: number): Slot {
    this.#live();
    const off = this.#arena.alloc(bytes);
    const id = this.#nextId++;
    this.#slots.set(id, { off, bytes });
    return { id, bytes };
  }

  /** Copy `data` into `slot` at byte `offset`. */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void {
    const s = this.#slot(slot);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > s.bytes) {
      throw new BackendError(
        "out_of_range",
        `Cannot write slot ${slot.id}: range [${offset}, ${
          offset + data.length
        }) exceeds its ${s.bytes} bytes`,
        { slot: slot.id, offset, length: data.length, bytes: s.bytes },
      );
    }
    this.#views();
    this.#u8.set(data, s.off + offset);
  }

  /** Release a slot. */
  freeSlot(slot: Slot): void {
    const s = this.#slot(slot);
    this.#arena.free(s.off);
    this.#slots.delete(slot.id);
  }

  /** Linear-memory address of a slot (for fused callers and tests). */
  slotAddress(slot: Slot): number {
    return this.#slot(slot).off;
  }

  /** Arena statistics (fragmentation, usage). */
  arenaStats(): ReturnType<SlotArena["stats"]> {
    return this.#arena.stats();
  }

  // ------------------------------------------------------------------ ops

  /** `out[t*rows + r] = Σ_c W[r,c]·x[t*cols + c]`, activations quantized to the vec_dot_type. */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void {
    const wp = this.#weight(w, "matmul");
    const { rows, cols } = w;
    this.#need(
      x.length >= nTokens * cols,
      "matmul",
      `x has ${x.length} floats, need ${nTokens}×${cols}`,
    );
    this.#need(
      out.length >= nTokens * rows,
      "matmul",
      `out has ${out.length} floats, need ${nTokens}×${rows}`,
    );
    if (nTokens === 0 || rows === 0) return;
    const xb = nTokens * cols * 4;
    const ab = this.#k.matmul_scratch_bytes(w.type, cols, nTokens);
    const ob = nTokens * rows * 4;
    const [xp, ap, op] = this.#scratch(xb, ab, ob);
    this.#f32.set(x.subarray(0, nTokens * cols), xp >>> 2);
    const f = this.#scalar ? this.#k.matmul_scalar : this.#k.matmul;
    const rc = f(w.type, wp, rows, cols, xp, nTokens, op, ap);
    if (rc !== 0) this.#fail("matmul", `kernel rejected type ${ggmlTypeName(w.type)} cols ${cols}`);
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + nTokens * rows));
  }

  /** Dequantize rows `ids[i]` of `w` into `out[i*cols ..]`. */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void {
    const wp = this.#weight(w, "getRows");
    const n = ids.length;
    this.#need(
      out.length >= n * w.cols,
      "getRows",
      `out has ${out.length} floats, need ${n}×${w.cols}`,
    );
    for (let i = 0; i < n; i++) {
      if (!(ids[i] >= 0 && ids[i] < w.rows)) {
        this.#fail("getRows", `row id ${ids[i]} at ${i} outside [0, ${w.rows})`);
      }
    }
    if (n === 0) return;
    const [ip, op] = this.#scratch(n * 4, n * w.cols * 4);
    this.#i32.set(ids, ip >>> 2);
    if (this.#k.get_rows(w.type, wp, w.cols, ip, n, op) !== 0) {
      this.#fail("getRows", "kernel rejected the type");
    }
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + n * w.cols));
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
    this.#need(
      n > 0 && x.length % n === 0,
      "rmsnorm",
      `x length ${x.length} is not a multiple of n=${n}`,
    );
    this.#need(out.length >= x.length, "rmsnorm", `out has ${out.length} floats, need ${x.length}`);
    this.#need(
      weight === null || weight.length >= n,
      "rmsnorm",
      `weight has ${weight?.length} floats, need ${n}`,
    );
    const rows = x.length / n;
    if (rows === 0) return;
    const [xp, wp, op] = this.#scratch(x.length * 4, weight ? n * 4 : 0, x.length * 4);
    this.#f32.set(x, xp >>> 2);
    if (weight) this.#f32.set(weight.subarray(0, n), wp >>> 2);
    const f = this.#scalar ? this.#k.rmsnorm_scalar : this.#k.rmsnorm;
    f(xp, n, rows, eps, weight ? wp : 0, op);
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + x.length));
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
    const len = nTokens * nHeads * headDim;
    this.#need(
      x.length >= len,
      "rope",
      `x has ${x.length} floats, need ${nTokens}×${nHeads}×${headDim}`,
    );
    this.#need(
      positions.length >= nTokens,
      "rope",
      `${positions.length} positions for ${nTokens} tokens`,
    );
    this.#need(
      p.nRot > 0 && p.nRot % 2 === 0 && p.nRot <= headDim,
      "rope",
      `nRot ${p.nRot} must be even and in (0, headDim=${headDim}]`,
    );
    this.#need(
      p.mode === 0 || p.mode === 2,
      "rope",
      `mode ${p.mode} is neither NORM (0) nor NEOX (2)`,
    );
    if (len === 0) return;
    if (this.#rope === null || !this.#rope.matches(p)) this.#rope = new RopeTable(p);
    const [xp, cp] = this.#scratch(len * 4, nTokens * p.nRot * 4);
    for (let t = 0; t < nTokens; t++) {
      const pos = positions[t];
      this.#need(Number.isInteger(pos) && pos >= 0, "rope", `position ${pos} at ${t} is negative`);
      this.#rope.write(pos, this.#f32, (cp >>> 2) + t * p.nRot);
    }
    this.#f32.set(x.subarray(0, len), xp >>> 2);
    const f = this.#scalar ? this.#k.rope_scalar : this.#k.rope;
    f(xp, nTokens, nHeads, headDim, p.nRot, p.mode, cp);
    x.set(this.#f32.subarray(xp >>> 2, (xp >>> 2) + len));
  }

  /** `out[i] = silu(gate[i])·up[i]`. */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array): void {
    this.#live();
    const n = out.length;
    this.#need(gate.length >= n && up.length >= n, "swiglu", `inputs shorter than out (${n})`);
    if (n === 0) return;
    const [gp, up_, op] = this.#scratch(n * 4, n * 4, n * 4);
    this.#f32.set(gate.subarray(0, n), gp >>> 2);
    this.#f32.set(up.subarray(0, n), up_ >>> 2);
    (this.#scalar ? this.#k.swiglu_scalar : this.#k.swiglu)(gp, up_, op, n);
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + n));
  }

  /**
   * Fused SwiGLU expert FFN (not part of the `Backend` contract yet):
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
    const gp = this.#weight(gate, "matmul");
    const upp = this.#weight(up, "matmul");
    const dp = this.#weight(down, "matmul");
    const nEmbd = gate.cols, nFf = gate.rows;
    this.#need(
      up.rows === nFf && up.cols === nEmbd && down.rows === nEmbd && down.cols === nFf,
      "ffnSwiglu",
      `shapes gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols}, down ${down.rows}×${down.cols} do not chain`,
    );
    this.#need(
      x.length >= nTokens * nEmbd,
      "ffnSwiglu",
      `x has ${x.length} floats, need ${nTokens}×${nEmbd}`,
    );
    this.#need(
      out.length >= nTokens * nEmbd,
      "ffnSwiglu",
      `out has ${out.length} floats, need ${nTokens}×${nEmbd}`,
    );
    if (nTokens === 0) return;
    const sb = this.#k.ffn_swiglu_scratch_bytes(gate.type, up.type, down.type, nEmbd, nFf, nTokens);
    const [xp, op, sp] = this.#scratch(nTokens * nEmbd * 4, nTokens * nEmbd * 4, sb);
    this.#f32.set(x.subarray(0, nTokens * nEmbd), xp >>> 2);
    const f = this.#scalar ? this.#k.ffn_swiglu_scalar : this.#k.ffn_swiglu;
    const rc = f(gate.type, gp, up.type, upp, down.type, dp, nEmbd, nFf, xp, nTokens, op, sp);
    if (rc !== 0) this.#fail("ffnSwiglu", "kernel rejected a weight type or shape");
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + nTokens * nEmbd));
  }

  // ------------------------------------------------------------------ KV cache

  /** Create an f16 KV cache in linear memory (zeroed). */
  createKvCache(spec: KvCacheSpec): KvCache {
    this.#live();
    for (const key of ["layers", "nCtx", "nKvHeads", "headDimK", "headDimV"] as const) {
      const v = spec[key];
      if (!Number.isInteger(v) || v <= 0) {
        throw new BackendError(
          "bad_shape",
          `Cannot create KV cache: ${key} must be a positive integer: received ${v}`,
          {
            [key]: v,
          },
        );
      }
    }
    const kBytes = spec.nCtx * spec.nKvHeads * spec.headDimK * 2;
    const vBytes = spec.nCtx * spec.nKvHeads * spec.headDimV * 2;
    const layerBytes = kBytes + vBytes;
    const off = this.#arena.alloc(layerBytes * spec.layers);
    this.#views();
    this.#u8.fill(0, off, off + layerBytes * spec.layers);
    const cache: KvCache = { id: this.#nextId++, spec: { ...spec } };
    this.#caches.set(cache.id, { cache, off, layerBytes, kBytes });
    return cache;
  }

  /** Free a KV cache. */
  freeKvCache(cache: KvCache): void {
    const e = this.#cache(cache);
    this.#arena.free(e.off);
    this.#caches.delete(cache.id);
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
    const e = this.#cache(cache);
    const s = e.cache.spec;
    const { nHeads, nKvHeads, headDimK, headDimV } = p;
    this.#need(
      Number.isInteger(layer) && layer >= 0 && layer < s.layers,
      "attention",
      `layer ${layer} outside [0, ${s.layers})`,
    );
    this.#need(
      nKvHeads === s.nKvHeads && headDimK === s.headDimK && headDimV === s.headDimV,
      "attention",
      `params (nKv ${nKvHeads}, hdK ${headDimK}, hdV ${headDimV}) do not match the cache`,
    );
    this.#need(
      nHeads > 0 && nHeads % nKvHeads === 0,
      "attention",
      `nHeads ${nHeads} not a multiple of nKvHeads ${nKvHeads}`,
    );
    this.#need(
      Number.isInteger(startPos) && startPos >= 0 && startPos + nTokens <= s.nCtx,
      "attention",
      `positions [${startPos}, ${startPos + nTokens}) exceed nCtx ${s.nCtx}`,
    );
    const qn = nTokens * nHeads * headDimK;
    const kn = nTokens * nKvHeads * headDimK;
    const vn = nTokens * nKvHeads * headDimV;
    const on = nTokens * nHeads * headDimV;
    this.#need(
      q.length >= qn && k.length >= kn && v.length >= vn,
      "attention",
      "q/k/v shorter than their shapes",
    );
    this.#need(out.length >= on, "attention", `out has ${out.length} floats, need ${on}`);
    if (nTokens === 0) return;
    const sb = this.#k.attention_scratch_bytes(s.nCtx, nHeads, nKvHeads, headDimK, headDimV);
    const [qp, kp, vp, op, sp] = this.#scratch(qn * 4, kn * 4, vn * 4, on * 4, sb);
    this.#f32.set(q.subarray(0, qn), qp >>> 2);
    this.#f32.set(k.subarray(0, kn), kp >>> 2);
    this.#f32.set(v.subarray(0, vn), vp >>> 2);
    const kc = e.off + layer * e.layerBytes;
    const vc = kc + e.kBytes;
    const f = this.#scalar ? this.#k.attention_scalar : this.#k.attention;
    const rc = f(
      kc,
      vc,
      s.nCtx,
      startPos,
      nTokens,
      qp,
      kp,
      vp,
      nHeads,
      nKvHeads,
      headDimK,
      headDimV,
      p.scale,
      op,
      sp,
    );
    if (rc !== 0) this.#fail("attention", "kernel rejected the shape");
    out.set(this.#f32.subarray(op >>> 2, (op >>> 2) + on));
  }

  /** Read back the cached K (`which = "k"`) or V rows of a layer as f32 (tests, debugging). */
  readKv(cache: KvCache, layer: number, which: "k" | "v", positions: number): Float32Array {
    const e = this.#cache(cache);
    const s = e.cache.spec;
    const n = positions * s.nKvHeads * (which === "k" ? s.headDimK : s.headDimV);
    const [op] = this.#scratch(n * 4);
    const src = e.off + layer * e.layerBytes + (which === "k" ? 0 : e.kBytes);
    this.#k.f16_to_f32(src, op, n);
    return this.#f32.slice(op >>> 2, (op >>> 2) + n);
  }

  // ------------------------------------------------------------------ lifecycle

  /** Linear memory held, in bytes (slots + caches + scratch + the module's own data/stack). */
  memoryBytes(): number {
    return this.#disposed ? 0 : this.#arena.memoryBytes;
  }

  /** Release everything; the instance and its memory become garbage. */
  dispose(): void {
    this.#disposed = true;
    this.#slots.clear();
    this.#caches.clear();
    this.#u8 = new Uint8Array(0);
    this.#f32 = new Float32Array(0);
    this.#i32 = new Int32Array(0);
  }

  // ------------------------------------------------------------------ internals

  #live(): void {
    if (this.#disposed) {
      throw new BackendError("disposed", "Cannot use wasm backend: it was disposed");
    }
  }

  #views(): void {
    if (this.#gen !== this.#arena.generation || this.#u8.length === 0) {
      const buf = this.#k.memory.buffer;
      this.#u8 = new Uint8Array(buf);
      this.#f32 = new Float32Array(buf);
      this.#i32 = new Int32Array(buf);
      this.#gen = this.#arena.generation;
    }
  }

  /** Carve the reused scratch region into 64-byte-aligned parts; returns their addresses. */
  #scratch(...sizes: number[]): number[] {
    let total = 0;
    for (const s of sizes) total += Math.ceil(s / ARENA_ALIGN) * ARENA_ALIGN;
    if (total > this.#scratchBytes) {
      if (this.#scratchBytes > 0) this.#arena.free(this.#scratchOff);
      const want = Math.max(total, Math.ceil(this.#scratchBytes * 1.5), 1 << 16);
      this.#scratchOff = this.#arena.alloc(want);
      this.#scratchBytes = want;
    }
    this.#views();
    const out: number[] = [];
    let p = this.#scratchOff;
    for (const s of sizes) {
      out.push(p);
      p += Math.ceil(s / ARENA_ALIGN) * ARENA_ALIGN;
    }
    return out;
  }

  #slot(slot: Slot): { off: number; bytes: number } {
    this.#live();
    const s = this.#slots.get(slot.id);
    if (!s) {
      throw new BackendError(
        "bad_slot",
        `Cannot use slot ${slot.id}: it is not live in this backend`,
        { slot: slot.id },
      );
    }
    return s;
  }

  #cache(cache: KvCache): KvEntry {
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

  #weight(w: WeightView, op: OpName): number {
    const s = this.#slot(w.slot);
    if (!WASM_FORMATS.includes(w.type)) {
      throw new BackendError(
        "unsupported_type",
        `Cannot run ${op}: weight type ${
          ggmlTypeName(w.type)
        } is not supported by the wasm backend`,
        {
          op,
          type: w.type,
        },
      );
    }
    const rb = this.#k.weight_row_bytes(w.type, w.cols);
    this.#need(
      Number.isInteger(w.rows) && Number.isInteger(w.cols) && w.rows >= 0 && w.cols > 0 && rb > 0,
      op,
      `cols ${w.cols} is not a whole number of ${ggmlTypeName(w.type)} blocks`,
    );
    this.#need(
      w.offset >= 0 && w.offset + w.rows * rb <= s.bytes,
      op,
      `weight [${w.offset}, ${
        w.offset + w.rows * rb
      }) exceeds slot ${w.slot.id} of ${s.bytes} bytes`,
    );
    return s.off + w.offset;
  }

  #need(ok: boolean, op: string, why: string): asserts ok {
    if (!ok) this.#fail(op, why);
  }

  #fail(op: string, why: string): never {
    throw new BackendError("bad_shape", `Cannot run ${op} on wasm backend: ${why}`, { op });
  }
}

/**
 * Create a WASM backend: instantiates the kernels (the compiled module is
 * cached per isolate) with a fresh linear memory.
 */
export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const k = await instantiateKernels();
  return new WasmBackend(k.exports, opts);
}
