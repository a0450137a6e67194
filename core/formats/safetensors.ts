/**
 * Strict safetensors reader and a small writer (huggingface/safetensors format):
 * `u64 N`, `N` bytes of JSON header, then the byte buffer that the header indexes
 * completely, without holes or overlaps.
 *
 * @module
 */

import { SafetensorsError } from "../errors.ts";
import type { ByteSource } from "../io/byte_source.ts";

/** Bit width of every safetensors dtype. */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
});

/** Largest header the reference implementation accepts. */
export const SAFETENSORS_MAX_HEADER = 100_000_000;

/** One tensor entry; `begin`/`end` are relative to the byte buffer (END exclusive). */
export interface SafetensorsTensorInfo {
  /** dtype string, e.g. `"F16"`. */
  readonly dtype: string;
  /** Shape, row-major. `[]` is a scalar. */
  readonly shape: readonly number[];
  /** First byte, relative to the byte buffer. */
  readonly begin: number;
  /** One past the last byte, relative to the byte buffer. */
  readonly end: number;
}

/** A parsed safetensors index over its byte source. */
export interface SafetensorsFile {
  /** Tensors by name, in header order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
  /** `__metadata__` (string → string); empty when absent. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute file offset of the byte buffer (`8 + N`). */
  readonly dataOffset: number;
  /** The byte source. */
  readonly source: ByteSource;
  /** Tensor entry by name; throws `SafetensorsError` `"missing_tensor"`. */
  tensor(name: string): SafetensorsTensorInfo;
  /** Raw bytes of a tensor. */
  readBytes(name: string, signal?: AbortSignal): Promise<Uint8Array>;
  /** Values of an F32, F16 or BF16 tensor as f32 (`"unsupported_dtype"` otherwise). */
  readF32(name: string, signal?: AbortSignal): Promise<Float32Array>;
}

function err(src: string, code: string, field: string, offset: number, msg: string) {
  return new SafetensorsError(code, `safetensors ${src}: ${field} at offset ${offset}: ${msg}`, {
    field,
    offset,
  });
}

/** Scans valid JSON and throws on the first object with a repeated key (JSON.parse keeps the last). */
function findDuplicateKey(s: string): string | undefined {
  const stack: (Set<string> | null)[] = [];
  let keyPos = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (s.charCodeAt(j) !== 0x22) j += s.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (keyPos && top) {
        const key = JSON.parse(s.slice(i, j + 1)) as string;
        if (top.has(key)) return key;
        top.add(key);
      }
      keyPos = false;
      i = j;
    } else if (c === 0x7b) {
      stack.push(new Set());
      keyPos = true;
    } else if (c === 0x5b) {
      stack.push(null);
      keyPos = false;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      keyPos = false;
    } else if (c === 0x2c) keyPos = stack[stack.length - 1] !== null;
  }
  return undefined;
}

function isNatural(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Parse and validate a safetensors file's header. Throws `SafetensorsError` with a
 * `code` (`"truncated"`, `"header_too_large"`, `"bad_header"`, `"bad_json"`,
 * `"duplicate_key"`, `"bad_metadata"`, `"bad_entry"`, `"bad_dtype"`, `"bad_shape"`,
 * `"bad_offsets"`, `"size_mismatch"`, `"misaligned_slice"`, `"too_large"`,
 * `"overlap"`, `"hole"`, `"out_of_file"`, `"trailing_bytes"`).
 *
 * @example
 * ```ts
 * const st = await readSafetensors(await FileSource.open("adapter_model.safetensors"));
 * const a = await st.readF32("base_model.model.layers.0.mlp.lora_A.weight");
 * ```
 */
export async function readSafetensors(
  src: ByteSource,
  signal?: AbortSignal,
): Promise<SafetensorsFile> {
  const name = src.name;
  if (src.size < 8) throw err(name, "truncated", "header length", 0, `file has ${src.size} bytes`);
  const nBig = new DataView((await src.read(0, 8, signal)).slice().buffer).getBigUint64(0, true);
  if (nBig > BigInt(SAFETENSORS_MAX_HEADER)) {
    throw err(name, "header_too_large", "header length", 0, `${nBig} > ${SAFETENSORS_MAX_HEADER}`);
  }
  const n = Number(nBig);
  if (8 + n > src.size) {
    throw err(name, "truncated", "header", 8, `${n} bytes declared, ${src.size - 8} in the file`);
  }
  const raw = await src.read(8, n, signal);
  if (n === 0 || raw[0] !== 0x7b) throw err(name, "bad_header", "header", 8, "must start with '{'");
  let text: string;
  let json: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    json = JSON.parse(text);
  } catch (e) {
    throw err(name, "bad_json", "header", 8, `not UTF-8 JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw err(name, "bad_json", "header", 8, "not a JSON object");
  }
  const dup = findDuplicateKey(text);
  if (dup !== undefined) throw err(name, "duplicate_key", `key '${dup}'`, 8, "appears twice");

  const dataOffset = 8 + n;
  const metadata: Record<string, string> = Object.create(null);
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [key, entry] of Object.entries(json as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        throw err(name, "bad_metadata", "__metadata__", 8, "must be an object");
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") {
          throw err(
            name,
            "bad_metadata",
            `__metadata__.${k}`,
            8,
            `value is ${typeof v}, not a string`,
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    const field = `tensor '${key}'`;
    const e = entry as Record<string, unknown>;
    if (typeof e !== "object" || e === null || Array.isArray(e)) {
      throw err(name, "bad_entry", field, 8, "entry is not an object");
    }
    const bits = typeof e.dtype === "string" && Object.hasOwn(SAFETENSORS_DTYPE_BITS, e.dtype)
      ? SAFETENSORS_DTYPE_BITS[e.dtype]
      : undefined;
    if (bits === undefined) {
      throw err(name, "bad_dtype", `${field} dtype`, 8, `${JSON.stringify(e.dtype)}`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isNatural)) {
      throw err(name, "bad_shape", `${field} shape`, 8, `${JSON.stringify(shape)}`);
    }
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) || offs.length !== 2 || !isNatural(offs[0]) || !isNatural(offs[1]) ||
      offs[1] < offs[0]
    ) {
      throw err(name, "bad_offsets", `${field} data_offsets`, 8, `${JSON.stringify(offs)}`);
    }
    let count = 1;
    for (const d of shape) count *= d;
    if (!Number.isSafeInteger(count * bits)) {
      throw err(name, "too_large", `${field} shape`, 8, `${JSON.stringify(shape)} overflows`);
    }
    if ((count * bits) % 8 !== 0) {
      throw err(
        name,
        "misaligned_slice",
        `${field}`,
        8,
        `${count} × ${bits} bits is not whole bytes`,
      );
    }
    const [begin, end] = offs as [number, number];
    if (end - begin !== (count * bits) / 8) {
      throw err(
        name,
        "size_mismatch",
        `${field} data_offsets`,
        dataOffset + begin,
        `${end - begin} bytes, but shape ${JSON.stringify(shape)} of ${e.dtype} needs ${
          (count * bits) / 8
        }`,
      );
    }
    tensors.set(
      key,
      Object.freeze({ dtype: e.dtype as string, shape: Object.freeze(shape), begin, end }),
    );
  }
  const sorted = [...tensors].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let pos = 0;
  for (const [key, t] of sorted) {
    if (t.begin !== pos) {
      throw err(
        name,
        t.begin < pos ? "overlap" : "hole",
        `tensor '${key}' data_offsets`,
        dataOffset + t.begin,
        `begins at ${t.begin}, previous tensor ends at ${pos}`,
      );
    }
    pos = t.end;
  }
  if (dataOffset + pos > src.size) {
    throw err(
      name,
      "out_of_file",
      "byte buffer",
      dataOffset,
      `indexes ${pos} bytes, file holds ${src.size - dataOffset}`,
    );
  }
  if (dataOffset + pos < src.size) {
    throw err(
      name,
      "trailing_bytes",
      "byte buffer",
      dataOffset + pos,
      `${src.size - dataOffset - pos} bytes not indexed`,
    );
  }
  return new SafetensorsFileImpl(tensors, metadata, dataOffset, src);
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

class SafetensorsFileImpl implements SafetensorsFile {
  constructor(
    readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
    readonly dataOffset: number,
    readonly source: ByteSource,
  ) {}
  tensor(name: string): SafetensorsTensorInfo {
    const t = this.tensors.get(name);
    if (!t) {
      throw new SafetensorsError(
        "missing_tensor",
        `safetensors ${this.source.name}: no tensor '${name}'`,
        { name },
      );
    }
    return t;
  }
  readBytes(name: string, signal?: AbortSignal): Promise<Uint8Array> {
    const t = this.tensor(name);
    return this.source.read(this.dataOffset + t.begin, t.end - t.begin, signal);
  }
  async readF32(name: string, signal?: AbortSignal): Promise<Float32Array> {
    const t = this.tensor(name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      throw new SafetensorsError(
        "unsupported_dtype",
        `safetensors ${this.source.name}: tensor '${name}' has dtype ${t.dtype}; readF32 takes F32, F16, BF16`,
        { name, dtype: t.dtype },
      );
    }
    const b = await this.readBytes(name, signal);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (t.dtype === "F32") {
      const out = new Float32Array(b.length / 4);
      for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    }
    const out = new Float32Array(b.length / 2);
    if (t.dtype === "BF16") {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) u[i] = dv.getUint16(2 * i, true) << 16;
    } else {
      for (let i = 0; i < out.length; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
    }
    return out;
  }
}

/** Index of the first NaN or ±Infinity in `values`, or -1 when every value is finite. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) return i; // NaN - NaN and ∞ - ∞ are NaN
  }
  return -1;
}

/** A tensor to write with `writeSafetensors`. */
export interface SafetensorsWriteTensor {
  /** dtype string from `SAFETENSORS_DTYPE_BITS`. */
  dtype: string;
  /** Shape, row-major. */
  shape: readonly number[];
  /** Raw little-endian bytes; length must equal `prod(shape) × bits / 8`. */
  data: Uint8Array;
}

/**
 * Serialize tensors (in the given order, contiguous) with an optional
 * `__metadata__`; the header is space-padded to a multiple of 8 bytes.
 * Throws `SafetensorsError` (`"bad_dtype"`, `"size_mismatch"`, `"duplicate_key"`).
 */
export function writeSafetensors(
  tensors: Iterable<readonly [string, SafetensorsWriteTensor]>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const header: Record<string, unknown> = Object.create(null);
  if (metadata) header.__metadata__ = Object.assign(Object.create(null), metadata);
  const datas: Uint8Array[] = [];
  let pos = 0;
  for (const [key, t] of tensors) {
    if (Object.hasOwn(header, key)) {
      throw new SafetensorsError("duplicate_key", `writeSafetensors: duplicate key '${key}'`);
    }
    const bits = Object.hasOwn(SAFETENSORS_DTYPE_BITS, t.dtype)
      ? SAFETENSORS_DTYPE_BITS[t.dtype]
      : 0;
    if (!bits) {
      throw new SafetensorsError("bad_dtype", `writeSafetensors: '${key}' dtype ${t.dtype}`);
    }
    const bytes = (t.shape.reduce((a, d) => a * d, 1) * bits) / 8;
    if (bytes !== t.data.length) {
      throw new SafetensorsError(
        "size_mismatch",
        `writeSafetensors: '${key}' has ${t.data.length} bytes, shape needs ${bytes}`,
      );
    }
    header[key] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [pos, pos + bytes] };
    datas.push(t.data);
    pos += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + pos);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const d of datas) {
    out.set(d, at);
    at += d.length;
  }
  return out;
}
