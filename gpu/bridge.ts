/**
 * The main-thread side of the device worker: a shared buffer for request
 * data, fire-and-forget posts, and blocking calls (`Atomics.wait`, which Deno
 * allows on the main thread). See protocol.ts for why.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import { BackendError } from "../core/errors.ts";
import {
  type CallReq,
  CTRL,
  CTRL_WORDS,
  DATA_OFF,
  type DeviceInfo,
  ERR_OFF,
  type FromWorker,
  type Region,
  type ToWorker,
} from "./protocol.ts";

/** Options of {@linkcode DeviceBridge.open}. */
export interface BridgeOptions {
  /** Adapter power preference. */
  readonly powerPreference?: "low-power" | "high-performance";
  /** Longest a call may block, in ms (default 120 000: shader compilation on a software adapter is slow). */
  readonly callTimeoutMs?: number;
  /** Initial shared-buffer size in bytes (default 4 MiB; grows on demand). */
  readonly initialBytes?: number;
  /**
   * Cap on one storage binding in bytes (default: the device limit). Larger
   * matrices are split into row chunks; tests lower it to exercise that path.
   */
  readonly maxBindingBytes?: number;
}

const dec = new TextDecoder();

/** Blocking RPC to the device worker. */
export class DeviceBridge {
  /** What the worker's device is. */
  readonly info: DeviceInfo;
  readonly #worker: Worker;
  readonly #timeout: number;
  #sab: SharedArrayBuffer;
  #ctrl: Int32Array;
  #u8: Uint8Array;
  #seq = 0;
  #top = DATA_OFF;
  #closed = false;

  private constructor(worker: Worker, sab: SharedArrayBuffer, info: DeviceInfo, timeout: number) {
    this.#worker = worker;
    this.#sab = sab;
    this.#ctrl = new Int32Array(sab, 0, CTRL_WORDS);
    this.#u8 = new Uint8Array(sab);
    this.info = info;
    this.#timeout = timeout;
  }

  /** Start the worker and its device; null when there is no adapter. */
  static async open(opts: BridgeOptions = {}): Promise<DeviceBridge | null> {
    const sab = new SharedArrayBuffer(Math.max(opts.initialBytes ?? 4 << 20, DATA_OFF + 4096));
    let worker: Worker;
    try {
      worker = new Worker(new URL("./worker.ts", import.meta.url));
    } catch (e) {
      // e.g. no read permission for the worker module
      throw new BackendError(
        "unavailable",
        `Cannot start the WebGPU device worker: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    const res = await new Promise<FromWorker>((resolve) => {
      worker.once("message", (m: FromWorker) => resolve(m));
      worker.once("error", (e: Error) => resolve({ k: "failed", message: e.message }));
      const init: ToWorker = {
        k: "init",
        sab,
        powerPreference: opts.powerPreference,
        maxBindingBytes: opts.maxBindingBytes,
      };
      worker.postMessage(init);
    });
    if (res.k === "failed") {
      await worker.terminate();
      if (res.message === "no WebGPU adapter") return null;
      throw new BackendError("unavailable", `Cannot start the WebGPU device: ${res.message}`);
    }
    worker.removeAllListeners("error");
    worker.on("error", () => {}); // surfaced by the next call's timeout / status
    worker.unref();
    return new DeviceBridge(worker, sab, res.info, opts.callTimeoutMs ?? 120_000);
  }

  /** Start a new request's data area. */
  reset(): void {
    this.#top = DATA_OFF;
  }

  /** Reserve `bytes` (16-aligned) in the data area, growing the shared buffer if needed. */
  reserve(bytes: number): Region {
    const off = this.#top;
    const end = off + Math.ceil(bytes / 16) * 16;
    if (end > this.#sab.byteLength) this.#grow(end);
    this.#top = end;
    return { off, bytes };
  }

  /** Bytes of a region (valid until the next reserve that grows the buffer). */
  bytes(r: Region): Uint8Array {
    return this.#u8.subarray(r.off, r.off + r.bytes);
  }

  /** f32 view of a region (its byte length must be a multiple of 4). */
  f32(r: Region): Float32Array {
    return new Float32Array(this.#sab, r.off, r.bytes >>> 2);
  }

  /** Copy `src` into a fresh region. */
  put(src: ArrayBufferView): Region {
    const r = this.reserve(src.byteLength);
    this.#u8.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), r.off);
    return r;
  }

  #grow(need: number): void {
    const size = Math.max(need, Math.ceil(this.#sab.byteLength * 1.5));
    const sab = new SharedArrayBuffer(Math.ceil(size / 65536) * 65536);
    // control words and any data already placed for the pending request move along
    new Uint8Array(sab).set(this.#u8.subarray(0, this.#top));
    this.#sab = sab;
    this.#ctrl = new Int32Array(sab, 0, CTRL_WORDS);
    this.#u8 = new Uint8Array(sab);
    this.#send({ k: "sab", sab });
  }

  /** Post without waiting (ordered before later calls). */
  post(m: ToWorker, transfer?: ArrayBuffer[]): void {
    this.#send(m, transfer);
  }

  #send(m: ToWorker, transfer?: ArrayBuffer[]): void {
    if (this.#closed) throw new BackendError("disposed", "Cannot use the WebGPU backend: disposed");
    this.#worker.postMessage(m, transfer);
  }

  /**
   * Run `req` on the device and block until it finishes.
   * @throws BackendError with the device's code (`gpu_error`, `out_of_memory`, …) or `gpu_timeout`.
   */
  call(req: CallReq): void {
    const seq = ++this.#seq;
    this.#send({ k: "call", seq, req });
    const deadline = performance.now() + this.#timeout;
    for (;;) {
      const done = Atomics.load(this.#ctrl, CTRL.DONE);
      if (done === seq) break;
      const left = deadline - performance.now();
      if (left <= 0) {
        this.close(); // the device's state is unknown now: refuse further calls
        throw new BackendError(
          "gpu_timeout",
          `Cannot finish WebGPU ${req.op}: no answer from the device worker in ${this.#timeout} ms`,
          { op: req.op },
        );
      }
      Atomics.wait(this.#ctrl, CTRL.DONE, done, left);
    }
    if (Atomics.load(this.#ctrl, CTRL.STATUS) !== 0) {
      const len = Atomics.load(this.#ctrl, CTRL.ERR_LEN);
      const text = dec.decode(this.#u8.slice(ERR_OFF, ERR_OFF + len));
      const cut = text.indexOf("\u0000");
      const code = cut > 0 ? text.slice(0, cut) : "gpu_error";
      const msg = (cut > 0 ? text.slice(cut + 1) : text).replaceAll("\u0000", ": ");
      throw new BackendError(code, `WebGPU ${req.op} failed: ${msg}`, { op: req.op });
    }
  }

  /** Terminate the worker (and with it the device). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void this.#worker.terminate();
  }
}
