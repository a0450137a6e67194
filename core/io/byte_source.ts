/**
 * The byte-source contract: random-access reads of a (possibly remote) file.
 * The GGUF reader reads its index from the head through this interface and
 * each tensor by range, so the same code serves memory, files and HTTP Range.
 *
 * @module
 */

import { closeSync, fstatSync, read as fsRead } from "node:fs";
import { type FileHandle, open as openFile } from "node:fs/promises";
import { StoreError } from "../errors.ts";

/**
 * One positioned read through the callback `fs.read`: a single operation on
 * the runtime's I/O pool, so it completes while the JS thread computes
 * (`FileHandle.read` takes several event-loop turns, so a read issued
 * before a layer's compute only finished after it). Resolves with the
 * bytes read.
 */
function preadOnce(
  fd: number,
  out: Uint8Array,
  at: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, out, at, length, position, (err, n) => err ? reject(err) : resolve(n));
  });
}

/** The part of `Deno.FsFile` used for reads. */
interface DenoFile {
  seekSync(offset: number, whence: Deno.SeekMode): number;
  read(p: Uint8Array): Promise<number | null>;
  statSync(): Deno.FileInfo;
  close(): void;
}

/** `Deno.openSync(path)` for reading. */
function openDeno(path: string): DenoFile {
  return Deno.openSync(path, { read: true });
}

/**
 * Under Deno, a first read handle of `path` (`Deno.FsFile`) checked to be
 * the file `file` opened (same device and inode), with its mtime; null
 * where Deno's file API is unavailable (node:fs reads then).
 */
function denoHandle(
  path: string,
  file: FileHandle,
  check: boolean,
): { first: DenoFile; mtime: number | null; id: { dev: number; ino: number } } | null {
  if (typeof Deno === "undefined" || typeof Deno.openSync !== "function") return null;
  let h: DenoFile | null = null;
  try {
    h = openDeno(path);
    const a = fstatSync(file.fd);
    const b = h.statSync();
    if (b.dev === null || b.ino === null || Number(b.dev) !== a.dev || Number(b.ino) !== a.ino) {
      h.close();
      return null;
    }
    return {
      first: h,
      mtime: check ? b.mtime?.getTime() ?? null : null,
      id: { dev: a.dev, ino: a.ino },
    };
  } catch {
    try {
      h?.close();
    } catch { /* closed already */ }
    return null;
  }
}

/** Random-access bytes. Implementations: memory, local file, HTTP Range. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** A short description for error messages (path, URL, "memory"). */
  readonly name: string;
  /**
   * Read exactly `length` bytes at `offset`. Rejects with a `StoreError`
   * (code `"out_of_range"`) if the range is outside `[0, size)`.
   */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array>;
  /**
   * Optional: read many ranges at once (result `i` = bytes of `ranges[i]`),
   * coalescing adjacent ones (see `read_ranges.ts`). Sources that check
   * reads implement it to keep checking each range on its own; time spent
   * checking is added to `timing.verifyMs`.
   */
  readRanges?(
    ranges: readonly ByteRange[],
    signal?: AbortSignal,
    timing?: RangeTiming,
  ): Promise<Uint8Array[]>;
  /**
   * Optional: read `dest.byteLength` bytes at `offset` straight into `dest`
   * (e.g. a view of a backend slot: no intermediate buffer). Resolves once
   * every write into `dest` is done, also when it rejects. `dest` may be a
   * view of a growable memory: when its buffer is detached (length 0) by the
   * time the read completes, the caller must take a new view and read again.
   * Rejects like `read`.
   */
  readInto?(
    offset: number,
    dest: Uint8Array,
    signal?: AbortSignal,
    timing?: RangeTiming,
  ): Promise<void>;
  /** Release handles. Idempotent. */
  close?(): void | Promise<void>;
}

/** A byte range of a source. */
export interface ByteRange {
  /** Start offset. */
  readonly offset: number;
  /** Length in bytes. */
  readonly length: number;
}

/** Time a `readRanges` call spent checking bytes (hashes), in milliseconds. */
export interface RangeTiming {
  /** Added to by verifying sources. */
  verifyMs: number;
}

/** Throws a typed error when `[offset, offset+length)` is not inside `size`. */
export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new StoreError(
      "out_of_range",
      `Cannot read ${name}: range [${offset}, ${
        offset + length
      }) is outside the source of ${size} bytes`,
      { offset, length, size },
    );
  }
}

/** A byte source over bytes already in memory. */
export class MemorySource implements ByteSource {
  readonly size: number;
  readonly name: string;
  #bytes: Uint8Array;

  /** @param bytes the whole file; @param name label for errors */
  constructor(bytes: Uint8Array, name = "memory") {
    this.#bytes = bytes;
    this.size = bytes.byteLength;
    this.name = name;
  }

  /** Returns a view (no copy) of the requested range. */
  read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.name, this.size, offset, length);
    return Promise.resolve(this.#bytes.subarray(offset, offset + length));
  }
}

/** Options of `FileSource.open`. */
export interface FileSourceOptions {
  /**
   * Check the file's size and mtime after every read (default true): a file
   * written in place while open gives `StoreError` `"changed"` instead of
   * mixed bytes. `false` is the opt-out (`integrity: "off"`).
   */
  checkChanges?: boolean;
  /**
   * Read with the callback `fs.read` of node:fs even under Deno (default
   * false: Deno file handles, one per concurrent read, where available).
   * Same bytes and errors; only for measuring the older path (A/B).
   */
  nodeReads?: boolean;
}

/**
 * A byte source over a local file, read by ranges through one file handle
 * with positioned reads (`pread`): concurrent reads never interfere, and a
 * read in flight progresses while JavaScript computes (one op per read).
 * By default every read is followed by an `fstat` of the handle: a size or
 * mtime different from the one seen at open fails the read with `"changed"`.
 */
export class FileSource implements ByteSource {
  readonly size: number;
  readonly name: string;
  #file: FileHandle | null;
  readonly #mtimeMs: number | null;
  /**
   * Under Deno: read handles (`Deno.FsFile`), one per concurrent read (a
   * synchronous seek then one async read op on Deno's blocking pool), idle
   * ones here. Against the callback `fs.read` (1.6 MB reads into WASM
   * memory from the page cache) 0.38 against 0.49 ms per read; streaming
   * the bench MoE at 25 %, 16 % less JS-thread CPU (docs/streaming.md).
   * Their `statSync` costs 2.8 µs against 14 µs for `fstatSync`. Null
   * elsewhere (node:fs reads).
   */
  readonly #idle: DenoFile[] | null;
  /** Every Deno handle opened (closed with the source). */
  readonly #handles: DenoFile[] = [];
  /** The Deno handles' mtime at open (ms; they report whole ms), when changes are checked. */
  readonly #denoMtime: number | null;
  /** Device and inode of the file opened (extra handles must open the same file). */
  readonly #id: { dev: number; ino: number } | null;

  private constructor(
    file: FileHandle,
    size: number,
    name: string,
    mtimeMs: number | null,
    deno: { first: DenoFile; mtime: number | null; id: { dev: number; ino: number } } | null,
  ) {
    this.#file = file;
    this.size = size;
    this.name = name;
    this.#mtimeMs = mtimeMs;
    this.#idle = deno ? [deno.first] : null;
    if (deno) this.#handles.push(deno.first);
    this.#denoMtime = deno?.mtime ?? null;
    this.#id = deno?.id ?? null;
  }

  /** Open `path` for range reads. Throws `StoreError` (`"open_failed"`) if it cannot. */
  static async open(path: string, opts: FileSourceOptions = {}): Promise<FileSource> {
    let file: FileHandle | null = null;
    try {
      file = await openFile(path, "r");
      const st = await file.stat();
      if (!st.isFile()) {
        throw new StoreError("not_a_file", `Cannot open ${path}: not a regular file`, { path });
      }
      const check = opts.checkChanges !== false;
      return new FileSource(
        file,
        st.size,
        path,
        check ? st.mtimeMs : null,
        opts.nodeReads === true ? null : denoHandle(path, file, check),
      );
    } catch (e) {
      if (file) closeSync(file.fd);
      if (e instanceof StoreError) throw e;
      throw new StoreError("open_failed", `Cannot open ${path}: ${(e as Error).message}`, { path });
    }
  }

  /**
   * Whether every read is followed by the change check (size and mtime as
   * seen at open; `checkChanges`, default true), so a read that returns
   * has read the file that was opened, unchanged by those measures.
   */
  get checksChanges(): boolean {
    return this.#mtimeMs !== null;
  }

  /** Reads the range with positioned reads; short reads loop until complete. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.name, this.size, offset, length);
    const file = this.#file;
    if (!file) throw new StoreError("closed", `Cannot read ${this.name}: source is closed`);
    const out = new Uint8Array(length);
    await this.#pread(file, out, offset);
    return out;
  }

  /**
   * Read `dest.byteLength` bytes at `offset` into `dest` with positioned reads
   * (no intermediate buffer); same checks and errors as `read`. A `dest`
   * detached while a read was in flight stops the loop without error: the
   * caller sees `dest.byteLength === 0` and reads again into a fresh view.
   */
  async readInto(offset: number, dest: Uint8Array): Promise<void> {
    const length = dest.byteLength;
    checkRange(this.name, this.size, offset, length);
    const file = this.#file;
    if (!file) throw new StoreError("closed", `Cannot read ${this.name}: source is closed`);
    await this.#pread(file, dest, offset);
  }

  async #pread(file: FileHandle, out: Uint8Array, offset: number): Promise<void> {
    const length = out.byteLength;
    let got = 0;
    while (got < length) {
      // a view detached by memory growth: the caller re-reads into a fresh one
      if (out.byteLength !== length) return;
      let n: number;
      try {
        n = this.#idle
          ? await this.#denoRead(out, got, length - got, offset + got)
          : await preadOnce(file.fd, out, got, length - got, offset + got);
      } catch (e) {
        if (out.byteLength !== length) return;
        if (e instanceof StoreError) throw e;
        if (!this.#file) {
          throw new StoreError("closed", `Cannot read ${this.name}: source was closed`);
        }
        throw new StoreError("read_failed", `Cannot read ${this.name}: ${(e as Error).message}`, {
          offset,
          length,
        });
      }
      // detached while the read was in flight: the caller reads again
      if (out.byteLength !== length) return;
      if (n === 0) {
        throw new StoreError(
          "short_read",
          `Cannot read ${this.name}: file ended at ${offset + got}, wanted ${offset + length}`,
          { offset, length, got },
        );
      }
      got += n;
    }
    if (this.#mtimeMs !== null) this.#checkUnchanged(file, offset, length);
  }

  /**
   * After a read: the file must still have the size and mtime seen at open.
   * A synchronous `fstat` (metadata only, a few µs; the async one costs ~100 µs).
   */
  #checkUnchanged(file: FileHandle, offset: number, length: number): void {
    let size: number, mtimeMs: number;
    try {
      if (this.#idle && this.#denoMtime !== null) {
        // the cheap stat of a Deno handle; anything unexpected is judged by fstat below
        const st = this.#handles[0].statSync();
        if (st.size === this.size && st.mtime?.getTime() === this.#denoMtime) return;
      }
      ({ size, mtimeMs } = fstatSync(file.fd));
    } catch (e) {
      if (!this.#file) {
        throw new StoreError("closed", `Cannot read ${this.name}: source was closed`);
      }
      throw new StoreError("read_failed", `Cannot stat ${this.name}: ${(e as Error).message}`);
    }
    if (size !== this.size || mtimeMs !== this.#mtimeMs) {
      throw new StoreError(
        "changed",
        `Cannot read ${this.name} [${offset}, ${offset + length}): the file changed while open ` +
          `(size ${this.size} → ${size}, mtime ${this.#mtimeMs} → ${mtimeMs})`,
        { offset, length, size, mtimeMs },
      );
    }
  }

  /**
   * What another thread needs to open the same file itself (off-thread
   * loads, `core/store/load_worker.ts`): the path, the size and mtime seen
   * at open (mtime null with `checkChanges: false`) and the open handle's
   * device and inode, which the other thread's handle must match. Null once
   * closed or when the handle cannot be inspected.
   */
  offThreadFile():
    | { path: string; size: number; mtimeMs: number | null; dev: number; ino: number }
    | null {
    const file = this.#file;
    if (!file) return null;
    try {
      const st = fstatSync(file.fd);
      if (st.ino === null || st.dev === null) return null;
      return {
        path: this.name,
        size: this.size,
        mtimeMs: this.#mtimeMs,
        dev: Number(st.dev),
        ino: Number(st.ino),
      };
    } catch {
      return null;
    }
  }

  /**
   * One read op on an idle Deno handle (a new one when all are busy: it must
   * be the file opened, else `"changed"`): seek, then read into
   * `out[at, at+length)`. Resolves to the bytes read (0 at the end).
   */
  async #denoRead(out: Uint8Array, at: number, length: number, position: number): Promise<number> {
    const idle = this.#idle!;
    let h = idle.pop();
    if (!h) {
      h = openDeno(this.name);
      this.#handles.push(h);
      const st = h.statSync();
      if (!this.#id || Number(st.dev) !== this.#id.dev || Number(st.ino) !== this.#id.ino) {
        throw new StoreError(
          "changed",
          `Cannot read ${this.name}: the path now names another file than the one opened`,
        );
      }
    }
    try {
      h.seekSync(position, Deno.SeekMode.Start);
      return (await h.read(out.subarray(at, at + length))) ?? 0;
    } finally {
      if (this.#file) idle.push(h);
    }
  }

  /** Close the file handle. */
  close(): void {
    for (const h of this.#handles.splice(0)) {
      try {
        h.close();
      } catch { /* closed already */ }
    }
    if (this.#idle) this.#idle.length = 0;
    if (this.#file) closeSync(this.#file.fd);
    this.#file = null;
  }
}
