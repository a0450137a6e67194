/**
 * A byte source pinned to the content its whole-file SHA-256 was computed
 * over. `PinnedSource.pin` reads the file once (as a `model.sha256` check
 * does anyway), computing the SHA-256 and a 64-bit hash (`hashWide`) of every
 * fixed-size block; afterwards every read is widened to whole blocks and
 * each block is checked against its hash, so a file that changes after the
 * check (a swapped file, a server that keeps its validators, a corrupting
 * hop) fails with `StoreError` `"integrity"` instead of being used — the
 * SHA-256 checked at open then holds for every byte read later, including
 * bytes read for the first time.
 *
 * Cost: one `hashWide` pass per read over at most two extra blocks, and
 * 8 bytes of table per block (12.5 MB for a 100 GB file at 64 KiB blocks).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { StoreError } from "../errors.ts";
import { type ByteSource, checkRange } from "./byte_source.ts";
import { hashWideParts } from "./hash_wide.ts";

/** Default block size of `PinnedSource.pin`. */
export const PIN_BLOCK_BYTES = 64 * 1024;

/** Options of `PinnedSource.pin`. */
export interface PinOptions {
  /** Bytes per block (a power of two ≥ 4 KiB; default 64 KiB). */
  blockBytes?: number;
  /** Bytes per read while hashing (default 8 MiB, rounded to whole blocks). */
  chunkBytes?: number;
  /** Cancels the hashing pass. */
  signal?: AbortSignal;
}

/** Reads checked against the block hashes recorded when the whole file was hashed. */
export class PinnedSource implements ByteSource {
  readonly size: number;
  readonly name: string;
  /** The wrapped source. */
  readonly inner: ByteSource;
  /** Bytes per block. */
  readonly blockBytes: number;
  readonly #table: Uint32Array;

  private constructor(inner: ByteSource, blockBytes: number, table: Uint32Array) {
    this.inner = inner;
    this.size = inner.size;
    this.name = inner.name;
    this.blockBytes = blockBytes;
    this.#table = table;
  }

  /**
   * Read all of `inner` once: returns its lowercase hex SHA-256 and a source
   * whose reads are checked against the content hashed. Throws `StoreError`
   * `"bad_option"` for a bad block size, and the source's own errors.
   *
   * @example
   * ```ts ignore
   * const { sha256, source } = await PinnedSource.pin(await FileSource.open("m.gguf"));
   * if (sha256 !== expected) throw new Error("not the published file");
   * const model = await loadModel(source); // every read is checked against that content
   * ```
   */
  static async pin(
    inner: ByteSource,
    opts: PinOptions = {},
  ): Promise<{ sha256: string; source: PinnedSource }> {
    const bb = opts.blockBytes ?? PIN_BLOCK_BYTES;
    if (!Number.isSafeInteger(bb) || bb < 4096 || (bb & (bb - 1)) !== 0) {
      throw new StoreError(
        "bad_option",
        `Cannot pin ${inner.name}: blockBytes must be a power of two ≥ 4096: received ${bb}`,
      );
    }
    const chunk = Math.max(bb, Math.floor((opts.chunkBytes ?? 8 << 20) / bb) * bb);
    const nBlocks = Math.ceil(inner.size / bb);
    const table = new Uint32Array(2 * nBlocks);
    const sha = createHash("sha256");
    for (let off = 0; off < inner.size; off += chunk) {
      const bytes = await inner.read(off, Math.min(chunk, inner.size - off), opts.signal);
      sha.update(bytes);
      for (let p = 0; p < bytes.byteLength; p += bb) {
        const [hi, lo] = hashWideParts(bytes.subarray(p, Math.min(p + bb, bytes.byteLength)));
        const b = (off + p) / bb;
        table[2 * b] = hi;
        table[2 * b + 1] = lo;
      }
    }
    return { sha256: sha.digest("hex"), source: new PinnedSource(inner, bb, table) };
  }

  /**
   * Read `[offset, offset+length)`: the whole blocks around it are read and
   * each is checked. Rejects with `StoreError` `"integrity"` naming the block
   * when one differs from the content pinned, or the source's own errors.
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    checkRange(this.name, this.size, offset, length);
    if (length === 0) return new Uint8Array(0);
    const bb = this.blockBytes;
    const first = Math.floor(offset / bb), last = Math.floor((offset + length - 1) / bb);
    const start = first * bb, end = Math.min(this.size, (last + 1) * bb);
    const bytes = await this.inner.read(start, end - start, signal);
    for (let b = first; b <= last; b++) {
      const p = (b - first) * bb;
      const [hi, lo] = hashWideParts(bytes.subarray(p, Math.min(p + bb, bytes.byteLength)));
      if (hi !== this.#table[2 * b] || lo !== this.#table[2 * b + 1]) {
        throw new StoreError(
          "integrity",
          `Cannot read ${this.name} [${offset}, ${offset + length}): block [${b * bb}, ${
            Math.min(this.size, (b + 1) * bb)
          }) differs from the content whose SHA-256 was checked at open`,
          { offset, length, block: b, blockBytes: bb },
        );
      }
    }
    return bytes.subarray(offset - start, offset - start + length);
  }

  /** Close the wrapped source. */
  close(): void | Promise<void> {
    return this.inner.close?.();
  }
}
