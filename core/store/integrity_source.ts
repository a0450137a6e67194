/**
 * The verifying byte source every model load reads through (unless the
 * caller opts out with `integrity: "off"`):
 *
 * - **trust on first read**: the first read of each byte range records a
 *   64-bit hash (`hashWide`, WASM SIMD); every later read of the same range (a streamed
 *   expert re-fetched after eviction, a retried load) must hash the same, or
 *   the read fails with `StoreError` `"integrity"` — a file swapped or
 *   rewritten underneath, a server without validators serving new bytes, or
 *   a transfer that flipped bits never becomes wrong tokens;
 * - **manifest ranges**: ranges registered with `expect` (the non-expert
 *   tensors of an integrity manifest) are checked against their SHA-256 on
 *   every read;
 * - **a verified prefix**: with a manifest's header hash, the GGUF index is
 *   parsed from bytes checked against it.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ByteRange, ByteSource, RangeTiming } from "./byte_source.ts";
import { hashWide } from "./hash_wide.ts";
import { readMerged } from "./read_ranges.ts";
import { sha256Hex } from "./expert_manifest.ts";

/** Counters of an `IntegritySource`. */
export interface IntegrityStats {
  /** Ranges whose first-read hash is recorded. */
  rangesRecorded: number;
  /** Re-reads that matched their first read. */
  rereadsMatched: number;
  /** Reads checked against a manifest SHA-256. */
  sha256Checked: number;
  /** Bytes hashed (64-bit hash and SHA-256 together). */
  bytesHashed: number;
  /** Milliseconds spent hashing. */
  hashMs: number;
}

/** A deferred first-read comparison (`readIntoDeferred`): throws `StoreError` `"integrity"`. */
export type RangeCheck = (bytes: Uint8Array) => void;

/** An expected SHA-256 of one byte range (a manifest entry). */
interface Expected {
  readonly name: string;
  readonly sha256: string;
}

function key(offset: number, length: number): string {
  return `${offset}:${length}`;
}

/** Wraps a `ByteSource` so every read is checked (see the module doc). */
export class IntegritySource implements ByteSource {
  /** The wrapped source. */
  readonly inner: ByteSource;
  /**
   * Whether a first read records its hash (default true). A load turns it
   * off for ranges read exactly once (non-expert tensors, a resident
   * store's experts), where a record could never be compared: recorded
   * ranges are still compared on every read.
   */
  recordFirstReads = true;
  readonly size: number;
  readonly name: string;
  readonly #seen = new Map<string, string>();
  readonly #expected = new Map<string, Expected>();
  #prefix: Uint8Array | null = null;
  readonly #stats: IntegrityStats = {
    rangesRecorded: 0,
    rereadsMatched: 0,
    sha256Checked: 0,
    bytesHashed: 0,
    hashMs: 0,
  };

  /** @param inner the source to verify */
  constructor(inner: ByteSource) {
    this.inner = inner;
    this.size = inner.size;
    this.name = inner.name;
  }

  /**
   * Expect `[offset, offset+length)` to hash to `sha256` (lowercase hex) on
   * every read of exactly that range. `name` labels errors (a tensor name).
   */
  expect(offset: number, length: number, sha256: string, name: string): void {
    this.#expected.set(key(offset, length), { name, sha256 });
  }

  /**
   * Read `[0, length)` once, check it against `sha256` (`StoreError`
   * `"integrity"` when it differs) and serve later reads inside it from
   * these verified bytes until `releasePrefix`.
   */
  async verifyPrefix(length: number, sha256: string, signal?: AbortSignal): Promise<void> {
    const bytes = await this.inner.read(0, length, signal);
    const t0 = performance.now();
    const got = await sha256Hex(bytes);
    this.#count(length, t0);
    this.#stats.sha256Checked++;
    if (got !== sha256) {
      throw new StoreError(
        "integrity",
        `Cannot read the GGUF header of ${this.name} (bytes [0, ${length})): SHA-256 ${got} does not match the manifest's ${sha256}`,
        { offset: 0, length, expected: sha256, actual: got },
      );
    }
    this.#prefix = bytes;
  }

  /** Drop the verified prefix kept by `verifyPrefix` (once the index is parsed). */
  releasePrefix(): void {
    this.#prefix = null;
  }

  /** Counters so far. */
  stats(): IntegrityStats {
    return { ...this.#stats };
  }

  /**
   * Read and check. Rejects with `StoreError` `"integrity"` when the bytes
   * differ from the manifest's SHA-256 or from the first read of the range;
   * otherwise with the wrapped source's own errors.
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const pre = this.#prefix;
    if (pre && offset < pre.byteLength) {
      return await this.#readPrefixed(pre, offset, length, signal);
    }
    const bytes = await this.inner.read(offset, length, signal);
    const c = this.#check(offset, length, bytes);
    if (c) await c;
    return bytes;
  }

  /**
   * Read many ranges with coalesced reads of the wrapped source, each range
   * checked on its own exactly as `read` checks it (same first-read records,
   * same manifest ranges); hashing time is added to `timing.verifyMs`.
   */
  async readRanges(
    ranges: readonly ByteRange[],
    signal?: AbortSignal,
    timing?: RangeTiming,
  ): Promise<Uint8Array[]> {
    if (this.#prefix) {
      return await Promise.all(ranges.map((r) => this.read(r.offset, r.length, signal)));
    }
    const parts = await readMerged(this.inner, ranges, signal);
    const t0 = performance.now();
    try {
      for (let i = 0; i < ranges.length; i++) {
        const c = this.#check(ranges[i].offset, ranges[i].length, parts[i]);
        if (c) await c;
      }
    } finally {
      if (timing) timing.verifyMs += performance.now() - t0;
    }
    return parts;
  }

  /**
   * Read `dest.byteLength` bytes at `offset` into `dest` (a slot view: no
   * intermediate buffer when the wrapped source has `readInto`), checked
   * exactly as `read` checks that range; hashing time is added to
   * `timing.verifyMs`. When `dest` was detached meanwhile (memory growth),
   * returns without checking or recording: the caller reads again into a
   * fresh view. Rejects only after every write into `dest` is done.
   */
  async readInto(
    offset: number,
    dest: Uint8Array,
    signal?: AbortSignal,
    timing?: RangeTiming,
  ): Promise<void> {
    const length = dest.byteLength;
    const pre = this.#prefix;
    if (pre && offset < pre.byteLength) {
      const b = await this.#readPrefixed(pre, offset, length, signal);
      if (dest.byteLength === length) dest.set(b);
      return;
    }
    if (this.inner.readInto) await this.inner.readInto(offset, dest, signal);
    else {
      const b = await this.inner.read(offset, length, signal);
      if (dest.byteLength !== length) return;
      dest.set(b);
    }
    if (dest.byteLength !== length) return;
    const t0 = performance.now();
    try {
      const c = this.#check(offset, length, dest);
      if (c) await c;
    } finally {
      if (timing) timing.verifyMs += performance.now() - t0;
    }
  }

  /**
   * `readInto`, except that a re-read of a range with a first-read record
   * (and no manifest hash) is not compared now: the result is a check to run
   * on the same bytes before they are used (null when everything was
   * checked now). The check hashes what it is given and throws `StoreError`
   * `"integrity"` when it differs from the first read, exactly as `read`
   * would have; bytes that are never used are never compared. First reads
   * are still recorded at once. `undefined` when `dest` was detached (read
   * again).
   */
  async readIntoDeferred(
    offset: number,
    dest: Uint8Array,
    signal?: AbortSignal,
    timing?: RangeTiming,
  ): Promise<RangeCheck | null | undefined> {
    const length = dest.byteLength;
    const k = key(offset, length);
    const first = this.#expected.has(k) || this.#prefix ? undefined : this.#seen.get(k);
    if (first === undefined) {
      await this.readInto(offset, dest, signal, timing);
      return dest.byteLength === length ? null : undefined;
    }
    if (this.inner.readInto) await this.inner.readInto(offset, dest, signal);
    else {
      const b = await this.inner.read(offset, length, signal);
      if (dest.byteLength !== length) return undefined;
      dest.set(b);
    }
    if (dest.byteLength !== length) return undefined;
    return (bytes: Uint8Array): void => {
      if (bytes.byteLength !== length) {
        throw new StoreError(
          "integrity",
          `Cannot check ${this.name} [${offset}, ${
            offset + length
          }): given ${bytes.byteLength} bytes`,
          { offset, length },
        );
      }
      this.#compareFirst(offset, length, bytes, first, performance.now());
    };
  }

  /**
   * Whether ranges of `offsets`/`lengths` can be read and hashed by another
   * thread and checked here with `acceptHash`: none has a manifest SHA-256
   * (`expect`) and no verified prefix is in use.
   */
  canAcceptHashes(
    ranges: readonly { readonly offset: number; readonly length: number }[],
  ): boolean {
    if (this.#prefix) return false;
    return ranges.every((r) => !this.#expected.has(key(r.offset, r.length)));
  }

  /**
   * Check a range read and hashed (`hashWide`) elsewhere — an off-thread
   * load into shared memory — exactly as a read here would: record the
   * first read's hash, compare later ones (`StoreError` `"integrity"` on a
   * mismatch). `hashMs` (the other thread's hashing time) is counted in
   * the stats. Only for ranges `canAcceptHashes` approved.
   */
  acceptHash(offset: number, length: number, hash: string, hashMs = 0): void {
    const first = this.#seen.get(key(offset, length));
    if (first === undefined && !this.recordFirstReads) return;
    this.#stats.bytesHashed += length;
    this.#stats.hashMs += hashMs;
    this.#judge(offset, length, hash, first);
  }

  /** Close the wrapped source. */
  close(): void | Promise<void> {
    return this.inner.close?.();
  }

  async #readPrefixed(
    pre: Uint8Array,
    offset: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<Uint8Array> {
    if (offset + length <= pre.byteLength) return pre.slice(offset, offset + length);
    // the part past the verified header is tensor data: read it, checked as usual
    const rest = await this.read(pre.byteLength, offset + length - pre.byteLength, signal);
    const out = new Uint8Array(length);
    out.set(pre.subarray(offset));
    out.set(rest, pre.byteLength - offset);
    return out;
  }

  #count(n: number, t0: number): void {
    this.#stats.bytesHashed += n;
    this.#stats.hashMs += performance.now() - t0;
  }

  /**
   * Check one range: a promise only for a manifest range (SHA-256 is async);
   * first-read records are checked synchronously, so callers that time the
   * check do not count other work done while they would await.
   */
  #check(offset: number, length: number, bytes: Uint8Array): Promise<void> | void {
    const k = key(offset, length);
    const exp = this.#expected.get(k);
    if (exp) return this.#checkSha256(offset, length, bytes, exp);
    const first = this.#seen.get(k);
    if (first === undefined && !this.recordFirstReads) return;
    this.#compareFirst(offset, length, bytes, first, performance.now());
  }

  async #checkSha256(
    offset: number,
    length: number,
    bytes: Uint8Array,
    exp: Expected,
  ): Promise<void> {
    const t0 = performance.now();
    const got = await sha256Hex(bytes);
    this.#count(length, t0);
    this.#stats.sha256Checked++;
    if (got !== exp.sha256) {
      throw new StoreError(
        "integrity",
        `Cannot read tensor '${exp.name}' of ${this.name} [${offset}, ${
          offset + length
        }): SHA-256 ${got} does not match the manifest's ${exp.sha256}`,
        { tensor: exp.name, offset, length, expected: exp.sha256, actual: got },
      );
    }
  }

  /** Record (no `first`) or compare with the first read's hash; sync (hashWide). */
  #compareFirst(
    offset: number,
    length: number,
    bytes: Uint8Array,
    first: string | undefined,
    t0: number,
  ): void {
    const h = hashWide(bytes);
    this.#count(length, t0);
    this.#judge(offset, length, h, first);
  }

  /** Record `h` as the first read (no `first`) or compare it with the first read's hash. */
  #judge(offset: number, length: number, h: string, first: string | undefined): void {
    if (first === undefined) {
      this.#seen.set(key(offset, length), h);
      this.#stats.rangesRecorded++;
    } else if (first !== h) {
      throw new StoreError(
        "integrity",
        `Cannot read ${this.name} [${offset}, ${
          offset + length
        }): its bytes differ from the first read of that range (hash ${h}, first ${first}): ` +
          `the file changed or the transfer corrupted it`,
        { offset, length, expected: first, actual: h },
      );
    } else this.#stats.rereadsMatched++;
  }
}
