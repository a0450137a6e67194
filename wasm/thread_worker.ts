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
  CTL_ARGS,
  CTL_CHUNKS,
  CTL_CLAIM,
  CTL_DONE,
  CTL_ERR,
  CTL_MEM,
  CTL_OP,
  CTL_SEQ,
  CTL_THREADS,
  ERR_KERNEL,
  ERR_THROWN,
  f32FromBits,
  itemRange,
  OP_ATTN,
  OP_FFN_UP,
  OP_MATMUL,
  rowRange,
} from "./thread_split.ts";

interface Inst {
  matmul_prepared_ld(
    ty: number,
    w: number,
    rows: number,
    cols: number,
    act: number,
    nTok: number,
    out: number,
    ldo: number,
    scratch: number,
  ): number;
  swiglu(g: number, u: number, out: number, n: number): void;
  attention_heads(...args: number[]): number;
}

/**
 * Spin this long (ms) on the job counter before sleeping. Short: with the
 * cores oversubscribed by other processes, a worker spinning between jobs
 * takes CPU time from the caller (2-thread decode on the bench MoE at load
 * 2.5–3 on 2 CPUs: 1 ms spins 1.6–2.3× slower than 1 thread, 0.05 ms
 * 0.9–1.1×; a wake-up from the futex costs tens of µs instead).
 */
const SPIN_MS = 0.05;
/** Sleep slice (ms) on the futex; between slices the worker handles messages. */
const SLEEP_MS = 50;
/** While busy, handle messages at least this often (ms). */
const BUSY_YIELD_MS = 500;
const instances = new Map<number, Inst>();
const modules = new Map<string, WebAssembly.Module>();
let ctl: Int32Array | null = null;
let index = 0;

/** Run chunk `k` of `n` of the current job with scratch part `part`; false when a kernel failed. */
function runChunk(
  inst: Inst,
  op: number,
  a: Int32Array,
  n: number,
  k: number,
  part: number,
): boolean {
  const u = (i: number) => a[i] >>> 0;
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
  if (op === OP_FFN_UP) {
    const nFf = u(4), nEmbd = u(5), nTok = u(8), g = u(9), up = u(10);
    const [r0, r1] = rowRange(nFf, n, k);
    if (r1 <= r0) return true;
    const s = u(13) + part * u(14);
    const rc1 = inst.matmul_prepared_ld(
      u(0),
      u(1) + r0 * u(11),
      r1 - r0,
      nEmbd,
      u(6),
      nTok,
      g + 4 * r0,
      nFf,
      s,
    );
    const rc2 = inst.matmul_prepared_ld(
      u(2),
      u(3) + r0 * u(12),
      r1 - r0,
      nEmbd,
      u(7),
      nTok,
      up + 4 * r0,
      nFf,
      s,
    );
    if (rc1 !== 0 || rc2 !== 0) return false;
    for (let t = 0; t < nTok; t++) {
      const o = 4 * (t * nFf + r0);
      inst.swiglu(g + o, up + o, g + o, r1 - r0);
    }
    return true;
  }
  if (op === OP_ATTN) {
    const [h0, h1] = itemRange(u(9), n, k);
    if (h1 <= h0) return true;
    return inst.attention_heads(
      u(0),
      u(1),
      u(2),
      u(3),
      u(4),
      u(5),
      u(6),
      u(7),
      u(8),
      u(9),
      u(10),
      u(11),
      f32FromBits(a[12]),
      u(13),
      u(14) + part * u(15),
      h0,
      h1,
      0,
    ) === 0;
  }
  return false;
}

/** Claim and run chunks of job `seq` until none is left (or the job is gone). */
function work(c: Int32Array, seq: number): void {
  const part = index + 1; // part 0 is the calling thread's
  if (part >= c[CTL_THREADS]) return;
  const op = c[CTL_OP], n = c[CTL_CHUNKS];
  const args = c.slice(CTL_ARGS, CTL_ARGS + 16);
  const inst = instances.get(c[CTL_MEM]);
  const tag = seq & 0xffff;
  for (;;) {
    const v = Atomics.load(c, CTL_CLAIM);
    if (v >>> 16 !== tag || (v & 0xffff) >= n) return; // another job, or nothing left
    if (Atomics.compareExchange(c, CTL_CLAIM, v, v + 1) !== v) continue;
    // chunk claimed: the job cannot end (nor its arguments change) before it is counted done
    try {
      if (inst === undefined) throw new Error(`no instance for memory ${c[CTL_MEM]}`);
      if (!runChunk(inst, op, args, n, v & 0xffff, part)) {
        Atomics.compareExchange(c, CTL_ERR, 0, ERR_KERNEL);
      }
    } catch {
      Atomics.compareExchange(c, CTL_ERR, 0, ERR_THROWN);
    }
    if (Atomics.add(c, CTL_DONE, 1) + 1 === n) Atomics.notify(c, CTL_DONE);
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
      // spin for SPIN_MS (the gap between two ops of a decode step), then sleep on the
      // futex in slices of SLEEP_MS, returning to the event loop between slices
      const t0 = performance.now();
      for (let i = 1; s === seen; i++) {
        s = Atomics.load(c, CTL_SEQ);
        if ((i & 255) === 0 && performance.now() - t0 > SPIN_MS) break;
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
    work(c, s);
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
      instances.set(m.id as number, inst.exports as unknown as Inst);
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
