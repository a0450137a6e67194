/**
 * GGUF writer producing exactly the layout llama.cpp writes: header, metadata,
 * tensor infos, padding to the alignment, then the tensors contiguous in order,
 * each padded to the alignment.
 *
 * @module
 */

import { GgufError } from "../errors.ts";
import { ggmlTensorBytes } from "./ggml_blocks.ts";
import {
  checkGgufValue,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_NAME,
  GGUF_MAX_STRING,
  type GgufArray,
  ggufScalarSize,
  type GgufValue,
  GgufValueType,
  padTo,
} from "./gguf_types.ts";

/** A tensor to write. */
export interface GgufWriteTensor {
  /** Tensor name (< 64 bytes UTF-8, unique). */
  name: string;
  /** Dimensions in ggml `ne` order (`dims[0]` innermost), at most 4. */
  dims: readonly number[];
  /** ggml type id. */
  type: number;
  /** Raw tensor bytes; the length must equal the size computed from dims and type. */
  data: Uint8Array;
}

/** What `writeGguf` writes. */
export interface GgufWriteSpec {
  /** Metadata in order. */
  metadata: Iterable<readonly [string, GgufValue]> | ReadonlyMap<string, GgufValue>;
  /** Tensors in order. */
  tensors: readonly GgufWriteTensor[];
  /**
   * Data alignment (power of two). When it differs from 32 and the metadata has no
   * `general.alignment`, a UINT32 `general.alignment` entry is appended. Default:
   * the metadata's `general.alignment`, else 32.
   */
  alignment?: number;
  /** Format version (default 3). */
  version?: 2 | 3;
}

const encoder = new TextEncoder();

type Setter = (dv: DataView, p: number, v: number | bigint | boolean) => void;
const f64: Setter = (dv, p, v) => dv.setFloat64(p, v as number, true);
const SET: readonly Setter[] = [
  (dv, p, v) => dv.setUint8(p, v as number),
  (dv, p, v) => dv.setInt8(p, v as number),
  (dv, p, v) => dv.setUint16(p, v as number, true),
  (dv, p, v) => dv.setInt16(p, v as number, true),
  (dv, p, v) => dv.setUint32(p, v as number, true),
  (dv, p, v) => dv.setInt32(p, v as number, true),
  (dv, p, v) => dv.setFloat32(p, v as number, true),
  (dv, p, v) => dv.setUint8(p, v ? 1 : 0),
  f64, // STRING: unused
  f64, // ARRAY: unused
  (dv, p, v) => dv.setBigUint64(p, v as bigint, true),
  (dv, p, v) => dv.setBigInt64(p, v as bigint, true),
  f64,
];

class Out {
  buf = new Uint8Array(4096);
  dv = new DataView(this.buf.buffer);
  pos = 0;
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let len = this.buf.length * 2;
    while (len < this.pos + n) len *= 2;
    const next = new Uint8Array(len);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }
  u32(v: number): void {
    this.room(4);
    this.dv.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  i32(v: number): void {
    this.room(4);
    this.dv.setInt32(this.pos, v, true);
    this.pos += 4;
  }
  u64(v: number | bigint): void {
    this.room(8);
    this.dv.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  str(s: string, where: string): void {
    const b = encoder.encode(s);
    if (b.length > GGUF_MAX_STRING) {
      throw new GgufError("string_too_long", `${where}: string of ${b.length} bytes exceeds 1 GiB`);
    }
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(t: GgufValueType, v: number | bigint | boolean): void {
    const size = ggufScalarSize(t);
    this.room(size);
    SET[t](this.dv, this.pos, v);
    this.pos += size;
  }
  array(a: GgufArray, where: string): void {
    this.i32(a.elemType);
    this.u64(a.value.length);
    const items: readonly unknown[] = a.value;
    for (let i = 0; i < items.length; i++) {
      if (a.elemType === GgufValueType.STRING) this.str(items[i] as string, `${where}[${i}]`);
      else if (a.elemType === GgufValueType.ARRAY) {
        this.array(items[i] as GgufArray, `${where}[${i}]`);
      } else this.scalar(a.elemType, items[i] as number | bigint | boolean);
    }
  }
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= 0x80000000 && (n & (n - 1)) === 0;
}

/**
 * Serialize a GGUF file. Throws `GgufError` on invalid values (`"bad_value"`),
 * duplicate or empty keys, duplicate or long tensor names, bad dims, unknown
 * types, bad alignment, or data whose length differs from the computed size
 * (`"size_mismatch"`).
 *
 * @example
 * ```ts
 * const bytes = writeGguf({
 *   metadata: [["general.architecture", gguf.str("llama")]],
 *   tensors: [{ name: "w", dims: [4], type: 0, data: new Uint8Array(16) }],
 * });
 * ```
 */
export function writeGguf(spec: GgufWriteSpec): Uint8Array {
  const version = spec.version ?? 3;
  if (version !== 2 && version !== 3) {
    throw new GgufError("unsupported_version", `writeGguf: version ${version} (supported: 2, 3)`);
  }
  const meta: [string, GgufValue][] = [];
  const keys = new Set<string>();
  for (const [k, v] of spec.metadata) {
    if (typeof k !== "string" || k.length === 0) {
      throw new GgufError("empty_key", `writeGguf: metadata key #${meta.length} is empty`);
    }
    if (keys.has(k)) {
      throw new GgufError("duplicate_key", `writeGguf: duplicate key '${k}'`, { key: k });
    }
    keys.add(k);
    checkGgufValue(v, `writeGguf: key '${k}'`);
    meta.push([k, v]);
  }
  const al = meta.find(([k]) => k === "general.alignment")?.[1];
  if (al && (al.type !== GgufValueType.UINT32 || !isPow2(al.value))) {
    throw new GgufError(
      "bad_alignment",
      `writeGguf: general.alignment must be a UINT32 power of two`,
    );
  }
  const alignment = spec.alignment ?? (al ? al.value as number : GGUF_DEFAULT_ALIGNMENT);
  if (!isPow2(alignment)) {
    throw new GgufError("bad_alignment", `writeGguf: alignment ${alignment} is not a power of two`);
  }
  if (al && al.value !== alignment) {
    throw new GgufError(
      "bad_alignment",
      `writeGguf: alignment ${alignment} differs from general.alignment ${String(al.value)}`,
    );
  }
  if (!al && alignment !== GGUF_DEFAULT_ALIGNMENT) {
    meta.push(["general.alignment", { type: GgufValueType.UINT32, value: alignment }]);
  }

  const names = new Set<string>();
  const sizes: number[] = [];
  for (const t of spec.tensors) {
    const where = `writeGguf: tensor '${t.name}'`;
    if (encoder.encode(t.name).length >= GGUF_MAX_NAME) {
      throw new GgufError("name_too_long", `${where}: name is ≥ 64 bytes`);
    }
    if (names.has(t.name)) throw new GgufError("duplicate_tensor", `${where}: duplicate name`);
    names.add(t.name);
    if (t.dims.length > 4) throw new GgufError("bad_dims", `${where}: ${t.dims.length} dims > 4`);
    const nbytes = ggmlTensorBytes(t.type, t.dims, where);
    if (t.data.length !== nbytes) {
      throw new GgufError(
        "size_mismatch",
        `${where}: data has ${t.data.length} bytes, expected ${nbytes}`,
        { name: t.name, got: t.data.length, expected: nbytes },
      );
    }
    sizes.push(nbytes);
  }

  const o = new Out();
  o.bytes(encoder.encode("GGUF"));
  o.u32(version);
  o.u64(spec.tensors.length);
  o.u64(meta.length);
  for (const [k, v] of meta) {
    o.str(k, `key '${k}'`);
    o.i32(v.type);
    if (v.type === GgufValueType.STRING) o.str(v.value, `key '${k}'`);
    else if (v.type === GgufValueType.ARRAY) o.array(v, `key '${k}'`);
    else o.scalar(v.type, v.value);
  }
  let offset = 0;
  const offsets: number[] = [];
  spec.tensors.forEach((t, i) => {
    o.str(t.name, `tensor '${t.name}'`);
    o.u32(t.dims.length);
    for (const d of t.dims) o.u64(d);
    o.i32(t.type);
    o.u64(offset);
    offsets.push(offset);
    offset += padTo(sizes[i], alignment);
  });
  const dataOffset = spec.tensors.length > 0 ? padTo(o.pos, alignment) : o.pos;
  const out = new Uint8Array(dataOffset + offset);
  out.set(o.buf.subarray(0, o.pos));
  spec.tensors.forEach((t, i) => out.set(t.data, dataOffset + offsets[i]));
  return out;
}
