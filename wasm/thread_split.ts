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
/** Int32 index: threads taking part in the current job, the calling thread included. */
export const CTL_THREADS = 3;
/** Int32 index: the job's op code (`OP_*`). */
export const CTL_OP = 4;
/** Int32 index: the id of the memory (backend) the job runs on. */
export const CTL_MEM = 5;
/**
 * Int32 index: the next unclaimed chunk (low 16 bits) tagged with the job's
 * sequence number (high 16 bits); threads claim chunks with compare-exchange,
 * so a late or descheduled worker never holds up the job (the caller takes
 * what is left).
 */
export const CTL_CLAIM = 6;
/** Int32 index: chunks the current job is cut into. */
export const CTL_CHUNKS = 7;
/** Int32 index: the first job argument (arguments are u32, stored as i32). */
export const CTL_ARGS = 8;
/** Int32 length of the control block. */
export const CTL_LENGTH = 64;

/** Chunks per thread a job is cut into (dynamic claiming evens out late threads). */
export const CHUNKS_PER_THREAD = 4;

/** Matmul row ranges: `ty, w, rows, cols, act, nTok, out, weightRowBytes, scratch, scratchStride`. */
export const OP_MATMUL = 1;
/**
 * Fused FFN first half, row ranges of `nFf`:
 * `tg, wg, tu, wu, nFf, nEmbd, actG, actU, nTok, g, u, rowBytesG, rowBytesU, scratch, scratchStride`.
 */
export const OP_FFN_UP = 2;

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
