/**
 * The WebGPU backend: weights and KV caches live in GPU buffers, ops run as
 * WGSL compute kernels on a device owned by a worker thread, and the
 * synchronous `Backend` contract is kept by blocking on the worker
 * (`Atomics.wait`) for each op that returns data (see protocol.ts).
 *
 * What runs where (see README.md):
 * - GPU: `matmul` and `getRows` for F32, F16, Q8_0, Q4_0; `attention` over the
 *   GPU KV cache; `rmsnorm`, `rope`, `swiglu` when not listed in `cpuOps`.
 * - CPU: activation conversion before upload (core's `quantizeActivation`,
 *   llama.cpp's x86 rule, bit-exact), RoPE cos/sin tables, K/V/Q rounding to
 *   fp16; the ops in `cpuOps` (reference numerics); and, with `fallback`
 *   (default on), `matmul`/`getRows` of every other traits-table format, run
 *   by an internal {@linkcode RefBackend} on a CPU mirror of the slot, made on
 *   first use and kept in sync by later writes.
 *
 * @example
 * ```ts ignore
 * import { createWebGpuBackend } from "./backend.ts";
 * const be = await createWebGpuBackend();
 * if (be) {
 *   console.log(be.device.description, be.placement("matmul", 8)); // e.g. "llvmpipe …" "gpu"
 *   be.dispose();
 * }
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
import { checkMatmul, RefBackend, ropeCache } from "../core/backend/ref_backend.ts";
import { BackendError } from "../core/errors.ts";
import { F16_TO_F32, f32ToF16 } from "../core/tensor/f16.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { quantizeActivation, rowBytes, WEIGHT_TYPES } from "../core/tensor/traits.ts";
import { type BridgeOptions, DeviceBridge } from "./bridge.ts";
import { type DeviceInfo, type MatmulJob, padHalves, type Region } from "./protocol.ts";
import { ACT_Q8_WORDS_PER_BLOCK, GPU_MATMUL_TYPES } from "./wgsl/matmul.ts";

/** Weight formats with WGSL kernels (matmul and getRows). */
export const WEBGPU_FORMATS: readonly GgmlType[] = GPU_MATMUL_TYPES;

/** Elementwise/row ops that may be placed on the CPU. */
export type HostOp = "rmsnorm" | "rope" | "swiglu";

/**
 * Default `cpuOps`: under the synchronous contract each GPU op costs one
 * readback (≥ ~11 ms in Deno 2.9, whose `mapAsync` polls every 10 ms), while
 * these ops take microseconds on the CPU with reference numerics.
 */
export const DEFAULT_CPU_OPS: readonly HostOp[] = ["rmsnorm", "rope", "swiglu"];

/** Options of {@linkcode createWebGpuBackend}. */
export interface WebGpuBackendOptions extends BridgeOptions {
  /** Ops to run on the CPU instead of the GPU (default {@link DEFAULT_CPU_OPS}; `[]` = all on the GPU). */
  readonly cpuOps?: readonly HostOp[];
  /**
   * Run `matmul`/`getRows` of formats without a WGSL kernel (K-quants, BF16,
   * Q4_1, Q5_0, Q5_1) on the CPU over a mirror of the slot (default true).
   * When false, `supportsOp` answers false for them and the ops throw
   * `BackendError("unsupported_type")`, so a model loader fails early.
   */
  readonly fallback?: boolean;
}

/** Where an op runs. */
export type Placement = "gpu" | "cpu";

/** One job of {@linkcode WebGpuBackend.matmulBatch}: `out = w·x` over `nTokens` rows. */
export interface MatmulCall {
  /** Weights. */
  readonly w: WeightView;
  /** Input rows (`nTokens × w.cols`). */
  readonly x: Float32Array;
  /** Rows of `x`. */
  readonly nTokens: number;
  /** Output (`nTokens × w.rows`). */
  readonly out: Float32Array;
}

/** Device round-trip counters (see {@linkcode WebGpuBackend.stats}). */
export interface WebGpuStats {
  /** Blocking calls to the device worker, by request kind. */
  readonly calls: Readonly<Record<string, number>>;
  /** Milliseconds spent blocked in those calls. */
  readonly blockedMs: number;
}

interface SlotEntry {
  readonly bytes: number;
  /** CPU copy in the internal reference backend (fallback formats), made on first use. */
  mirror: Slot | null;
}

/** Flush queued slot writes after this many bytes (bounds memory held by posted copies). */
const WRITE_FLUSH_BYTES = 256 << 20;

/** Compute backend over WebGPU. */
export class WebGpuBackend implements Backend {
  /** Registry name. */
  readonly name: string = "webgpu";
  /** Capabilities: every traits-table weight format when `fallback` is on. */
  readonly caps: BackendCapabilities;
  /** The adapter the device runs on. */
  readonly device: DeviceInfo;
  readonly #bridge: DeviceBridge;
  readonly #cpu = new RefBackend();
  readonly #cpuOps: ReadonlySet<HostOp>;
  readonly #fallback: boolean;
  readonly #slots = new Map<number, SlotEntry>();
  readonly #caches = new Map<number, KvCacheSpec>();
  #nextId = 1;
  #q8 = new Uint8Array(0);
  #pendingWrite = 0;
  #disposed = false;
  #calls: Record<string, number> = {};
  #blockedMs = 0;

  /** Use {@linkcode createWebGpuBackend}. */
  constructor(bridge: DeviceBridge, opts: WebGpuBackendOptions = {}) {
    this.#bridge = bridge;
    this.device = bridge.info;
    this.#cpuOps = new Set(opts.cpuOps ?? DEFAULT_CPU_OPS);
    this.#fallback = opts.fallback ?? true;
    this.caps = {
      formats: this.#fallback ? WEIGHT_TYPES : WEBGPU_FORMATS,
      maxSlotBytes: Math.min(bridge.info.maxBufferSize, 2 ** 31 - 1),
    };
  }

  /**
   * Whether `op` works here (for weight type `type`). With `fallback`, every
   * traits-table weight format is supported; {@link placement} says where it runs.
   */
  supportsOp(op: OpName, type?: GgmlType): boolean {
    if ((op === "matmul" || op === "getRows") && type !== undefined) {
      return WEBGPU_FORMATS.includes(type) || (this.#fallback && WEIGHT_TYPES.includes(type));
    }
    return true;
  }

  /** Where `op` (with weight type `type`) runs, or null when unsupported. */
  placement(op: OpName, type?: GgmlType): Placement | null {
    if (!this.supportsOp(op, type)) return null;
    if (op === "matmul" || op === "getRows") {
      return type === undefined || WEBGPU_FORMATS.includes(type) ? "gpu" : "cpu";
    }
    return this.#cpuOps.has(op as HostOp) ? "cpu" : "gpu";
  }

  // ------------------------------------------------------------------ slots

  /** Allocate a zeroed GPU buffer slot (a blocking call: the device reports OOM). */
  allocSlot(bytes: number): Slot {
    this.#live();
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > this.caps.maxSlotBytes) {
      throw new BackendError(
        "bad_size",
        `Cannot allocate slot: ${bytes} bytes is outside [0, ${this.caps.maxSlotBytes}]`,
      );
    }
    const id = this.#nextId++;
    this.#call({ op: "alloc", slot: id, bytes });
    this.#slots.set(id, { bytes, mirror: null });
    return { id, bytes };
  }

  /** Copy bytes into a slot (posted to the device; ordered before every later op). */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void {
    const e = this.#slot(slot);
    if (!(offset >= 0) || offset + data.byteLength > e.bytes) {
      throw new BackendError(
        "out_of_range",
        `Cannot write slot ${slot.id}: [${offset}, ${
          offset + data.byteLength
        }) exceeds ${e.bytes} bytes`,
      );
    }
    if (e.mirror) this.#cpu.writeSlot(e.mirror, offset, data);
    if (data.byteLength === 0) return;
    const copy = data.slice();
    this.#bridge.post({ k: "write", slot: slot.id, offset, data: copy }, [copy.buffer]);
    this.#pendingWrite += data.byteLength;
    if (this.#pendingWrite > WRITE_FLUSH_BYTES) this.#call({ op: "sync" });
  }

  /** Release a slot (and its CPU mirror). */
  freeSlot(slot: Slot): void {
    const e = this.#slot(slot);
    if (e.mirror) this.#cpu.freeSlot(e.mirror);
    this.#slots.delete(slot.id);
    this.#bridge.post({ k: "free", slot: slot.id });
  }

  /** Read `n` bytes of a slot back from the device (blocking). */
  readSlot(slot: Slot, offset: number, n: number): Uint8Array {
    const e = this.#slot(slot);
    if (!(offset >= 0 && n >= 0) || offset + n > e.bytes) {
      throw new BackendError(
        "out_of_range",
        `Cannot read slot ${slot.id}: [${offset}, ${offset + n}) exceeds ${e.bytes} bytes`,
      );
    }
    const b = this.#bridge;
    b.reset();
    const out = b.reserve(n);
    if (n > 0) this.#call({ op: "read", slot: slot.id, offset, out });
    return b.bytes(out).slice();
  }

  #slot(slot: Slot): SlotEntry {
    this.#live();
    const e = this.#slots.get(slot.id);
    if (!e) {
      throw new BackendError(
        "bad_slot",
        `Cannot use slot ${slot.id}: it was freed or never allocated`,
      );
    }
    return e;
  }

  /** The CPU mirror of a slot, made on first use from the device copy. */
  #mirror(slot: Slot): Slot {
    const e = this.#slot(slot);
    if (!e.mirror) {
      const m = this.#cpu.allocSlot(e.bytes);
      this.#cpu.writeSlot(m, 0, this.readSlot(slot, 0, e.bytes));
      e.mirror = m;
    }
    return e.mirror;
  }

  #unsupported(op: string, type: GgmlType): BackendError {
    return new BackendError(
      "unsupported_type",
      `Cannot ${op}: ${ggmlTypeName(type)} has no WebGPU kernel and the CPU fallback is off ` +
        `(WebGPU formats: ${WEBGPU_FORMATS.map(ggmlTypeName).join(", ")})`,
      { type },
    );
  }

  // ------------------------------------------------------------------ matmul

  /** `out = W·x` per token, activations converted like llama.cpp's x86 CPU path. */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void {
    this.matmulBatch([{ w, x, nTokens, out }]);
  }

  /**
   * Several matmuls over the same input in one device round trip (e.g. Q/K/V
   * or gate/up): `outs[i] = ws[i]·x`. Not part of the `Backend` contract.
   */
  matmulMany(
    ws: readonly WeightView[],
    x: Float32Array,
    nTokens: number,
    outs: readonly Float32Array[],
  ): void {
    if (ws.length !== outs.length) {
      throw new BackendError("bad_shape", "Cannot matmul: one output per weight is needed");
    }
    this.matmulBatch(ws.map((w, i) => ({ w, x, nTokens, out: outs[i] })));
  }

  /**
   * Independent matmuls in one device round trip (one submission, one
   * readback); results equal one `matmul` per job, bit for bit. Jobs of
   * fallback formats run on the CPU first. Not part of the `Backend` contract
   * (see README: proposed as the optional `Backend.matmulBatch`).
   */
  matmulBatch(batch: readonly MatmulCall[]): void {
    this.#live();
    const gpu: MatmulCall[] = [];
    for (const c of batch) {
      checkMatmul(c.w, c.x.length, c.nTokens, c.out.length);
      this.#slot(c.w.slot);
      if (WEBGPU_FORMATS.includes(c.w.type)) {
        if (c.nTokens > 0) gpu.push(c);
      } else if (this.#fallback) {
        this.#cpu.matmul({ ...c.w, slot: this.#mirror(c.w.slot) }, c.x, c.nTokens, c.out);
      } else throw this.#unsupported("matmul", c.w.type);
    }
    if (gpu.length === 0) return;
    const b = this.#bridge;
    b.reset();
    const jobs: MatmulJob[] = gpu.map(({ w, nTokens }) => {
      const quant = w.type === GgmlType.Q8_0 || w.type === GgmlType.Q4_0;
      const actStride = quant ? (w.cols / 32) * ACT_Q8_WORDS_PER_BLOCK : w.cols;
      return {
        slot: w.slot.id,
        offset: w.offset,
        type: w.type,
        rows: w.rows,
        cols: w.cols,
        nTok: nTokens,
        act: b.reserve(nTokens * actStride * 4),
        actStride,
        out: b.reserve(nTokens * w.rows * 4),
      };
    });
    // fill after every reserve (a growing shared buffer invalidates earlier views);
    // jobs with the same input and activation layout share one conversion
    const filled = new Map<Float32Array, Map<string, Region>>();
    jobs.forEach((j, k) => {
      const { x, nTokens } = gpu[k];
      const layout = `${j.type === GgmlType.Q4_0 ? GgmlType.Q8_0 : j.type}:${j.cols}:${nTokens}`;
      let byX = filled.get(x);
      if (!byX) filled.set(x, byX = new Map());
      const same = byX.get(layout);
      if (same) b.bytes(j.act).set(b.bytes(same));
      else {
        this.#fillAct(j, x, nTokens);
        byX.set(layout, j.act);
      }
    });
    this.#call({ op: "matmul", jobs });
    jobs.forEach((j, k) => gpu[k].out.set(b.f32(j.out).subarray(0, j.nTok * j.rows)));
  }

  /** Write the activations of `j` in the kernel layout (wgsl/matmul.ts). */
  #fillAct(j: MatmulJob, x: Float32Array, nTokens: number): void {
    const b = this.#bridge;
    const cols = j.cols;
    const dst = b.f32(j.act);
    if (j.type === GgmlType.F32) {
      dst.set(x.subarray(0, nTokens * cols));
      return;
    }
    if (j.type === GgmlType.F16) {
      for (let i = 0; i < nTokens * cols; i++) dst[i] = F16_TO_F32[f32ToF16(x[i])];
      return;
    }
    // Q8_0 (for Q8_0 and Q4_0 weights): llama.cpp's x86 rule, then repacked to words
    const nb = cols / 32;
    const qb = nb * 34;
    if (this.#q8.length < qb) this.#q8 = new Uint8Array(qb);
    const q = this.#q8;
    const bytes = b.bytes(j.act);
    for (let t = 0; t < nTokens; t++) {
      quantizeActivation(GgmlType.Q8_0, x, t * cols, cols, q, 0);
      const w0 = t * nb * ACT_Q8_WORDS_PER_BLOCK;
      for (let k = 0; k < nb; k++) {
        const s = k * 34, w = w0 + k * ACT_Q8_WORDS_PER_BLOCK;
        dst[w] = F16_TO_F32[q[s] | (q[s + 1] << 8)];
        bytes.set(q.subarray(s + 2, s + 34), (w + 1) * 4);
      }
    }
  }

  /** Dequantize embedding rows (exact). */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void {
    this.#live();
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < w.rows)) {
        throw new BackendError(
          "bad_token",
          `Cannot embed token ${id}: vocabulary has ${w.rows} rows`,
        );
      }
    }
    const rb = rowBytes(w.type, w.cols);
    if (w.offset + w.rows * rb > this.#slot(w.slot).bytes) {
      throw new BackendError("bad_view", `Cannot get rows: weight view exceeds slot ${w.slot.id}`);
    }
    if (out.length < ids.length * w.cols) {
      throw new BackendError(
        "bad_shape",
        `Cannot get rows: need ${ids.length * w.cols} floats, got ${out.length}`,
      );
    }
    if (!WEBGPU_FORMATS.includes(w.type)) {
      if (!this.#fallback) throw this.#unsupported("getRows", w.type);
      this.#cpu.getRows({ ...w, slot: this.#mirror(w.slot) }, ids, out);
      return;
    }
    if (ids.length === 0 || w.cols === 0) return;
    const b = this.#bridge;
    b.reset();
    const r = b.reserve(ids.length * w.cols * 4);
    this.#call({
      op: "getRows",
      slot: w.slot.id,
      offset: w.offset,
      type: w.type,
      cols: w.cols,
      rowBytes: rb,
      ids: Array.from(ids),
      out: r,
    });
    out.set(b.f32(r));
  }

  // ------------------------------------------------------------------ row ops

  /** RMSNorm (GPU unless in `cpuOps`). */
  rmsnorm(
    x: Float32Array,
    n: number,
    eps: number,
    weight: Float32Array | null,
    out: Float32Array,
  ): void {
    this.#live();
    if (this.#cpuOps.has("rmsnorm") || x.length === 0) {
      this.#cpu.rmsnorm(x, n, eps, weight, out);
      return;
    }
    const b = this.#bridge;
    b.reset();
    const rx = b.reserve(x.length * 4);
    const rw = weight ? b.reserve(n * 4) : null;
    const ro = b.reserve(x.length * 4);
    b.f32(rx).set(x);
    if (rw) b.f32(rw).set(weight!.subarray(0, n));
    this.#call({ op: "rmsnorm", x: rx, n, eps, w: rw, out: ro });
    out.set(b.f32(ro));
  }

  /** RoPE in place (GPU unless in `cpuOps`; cos/sin tables always on the CPU). */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    p: RopeParams,
  ): void {
    this.#live();
    if (this.#cpuOps.has("rope") || nTokens === 0 || p.nRot === 0) {
      this.#cpu.rope(x, nTokens, nHeads, headDim, positions, p);
      return;
    }
    const b = this.#bridge;
    b.reset();
    const len = nTokens * nHeads * headDim;
    const rx = b.reserve(len * 4);
    const rt = b.reserve(nTokens * p.nRot * 4);
    b.f32(rx).set(x.subarray(0, len));
    const table = b.f32(rt);
    const half = p.nRot / 2;
    for (let t = 0; t < nTokens; t++) {
      const o = t * p.nRot;
      ropeCache(positions[t], p, table.subarray(o, o + half), table.subarray(o + half, o + p.nRot));
    }
    this.#call({
      op: "rope",
      x: rx,
      nTok: nTokens,
      nHeads,
      headDim,
      nRot: p.nRot,
      mode: p.mode,
      table: rt,
    });
    x.set(b.f32(rx));
  }

  /** `out = silu(gate)·up` (GPU unless in `cpuOps`). */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array, rowLen = out.length): void {
    this.#live();
    if (this.#cpuOps.has("swiglu") || out.length === 0) {
      this.#cpu.swiglu(gate, up, out, rowLen);
      return;
    }
    const n = out.length;
    const b = this.#bridge;
    b.reset();
    const rg = b.reserve(n * 4), ru = b.reserve(n * 4), ro = b.reserve(n * 4);
    b.f32(rg).set(gate.subarray(0, n));
    b.f32(ru).set(up.subarray(0, n));
    this.#call({ op: "swiglu", g: rg, u: ru, rowLen, out: ro });
    out.set(b.f32(ro));
  }

  // ------------------------------------------------------------------ KV + attention

  /** A KV cache in GPU buffers (fp16, one buffer per layer). */
  createKvCache(spec: KvCacheSpec): KvCache {
    this.#live();
    const id = this.#nextId++;
    this.#call({ op: "kv", cache: id, spec });
    this.#caches.set(id, spec);
    return { id, spec };
  }

  /** Free a KV cache. */
  freeKvCache(cache: KvCache): void {
    this.#live();
    if (this.#caches.delete(cache.id)) this.#bridge.post({ k: "freeKv", cache: cache.id });
  }

  /** Store K/V (rounded to f16 on the CPU) and attend on the GPU. */
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
    const spec = this.#caches.get(cache.id);
    if (!spec) throw new BackendError("bad_cache", `Cannot attend: KV cache ${cache.id} was freed`);
    if (startPos < 0 || startPos + nTokens > spec.nCtx) {
      throw new BackendError(
        "context_full",
        `Cannot attend: positions ${startPos}..${
          startPos + nTokens - 1
        } exceed the context of ${spec.nCtx}`,
        { startPos, nTokens, nCtx: spec.nCtx },
      );
    }
    if (
      !(layer >= 0 && layer < spec.layers) || p.nKvHeads !== spec.nKvHeads ||
      p.headDimK !== spec.headDimK || p.headDimV !== spec.headDimV ||
      p.nHeads % p.nKvHeads !== 0
    ) {
      throw new BackendError(
        "bad_shape",
        `Cannot attend: layer ${layer} / heads ${p.nHeads}:${p.nKvHeads} / dims ${p.headDimK},${p.headDimV} do not fit the cache`,
      );
    }
    if (nTokens === 0) return;
    const kRow = p.nKvHeads * p.headDimK, vRow = p.nKvHeads * p.headDimV;
    const kPad = padHalves(kRow), vPad = padHalves(vRow);
    const qLen = nTokens * p.nHeads * p.headDimK, oLen = nTokens * p.nHeads * p.headDimV;
    const b = this.#bridge;
    b.reset();
    const rq = b.reserve(qLen * 4);
    const rk = b.reserve(nTokens * kPad * 2);
    const rv = b.reserve(nTokens * vPad * 2);
    const ro = b.reserve(oLen * 4);
    const qd = b.f32(rq);
    for (let i = 0; i < qLen; i++) qd[i] = F16_TO_F32[f32ToF16(q[i])];
    const kd = new Uint16Array(b.bytes(rk).buffer, rk.off, nTokens * kPad);
    const vd = new Uint16Array(b.bytes(rv).buffer, rv.off, nTokens * vPad);
    for (let t = 0; t < nTokens; t++) {
      for (let i = 0; i < kRow; i++) kd[t * kPad + i] = f32ToF16(k[t * kRow + i]);
      for (let i = 0; i < vRow; i++) vd[t * vPad + i] = f32ToF16(v[t * vRow + i]);
      if (kPad > kRow) kd[t * kPad + kRow] = 0;
      if (vPad > vRow) vd[t * vPad + vRow] = 0;
    }
    this.#call({
      op: "attention",
      cache: cache.id,
      layer,
      startPos,
      nTok: nTokens,
      q: rq,
      k: rk,
      v: rv,
      p: { ...p, scale: Math.fround(p.scale) },
      out: ro,
    });
    out.set(b.f32(ro).subarray(0, oLen));
  }

  // ------------------------------------------------------------------ lifetime

  /** Bytes held: slots and KV caches on the device plus CPU mirrors (device scratch excluded). */
  memoryBytes(): number {
    let n = this.#cpu.memoryBytes();
    for (const e of this.#slots.values()) n += Math.max(4, Math.ceil(e.bytes / 4) * 4);
    for (const s of this.#caches.values()) {
      const kb = s.nCtx * padHalves(s.nKvHeads * s.headDimK) * 2;
      n += s.layers * (Math.ceil(kb / 256) * 256 + s.nCtx * padHalves(s.nKvHeads * s.headDimV) * 2);
    }
    return n;
  }

  /** Wait until the device has finished everything posted so far (surfaces deferred errors). */
  sync(): void {
    this.#live();
    this.#call({ op: "sync" });
  }

  /** Stop the device worker and drop every slot and cache. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#slots.clear();
    this.#caches.clear();
    this.#cpu.dispose();
    this.#bridge.close();
  }

  #live(): void {
    if (this.#disposed) {
      throw new BackendError("disposed", "Cannot use the WebGPU backend: it was disposed");
    }
  }

  #call(req: Parameters<DeviceBridge["call"]>[0]): void {
    const t = performance.now();
    try {
      this.#bridge.call(req);
    } finally {
      this.#calls[req.op] = (this.#calls[req.op] ?? 0) + 1;
      this.#blockedMs += performance.now() - t;
    }
    this.#pendingWrite = 0;
  }

  /** Blocking device calls so far (each costs at least one readback when it returns data). */
  stats(): WebGpuStats {
    return { calls: { ...this.#calls }, blockedMs: this.#blockedMs };
  }
}

/**
 * Create the WebGPU backend, or null when this runtime has no `navigator.gpu`
 * or no adapter. Throws `BackendError("unavailable")` when the device worker
 * cannot start (e.g. no read permission for its module).
 */
export async function createWebGpuBackend(
  opts: WebGpuBackendOptions = {},
): Promise<WebGpuBackend | null> {
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  if (!nav?.gpu) return null;
  const bridge = await DeviceBridge.open(opts);
  return bridge ? new WebGpuBackend(bridge, opts) : null;
}
