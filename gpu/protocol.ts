/**
 * Messages between the WebGPU backend (main thread) and its device worker,
 * and the layout of the shared buffer they exchange data through.
 *
 * Why a worker: the `Backend` contract is synchronous, WebGPU readback
 * (`mapAsync`) is not. The worker owns the `GPUDevice` and runs every op as
 * async WebGPU code; the main thread posts a request and blocks in
 * `Atomics.wait` on the shared buffer until the worker stores the request's
 * sequence number there. Requests that return nothing (slot writes, frees)
 * are posted without waiting; message order keeps them ordered.
 *
 * @module
 */

import type { AttentionParams, KvCacheSpec, RopeMode } from "../core/backend/backend.ts";
import type { GgmlType } from "../core/tensor/ggml_type.ts";

/** Int32 control words at the start of the shared buffer. */
export const CTRL = {
  /** Sequence number of the last finished call (the main thread waits on it). */
  DONE: 0,
  /** 0 = ok, 1 = failed (message in the error area). */
  STATUS: 1,
  /** Byte length of the UTF-8 error message. */
  ERR_LEN: 2,
} as const;
/** Number of Int32 control words. */
export const CTRL_WORDS = 16;
/** Byte offset of the error message area. */
export const ERR_OFF = 64;
/** Byte capacity of the error message area. */
export const ERR_BYTES = 4032;
/** Byte offset where request data starts. */
export const DATA_OFF = 4096;

/** A byte range of the shared buffer. */
export interface Region {
  /** Byte offset (a multiple of 16). */
  readonly off: number;
  /** Byte length. */
  readonly bytes: number;
}

/** One matmul of a batch: a weight view and its prepared activations. */
export interface MatmulJob {
  /** Slot id. */
  readonly slot: number;
  /** Byte offset of row 0 in the slot. */
  readonly offset: number;
  /** Weight type (one with a WGSL kernel). */
  readonly type: GgmlType;
  /** Rows. */
  readonly rows: number;
  /** Columns. */
  readonly cols: number;
  /** Tokens. */
  readonly nTok: number;
  /** Activations in the kernel's layout (see wgsl/matmul.ts). */
  readonly act: Region;
  /** Activation words per token. */
  readonly actStride: number;
  /** Output `[nTok][rows]` f32. */
  readonly out: Region;
}

/** Requests the main thread waits for. */
export type CallReq =
  | { readonly op: "alloc"; readonly slot: number; readonly bytes: number }
  | {
    readonly op: "read";
    readonly slot: number;
    readonly offset: number;
    readonly out: Region;
  }
  | { readonly op: "kv"; readonly cache: number; readonly spec: KvCacheSpec }
  | { readonly op: "matmul"; readonly jobs: readonly MatmulJob[] }
  | {
    readonly op: "getRows";
    readonly slot: number;
    readonly offset: number;
    readonly type: GgmlType;
    readonly cols: number;
    readonly rowBytes: number;
    readonly ids: readonly number[];
    readonly out: Region;
  }
  | {
    readonly op: "rmsnorm";
    readonly x: Region;
    readonly n: number;
    readonly eps: number;
    readonly w: Region | null;
    readonly out: Region;
  }
  | {
    readonly op: "rope";
    /** In and out. */
    readonly x: Region;
    readonly nTok: number;
    readonly nHeads: number;
    readonly headDim: number;
    readonly nRot: number;
    readonly mode: RopeMode;
    readonly table: Region;
  }
  | {
    readonly op: "swiglu";
    readonly g: Region;
    readonly u: Region;
    readonly rowLen: number;
    readonly out: Region;
  }
  | {
    readonly op: "attention";
    readonly cache: number;
    readonly layer: number;
    readonly startPos: number;
    readonly nTok: number;
    /** f32 images of the f16-rounded queries. */
    readonly q: Region;
    /** fp16 bits of the new K rows, `[nTok][kRowPad]`. */
    readonly k: Region;
    /** fp16 bits of the new V rows, `[nTok][vRowPad]`. */
    readonly v: Region;
    readonly p: AttentionParams;
    readonly out: Region;
  }
  | { readonly op: "sync" };

/** Main thread → worker. */
export type ToWorker =
  | {
    readonly k: "init";
    readonly sab: SharedArrayBuffer;
    readonly powerPreference?: "low-power" | "high-performance";
    readonly maxBindingBytes?: number;
  }
  | { readonly k: "sab"; readonly sab: SharedArrayBuffer }
  | {
    readonly k: "write";
    readonly slot: number;
    readonly offset: number;
    readonly data: Uint8Array;
  }
  | { readonly k: "free"; readonly slot: number }
  | { readonly k: "freeKv"; readonly cache: number }
  | { readonly k: "call"; readonly seq: number; readonly req: CallReq };

/** What the worker reports once its device is up. */
export interface DeviceInfo {
  /** Adapter description (e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`). */
  readonly description: string;
  /** Adapter vendor. */
  readonly vendor: string;
  /** Adapter architecture. */
  readonly architecture: string;
  /** Whether the adapter is a fallback (software) adapter. */
  readonly isFallbackAdapter: boolean;
  /** Largest buffer. */
  readonly maxBufferSize: number;
  /** Largest storage binding. */
  readonly maxStorageBufferBindingSize: number;
}

/** Worker → main thread (only during start-up; calls answer through the shared buffer). */
export type FromWorker =
  | { readonly k: "ready"; readonly info: DeviceInfo }
  | { readonly k: "failed"; readonly message: string };

/** Halves per cached K/V row, padded to even so rows start on a 32-bit word. */
export function padHalves(n: number): number {
  return n + (n & 1);
}
