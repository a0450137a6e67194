/**
 * Test helpers for the formats tests: a raw little-endian byte builder and a
 * byte source that counts reads.
 *
 * @module
 */

import type { ByteSource } from "../io/byte_source.ts";
import { MemorySource } from "../io/byte_source.ts";

/** Raw little-endian byte builder for hand-made (often malformed) files. */
export class RawBuilder {
  #parts: number[] = [];
  /** Append raw bytes. */
  bytes(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.#parts.push(b[i] & 0xff);
    return this;
  }
  /** Append a u32. */
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    return this.bytes(b);
  }
  /** Append an i32. */
  i32(v: number): this {
    return this.u32(v >>> 0);
  }
  /** Append a u64 (two's complement for negatives). */
  u64(v: number | bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    return this.bytes(b);
  }
  /** Append a GGUF string (u64 length + UTF-8). */
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    return this.u64(b.length).bytes(b);
  }
  /** Append zero bytes up to a multiple of `align`. */
  pad(align: number): this {
    while (this.#parts.length % align !== 0) this.#parts.push(0);
    return this;
  }
  /** Current length. */
  get length(): number {
    return this.#parts.length;
  }
  /** The bytes so far. */
  build(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}

/** A memory byte source that records every read. */
export class CountingSource implements ByteSource {
  readonly size: number;
  readonly name = "counting";
  readonly reads: [number, number][] = [];
  #inner: MemorySource;
  /** @param bytes the file */
  constructor(bytes: Uint8Array) {
    this.#inner = new MemorySource(bytes);
    this.size = bytes.length;
  }
  /** Forward to the memory source and record the range. */
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    return this.#inner.read(offset, length);
  }
  /** Total bytes read. */
  get bytesRead(): number {
    return this.reads.reduce((a, [, n]) => a + n, 0);
  }
}

/** Deterministic pseudo-random bytes. */
export function pseudoBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
