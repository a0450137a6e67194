/**
 * Loading a streamed expert in place: each of its matrices is read straight
 * into the expert's backend slot (`Backend.slotBytes` gives a writable view
 * of the slot, `ByteSource.readInto` fills it), so a miss allocates no
 * buffer and copies nothing on the JS thread. A fresh 4.6 MiB buffer per
 * read cost more than the read itself (page faults and zeroing of new
 * memory: see docs/streaming.md), and copying it into the slot came on top.
 *
 * A verifying source (`IntegritySource.readInto`) checks each range in the
 * slot exactly as it checks a read (same first-read records, same manifest
 * ranges), and the manifest's SHA-256 per expert is taken over the slot's
 * bytes, which lie back to back in slot layout. Bytes are never used before
 * these checks pass: the store marks the expert ready only afterwards.
 *
 * The view may be over growable memory (WASM linear memory): an allocation
 * while a read is in flight may detach it. Each read takes its view right
 * before it starts; when the view is detached by the time it completes, the
 * range is read again into a fresh view (the earlier bytes may have landed
 * in memory that is no longer the slot's buffer, and nothing was checked
 * or recorded for them). The returned promise settles only once every write
 * into the slot is over, also when it rejects, so a slot is never handed to
 * another expert while a read may still write into it.
 *
 * @module
 */

import type { Backend, Slot } from "../backend/backend.ts";
import { StoreError } from "../errors.ts";
import type { ByteSource, RangeTiming } from "./byte_source.ts";
import { IntegritySource, type RangeCheck } from "./integrity_source.ts";
import type { ExpertLocation, MatrixRef } from "./expert_location.ts";
import { type ExpertBytesHook, expertLayout } from "./expert_loader.ts";
import { sha256Hex } from "./expert_manifest.ts";
import { FileSource } from "../io/byte_source.ts";
import type { LoadRange, LoadTicket, LoadWorker } from "./load_worker.ts";

/** Reads of one range into a view detached each time, before giving up. */
const MAX_VIEW_TRIES = 4;

const PARTS = ["gate", "up", "down"] as const;

/** What an in-place load reads from and writes to. */
export interface InPlaceSpec {
  /** Source of the bytes (a verifying source checks each range in place). */
  readonly source: ByteSource;
  /** Backend owning the slot; must have `slotBytes`. */
  readonly backend: Backend;
  /** Expected hex SHA-256 of the expert (gate, up, down back to back), if known. */
  readonly sha256?: string;
  /** Told each time a view was detached during a read (the range is read again). */
  readonly onDetached?: () => void;
  /**
   * Defer the comparison of re-read ranges with their first reads
   * (`IntegritySource.readIntoDeferred`) to `InPlaceTiming.verify`, to be
   * run before the bytes are first used (and before any repack): a load
   * nobody uses is never hashed. First reads and manifest hashes are still
   * checked at once.
   */
  readonly deferRereads?: boolean;
  /**
   * Load on this worker when it can (`loadOffThread`): a local file (or a
   * verifying source over one) read into slot views over shared memory. The
   * worker reads and hashes; this thread compares the hashes.
   */
  readonly worker?: LoadWorker | null;
  /**
   * This expert was checked at an earlier load and the source is a local
   * file that checks for changes after every read (`verifyOnce`): read it
   * through the wrapped `FileSource` without hashing or the manifest's
   * SHA-256. Ignored (a checked load) for any other source.
   */
  readonly trusted?: boolean;
  /** A demand load: the worker takes it before background ones. */
  readonly urgent?: boolean;
  /** Told the ticket of an off-thread load (to raise it to demand later). */
  readonly onTicket?: (t: LoadTicket) => void;
}

/** Timing of one in-place load. */
export interface InPlaceTiming {
  /** Wall time of the reads, checks excluded, ms. */
  readonly readMs: number;
  /** Time spent hashing (first-read records, manifest ranges and SHA-256), ms. */
  readonly verifyMs: number;
  /**
   * With `deferRereads`: the deferred comparisons, to run (once) before the
   * bytes are used and before anything rewrites the slot; returns the ms it
   * took and throws `StoreError` `"integrity"` on a mismatch. Null when
   * everything was checked already.
   */
  readonly verify: (() => number) | null;
  /** The load ran on the load worker (read and hashes off this thread). */
  readonly offThread?: boolean;
}

/**
 * Whether experts can be loaded in place: the backend gives slot views and
 * no bytes hook needs to see (or replace) the bytes first.
 */
export function canLoadInPlace(backend: Backend, hook?: ExpertBytesHook): boolean {
  return typeof backend.slotBytes === "function" && !hook;
}

/**
 * Read `dest.byteLength` bytes at `offset` of `source` into `dest`: with the
 * source's own `readInto` when it has one, else a `read` and one copy. A
 * `dest` detached meanwhile is left alone (the caller reads again). Throws
 * `StoreError` `"short_read"` when the source returns a different length.
 */
export async function readInto(
  source: ByteSource,
  offset: number,
  dest: Uint8Array,
  signal?: AbortSignal,
  timing?: RangeTiming,
): Promise<void> {
  if (source.readInto) return await source.readInto(offset, dest, signal, timing);
  const length = dest.byteLength;
  const b = await source.read(offset, length, signal);
  if (dest.byteLength !== length) return;
  if (b.byteLength !== length) {
    throw new StoreError(
      "short_read",
      `Cannot read ${source.name} [${offset}, ${offset + length}): got ${b.byteLength} bytes`,
      { offset, length, got: b.byteLength },
    );
  }
  dest.set(b);
}

async function readPart(
  spec: InPlaceSpec,
  m: MatrixRef,
  slot: Slot,
  at: number,
  signal: AbortSignal | undefined,
  timing: RangeTiming,
): Promise<RangeCheck | null> {
  const src = spec.source;
  const defer = spec.deferRereads === true && src instanceof IntegritySource;
  for (let i = 0; i < MAX_VIEW_TRIES; i++) {
    const view = spec.backend.slotBytes!(slot, at, m.nbytes);
    if (defer) {
      const check = await src.readIntoDeferred(m.fileOffset, view, signal, timing);
      if (check !== undefined) return check;
    } else {
      await readInto(src, m.fileOffset, view, signal, timing);
      if (view.byteLength === m.nbytes) return null;
    }
    spec.onDetached?.();
  }
  throw new StoreError(
    "view_detached",
    `Cannot read '${m.name}' into its slot: the backend's memory moved during ${MAX_VIEW_TRIES} reads in a row`,
    { name: m.name },
  );
}

/**
 * Read expert `loc` into `slot` at `expertLayout` offsets, all matrices in
 * parallel, then check the manifest's SHA-256 over the slot's bytes. Settles
 * after the last write into the slot. Throws `StoreError`: the source's own
 * codes, `"load_failed"` for other read failures, `"integrity"`,
 * `"view_detached"`; `"bad_option"` when the backend has no `slotBytes`.
 */
export async function readExpertInPlace(
  spec: InPlaceSpec,
  loc: ExpertLocation,
  slot: Slot,
  signal?: AbortSignal,
): Promise<InPlaceTiming> {
  if (typeof spec.backend.slotBytes !== "function") {
    throw new StoreError(
      "bad_option",
      `Cannot load expert ${loc.index} of layer ${loc.layer} in place: backend '${spec.backend.name}' has no slot views`,
    );
  }
  const lay = expertLayout(loc);
  const plain = spec.trusted === true ? trustedFile(spec.source) : null;
  if (plain) spec = { ...spec, source: plain, sha256: undefined, deferRereads: false };
  if (spec.worker?.alive) {
    const off = await loadOffThread(spec, spec.worker, loc, slot, signal);
    if (off) return off;
  }
  const timing: RangeTiming = { verifyMs: 0 };
  const t0 = performance.now();
  const jobs: Promise<RangeCheck | null>[] = [];
  const at: [number, number][] = [];
  for (const p of PARTS) {
    const m = loc[p];
    if (!m) continue;
    jobs.push(readPart(spec, m, slot, lay[p], signal, timing));
    at.push([lay[p], m.nbytes]);
  }
  const settled = await Promise.allSettled(jobs);
  const wall = performance.now() - t0;
  for (const r of settled) {
    if (r.status === "fulfilled") continue;
    const e = r.reason;
    if (e instanceof StoreError) throw e;
    throw new StoreError(
      "load_failed",
      `Cannot load expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}: ${
        (e as Error)?.message ?? String(e)
      }`,
      { layer: loc.layer, index: loc.index },
    );
  }
  let verifyMs = timing.verifyMs;
  if (spec.sha256 !== undefined) {
    const v0 = performance.now();
    // WebCrypto copies its input when called: later growth cannot change what is hashed
    const h = await sha256Hex(spec.backend.slotBytes!(slot, 0, loc.bytes));
    verifyMs += performance.now() - v0;
    if (h !== spec.sha256) {
      throw new StoreError(
        "integrity",
        `Cannot load expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}: SHA-256 ${h} does not match the manifest's ${spec.sha256}`,
        { layer: loc.layer, index: loc.index, expected: spec.sha256, actual: h },
      );
    }
  }
  const checks: [RangeCheck, number, number][] = [];
  settled.forEach((r, i) => {
    if (r.status === "fulfilled" && r.value) checks.push([r.value, at[i][0], at[i][1]]);
  });
  const backend = spec.backend;
  const verify = checks.length === 0 ? null : (): number => {
    const v0 = performance.now();
    for (const [check, off, n] of checks) check(backend.slotBytes!(slot, off, n));
    return performance.now() - v0;
  };
  return { readMs: Math.max(0, wall - timing.verifyMs), verifyMs, verify };
}

/**
 * The local file under `source` (itself, or the source an `IntegritySource`
 * wraps) when it checks for changes after every read; null otherwise.
 */
export function trustedFile(source: ByteSource): FileSource | null {
  const inner = source instanceof IntegritySource ? source.inner : source;
  return inner instanceof FileSource && inner.checksChanges ? inner : null;
}

/**
 * The off-thread load of `loc` into `slot` when it applies: the source is a
 * `FileSource` (or an `IntegritySource` over one whose ranges carry no
 * manifest hash) and the slot's views are over a `SharedArrayBuffer`; null
 * otherwise (the caller loads on this thread). The worker reads each matrix
 * into its place and hashes it; here each hash is recorded or compared
 * exactly as `IntegritySource` does for a read on this thread, and the
 * manifest's SHA-256 (taken by the worker over the slot) is compared.
 * Settles after the worker's last write. Throws `StoreError` as
 * `readExpertInPlace` does (`"load_failed"` when the worker died).
 */
async function loadOffThread(
  spec: InPlaceSpec,
  worker: LoadWorker,
  loc: ExpertLocation,
  slot: Slot,
  signal: AbortSignal | undefined,
): Promise<InPlaceTiming | null> {
  const src = spec.source;
  const integ = src instanceof IntegritySource ? src : null;
  const inner = integ ? integ.inner : src;
  if (!(inner instanceof FileSource)) return null;
  const lay = expertLayout(loc);
  const ranges: LoadRange[] = [];
  let buffer: SharedArrayBuffer | null = null;
  for (const p of PARTS) {
    const m = loc[p];
    if (!m) continue;
    const view = spec.backend.slotBytes!(slot, lay[p], m.nbytes);
    if (!(view.buffer instanceof SharedArrayBuffer)) return null;
    if (buffer !== null && view.buffer !== buffer) return null;
    buffer = view.buffer;
    ranges.push({ offset: m.fileOffset, at: view.byteOffset, length: m.nbytes });
  }
  if (buffer === null) return null;
  if (integ && !integ.canAcceptHashes(ranges)) return null;
  const file = inner.offThreadFile();
  if (!file) return null;
  const whole = spec.backend.slotBytes!(slot, 0, loc.bytes);
  const t0 = performance.now();
  const ticket = worker.load(file, buffer, ranges, {
    hash: integ !== null,
    sha256: spec.sha256 !== undefined ? [whole.byteOffset, loc.bytes] : null,
    urgent: spec.urgent,
    signal,
  });
  spec.onTicket?.(ticket);
  let r;
  try {
    r = await ticket.done;
  } catch (e) {
    if (e instanceof StoreError && e.code !== "load_failed") throw e;
    throw new StoreError(
      "load_failed",
      `Cannot load expert ${loc.index} of layer ${loc.layer} from ${src.name}: ${
        (e as Error)?.message ?? String(e)
      }`,
      { layer: loc.layer, index: loc.index, offThread: true },
    );
  }
  const wall = performance.now() - t0;
  if (integ) {
    const share = r.hashMs / Math.max(1, ranges.length);
    ranges.forEach((g, i) => integ.acceptHash(g.offset, g.length, r.hashes[i], share));
  }
  if (spec.sha256 !== undefined && r.sha256 !== spec.sha256) {
    throw new StoreError(
      "integrity",
      `Cannot load expert ${loc.index} of layer ${loc.layer} from ${src.name}: SHA-256 ${r.sha256} does not match the manifest's ${spec.sha256}`,
      { layer: loc.layer, index: loc.index, expected: spec.sha256, actual: r.sha256 },
    );
  }
  // verification ran on the worker: what it cost this thread is the comparison only
  return {
    readMs: Math.max(0, wall - r.hashMs),
    verifyMs: r.hashMs,
    verify: null,
    offThread: true,
  };
}
