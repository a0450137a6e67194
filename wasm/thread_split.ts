/**
 * The shared layout of the thread pool's control block and the row split,
 * imported by both the pool (`threads.ts`) and its workers
 * (`thread_worker.ts`).
 *
 * @module
 */

/** Int32 index: job sequence number (bumped once per job; workers wait on it). */
export const CTL_SEQ = 0;
/** Int32 index: chunks of the current job finished (the caller waits for `CTL_CHUNKS`). */
export const CTL_DONE = 1;
/** Int32 index: first error of the current job (0 = none; see `ERR_*`). */
export const CTL_ERR = 2;
/** Int32 index: the job's op code (`OP_*`). */
export const CTL_OP = 4;
/** Int32 index: the id of the memory (backend) the job runs on. */
export const CTL_MEM = 5;
/**
 * Int32 index: the claim word of the current job, `(threads << 16) | left`:
 * the threads taking part (the calling thread included) and how many of its
 * chunks are still unclaimed. A thread claims with a compare-exchange that
 * decrements `left` (see {@linkcode claimChunk}); the chunk it got is
 * `chunks − left`, so chunks are claimed in order. A successful claim pins
 * the job: it cannot end (nor its arguments change) before that chunk is
 * counted done, so every other job field is read only after claiming. The
 * word is 0 (nothing to claim) between jobs and while a job is written.
 * A late or descheduled worker never holds up a job: the caller takes what
 * is left.
 */
export const CTL_CLAIM = 6;
/** Int32 index: chunks the current job is cut into. */
export const CTL_CHUNKS = 7;
/** Int32 index: the first job argument (arguments are u32, stored as i32). */
export const CTL_ARGS = 8;
/**
 * Int32 index: the first of one word per part (`MAX_THREADS` of them): the
 * chunk that part is running plus one, 0 when none. Read only to say what a
 * job that ran past the watchdog was waiting for.
 */
export const CTL_RUNNING = 32;
/** Int32 length of the control block. */
export const CTL_LENGTH = CTL_RUNNING + 64;

/** Chunks per thread a job is cut into (dynamic claiming evens out late threads). */
export const CHUNKS_PER_THREAD = 4;

/**
 * Matmul row ranges (threads × `CHUNKS_PER_THREAD` even parts; the backend runs
 * programs, this plain job is kept for the fork/join benchmark):
 * `ty, w, rows, cols, act, nTok, out, weightRowBytes, scratch, scratchStride`.
 */
export const OP_MATMUL = 1;
/**
 * Attention by KV heads:
 * `kc, vc, nCtx, start, nTok, q, k, v, nHeads, nKvHeads, hdK, hdV, scaleBits, out, scratch, scratchStride`
 * (`scaleBits`: the f32 scale's bits; the new K/V rows are stored before the job).
 */
export const OP_ATTN = 3;

/** A kernel returned a non-zero status. */
export const ERR_KERNEL = 1;
/** A worker threw (trap, missing instance). */
export const ERR_THROWN = 2;

/**
 * Claim the next chunk of the current job for part `part` (0 = the calling
 * thread): its index, or −1 when nothing is left or the job runs on fewer
 * than `part + 1` threads. Reads the chunk count only after the claim
 * succeeded (the job is then pinned), so a thread that woke for an earlier
 * job can never take a chunk of a job it read half of, nor count a chunk
 * twice.
 */
export function claimChunk(ctl: Int32Array, part: number): number {
  for (;;) {
    const v = Atomics.load(ctl, CTL_CLAIM);
    const left = v & 0xffff;
    if (left === 0 || part >= v >>> 16) return -1;
    if (Atomics.compareExchange(ctl, CTL_CLAIM, v, v - 1) === v) {
      return Atomics.load(ctl, CTL_CHUNKS) - left;
    }
  }
}

/** Items `[i0, i1)` of part `t` of `n` over `count` items (unit 1; empty parts when `count < n`). */
export function itemRange(count: number, n: number, t: number): [number, number] {
  const per = Math.floor(count / n);
  const extra = count % n;
  const i0 = t * per + Math.min(t, extra);
  return [i0, i0 + per + (t < extra ? 1 : 0)];
}

/** The f32 whose bits are `bits` (job arguments are i32). */
export function f32FromBits(bits: number): number {
  BITS_I32[0] = bits;
  return BITS_F32[0];
}

/** The bits of `x` rounded to f32, as an i32. */
export function f32Bits(x: number): number {
  BITS_F32[0] = x;
  return BITS_I32[0];
}

const BITS_F32 = new Float32Array(1);
const BITS_I32 = new Int32Array(BITS_F32.buffer);

/**
 * Rows `[r0, r1)` of part `t` of `n` over `rows` rows: boundaries on multiples
 * of 4 (a packed group), parts as even as that allows; empty parts are
 * possible when `rows < 4n`.
 */
export function rowRange(rows: number, n: number, t: number): [number, number] {
  const units = Math.ceil(rows / 4);
  const per = Math.floor(units / n);
  const extra = units % n;
  const u0 = t * per + Math.min(t, extra);
  const u1 = u0 + per + (t < extra ? 1 : 0);
  return [Math.min(rows, 4 * u0), Math.min(rows, 4 * u1)];
}

/**
 * A task program (one fork for several dependent steps):
 * `table, nTasks, scratch, scratchStride`. `table` is the byte address in
 * linear memory of `nTasks` records of {@linkcode TASK_INTS} i32s each:
 * `[kind, phaseStart, phaseEnd, args…]`. Tasks are claimed in order; a task
 * of a phase starts only when every task before `phaseStart` is done (a
 * barrier without a fork: all those tasks are claimed, so they are running),
 * and whoever finishes the last task of a phase notifies the waiters.
 */
export const OP_PROGRAM = 4;
/** I32s per task record of a program. */
export const TASK_INTS = 22;
/**
 * Task: rows of a matmul on prepared activations
 * `ty, w, rows, cols, act, nTok, out, ldo` (`w`/`out` already at the range's first row).
 */
export const T_MATMUL = 1;
/**
 * Task: gate and up rows, then SwiGLU into the gate rows
 * `tg, wg, tu, wu, rows, cols, actG, actU, nTok, g, u, ldo` (pointers at the range's first row).
 */
export const T_FFN_UP = 2;
/** Task: convert activations `ty, x, cols, nTok, dst` (`prepare_act`). */
export const T_PREP = 3;
/**
 * Task: attention over KV heads `[h0, h1)`:
 * `kc, vc, nCtx, start, nTok, q, k, v, nHeads, nKvHeads, hdK, hdV, scaleBits, out, h0, h1,
 * sinks, window` (`sinks` an address, 0 for none; `window` 0 for full: gpt-oss).
 */
export const T_ATTN = 4;
/**
 * Task: RoPE in place over `nTok` rows `x, nTok, nHeads, hd, nRot, mode, cs` (`cs` the cos/sin
 * rows of those tokens, `nRot` floats each; the `rope` kernel).
 */
export const T_ROPE = 5;
/**
 * Task: RoPE of the new K rows, then store the new K/V rows into the cache: the 14 leading
 * arguments of {@linkcode T_ATTN} (`kc … out`; K rotated in place at `k`), then `nRot, mode, cs`.
 */
export const T_ROPE_KV = 6;

/** The kernel exports a program task uses. */
export interface TaskKernels {
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
  prepare_act(ty: number, x: number, cols: number, nTok: number, dst: number): number;
  attention_heads(...args: number[]): number;
  rope(
    x: number,
    nTok: number,
    nHeads: number,
    hd: number,
    nRot: number,
    mode: number,
    cs: number,
  ): void;
}

/**
 * Call `attention_heads` over KV heads `[h0, h1)` (`store` 1: only store the
 * new K/V rows) with its 14 leading arguments at `a[o…o+14)` — `kc, vc, nCtx,
 * start, nTok, q, k, v, nHeads, nKvHeads, hdK, hdV, scaleBits, out`, the
 * scale as its f32 bits — and `scratch`; `sinks` (an address, 0: none) and
 * `window` (0: full) for gpt-oss. Returns the kernel's status.
 */
export function attentionHeads(
  k: TaskKernels,
  a: ArrayLike<number>,
  o: number,
  scratch: number,
  h0: number,
  h1: number,
  store: 0 | 1,
  sinks = 0,
  window = 0,
): number {
  const u = (i: number) => a[o + i] >>> 0;
  return k.attention_heads(
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
    f32FromBits(a[o + 12]),
    u(13),
    scratch,
    h0,
    h1,
    store,
    sinks,
    window,
  );
}

/** Spin this long (ms) at a program's barrier before sleeping on the done count. */
const BARRIER_SPIN_MS = 0.2;

/**
 * Wait until `ctl[CTL_DONE] ≥ need` (a program's barrier): spin, then sleep in
 * 1 ms slices (`canWait` false: spin only). False when `deadline`
 * (`performance.now()` ms) passes or `alive()` says the pool is broken.
 */
export function waitDone(
  ctl: Int32Array,
  need: number,
  deadline: number,
  canWait: boolean,
  alive: () => boolean,
): boolean {
  let v = Atomics.load(ctl, CTL_DONE);
  if (v >= need) return true;
  const t0 = performance.now();
  for (let i = 1; v < need; i++) {
    v = Atomics.load(ctl, CTL_DONE);
    if ((i & 255) === 0 && performance.now() - t0 > BARRIER_SPIN_MS) break;
  }
  while (v < need) {
    if (canWait) {
      try {
        Atomics.wait(ctl, CTL_DONE, v, 1);
      } catch {
        canWait = false; // a browser's main thread may not block: keep spinning
      }
    }
    v = Atomics.load(ctl, CTL_DONE);
    if (v < need && (performance.now() > deadline || !alive())) return false;
  }
  return true;
}

/**
 * Run task record `r` (an i32 index into `m`, the memory's i32 view) with
 * scratch at byte `scratch`, after its phase's barrier. Returns false when
 * a kernel rejected it or the barrier gave up (the task still counts as done).
 */
export function runTask(
  k: TaskKernels,
  ctl: Int32Array,
  m: Int32Array,
  r: number,
  scratch: number,
  deadline: number,
  canWait: boolean,
  alive: () => boolean,
): boolean {
  if (!waitDone(ctl, m[r + 1], deadline, canWait, alive)) return false;
  const u = (i: number) => m[r + 3 + i] >>> 0;
  switch (m[r]) {
    case T_MATMUL:
      return k.matmul_prepared_ld(u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), scratch) === 0;
    case T_FFN_UP: {
      const rows = u(4), cols = u(5), nTok = u(8), g = u(9), up = u(10), ldo = u(11);
      const rc1 = k.matmul_prepared_ld(u(0), u(1), rows, cols, u(6), nTok, g, ldo, scratch);
      const rc2 = k.matmul_prepared_ld(u(2), u(3), rows, cols, u(7), nTok, up, ldo, scratch);
      if (rc1 !== 0 || rc2 !== 0) return false;
      for (let t = 0; t < nTok; t++) {
        const o = 4 * t * ldo;
        k.swiglu(g + o, up + o, g + o, rows);
      }
      return true;
    }
    case T_PREP:
      return k.prepare_act(u(0), u(1), u(2), u(3), u(4)) === 0;
    case T_ATTN:
      return attentionHeads(k, m, r + 3, scratch, u(14), u(15), 0, u(16), u(17)) === 0;
    case T_ROPE:
      k.rope(u(0), u(1), u(2), u(3), u(4), u(5), u(6));
      return true;
    case T_ROPE_KV:
      // k rows at u(6): nTok u(4), nKvHeads u(9), hdK u(10)
      k.rope(u(6), u(4), u(9), u(10), u(14), u(15), u(16));
      return attentionHeads(k, m, r + 3, scratch, 0, 0, 1) === 0;
  }
  return false;
}
