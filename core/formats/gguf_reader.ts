/**
 * Strict GGUF reader (versions 2 and 3). The index (header, metadata, tensor
 * infos) is read from the head of a `ByteSource` through a growing window, so a
 * remote file is never fetched whole; tensor bytes are read by range later.
 *
 * @module
 */

import { GgufError } from "../errors.ts";
import type { ByteSource } from "../io/byte_source.ts";
import { ggmlBlockName, ggmlTensorBytes } from "./ggml_blocks.ts";
import { Cursor } from "./gguf_cursor.ts";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_NAME,
  type GgufArray,
  type GgufArrayItems,
  ggufScalarSize,
  type GgufValue,
  GgufValueType,
  ggufValueTypeName,
  isGgufValueType,
  padTo,
} from "./gguf_types.ts";

/** One tensor of a GGUF file. */
export interface GgufTensorInfo {
  /** Tensor name (< 64 bytes, unique). */
  readonly name: string;
  /** Dimensions in ggml `ne` order (`dims[0]` innermost), as many as stored (0..4). */
  readonly dims: readonly number[];
  /** ggml type id. */
  readonly type: number;
  /** Offset relative to the data section, as stored. */
  readonly offset: number;
  /** Absolute file offset of the first byte. */
  readonly fileOffset: number;
  /** Byte size: `dims[0]/blockSize * typeSize * dims[1]*dims[2]*dims[3]`. */
  readonly nbytes: number;
}

/** A parsed GGUF index over its byte source. */
export interface GgufFile {
  /** Format version (2 or 3). */
  readonly version: number;
  /** Metadata in file order, each value with its GGUF type. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Tensor infos in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  /** Data alignment (`general.alignment`, default 32). */
  readonly alignment: number;
  /** Absolute file offset of the data section. */
  readonly dataOffset: number;
  /** The byte source the file was read from. */
  readonly source: ByteSource;
  /** Tensor info by name; throws `GgufError` `"missing_tensor"` when absent. */
  tensor(name: string): GgufTensorInfo;
  /** True when a tensor of that name exists. */
  hasTensor(name: string): boolean;
  /** Read a tensor's bytes from the source. */
  readTensorBytes(info: GgufTensorInfo, signal?: AbortSignal): Promise<Uint8Array>;
}

/** Options of `readGguf`. */
export interface GgufReadOptions {
  /** First read window in bytes (default 256 KiB); doubles as the index needs. */
  initialWindow?: number;
  /** Largest index (header + metadata + tensor infos) accepted, in bytes (default 512 MiB). */
  maxIndexBytes?: number;
  /** Maximum nesting of arrays inside arrays (default 4). */
  maxArrayDepth?: number;
  /**
   * Require llama.cpp's exact contiguous layout: offset[i] = Σ PAD(nbytes[j<i]) (default false).
   * Without it, gaps between tensors are accepted, but tensors must still lie in index order
   * without overlapping (`"unordered_tensors"`, `"overlapping_tensors"`), so the tensors
   * together never claim more bytes than the data section holds.
   */
  strictOffsets?: boolean;
  /** Abort signal for the index reads. */
  signal?: AbortSignal;
}

const MAX_DIMS = 4;

function minItemSize(t: GgufValueType): number {
  if (t === GgufValueType.STRING) return 8;
  if (t === GgufValueType.ARRAY) return 12;
  return ggufScalarSize(t);
}

async function readArray(
  c: Cursor,
  field: string,
  depth: number,
  maxDepth: number,
): Promise<GgufArray> {
  const at = c.pos;
  if (!c.has(4)) await c.need(4, `${field} element type`);
  const elemType = c.i32();
  if (!isGgufValueType(elemType)) {
    throw c.fail(
      "unknown_value_type",
      `${field} element type`,
      at,
      `unknown value type ${elemType}`,
    );
  }
  if (elemType === GgufValueType.ARRAY && depth >= maxDepth) {
    throw c.fail("too_deep", field, at, `arrays nested deeper than ${maxDepth}`);
  }
  const nAt = c.pos;
  const n = await c.count(`${field} length`);
  const min = minItemSize(elemType);
  if (n * min > c.remaining) {
    throw c.fail(
      "bad_count",
      `${field} length`,
      nAt,
      `${n} ${ggufValueTypeName(elemType)} items need ≥ ${n * min} bytes, ${c.remaining} remain`,
    );
  }
  let value: GgufArrayItems;
  if (elemType === GgufValueType.STRING) {
    const out: string[] = []; // grows only as items parse
    for (let i = 0; i < n; i++) out.push(await c.string(`${field}[${i}]`));
    value = out;
  } else if (elemType === GgufValueType.ARRAY) {
    const out: GgufArray[] = [];
    for (let i = 0; i < n; i++) out.push(await readArray(c, `${field}[${i}]`, depth + 1, maxDepth));
    value = out;
  } else {
    await c.need(n * min, field);
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = c.scalar(elemType);
    value = out as GgufArrayItems;
  }
  return { type: GgufValueType.ARRAY, elemType, value };
}

async function readValue(
  c: Cursor,
  t: GgufValueType,
  field: string,
  maxDepth: number,
): Promise<GgufValue> {
  if (t === GgufValueType.STRING) return { type: t, value: await c.string(field) };
  if (t === GgufValueType.ARRAY) return await readArray(c, field, 0, maxDepth);
  const size = ggufScalarSize(t);
  if (!c.has(size)) await c.need(size, field);
  return { type: t, value: c.scalar(t) } as GgufValue;
}

interface RawInfo {
  name: string;
  dims: number[];
  type: number;
  offset: number;
  at: number;
}

/**
 * Parse the GGUF index of `src`. Throws `GgufError` with a `code` on any malformed
 * or unsupported input; never allocates from an unchecked size.
 *
 * @example
 * ```ts
 * const f = await readGguf(await FileSource.open("model.gguf"));
 * const w = await f.readTensorBytes(f.tensor("token_embd.weight"));
 * ```
 */
export async function readGguf(src: ByteSource, opts: GgufReadOptions = {}): Promise<GgufFile> {
  const maxDepth = opts.maxArrayDepth ?? 4;
  const c = new Cursor(
    src,
    Math.max(64, opts.initialWindow ?? 256 * 1024),
    opts.maxIndexBytes ?? 512 * 1024 * 1024,
    opts.signal,
  );
  await c.need(4, "magic");
  const magic = c.bytes(4);
  if (magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 || magic[3] !== 0x46) {
    // hex and ASCII, so a safetensors/zip/HTML file is recognisable from the message
    const hex = [...magic].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...magic].map((b) => b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")
      .join("");
    throw c.fail("bad_magic", "magic", 0, `expected "GGUF" (47 47 55 46), got ${hex} ("${ascii}")`);
  }
  await c.need(4, "version");
  const version = c.u32();
  if ((version & 0xffff) === 0) {
    throw c.fail("wrong_endianness", "version", 4, `version ${version} looks byte-swapped`);
  }
  if (version < 2 || version > 3) {
    throw c.fail("unsupported_version", "version", 4, `version ${version} (supported: 2, 3)`);
  }
  const nTensors = await c.count("n_tensors");
  const nKv = await c.count("n_kv");
  // A KV takes ≥ 8+1+4+1 bytes; a tensor info ≥ 8+4+4+8 bytes.
  if (nKv * 14 + nTensors * 24 > c.remaining) {
    throw c.fail(
      "bad_count",
      "n_kv/n_tensors",
      8,
      `${nKv} KVs and ${nTensors} tensors cannot fit in ${c.remaining} bytes`,
    );
  }
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const at = c.pos;
    const key = await c.string(`kv[${i}] key`);
    if (key.length === 0) throw c.fail("empty_key", `kv[${i}] key`, at, "key is empty");
    if (metadata.has(key)) throw c.fail("duplicate_key", `kv '${key}'`, at, "duplicate key");
    const tAt = c.pos;
    if (!c.has(4)) await c.need(4, `kv '${key}' type`);
    const t = c.i32();
    if (!isGgufValueType(t)) {
      throw c.fail("unknown_value_type", `kv '${key}' type`, tAt, `unknown value type ${t}`);
    }
    metadata.set(key, await readValue(c, t, `kv '${key}'`, maxDepth));
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get("general.alignment");
  if (al !== undefined) {
    if (al.type !== GgufValueType.UINT32 || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
      throw c.fail(
        "bad_alignment",
        "general.alignment",
        0,
        `must be a UINT32 power of two, got ${ggufValueTypeName(al.type)} ${String(al.value)}`,
      );
    }
    alignment = al.value;
  }
  const raw: RawInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = await c.string(`tensor[${i}] name`, GGUF_MAX_NAME);
    if (names.has(name)) throw c.fail("duplicate_tensor", `tensor '${name}'`, at, "duplicate name");
    names.add(name);
    const dAt = c.pos;
    await c.need(4, `tensor '${name}' n_dims`);
    const nDims = c.u32();
    if (nDims > MAX_DIMS) throw c.fail("bad_dims", `tensor '${name}' n_dims`, dAt, `${nDims} > 4`);
    await c.need(8 * nDims + 12, `tensor '${name}' dims/type/offset`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const v = c.u64();
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) { // also catches negative i64
        throw c.fail(
          "bad_dims",
          `tensor '${name}' ne[${d}]`,
          c.pos - 8,
          `${BigInt.asIntN(64, v)} is out of range`,
        );
      }
      dims.push(Number(v));
    }
    const type = c.i32();
    const oAt = c.pos;
    const off = c.u64();
    if (off > BigInt(src.size)) {
      throw c.fail("out_of_file", `tensor '${name}' offset`, oAt, `${off} is beyond the file`);
    }
    raw.push({ name, dims, type, offset: Number(off), at });
  }
  const dataOffset = nTensors > 0 ? padTo(c.pos, alignment) : c.pos;
  if (dataOffset > src.size) {
    throw c.fail("truncated", "data section", c.pos, `aligned start ${dataOffset} is past the end`);
  }
  const tensors: GgufTensorInfo[] = [];
  let expect = 0;
  // [prevStart, prevEnd) of the previous tensor, relative to the data section
  let prevStart = 0, prevEnd = 0, prevName = "";
  for (const r of raw) {
    const what = `GGUF ${src.name}: tensor '${r.name}' at offset ${r.at}`;
    let nbytes: number;
    try {
      nbytes = ggmlTensorBytes(r.type, r.dims, what);
    } catch (e) {
      if (e instanceof GgufError && e.code === "unknown_type") {
        throw c.fail(
          "unknown_type",
          `tensor '${r.name}' type`,
          r.at,
          `unknown ggml type ${r.type}`,
        );
      }
      throw e;
    }
    if (r.offset % alignment !== 0) {
      throw c.fail(
        "misaligned",
        `tensor '${r.name}' offset`,
        r.at,
        `${r.offset} is not a multiple of the alignment ${alignment}`,
      );
    }
    if (opts.strictOffsets && r.offset !== expect) {
      throw c.fail(
        "bad_offset",
        `tensor '${r.name}' offset`,
        r.at,
        `${r.offset}, expected ${expect}`,
      );
    }
    if (r.offset < prevEnd) {
      // llama.cpp (gguf.cpp) accepts only offset[i] = Σ PAD(nbytes[j<i]); we also accept gaps,
      // never a range that starts before the previous one ends: a file could otherwise name the
      // same bytes for every tensor and make the loader allocate far more than the file holds.
      const overlap = r.offset + nbytes > prevStart;
      throw c.fail(
        overlap ? "overlapping_tensors" : "unordered_tensors",
        `tensor '${r.name}'`,
        r.at,
        overlap
          ? `data [${r.offset}, ${r.offset + nbytes}) overlaps tensor '${prevName}' ` +
            `at [${prevStart}, ${prevEnd})`
          : `data offset ${r.offset} is before the end ${prevEnd} of the previous tensor ` +
            `'${prevName}' (tensors must be stored in index order)`,
      );
    }
    prevStart = r.offset;
    prevEnd = r.offset + nbytes;
    prevName = r.name;
    expect += padTo(nbytes, alignment);
    const fileOffset = dataOffset + r.offset;
    if (fileOffset + nbytes > src.size) {
      throw c.fail(
        "out_of_file",
        `tensor '${r.name}' data`,
        r.at,
        `[${fileOffset}, ${fileOffset + nbytes}) of ${
          ggmlBlockName(r.type)
        } ends past the file (${src.size} bytes)`,
      );
    }
    tensors.push(
      Object.freeze({
        name: r.name,
        dims: Object.freeze(r.dims),
        type: r.type,
        offset: r.offset,
        fileOffset,
        nbytes,
      }),
    );
  }
  return new GgufFileImpl(version, metadata, tensors, alignment, dataOffset, src);
}

class GgufFileImpl implements GgufFile {
  #byName: Map<string, GgufTensorInfo>;
  constructor(
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: readonly GgufTensorInfo[],
    readonly alignment: number,
    readonly dataOffset: number,
    readonly source: ByteSource,
  ) {
    this.#byName = new Map(tensors.map((t) => [t.name, t]));
  }
  tensor(name: string): GgufTensorInfo {
    const t = this.#byName.get(name);
    if (!t) {
      throw new GgufError("missing_tensor", `GGUF ${this.source.name}: no tensor named '${name}'`, {
        name,
      });
    }
    return t;
  }
  hasTensor(name: string): boolean {
    return this.#byName.has(name);
  }
  readTensorBytes(info: GgufTensorInfo, signal?: AbortSignal): Promise<Uint8Array> {
    return this.source.read(info.fileOffset, info.nbytes, signal);
  }
}
