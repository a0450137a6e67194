/**
 * The device side of the WebGPU backend: owns the `GPUDevice`, slot and KV
 * buffers, pipelines and scratch, and runs each op as one command buffer
 * followed by at most one readback. Every method that returns data is async
 * (WebGPU `mapAsync`); the worker (worker.ts) serializes them.
 *
 * Inputs and outputs are typed views the caller provides (in the worker they
 * point into the shared buffer), so no op allocates JS arrays per call.
 *
 * @module
 */

import type { KvCacheSpec } from "../core/backend/backend.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { ATTENTION_WGSL } from "./wgsl/attention.ts";
import { matmulWgsl } from "./wgsl/matmul.ts";
import { getRowsWgsl, PATCH_WGSL, RMSNORM_WGSL, ROPE_WGSL, SWIGLU_WGSL, WG } from "./wgsl/ops.ts";
import { type DeviceInfo, type MatmulJob, padHalves } from "./protocol.ts";

const U = {
  STORAGE: 0x80,
  UNIFORM: 0x40,
  COPY_SRC: 0x04,
  COPY_DST: 0x08,
  MAP_READ: 0x01,
} as const;
const MAP_READ_MODE = 0x1;

/** Bind offsets must be multiples of this (WebGPU `minStorageBufferOffsetAlignment` ≤ 256). */
const ALIGN = 256;
/** Bytes reserved per dispatch in the uniform buffer. */
const PARAM_STRIDE = 256;
/** Max workgroups per grid dimension (WebGPU default limit). */
const MAX_GROUPS = 65535;

function up(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Error raised on the device side; the worker forwards its message. */
export class EngineError extends Error {
  /** Machine-readable code, forwarded as the `BackendError` code. */
  readonly code: string;
  /** @param code machine-readable code @param message human message */
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

interface KvBuffers {
  readonly spec: KvCacheSpec;
  readonly layers: GPUBuffer[];
  readonly kRow: number;
  readonly vRow: number;
  readonly vOff: number;
  readonly kBytes: number;
  readonly vBytes: number;
}

/** Uniform block builder: one 256-byte entry per dispatch. */
class Params {
  #buf = new ArrayBuffer(PARAM_STRIDE * 8);
  #u32 = new Uint32Array(this.#buf);
  #f32 = new Float32Array(this.#buf);
  count = 0;

  reset(): void {
    this.count = 0;
  }

  /** Append one entry; numbers are u32 unless listed in `floats` (by index). */
  push(values: readonly number[], floats: readonly number[] = []): number {
    const at = this.count++ * PARAM_STRIDE;
    if (at + PARAM_STRIDE > this.#buf.byteLength) {
      const b = new ArrayBuffer(this.#buf.byteLength * 2);
      new Uint8Array(b).set(new Uint8Array(this.#buf));
      this.#buf = b;
      this.#u32 = new Uint32Array(b);
      this.#f32 = new Float32Array(b);
    }
    const w = at >>> 2;
    for (let i = 0; i < values.length; i++) {
      if (floats.includes(i)) this.#f32[w + i] = values[i];
      else this.#u32[w + i] = values[i] >>> 0;
    }
    return at;
  }

  bytes(): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.#buf, 0, this.count * PARAM_STRIDE);
  }
}

/** The WebGPU device and everything allocated on it. */
export class GpuEngine {
  /** Adapter and limits. */
  readonly info: DeviceInfo;
  readonly #dev: GPUDevice;
  readonly #slots = new Map<number, GPUBuffer>();
  /** Logical byte size of each slot (its buffer is rounded up to 4). */
  readonly #slotBytes = new Map<number, number>();
  readonly #kv = new Map<number, KvBuffers>();
  readonly #pipes = new Map<string, GPUComputePipeline>();
  readonly #scratch = new Map<string, GPUBuffer>();
  readonly #params = new Params();
  readonly #errors: string[] = [];
  readonly #maxBind: number;
  #lost: string | null = null;

  private constructor(dev: GPUDevice, info: DeviceInfo) {
    this.#dev = dev;
    this.info = info;
    this.#maxBind = info.maxStorageBufferBindingSize;
    dev.addEventListener("uncapturederror", (e) => {
      this.#errors.push((e as GPUUncapturedErrorEvent).error.message);
    });
    dev.lost.then((l) => {
      this.#lost = `device lost (${l.reason}): ${l.message}`;
    });
  }

  /** Open the adapter and a device with the adapter's buffer limits; null when none. */
  static async create(
    powerPreference?: "low-power" | "high-performance",
    maxBindingBytes?: number,
  ): Promise<GpuEngine | null> {
    const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
    if (!gpu) return null;
    const adapter = await gpu.requestAdapter(powerPreference ? { powerPreference } : undefined);
    if (!adapter) return null;
    const L = adapter.limits;
    const dev = await adapter.requestDevice({
      requiredLimits: {
        maxBufferSize: L.maxBufferSize,
        maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
        maxStorageBuffersPerShaderStage: Math.min(8, L.maxStorageBuffersPerShaderStage),
      },
    });
    const ai = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
    return new GpuEngine(dev, {
      description: ai.description ?? "",
      vendor: ai.vendor ?? "",
      architecture: ai.architecture ?? "",
      isFallbackAdapter: Boolean(ai.isFallbackAdapter ?? legacy ?? false),
      maxBufferSize: dev.limits.maxBufferSize,
      maxStorageBufferBindingSize: Math.min(
        dev.limits.maxStorageBufferBindingSize,
        Math.max(ALIGN * 4, maxBindingBytes ?? Infinity),
      ),
    });
  }

  /** Errors the device reported since the last call (validation, OOM, loss); clears them. */
  takeErrors(): string | null {
    if (this.#lost) return this.#lost;
    if (this.#errors.length === 0) return null;
    const m = this.#errors.join("; ");
    this.#errors.length = 0;
    return m;
  }

  // ------------------------------------------------------------------ slots

  /** Create slot `id` (zeroed, size rounded up to 4 bytes); rejects when the device refuses. */
  async allocSlot(id: number, bytes: number): Promise<void> {
    this.#dev.pushErrorScope("out-of-memory");
    this.#dev.pushErrorScope("validation");
    const buf = this.#dev.createBuffer({
      size: Math.max(4, up(bytes, 4)),
      usage: U.STORAGE | U.COPY_DST | U.COPY_SRC,
    });
    const v = await this.#dev.popErrorScope();
    const o = await this.#dev.popErrorScope();
    if (v || o) {
      buf.destroy();
      throw new EngineError(
        "out_of_memory",
        `Cannot allocate slot ${id}: ${bytes} bytes: ${(v ?? o)!.message}`,
      );
    }
    this.#slots.set(id, buf);
    this.#slotBytes.set(id, bytes);
  }

  /** Destroy slot `id`. */
  freeSlot(id: number): void {
    this.#slots.get(id)?.destroy();
    this.#slots.delete(id);
    this.#slotBytes.delete(id);
  }

  #slot(id: number): GPUBuffer {
    const b = this.#slots.get(id);
    if (!b) throw new EngineError("bad_slot", `Cannot use slot ${id}: not allocated on the device`);
    return b;
  }

  /**
   * Write bytes at `offset` of slot `id`. The word-aligned part goes through
   * `queue.writeBuffer`; a partial first/last word (unaligned offset or
   * length) goes through the byte-patch kernel, which keeps the neighbouring
   * bytes. A write that runs to the slot's end may pad its last word with zeros.
   */
  writeSlot(id: number, offset: number, data: Uint8Array): void {
    const buf = this.#slot(id);
    if (data.byteLength === 0) return;
    const end = offset + data.byteLength;
    const a = up(offset, 4);
    // a write that ends at the slot's logical end may zero-pad its last word
    const b = end === this.#slotBytes.get(id) ? Math.max(a, up(end, 4)) : Math.max(a, end & ~3);
    if (b > a) {
      const body = data.subarray(a - offset, Math.min(b, end) - offset);
      this.#writePadded(buf, a, body);
    }
    const patches: [number, number][] = [];
    if (offset < a) patches.push([offset, Math.min(a, end)]);
    if (b < end && b >= a) patches.push([b, end]);
    if (patches.length === 0) return;
    const inBuf = this.#buffer("in", patches.length * ALIGN, U.STORAGE | U.COPY_DST);
    const pipe = this.#pipe("patch", PATCH_WGSL);
    this.#beginParams(patches.length);
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    patches.forEach(([s, e], i) => {
      this.#writePadded(inBuf, i * ALIGN, data.subarray(s - offset, e - offset));
      const w0 = s >>> 2;
      const bindStart = Math.floor((w0 * 4) / ALIGN) * ALIGN;
      const pOff = this.#params.push([s - bindStart, e - s, w0 - bindStart / 4, 1, 1]);
      pass.setBindGroup(
        0,
        this.#bind(pipe, [
          this.#paramRes(pOff),
          { buffer: buf, offset: bindStart, size: w0 * 4 + 4 - bindStart },
          { buffer: inBuf, offset: i * ALIGN, size: 4 },
        ]),
      );
      pass.dispatchWorkgroups(1);
    });
    pass.end();
    this.#flushParams();
    this.#dev.queue.submit([enc.finish()]);
  }

  /** Read `out.byteLength` bytes of slot `id` from `offset`. */
  async readSlot(id: number, offset: number, out: Uint8Array): Promise<void> {
    const buf = this.#slot(id);
    const start = offset & ~3;
    const len = up(offset + out.byteLength, 4) - start;
    const staging = this.#buffer("staging", up(len, 8), U.MAP_READ | U.COPY_DST);
    const enc = this.#dev.createCommandEncoder();
    enc.copyBufferToBuffer(buf, start, staging, 0, len);
    this.#dev.queue.submit([enc.finish()]);
    await staging.mapAsync(MAP_READ_MODE, 0, up(len, 8));
    const src = new Uint8Array(staging.getMappedRange(0, up(len, 8)));
    out.set(src.subarray(offset - start, offset - start + out.byteLength));
    staging.unmap();
  }

  // ------------------------------------------------------------------ KV

  /** Create a KV cache: one buffer per layer, `K` then `V` at a 256-aligned offset. */
  createKv(id: number, spec: KvCacheSpec): void {
    const kRow = padHalves(spec.nKvHeads * spec.headDimK);
    const vRow = padHalves(spec.nKvHeads * spec.headDimV);
    const kBytes = spec.nCtx * kRow * 2, vBytes = spec.nCtx * vRow * 2;
    const vOff = up(kBytes, ALIGN);
    if (Math.max(kBytes, vBytes) > this.#maxBind || vOff + vBytes > this.info.maxBufferSize) {
      throw new EngineError(
        "bad_size",
        `Cannot create KV cache: a layer's K or V (${
          Math.max(kBytes, vBytes)
        } bytes) exceeds the device's storage binding limit ${this.#maxBind}`,
      );
    }
    const layers: GPUBuffer[] = [];
    for (let l = 0; l < spec.layers; l++) {
      layers.push(this.#dev.createBuffer({
        size: Math.max(4, vOff + vBytes),
        usage: U.STORAGE | U.COPY_DST | U.COPY_SRC,
      }));
    }
    this.#kv.set(id, { spec, layers, kRow, vRow, vOff, kBytes, vBytes });
  }

  /** Destroy a KV cache. */
  freeKv(id: number): void {
    for (const b of this.#kv.get(id)?.layers ?? []) b.destroy();
    this.#kv.delete(id);
  }

  // ------------------------------------------------------------------ ops

  /**
   * Run a batch of matmuls (one submission, one readback). `act` holds every
   * job's activations at `job.act.off - base`, `out` receives every job's
   * output at `job.out.off - base` (offsets as in the shared buffer).
   */
  async matmul(
    jobs: readonly MatmulJob[],
    base: number,
    act: Uint8Array,
    out: Uint8Array,
  ): Promise<void> {
    // stage activations: each job's region at a 256-aligned offset of "in"
    const inOffs: number[] = [];
    const outOffs: number[] = [];
    let inBytes = 0, outBytes = 0;
    for (const j of jobs) {
      inOffs.push(inBytes);
      inBytes = up(inBytes + j.act.bytes, ALIGN);
      outOffs.push(outBytes);
      outBytes = up(outBytes + j.nTok * j.rows * 4, ALIGN);
    }
    const inBuf = this.#buffer("in", Math.max(inBytes, 4), U.STORAGE | U.COPY_DST);
    const outBuf = this.#buffer("out", Math.max(outBytes, 4), U.STORAGE | U.COPY_SRC | U.COPY_DST);
    for (let i = 0; i < jobs.length; i++) {
      const a = jobs[i].act;
      this.#writePadded(inBuf, inOffs[i], act.subarray(a.off - base, a.off - base + a.bytes));
    }
    let dispatches = 0;
    for (const j of jobs) {
      const [perRows, perTok] = this.#matmulChunks(j);
      dispatches += Math.ceil(j.rows / perRows) * Math.ceil(j.nTok / perTok);
    }
    this.#beginParams(dispatches);
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < jobs.length; i++) {
      this.#encodeMatmul(pass, jobs[i], inBuf, inOffs[i], outBuf, outOffs[i]);
    }
    pass.end();
    this.#flushParams();
    const staging = this.#buffer("staging", Math.max(outBytes, 8), U.MAP_READ | U.COPY_DST);
    if (outBytes > 0) enc.copyBufferToBuffer(outBuf, 0, staging, 0, outBytes);
    this.#dev.queue.submit([enc.finish()]);
    if (outBytes === 0) return;
    await staging.mapAsync(MAP_READ_MODE, 0, outBytes);
    const src = new Uint8Array(staging.getMappedRange(0, outBytes));
    for (let i = 0; i < jobs.length; i++) {
      const o = jobs[i].out;
      out.set(src.subarray(outOffs[i], outOffs[i] + o.bytes), o.off - base);
    }
    staging.unmap();
  }

  #encodeMatmul(
    pass: GPUComputePassEncoder,
    j: MatmulJob,
    inBuf: GPUBuffer,
    inOff: number,
    outBuf: GPUBuffer,
    outOff: number,
  ): void {
    const w = this.#slot(j.slot);
    const pipe = this.#pipe(`mm${j.type}`, () => matmulWgsl(j.type));
    const rowBytes = rowBytesOf(j.type, j.cols);
    const [perRows, perTok] = this.#matmulChunks(j);
    pass.setPipeline(pipe);
    for (let t0 = 0; t0 < j.nTok; t0 += perTok) {
      const nt = Math.min(perTok, j.nTok - t0);
      // activations and outputs of tokens [t0, t0+nt), bound from a 256-aligned start
      const aStart = inOff + t0 * j.actStride * 4;
      const aBind = Math.floor(aStart / ALIGN) * ALIGN;
      const aSize = aStart - aBind + nt * j.actStride * 4;
      const oStart = outOff + t0 * j.rows * 4;
      const oBind = Math.floor(oStart / ALIGN) * ALIGN;
      const oSize = oStart - oBind + nt * j.rows * 4;
      for (let r0 = 0; r0 < j.rows; r0 += perRows) {
        const rows = Math.min(perRows, j.rows - r0);
        const start = j.offset + r0 * rowBytes;
        const bindStart = Math.floor(start / ALIGN) * ALIGN;
        const bindEnd = Math.min(w.size, up(start + rows * rowBytes, 4));
        const pOff = this.#params.push([
          rows,
          j.cols,
          nt,
          start - bindStart,
          rowBytes,
          j.rows,
          r0,
          j.actStride,
          (aStart - aBind) / 4,
          (oStart - oBind) / 4,
        ]);
        pass.setBindGroup(
          0,
          this.#bind(pipe, [
            this.#paramRes(pOff),
            { buffer: w, offset: bindStart, size: bindEnd - bindStart },
            { buffer: inBuf, offset: aBind, size: up(Math.max(aSize, 4), 4) },
            { buffer: outBuf, offset: oBind, size: Math.max(4, oSize) },
          ]),
        );
        pass.dispatchWorkgroups(Math.ceil(rows / 64), nt);
      }
    }
  }

  /** [rows, tokens] per dispatch so every binding fits the storage binding limit. */
  #matmulChunks(j: MatmulJob): [number, number] {
    const rowBytes = rowBytesOf(j.type, j.cols);
    const room = this.#maxBind - ALIGN;
    const perRows = Math.min(Math.floor(room / Math.max(rowBytes, 1)), MAX_GROUPS * 64);
    const perTok = Math.min(
      Math.floor(room / Math.max(j.rows * 4, j.actStride * 4, 1)),
      MAX_GROUPS,
    );
    if (perRows < 1 || perTok < 1) {
      throw new EngineError(
        "bad_shape",
        `Cannot matmul ${j.rows}x${j.cols} ${ggmlTypeName(j.type)}: one row or one token's ` +
          `activations/outputs exceed the storage binding limit ${this.#maxBind}`,
      );
    }
    return [perRows, perTok];
  }

  /** Dequantize rows `ids` of a matrix into `out` (`ids.length × cols` f32). */
  async getRows(
    slot: number,
    offset: number,
    type: GgmlType,
    cols: number,
    rowBytes: number,
    ids: readonly number[],
    out: Uint8Array,
  ): Promise<void> {
    const w = this.#slot(slot);
    const bytes = ids.length * cols * 4;
    this.#checkBind(Math.max(bytes, rowBytes + ALIGN), "getRows");
    const outBuf = this.#buffer("out", Math.max(bytes, 4), U.STORAGE | U.COPY_SRC | U.COPY_DST);
    const pipe = this.#pipe(`rows${type}`, () => getRowsWgsl(type));
    this.#beginParams(ids.length);
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    const groups = Math.ceil(cols / WG);
    for (let i = 0; i < ids.length; i++) {
      const start = offset + ids[i] * rowBytes;
      const bindStart = Math.floor(start / ALIGN) * ALIGN;
      const bindEnd = Math.min(w.size, up(start + rowBytes, 4));
      const pOff = this.#params.push([start - bindStart, cols, i * cols]);
      pass.setBindGroup(
        0,
        this.#bind(pipe, [
          this.#paramRes(pOff),
          { buffer: w, offset: bindStart, size: bindEnd - bindStart },
          { buffer: outBuf, offset: 0, size: Math.max(4, bytes) },
        ]),
      );
      pass.dispatchWorkgroups(Math.min(groups, MAX_GROUPS), Math.ceil(groups / MAX_GROUPS));
    }
    pass.end();
    this.#flushParams();
    await this.#readOut(enc, outBuf, out.subarray(0, bytes));
  }

  /** RMSNorm rows of `n` (`x` and `out` hold `rows·n` f32; `w` has `n` or is null). */
  async rmsnorm(
    x: Uint8Array,
    n: number,
    eps: number,
    w: Uint8Array | null,
    out: Uint8Array,
  ): Promise<void> {
    const rows = x.byteLength / 4 / n;
    this.#checkBind(x.byteLength, "rmsnorm");
    const wOff = up(x.byteLength, ALIGN);
    const inBuf = this.#buffer("in", wOff + (w ? w.byteLength : 4), U.STORAGE | U.COPY_DST);
    this.#writePadded(inBuf, 0, x);
    if (w) this.#writePadded(inBuf, wOff, w);
    const outBuf = this.#buffer("out", x.byteLength, U.STORAGE | U.COPY_SRC | U.COPY_DST);
    const pipe = this.#pipe("rmsnorm", RMSNORM_WGSL);
    this.#beginParams(1);
    const pOff = this.#params.push([n, rows, eps, w ? 1 : 0], [2]);
    this.#flushParams();
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(
      0,
      this.#bind(pipe, [
        this.#paramRes(pOff),
        { buffer: inBuf, offset: 0, size: x.byteLength },
        { buffer: inBuf, offset: w ? wOff : 0, size: w ? w.byteLength : 4 },
        { buffer: outBuf, offset: 0, size: x.byteLength },
      ]),
    );
    pass.dispatchWorkgroups(Math.min(rows, MAX_GROUPS), Math.ceil(rows / MAX_GROUPS));
    pass.end();
    await this.#readOut(enc, outBuf, out);
  }

  /** Rotate `x` (`nTok × nHeads × headDim` f32) in place with cos/sin `table`. */
  async rope(
    x: Uint8Array,
    nTok: number,
    nHeads: number,
    headDim: number,
    nRot: number,
    mode: number,
    table: Uint8Array,
  ): Promise<void> {
    this.#checkBind(Math.max(x.byteLength, table.byteLength), "rope");
    const inBuf = this.#buffer("in", table.byteLength, U.STORAGE | U.COPY_DST);
    this.#writePadded(inBuf, 0, table);
    const outBuf = this.#buffer("out", x.byteLength, U.STORAGE | U.COPY_SRC | U.COPY_DST);
    this.#writePadded(outBuf, 0, x);
    const pipe = this.#pipe("rope", ROPE_WGSL);
    this.#beginParams(1);
    const pOff = this.#params.push([nTok, nHeads, headDim, nRot, mode]);
    this.#flushParams();
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(
      0,
      this.#bind(pipe, [
        this.#paramRes(pOff),
        { buffer: outBuf, offset: 0, size: x.byteLength },
        { buffer: inBuf, offset: 0, size: table.byteLength },
      ]),
    );
    pass.dispatchWorkgroups(Math.ceil((nHeads * nRot) / 2 / WG), nTok);
    pass.end();
    await this.#readOut(enc, outBuf, x);
  }

  /** `out = silu(g)·u` elementwise. */
  async swiglu(g: Uint8Array, u: Uint8Array, rowLen: number, out: Uint8Array): Promise<void> {
    const len = g.byteLength / 4;
    this.#checkBind(g.byteLength, "swiglu");
    const uOff = up(g.byteLength, ALIGN);
    const inBuf = this.#buffer("in", uOff + u.byteLength, U.STORAGE | U.COPY_DST);
    this.#writePadded(inBuf, 0, g);
    this.#writePadded(inBuf, uOff, u);
    const outBuf = this.#buffer("out", g.byteLength, U.STORAGE | U.COPY_SRC | U.COPY_DST);
    const pipe = this.#pipe("swiglu", SWIGLU_WGSL);
    const groups = Math.ceil(len / WG);
    const nx = Math.min(groups, MAX_GROUPS);
    this.#beginParams(1);
    const pOff = this.#params.push([len, rowLen, nx]);
    this.#flushParams();
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(
      0,
      this.#bind(pipe, [
        this.#paramRes(pOff),
        { buffer: inBuf, offset: 0, size: g.byteLength },
        { buffer: inBuf, offset: uOff, size: u.byteLength },
        { buffer: outBuf, offset: 0, size: g.byteLength },
      ]),
    );
    pass.dispatchWorkgroups(nx, Math.ceil(groups / nx));
    pass.end();
    await this.#readOut(enc, outBuf, out);
  }

  /** Store K/V rows (fp16 bits) at `startPos` of `layer`, then attend. */
  async attention(
    cache: number,
    layer: number,
    startPos: number,
    nTok: number,
    q: Uint8Array,
    k16: Uint8Array,
    v16: Uint8Array,
    p: {
      nHeads: number;
      nKvHeads: number;
      headDimK: number;
      headDimV: number;
      scale: number;
    },
    out: Uint8Array,
  ): Promise<void> {
    const c = this.#kv.get(cache);
    if (!c) throw new EngineError("bad_cache", `Cannot attend: KV cache ${cache} was freed`);
    const buf = c.layers[layer];
    if (!buf) throw new EngineError("bad_layer", `Cannot attend: no layer ${layer}`);
    this.#writePadded(buf, startPos * c.kRow * 2, k16);
    this.#writePadded(buf, c.vOff + startPos * c.vRow * 2, v16);
    const inBuf = this.#buffer("in", q.byteLength, U.STORAGE | U.COPY_DST);
    this.#writePadded(inBuf, 0, q);
    const outBytes = nTok * p.nHeads * p.headDimV * 4;
    const outBuf = this.#buffer("out", Math.max(4, outBytes), U.STORAGE | U.COPY_SRC | U.COPY_DST);
    const nKv = startPos + nTok;
    const rowBytes = p.nHeads * nKv * 4;
    this.#checkBind(Math.max(rowBytes, q.byteLength, outBytes), "attention");
    const perChunk = Math.max(1, Math.min(nTok, Math.floor(this.#maxBind / rowBytes), MAX_GROUPS));
    const sBuf = this.#buffer("scores", perChunk * rowBytes, U.STORAGE);
    const pipe = this.#pipe("attention", ATTENTION_WGSL);
    this.#beginParams(Math.ceil(nTok / perChunk));
    const enc = this.#dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    for (let t0 = 0; t0 < nTok; t0 += perChunk) {
      const n = Math.min(perChunk, nTok - t0);
      const pOff = this.#params.push(
        [
          nTok,
          p.nHeads,
          p.nKvHeads,
          p.headDimK,
          p.headDimV,
          startPos,
          c.kRow,
          c.vRow,
          nKv,
          p.scale,
          t0,
        ],
        [9],
      );
      pass.setBindGroup(
        0,
        this.#bind(pipe, [
          this.#paramRes(pOff),
          { buffer: inBuf, offset: 0, size: q.byteLength },
          { buffer: buf, offset: 0, size: c.kBytes },
          { buffer: buf, offset: c.vOff, size: c.vBytes },
          { buffer: sBuf, offset: 0, size: n * rowBytes },
          { buffer: outBuf, offset: 0, size: Math.max(4, outBytes) },
        ]),
      );
      pass.dispatchWorkgroups(p.nHeads, n);
    }
    pass.end();
    this.#flushParams();
    await this.#readOut(enc, outBuf, out.subarray(0, outBytes));
  }

  /** Wait for all submitted work. */
  async sync(): Promise<void> {
    await this.#dev.queue.onSubmittedWorkDone();
  }

  /** Bytes held on the device (slots, caches, scratch). */
  memoryBytes(): number {
    let n = 0;
    for (const b of this.#slots.values()) n += b.size;
    for (const c of this.#kv.values()) for (const b of c.layers) n += b.size;
    for (const b of this.#scratch.values()) n += b.size;
    return n;
  }

  /** Destroy everything, then the device. */
  destroy(): void {
    for (const b of this.#slots.values()) b.destroy();
    for (const id of [...this.#kv.keys()]) this.freeKv(id);
    for (const b of this.#scratch.values()) b.destroy();
    this.#slots.clear();
    this.#scratch.clear();
    this.#dev.destroy();
  }

  // ------------------------------------------------------------------ plumbing

  async #readOut(enc: GPUCommandEncoder, outBuf: GPUBuffer, dst: Uint8Array): Promise<void> {
    const n = up(dst.byteLength, 4);
    if (n === 0) {
      this.#dev.queue.submit([enc.finish()]);
      return;
    }
    const staging = this.#buffer("staging", up(n, 8), U.MAP_READ | U.COPY_DST);
    enc.copyBufferToBuffer(outBuf, 0, staging, 0, n);
    this.#dev.queue.submit([enc.finish()]);
    await staging.mapAsync(MAP_READ_MODE, 0, up(n, 8));
    dst.set(new Uint8Array(staging.getMappedRange(0, up(n, 8))).subarray(0, dst.byteLength));
    staging.unmap();
  }

  #writePadded(buf: GPUBuffer, offset: number, data: Uint8Array): void {
    const whole = data.byteLength & ~3;
    // Deno's writeBuffer accepts views of a SharedArrayBuffer; the DOM typings do not
    if (whole > 0) {
      this.#dev.queue.writeBuffer(buf, offset, data as Uint8Array<ArrayBuffer>, 0, whole);
    }
    if (whole < data.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(data.subarray(whole));
      this.#dev.queue.writeBuffer(buf, offset + whole, tail);
    }
  }

  /** A scratch buffer of at least `bytes` (grown ×1.5, contents not kept). */
  #buffer(name: string, bytes: number, usage: number): GPUBuffer {
    const have = this.#scratch.get(name);
    if (have && have.size >= bytes) return have;
    have?.destroy();
    const size = up(Math.max(bytes, have ? Math.ceil(have.size * 1.5) : 0, 1024), ALIGN);
    const b = this.#dev.createBuffer({ size, usage });
    this.#scratch.set(name, b);
    return b;
  }

  #flushParams(): void {
    const bytes = this.#params.bytes();
    if (bytes.byteLength === 0) return;
    this.#dev.queue.writeBuffer(this.#scratch.get("params")!, 0, bytes);
  }

  /** Throw a clear error when one binding would exceed the device's storage binding limit. */
  #checkBind(bytes: number, what: string): void {
    if (bytes > this.#maxBind) {
      throw new EngineError(
        "bad_shape",
        `Cannot run ${what}: ${bytes} bytes in one binding exceed the device limit ${this.#maxBind}`,
      );
    }
  }

  /** Size the uniform buffer for `count` dispatches and start a new parameter block. */
  #beginParams(count: number): void {
    this.#buffer("params", Math.max(1, count) * PARAM_STRIDE, U.UNIFORM | U.COPY_DST);
    this.#params.reset();
  }

  #paramRes(off: number): GPUBufferBinding {
    return { buffer: this.#scratch.get("params")!, offset: off, size: 64 };
  }

  #pipe(key: string, src: string | (() => string)): GPUComputePipeline {
    let p = this.#pipes.get(key);
    if (!p) {
      const code = typeof src === "string" ? src : src();
      const module = this.#dev.createShaderModule({ code, label: key });
      p = this.#dev.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
        label: key,
      });
      this.#pipes.set(key, p);
    }
    return p;
  }

  #bind(pipe: GPUComputePipeline, res: readonly GPUBufferBinding[]): GPUBindGroup {
    return this.#dev.createBindGroup({
      layout: pipe.getBindGroupLayout(0),
      entries: res.map((r, i) => ({ binding: i, resource: r })),
    });
  }
}

/** Bytes per row of `cols` elements for the GPU formats. */
export function rowBytesOf(type: GgmlType, cols: number): number {
  switch (type) {
    case GgmlType.F32:
      return cols * 4;
    case GgmlType.F16:
      return cols * 2;
    case GgmlType.Q8_0:
      return (cols / 32) * 34;
    case GgmlType.Q4_0:
      return (cols / 32) * 18;
    default:
      throw new EngineError("unsupported_type", `No GPU kernel for ${ggmlTypeName(type)}`);
  }
}
