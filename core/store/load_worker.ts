/**
 * Off-thread expert loads: a `node:worker_threads` worker
 * (`load_worker_thread.ts`) reads a streamed expert's matrices from a local
 * file straight into the backend's **shared** memory (a `SharedArrayBuffer`
 * slot view: the WASM backend created with `sharedMemory: true`) and hashes
 * them there, so a miss costs the JS thread only a message and the
 * comparison of 64-bit hashes. On a one-thread decode the second core does
 * the read and the verification while the JS thread computes.
 *
 * - At most 4 loads run at once on the worker (their reads in parallel);
 *   later ones queue, **demand loads before background ones** (prefetches,
 *   fallback background loads). A queued background load that a
 *   step starts waiting for is raised to demand (`LoadTicket.urgent`).
 * - A cancelled load still queued is dropped; one running finishes. Every
 *   load's promise settles after the worker's last write into its slot.
 * - If the worker dies (or cannot start), every load it owed rejects with
 *   `StoreError` `"load_failed"` (never a hang) and `alive` turns false:
 *   callers then load on the JS thread.
 *
 * Off by default (`StreamingStoreOptions.offThreadLoads`): on the 2-vCPU
 * machine it was measured on it was no faster (docs/streaming.md).
 *
 * @module
 */

import { StoreError } from "../errors.ts";

/** One range to read: `length` bytes at file `offset` into the shared buffer at byte `at`. */
export interface LoadRange {
  /** File offset. */
  readonly offset: number;
  /** Byte offset in the shared buffer. */
  readonly at: number;
  /** Bytes. */
  readonly length: number;
}

/** The file the worker opens itself (it must match what the JS thread opened). */
export interface LoadFile {
  /** Path as opened by the JS thread. */
  readonly path: string;
  /** Size seen at open. */
  readonly size: number;
  /** mtime seen at open (null: not checked, `FileSource` opened with `checkChanges: false`). */
  readonly mtimeMs: number | null;
  /** Device of the JS thread's open handle (the worker's must match). */
  readonly dev: number;
  /** Inode of the JS thread's open handle (the worker's must match). */
  readonly ino: number;
}

/** What the JS thread sends the worker. */
export type WorkerMessage =
  | LoadRequest
  | { readonly type: "urgent"; readonly id: number }
  | { readonly type: "cancel"; readonly id: number }
  | { readonly type: "stall"; readonly id: number; readonly ms: number };

/** One load (a message to the worker). */
export interface LoadRequest extends LoadFile {
  readonly type: "load";
  readonly id: number;
  readonly buffer: SharedArrayBuffer;
  readonly ranges: readonly LoadRange[];
  /** Hash each range with `hashWide`. */
  readonly hash: boolean;
  /** `[at, length]` to take SHA-256 of after the reads, or null. */
  readonly sha256: readonly [number, number] | null;
  /** Demand load (taken before background loads). */
  urgent: boolean;
}

/** The worker's answer to one load. */
export type LoadReply =
  | {
    readonly id: number;
    readonly ok: true;
    /** `hashWide` of each range, in order (empty without `hash`). */
    readonly hashes: readonly string[];
    readonly sha256: string | null;
    readonly readMs: number;
    readonly hashMs: number;
    readonly wallMs: number;
    /** Order in which the worker started it (0, 1, …). */
    readonly started: number;
  }
  | { readonly id: number; readonly ok: false; readonly code: string; readonly message: string };

/** A finished off-thread load. */
export interface LoadResult {
  /** `hashWide` of each range, in order (empty without `hash`). */
  readonly hashes: readonly string[];
  /** SHA-256 (hex) when asked. */
  readonly sha256: string | null;
  /** Worker time reading, ms. */
  readonly readMs: number;
  /** Worker time hashing, ms. */
  readonly hashMs: number;
  /** Order in which the worker started it among its loads (0, 1, …; diagnostics, tests). */
  readonly started: number;
}

/** A load in flight. */
export interface LoadTicket {
  /** Settles after the worker's last write; rejects with `StoreError`. */
  readonly done: Promise<LoadResult>;
  /** Raise a queued background load to demand. */
  urgent(): void;
}

/** What the options of one `load` are. */
export interface LoadOptions {
  /** Hash each range (`hashWide`). */
  readonly hash: boolean;
  /** `[at, length]` of the shared buffer to SHA-256 after the reads, or null. */
  readonly sha256: readonly [number, number] | null;
  /** A demand load (default false: background). */
  readonly urgent?: boolean;
  /** Cancels the load while it is queued. */
  readonly signal?: AbortSignal;
}

/** The part of a `node:worker_threads` worker used here. */
interface ThreadWorker {
  postMessage(m: WorkerMessage): void;
  on(ev: "message", f: (m: LoadReply) => void): void;
  on(ev: "error" | "exit", f: (e: unknown) => void): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<number>;
}

interface Pending {
  resolve(r: LoadResult): void;
  reject(e: StoreError): void;
}

/** The load worker (see the module doc). Use `sharedLoadWorker()` for the process-wide one. */
export class LoadWorker {
  #worker: ThreadWorker | null;
  #alive: boolean;
  #nextId = 0;
  readonly #pending = new Map<number, Pending>();
  /** Loads the worker completed. */
  loads = 0;

  private constructor(worker: ThreadWorker | null) {
    this.#worker = worker;
    this.#alive = worker !== null;
    if (worker) this.#listen(worker);
  }

  /** Start a worker (`alive` is false where the runtime has none or it cannot start). */
  static async start(): Promise<LoadWorker> {
    return new LoadWorker(await startWorker());
  }

  /** Whether loads can go to the worker (false once it failed to start or died). */
  get alive(): boolean {
    return this.#alive;
  }

  /** Loads queued or running on the worker. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * Read `ranges` of `file` into `buffer` on the worker (hashing them as
   * `opts` asks). Rejects with `StoreError`: the file's own codes
   * (`"open_failed"`, `"read_failed"`, `"short_read"`, `"changed"`),
   * `"cancelled"` (cancelled while queued), `"load_failed"` (the worker is
   * dead or died with the load outstanding).
   */
  load(
    file: LoadFile,
    buffer: SharedArrayBuffer,
    ranges: readonly LoadRange[],
    opts: LoadOptions,
  ): LoadTicket {
    const w = this.#worker;
    const id = ++this.#nextId;
    if (!w || !this.#alive) {
      return { done: Promise.reject(dead(file.path)), urgent: () => {} };
    }
    const signal = opts.signal;
    const onAbort = (): void => {
      if (this.#pending.has(id)) w.postMessage({ type: "cancel", id });
    };
    const done = new Promise<LoadResult>((resolve, reject) => {
      if (this.#pending.size === 0) w.ref();
      const settle = (): void => {
        signal?.removeEventListener("abort", onAbort);
        if (this.#pending.size === 0 && this.#alive) w.unref();
      };
      this.#pending.set(id, {
        resolve: (r) => {
          settle();
          resolve(r);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
    });
    w.postMessage({
      type: "load",
      id,
      path: file.path,
      size: file.size,
      mtimeMs: file.mtimeMs,
      dev: file.dev,
      ino: file.ino,
      buffer,
      ranges,
      hash: opts.hash,
      sha256: opts.sha256,
      urgent: opts.urgent === true,
    });
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    let raised = opts.urgent === true;
    return {
      done,
      urgent: () => {
        if (raised || !this.#pending.has(id)) return;
        raised = true;
        w.postMessage({ type: "urgent", id });
      },
    };
  }

  /** Tests: block the worker's thread for `ms` (loads sent meanwhile stay outstanding). */
  stallForTest(ms: number): void {
    this.#worker?.postMessage({ type: "stall", id: 0, ms });
  }

  /**
   * Stop the worker now: loads it still owed reject with `"load_failed"`
   * (tests use it to kill the worker mid-load).
   */
  async terminate(): Promise<void> {
    const w = this.#worker;
    this.#alive = false;
    // the thread is stopped before its loads fail: none of them writes after that
    if (w) await w.terminate();
    this.#fail("the load worker was terminated");
  }

  #listen(w: ThreadWorker): void {
    w.unref();
    w.on("message", (m) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) {
        this.loads++;
        p.resolve({
          hashes: m.hashes,
          sha256: m.sha256,
          readMs: m.readMs,
          hashMs: m.hashMs,
          started: m.started,
        });
      } else {
        p.reject(
          new StoreError(m.code, `Cannot load off-thread: ${m.message}`, { offThread: true }),
        );
      }
    });
    w.on("error", (e) => this.#fail(`the load worker failed: ${(e as Error)?.message ?? e}`));
    w.on("exit", () => this.#fail("the load worker exited"));
  }

  /** The worker is gone: nothing writes any more; everything it owed rejects. */
  #fail(why: string): void {
    this.#alive = false;
    const ps = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of ps) {
      p.reject(
        new StoreError("load_failed", `Cannot load off-thread: ${why}`, { offThread: true }),
      );
    }
  }
}

function dead(path: string): StoreError {
  return new StoreError(
    "load_failed",
    `Cannot load ${path} off-thread: the load worker is not running`,
    { offThread: true },
  );
}

let shared: Promise<LoadWorker> | null = null;

/** The process-wide load worker, started on first use (again after it died). */
export async function sharedLoadWorker(): Promise<LoadWorker> {
  const have = shared ? await shared : null;
  if (have?.alive) return have;
  shared = LoadWorker.start();
  return await shared;
}

/** `node:worker_threads` worker running `load_worker_thread.ts`, unreferenced; null where unavailable. */
async function startWorker(): Promise<ThreadWorker | null> {
  try {
    const { Worker } = await import("node:worker_threads");
    return new Worker(
      new URL("./load_worker_thread.ts", import.meta.url),
    ) as unknown as ThreadWorker;
  } catch {
    return null;
  }
}
