/**
 * The WASM thread pool: Web Workers that each instantiate the shared-memory
 * kernel build over a backend's shared `WebAssembly.Memory` and run their
 * part of a job posted in a shared control block (per-op fork/join, no
 * message round trip per op: the caller writes the job, bumps a sequence
 * number and `Atomics.notify`s; workers spin briefly then sleep; the caller
 * runs part 0 itself, then spins / `Atomics.wait`s on the remaining count).
 *
 * One pool per process, started lazily, shared by every threaded backend and
 * terminated when the last one is disposed. A job that throws or whose
 * kernel fails gives a `BackendError("thread_failed")`; a worker that dies
 * marks the pool broken (`"thread_died"`), and a join that waits past the
 * watchdog gives `"thread_timeout"` — never a hang.
 *
 * @module
 */

import { BackendError } from "../core/errors.ts";
import {
  CHUNKS_PER_THREAD,
  claimChunk,
  CTL_ARGS,
  CTL_CHUNKS,
  CTL_CLAIM,
  CTL_DONE,
  CTL_ERR,
  CTL_LENGTH,
  CTL_MEM,
  CTL_OP,
  CTL_RUNNING,
  CTL_SEQ,
  ERR_KERNEL,
} from "./thread_split.ts";

/** Bytes of stack each worker gets per attached memory (the module's own is 1 MiB). */
export const WORKER_STACK_BYTES = 1 << 20;
/** Most threads a pool runs (the calling thread included). */
export const MAX_THREADS = 64;

/** How long (ms) workers may take to start and instantiate the kernels. */
const ATTACH_TIMEOUT_MS = 30_000;
/** The caller spins this long (ms) on the remaining count before sleeping. */
const JOIN_SPIN_MS = 1;

/**
 * Default thread count: `navigator.hardwareConcurrency` when workers and
 * shared memory are available, else 1.
 */
export function defaultThreads(sharedOk: boolean): number {
  if (!sharedOk) return 1;
  const hc = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)
    ?.hardwareConcurrency;
  return typeof hc === "number" && Number.isInteger(hc) && hc >= 1 ? Math.min(hc, MAX_THREADS) : 1;
}

/**
 * Validate a requested thread count: an integer in `[1, MAX_THREADS]`.
 * Throws `BackendError("bad_threads")` otherwise.
 */
export function checkThreads(n: unknown, where = "threads"): number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new BackendError(
      "bad_threads",
      `Cannot use ${where}: expected an integer in [1, ${MAX_THREADS}], received ${String(n)}`,
      { threads: n },
    );
  }
  return n;
}

/** The part of a worker the pool uses (a Web Worker or a `node:worker_threads` one). */
interface PoolWorker {
  postMessage(m: unknown): void;
  terminate(): void;
  /** `node:worker_threads` only: keep the process alive (while an attach is pending). */
  ref?(): void;
  /** `node:worker_threads` only: stop keeping the process alive. */
  unref?(): void;
}

type NodeWorkerCtor = new (url: URL) => PoolWorker & {
  on(ev: string, f: (x: never) => void): void;
  ref(): void;
  unref(): void;
};

let nodeWorker: NodeWorkerCtor | null | undefined;

/**
 * `node:worker_threads`' Worker where the runtime has it (Deno, Node): its
 * workers can be `unref()`ed, so an undisposed threaded backend never keeps
 * the process alive. Web Workers elsewhere.
 */
async function nodeWorkerCtor(): Promise<NodeWorkerCtor | null> {
  if (nodeWorker === undefined) {
    try {
      nodeWorker = (await import("node:worker_threads")).Worker as unknown as NodeWorkerCtor;
    } catch {
      nodeWorker = null;
    }
  }
  return nodeWorker;
}

interface Attach {
  resolve(): void;
  reject(e: Error): void;
  left: number;
}

/** The process-wide worker pool. */
export class ThreadPool {
  readonly #ctl: Int32Array;
  readonly #workers: PoolWorker[] = [];
  #terminated = false;
  #attaching = 0;
  #refs = 0;
  #nextMem = 1;
  #broken: string | null = null;
  readonly #pending = new Map<number, Attach>();
  /** Join watchdog in ms (a job running longer than this is a failure). */
  watchdogMs = 120_000;

  constructor() {
    this.#ctl = new Int32Array(new SharedArrayBuffer(CTL_LENGTH * 4));
  }

  /** Workers running (threads − 1 of the widest backend). */
  get workers(): number {
    return this.#workers.length;
  }

  /**
   * Terminate worker `i` as if it had crashed (tests and fault drills): the
   * pool is then broken and every threaded op fails with a `BackendError`.
   */
  killWorker(i: number): void {
    this.#workers[i]?.terminate();
  }

  /** Start workers until there are at least `n`. */
  async ensureWorkers(n: number): Promise<void> {
    this.#live();
    const url = new URL("./thread_worker.ts", import.meta.url);
    const NodeWorker = await nodeWorkerCtor();
    while (this.#workers.length < n) {
      const index = this.#workers.length;
      let w: PoolWorker;
      if (NodeWorker !== null) {
        const nw = new NodeWorker(url);
        nw.on("message", (m: never) => this.#onMessage(m));
        nw.on("error", (e: Error) => this.#fail(`worker ${index} died: ${e?.message ?? e}`));
        nw.on("exit", (code: number) => {
          if (!this.#terminated) this.#fail(`worker ${index} exited (code ${code})`);
        });
        // referenced only while an attach is pending (see attach): an
        // undisposed backend never keeps the process alive
        w = nw;
      } else {
        const ww = new Worker(url.href, { type: "module" });
        ww.onmessage = (ev: MessageEvent) => this.#onMessage(ev.data);
        ww.onerror = (ev: ErrorEvent) => {
          ev.preventDefault();
          this.#fail(`worker ${index} died: ${ev.message}`);
        };
        ww.onmessageerror = () => this.#fail(`worker ${index} could not read a message`);
        w = ww;
      }
      w.postMessage({
        type: "init",
        ctl: this.#ctl.buffer,
        index,
        seq: Atomics.load(this.#ctl, CTL_SEQ),
      });
      this.#workers.push(w);
    }
  }

  /**
   * Give every worker an instance of `bytes` over `memory` with its stack
   * ending at `stackTops[i]`; resolves with the memory's id once all have it.
   */
  attach(
    memory: WebAssembly.Memory,
    key: string,
    bytes: Uint8Array,
    stackTops: number[],
  ): Promise<number> {
    this.#live();
    const id = this.#nextMem++;
    const n = this.#workers.length;
    if (n === 0) return Promise.resolve(id);
    if (this.#attaching++ === 0) { for (const w of this.#workers) w.ref?.(); }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settled = () => {
      clearTimeout(timer);
      if (--this.#attaching === 0) { for (const w of this.#workers) w.unref?.(); }
    };
    return new Promise<number>((resolve, reject) => {
      // a worker that never starts (module not loadable here) must not hang the caller
      timer = setTimeout(() => {
        const p = this.#pending.get(id);
        if (p === undefined) return;
        this.#pending.delete(id);
        p.reject(
          new BackendError(
            "thread_failed",
            `Cannot start threads: workers did not start within ${ATTACH_TIMEOUT_MS} ms`,
          ),
        );
      }, ATTACH_TIMEOUT_MS);
      this.#pending.set(id, {
        resolve: () => {
          settled();
          resolve(id);
        },
        reject: (e) => {
          settled();
          reject(e);
        },
        left: n,
      });
      this.#workers.forEach((w, i) =>
        w.postMessage({ type: "attach", id, memory, key, bytes, stackTop: stackTops[i] })
      );
    });
  }

  /** Drop the workers' instances of memory `id`. */
  detach(id: number): void {
    for (const w of this.#workers) w.postMessage({ type: "detach", id });
  }

  /** Count a user of the pool. */
  ref(): void {
    this.#refs++;
  }

  /** Release a user; the last one terminates the workers. */
  unref(): void {
    if (--this.#refs > 0) return;
    this.#terminated = true;
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
    if (shared === this) shared = null;
  }

  /** The shared control block (a program's barrier waits on its done count). */
  get control(): Int32Array {
    return this.#ctl;
  }

  /** Whether the pool still works (no worker died). */
  get alive(): boolean {
    return this.#broken === null;
  }

  /**
   * Run job `op` with `args` on memory `mem` over `threads` threads, cut
   * into `chunks` chunks (default `threads × CHUNKS_PER_THREAD`, at most
   * 65535) that threads claim in order; `self` runs the chunks the calling
   * thread claims. With `phaseEnd` (programs), finishing a chunk that
   * brings the done count to `phaseEnd(chunk)` wakes threads waiting at the
   * barrier. Returns when every chunk is done.
   */
  run(
    mem: number,
    threads: number,
    op: number,
    args: readonly number[],
    self: (chunk: number, chunks: number) => number,
    chunks = threads * CHUNKS_PER_THREAD,
    phaseEnd?: (chunk: number) => number,
  ): void {
    this.#live();
    const c = this.#ctl;
    if (threads - 1 > this.#workers.length) {
      throw new BackendError(
        "thread_failed",
        `Cannot run job: ${threads} threads but ${this.#workers.length} workers`,
      );
    }
    const n = chunks;
    if (!(n >= 1 && n <= 0xffff)) {
      throw new BackendError("thread_failed", `Cannot run job: ${n} chunks outside [1, 65535]`);
    }
    const seq = (c[CTL_SEQ] + 1) | 0;
    // closed while the job is written (a worker still claiming the last job gets nothing)
    Atomics.store(c, CTL_CLAIM, 0);
    c[CTL_OP] = op;
    c[CTL_MEM] = mem;
    c[CTL_CHUNKS] = n;
    c[CTL_ERR] = 0;
    for (let i = 0; i < args.length; i++) c[CTL_ARGS + i] = args[i] | 0;
    Atomics.store(c, CTL_DONE, 0);
    Atomics.store(c, CTL_CLAIM, (threads << 16) | n);
    Atomics.store(c, CTL_SEQ, seq);
    Atomics.notify(c, CTL_SEQ);
    let rc = 0;
    let thrown: unknown = null;
    for (;;) {
      const k = claimChunk(c, 0);
      if (k < 0) break;
      try {
        if (thrown === null && rc === 0) rc = self(k, n);
      } catch (e) {
        thrown = e;
      }
      const d = Atomics.add(c, CTL_DONE, 1) + 1;
      if (phaseEnd !== undefined && d === phaseEnd(k)) Atomics.notify(c, CTL_DONE);
    }
    this.#join(n);
    const err = c[CTL_ERR];
    if (thrown !== null) throw thrown;
    if (rc !== 0 || err !== 0) {
      throw new BackendError(
        "thread_failed",
        `Cannot run threaded op: ${
          err === ERR_KERNEL || rc !== 0 ? "a kernel rejected its part" : "a worker threw"
        }`,
        { op, threads },
      );
    }
  }

  #join(n: number): void {
    const c = this.#ctl;
    let v = Atomics.load(c, CTL_DONE);
    const s0 = performance.now();
    for (let i = 1; v !== n; i++) {
      v = Atomics.load(c, CTL_DONE);
      if ((i & 255) === 0 && performance.now() - s0 > JOIN_SPIN_MS) break;
    }
    if (v === n) return;
    const t0 = performance.now();
    while ((v = Atomics.load(c, CTL_DONE)) !== n) {
      if (this.#broken !== null) this.#live();
      if (canWait) {
        try {
          Atomics.wait(c, CTL_DONE, v, 20);
        } catch {
          canWait = false; // a browser's main thread may not block: keep spinning
        }
      }
      if (performance.now() - t0 > this.watchdogMs) {
        const running: string[] = [];
        for (let p = 1; p < MAX_THREADS; p++) {
          const k = Atomics.load(c, CTL_RUNNING + p);
          if (k !== 0) running.push(`part ${p}: chunk ${k - 1}`);
        }
        this.#fail(
          `a job ran past the ${this.watchdogMs} ms watchdog (op ${
            c[CTL_OP]
          }, ${v} of ${n} chunks done, ` +
            `claim word ${Atomics.load(c, CTL_CLAIM)}, ${
              running.join(", ") || "no worker running"
            })`,
        );
        throw new BackendError("thread_timeout", `Cannot run threaded op: ${this.#broken}`);
      }
    }
  }

  #onMessage(m: { type: string; id: number; message?: string }): void {
    const p = this.#pending.get(m.id);
    if (p === undefined) return;
    if (m.type === "attach_failed") {
      this.#pending.delete(m.id);
      p.reject(new BackendError("thread_failed", `Cannot start thread: ${m.message}`));
    } else if (--p.left === 0) {
      this.#pending.delete(m.id);
      p.resolve();
    }
  }

  #fail(why: string): void {
    if (this.#broken === null) this.#broken = why;
    if (shared === this) shared = null; // later backends start a fresh pool
    for (const p of this.#pending.values()) {
      p.reject(new BackendError("thread_died", `Cannot start thread: ${why}`));
    }
    this.#pending.clear();
  }

  #live(): void {
    if (this.#broken !== null) {
      throw new BackendError("thread_died", `Cannot use the thread pool: ${this.#broken}`);
    }
  }
}

let shared: ThreadPool | null = null;
/** Whether this thread may block in `Atomics.wait` (not a browser's main thread). */
let canWait = true;

/** Whether the calling thread may block in `Atomics.wait` (as far as seen so far). */
export function callerCanWait(): boolean {
  return canWait;
}

/** The process-wide pool (created on first use; counted: pair with `unref()`). */
export function acquirePool(): ThreadPool {
  if (shared === null) shared = new ThreadPool();
  shared.ref();
  return shared;
}
