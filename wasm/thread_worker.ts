/**
 * A thread-pool worker (see `threads.ts`): one kernel instance per attached
 * shared memory, each with its own stack region, running its part of each
 * job posted in the shared control block. It spins briefly on the job
 * sequence number, then sleeps on it with `Atomics.wait` in bounded slices,
 * returning to its event loop between slices (and every 0.5 s while busy) so
 * attach/detach messages are still handled.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  attentionHeads,
  claimChunk,
  CTL_ARGS,
  CTL_CHUNKS,
  CTL_DONE,
  CTL_ERR,
  CTL_MEM,
  CTL_OP,
  CTL_RUNNING,
  CTL_SEQ,
  ERR_KERNEL,
  ERR_THROWN,
  itemRange,
  OP_ATTN,
  OP_MATMUL,
  OP_PROGRAM,
  rowRange,
  runTask,
  TASK_INTS,
  type TaskKernels,
} from "./thread_split.ts";

/** A kernel instance over one attached memory. */
interface Attached {
  readonly k: TaskKernels;
  readonly memory: WebAssembly.Memory;
  /** I32 view of the memory (re-made when it grows). */
  i32: Int32Array;
}

/** Join watchdog of a program's barrier in a worker (ms; the caller's is the pool's). */
const BARRIER_TIMEOUT_MS = 120_000;
const always = () => true;

/**
 * Spin this long (ms) on the job counter before sleeping while the worker
 * sees itself preempted (see `PREEMPT_MS`). Short: with the cores
 * oversubscribed by other processes, a worker spinning between jobs takes
 * CPU time from the caller (2-thread decode on the bench MoE at load 2.5–3
 * on 2 CPUs: 1 ms spins 1.6–2.3× slower than 1 thread, 0.05 ms 0.9–1.1×).
 */
const SPIN_MS = 0.05;
/**
 * Spin this long (ms) when the worker has not been preempted lately: a
 * wake-up from the futex costs ~60 µs on a KVM guest (`threads_fork.ts`:
 * a fork after a 100 µs gap), and the gaps between the forks of a decode
 * step (norms, RoPE, the router, program building) are 20–300 µs.
 */
const LONG_SPIN_MS = 0.4;
/**
 * A poll of the spin loop that comes this long (ms) after the previous one
 * means the worker lost its core (another runnable thread got it): the
 * cores are oversubscribed, and spins stay short for `CALM_MS`.
 */
const PREEMPT_MS = 0.25;
/** After a preemption is seen, spins stay at `SPIN_MS` this long (ms). */
const CALM_MS = 500;
/** When the worker last saw itself preempted while spinning (`performance.now()`). */
let preemptedAt = -Infinity;

/** How long to spin now: long unless a preemption was seen in the last `CALM_MS`. */
function spinBudget(now: number): number {
  return now - preemptedAt < CALM_MS ? SPIN_MS : LONG_SPIN_MS;
}

/** At most this long (ms) a worker waits for the rest of a job before its post-job spin. */
const JOB_END_SPIN_MS = 0.5;
/** Sleep slice (ms) on the futex; between slices the worker handles messages. */
const SLEEP_MS = 50;
/** While busy, handle messages at least this often (ms). */
const BUSY_YIELD_MS = 500;
const instances = new Map<number, Attached>();
const modules = new Map<string, WebAssembly.Module>();
let ctl: Int32Array | null = null;
let index = 0;

/** Run chunk `k` of `n` of the current job with scratch part `part`; false when a kernel failed. */
function runChunk(
  at: Attached,
  op: number,
  a: Int32Array,
  n: number,
  k: number,
  part: number,
): boolean {
  const inst = at.k;
  const u = (i: number) => a[i] >>> 0;
  if (op === OP_PROGRAM) {
    const r = (u(0) >>> 2) + k * TASK_INTS;
    if (at.i32.length < r + TASK_INTS) at.i32 = new Int32Array(at.memory.buffer);
    return runTask(
      inst,
      ctl!,
      at.i32,
      r,
      u(2) + part * u(3),
      performance.now() + BARRIER_TIMEOUT_MS,
      true,
      always,
    );
  }
  if (op === OP_MATMUL) {
    const rows = u(2);
    const [r0, r1] = rowRange(rows, n, k);
    if (r1 <= r0) return true;
    return inst.matmul_prepared_ld(
      u(0),
      u(1) + r0 * u(7),
      r1 - r0,
      u(3),
      u(4),
      u(5),
      u(6) + 4 * r0,
      rows,
      u(8) + part * u(9),
    ) === 0;
  }
  if (op === OP_ATTN) {
    const [h0, h1] = itemRange(u(9), n, k);
    if (h1 <= h0) return true;
    return attentionHeads(inst, a, 0, u(14) + part * u(15), h0, h1, 0) === 0;
  }
  return false;
}

/** The current job's arguments, copied after each claim (the job is then pinned). */
const jobArgs = new Int32Array(16);

/**
 * Claim and run chunks until none is left. Every job field is read after a
 * successful claim (see `claimChunk`): a worker that woke for one job and was
 * descheduled can only ever take a chunk of the job that is current then.
 */
function work(c: Int32Array): void {
  const part = index + 1; // part 0 is the calling thread's
  for (;;) {
    const k = claimChunk(c, part);
    if (k < 0) return;
    const op = c[CTL_OP], n = c[CTL_CHUNKS];
    for (let i = 0; i < 16; i++) jobArgs[i] = c[CTL_ARGS + i];
    const inst = instances.get(c[CTL_MEM]);
    Atomics.store(c, CTL_RUNNING + part, k + 1);
    try {
      if (inst === undefined) throw new Error(`no instance for memory ${c[CTL_MEM]}`);
      if (!runChunk(inst, op, jobArgs, n, k, part)) {
        Atomics.compareExchange(c, CTL_ERR, 0, ERR_KERNEL);
      }
    } catch {
      Atomics.compareExchange(c, CTL_ERR, 0, ERR_THROWN);
    }
    // the phase end is read before the chunk counts done (the job may end right after)
    const phaseEnd = op === OP_PROGRAM && inst !== undefined
      ? inst.i32[((jobArgs[0] >>> 0) >>> 2) + k * TASK_INTS + 2]
      : -1;
    Atomics.store(c, CTL_RUNNING + part, 0);
    const d = Atomics.add(c, CTL_DONE, 1) + 1;
    // the last chunk wakes the caller; the last task of a phase the threads at its barrier
    if (d === n || d === phaseEnd) Atomics.notify(c, CTL_DONE);
  }
}

/**
 * Spin while job `seq` still runs on another thread (its last chunks), at
 * most `JOB_END_SPIN_MS`: the post-job spin then counts from the job's end,
 * which is when the caller starts the serial work before its next fork.
 */
function untilJobEnd(c: Int32Array, seq: number): void {
  const n = c[CTL_CHUNKS];
  const t0 = performance.now();
  let last = t0;
  for (let i = 1; Atomics.load(c, CTL_SEQ) === seq && Atomics.load(c, CTL_DONE) < n; i++) {
    if ((i & 255) === 0) {
      const now = performance.now();
      if (now - last > PREEMPT_MS) preemptedAt = now;
      last = now;
      if (now - t0 > JOB_END_SPIN_MS) return;
    }
  }
}

/** Let the event loop deliver pending messages (attach/detach). */
function yieldToEvents(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

async function loop(c: Int32Array, seen: number): Promise<void> {
  let lastYield = performance.now();
  for (;;) {
    let s = Atomics.load(c, CTL_SEQ);
    if (s === seen) {
      // spin (the gap between two ops of a decode step: see spinBudget), then sleep on the
      // futex in slices of SLEEP_MS, returning to the event loop between slices
      const t0 = performance.now();
      let last = t0, budget = spinBudget(t0);
      for (let i = 1; s === seen; i++) {
        s = Atomics.load(c, CTL_SEQ);
        if ((i & 255) === 0) {
          const now = performance.now();
          if (now - last > PREEMPT_MS) preemptedAt = now, budget = SPIN_MS;
          last = now;
          if (now - t0 > budget) break;
        }
      }
      if (s === seen) {
        if (Atomics.wait(c, CTL_SEQ, seen, SLEEP_MS) === "timed-out") {
          await yieldToEvents();
          lastYield = performance.now();
        }
        continue;
      }
    }
    seen = s;
    if (performance.now() - lastYield > BUSY_YIELD_MS) {
      // a long busy stretch: still let attach messages in now and then (after this job)
      lastYield = Infinity;
    }
    work(c);
    untilJobEnd(c, s);
    if (lastYield === Infinity) {
      await yieldToEvents();
      lastYield = performance.now();
    }
  }
}

/** Where replies go: `node:worker_threads`' parent port (Deno, Node) or the Web Worker scope. */
let reply: (m: unknown) => void = (m) => self.postMessage(m);

async function onMessage(m: Record<string, unknown> & { type: string }): Promise<void> {
  if (m.type === "init") {
    ctl = new Int32Array(m.ctl as SharedArrayBuffer);
    index = m.index as number;
    void loop(ctl, m.seq as number);
  } else if (m.type === "attach") {
    try {
      let mod = modules.get(m.key as string);
      if (mod === undefined) {
        mod = await WebAssembly.compile(m.bytes as Uint8Array<ArrayBuffer>);
        modules.set(m.key as string, mod);
      }
      const inst = await WebAssembly.instantiate(mod, {
        env: { memory: m.memory as WebAssembly.Memory },
      });
      const sp = inst.exports.__stack_pointer as WebAssembly.Global;
      sp.value = m.stackTop as number;
      const memory = m.memory as WebAssembly.Memory;
      instances.set(m.id as number, {
        k: inst.exports as unknown as TaskKernels,
        memory,
        i32: new Int32Array(memory.buffer),
      });
      reply({ type: "attached", id: m.id });
    } catch (e) {
      reply({ type: "attach_failed", id: m.id, message: String(e) });
    }
  } else if (m.type === "detach") {
    instances.delete(m.id as number);
  }
}

interface Port {
  on(ev: "message", f: (m: never) => void): void;
  postMessage(m: unknown): void;
}

async function parentPort(): Promise<Port | null> {
  try {
    return (await import("node:worker_threads")).parentPort as unknown as Port | null;
  } catch {
    return null;
  }
}

const port = await parentPort();
if (port !== null) {
  const p = port;
  reply = (m) => p.postMessage(m);
  p.on("message", (m: Record<string, unknown> & { type: string }) => void onMessage(m));
} else {
  self.onmessage = (ev: MessageEvent) => void onMessage(ev.data);
}
