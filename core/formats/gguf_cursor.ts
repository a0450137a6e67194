/**
 * Internal: a read cursor over the head of a byte source whose window grows
 * (doubling) as the GGUF index needs more bytes.
 *
 * @module
 */

import { GgufError } from "../errors.ts";
import type { ByteSource } from "../io/byte_source.ts";
import { GGUF_MAX_STRING, ggufScalarSize, type GgufValueType } from "./gguf_types.ts";

const decoder = new TextDecoder("utf-8", { fatal: false });

type Getter = (dv: DataView, p: number) => number | bigint | boolean;
const f64: Getter = (dv, p) => dv.getFloat64(p, true);
const GET: readonly Getter[] = [
  (dv, p) => dv.getUint8(p),
  (dv, p) => dv.getInt8(p),
  (dv, p) => dv.getUint16(p, true),
  (dv, p) => dv.getInt16(p, true),
  (dv, p) => dv.getUint32(p, true),
  (dv, p) => dv.getInt32(p, true),
  (dv, p) => dv.getFloat32(p, true),
  (dv, p) => dv.getUint8(p) !== 0,
  f64, // STRING: unused
  f64, // ARRAY: unused
  (dv, p) => dv.getBigUint64(p, true),
  (dv, p) => dv.getBigInt64(p, true),
  f64,
];

/** Growing-window read cursor (internal to the GGUF reader). */
export class Cursor {
  pos = 0;
  #buf = new Uint8Array(0);
  #dv = new DataView(this.#buf.buffer);
  constructor(
    readonly src: ByteSource,
    readonly window: number,
    readonly maxIndex: number,
    readonly signal?: AbortSignal,
  ) {}

  fail(code: string, field: string, offset: number, msg: string): GgufError {
    return new GgufError(
      code,
      `GGUF ${this.src.name}: ${field} at offset ${offset}: ${msg}`,
      { field, offset },
    );
  }
  get remaining(): number {
    return this.src.size - this.pos;
  }
  has(n: number): boolean {
    return this.pos + n <= this.#buf.length;
  }
  /** Make `[pos, pos+n)` available, growing the window; throws "truncated" past EOF. */
  async need(n: number, field: string): Promise<void> {
    if (this.pos + n <= this.#buf.length) return;
    if (n > this.remaining) {
      throw this.fail("truncated", field, this.pos, `needs ${n} bytes, ${this.remaining} remain`);
    }
    if (this.pos + n > this.maxIndex) {
      throw this.fail("index_too_large", field, this.pos, `index exceeds ${this.maxIndex} bytes`);
    }
    const old = this.#buf.length;
    const target = Math.min(
      this.src.size,
      Math.max(this.pos + n, Math.min(Math.max(old * 2, this.window), this.maxIndex)),
    );
    const chunk = await this.src.read(old, target - old, this.signal);
    const next = new Uint8Array(target);
    next.set(this.#buf);
    next.set(chunk, old);
    this.#buf = next;
    this.#dv = new DataView(next.buffer);
  }
  u8(): number {
    return this.#buf[this.pos++];
  }
  u32(): number {
    const v = this.#dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    const v = this.#dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.#dv.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** Reads a fixed-size scalar of type `t` (already made available). */
  scalar(t: GgufValueType): number | bigint | boolean {
    const v = GET[t](this.#dv, this.pos);
    this.pos += ggufScalarSize(t);
    return v;
  }
  bytes(n: number): Uint8Array {
    const b = this.#buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  /** u64 as a safe number, or "too_large". */
  async count(field: string): Promise<number> {
    const at = this.pos;
    if (!this.has(8)) await this.need(8, field);
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw this.fail("too_large", field, at, `value ${v} is too large`);
    }
    return Number(v);
  }
  async string(field: string, maxBytes = GGUF_MAX_STRING): Promise<string> {
    const at = this.pos;
    const len = await this.count(`${field} length`);
    if (len >= maxBytes && maxBytes < GGUF_MAX_STRING) {
      throw this.fail("name_too_long", field, at, `length ${len} is not below ${maxBytes}`);
    }
    if (len > GGUF_MAX_STRING) {
      throw this.fail("string_too_long", field, at, `length ${len} exceeds 1 GiB`);
    }
    if (len > this.remaining) {
      throw this.fail(
        "truncated",
        field,
        at,
        `length ${len} exceeds the ${this.remaining} bytes left`,
      );
    }
    if (!this.has(len)) await this.need(len, field);
    return decoder.decode(this.bytes(len));
  }
}
