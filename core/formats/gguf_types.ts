/**
 * GGUF metadata value types. Every value keeps its GGUF type so a writer
 * round-trips it exactly: llama.cpp's loader is strictly typed (counts are
 * u32, eps/freq_base f32, flags bool), so a u32 must stay a u32.
 *
 * @module
 */

import { GgufError } from "../errors.ts";

/** GGUF value type ids (`enum gguf_type`), stored as i32 in the file. */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** A GGUF value type id. */
export type GgufValueType = typeof GgufValueType[keyof typeof GgufValueType];

/** Value types carried as a JS `number`. */
export type GgufNumberType =
  | (typeof GgufValueType)["UINT8"]
  | (typeof GgufValueType)["INT8"]
  | (typeof GgufValueType)["UINT16"]
  | (typeof GgufValueType)["INT16"]
  | (typeof GgufValueType)["UINT32"]
  | (typeof GgufValueType)["INT32"]
  | (typeof GgufValueType)["FLOAT32"]
  | (typeof GgufValueType)["FLOAT64"];

/** Value types carried as a JS `bigint` (64-bit integers). */
export type GgufBigIntType = (typeof GgufValueType)["UINT64"] | (typeof GgufValueType)["INT64"];

/** Items of a GGUF array: one JS type per element type; nested arrays hold `GgufArray`s. */
export type GgufArrayItems = number[] | bigint[] | boolean[] | string[] | GgufArray[];

/** A GGUF array value. `elemType` says how every item is stored. */
export interface GgufArray {
  /** Always `GgufValueType.ARRAY`. */
  type: (typeof GgufValueType)["ARRAY"];
  /** Element type of every item. */
  elemType: GgufValueType;
  /** The items (`bigint` for 64-bit integer elements, `GgufArray` for nested arrays). */
  value: GgufArrayItems;
}

/** A typed GGUF metadata value. */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint }
  | { type: (typeof GgufValueType)["BOOL"]; value: boolean }
  | { type: (typeof GgufValueType)["STRING"]; value: string }
  | GgufArray;

/** GGUF metadata: key → typed value, in file order. */
export type GgufMetadata = ReadonlyMap<string, GgufValue>;

/** Largest string GGUF allows (llama.cpp: 1 GiB). */
export const GGUF_MAX_STRING = 1 << 30;
/** Tensor names must be shorter than this many bytes (GGML_MAX_NAME). */
export const GGUF_MAX_NAME = 64;
/** Default data alignment. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Round `n` up to a multiple of `align`. */
export function padTo(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

const TYPE_NAMES = [
  "UINT8",
  "INT8",
  "UINT16",
  "INT16",
  "UINT32",
  "INT32",
  "FLOAT32",
  "BOOL",
  "STRING",
  "ARRAY",
  "UINT64",
  "INT64",
  "FLOAT64",
];

/** Name of a GGUF value type id (e.g. `"UINT32"`), or `"type#N"` when unknown. */
export function ggufValueTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type#${t}`;
}

/** True when `t` is a valid GGUF value type id (0..12). */
export function isGgufValueType(t: number): t is GgufValueType {
  return Number.isInteger(t) && t >= 0 && t <= 12;
}

/** Byte size of a fixed-size GGUF scalar type, or 0 for STRING/ARRAY. */
export function ggufScalarSize(t: GgufValueType): number {
  return [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][t];
}

const INT_RANGES: Record<number, readonly [number, number]> = {
  0: [0, 0xff],
  1: [-0x80, 0x7f],
  2: [0, 0xffff],
  3: [-0x8000, 0x7fff],
  4: [0, 0xffffffff],
  5: [-0x80000000, 0x7fffffff],
};
const BIG_RANGES: Record<number, readonly [bigint, bigint]> = {
  10: [0n, 0xffffffffffffffffn],
  11: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

function badValue(where: string, msg: string): GgufError {
  return new GgufError("bad_value", `${where}: ${msg}`, { where });
}

/** Throws `GgufError` (`"bad_value"`) unless `item` is a valid JS value for element type `t`. */
export function checkGgufItem(t: number, item: unknown, where: string, depth = 0): void {
  if (!isGgufValueType(t)) throw badValue(where, `unknown value type ${t}`);
  const range = INT_RANGES[t];
  if (range) {
    if (typeof item !== "number" || !Number.isInteger(item) || item < range[0] || item > range[1]) {
      throw badValue(where, `${String(item)} is not a ${ggufValueTypeName(t)}`);
    }
    return;
  }
  const big = BIG_RANGES[t];
  if (big) {
    if (typeof item !== "bigint" || item < big[0] || item > big[1]) {
      throw badValue(where, `${String(item)} is not a ${ggufValueTypeName(t)} bigint`);
    }
    return;
  }
  switch (t) {
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof item !== "number") throw badValue(where, `expected a number`);
      return;
    case GgufValueType.BOOL:
      if (typeof item !== "boolean") throw badValue(where, `expected a boolean`);
      return;
    case GgufValueType.STRING:
      if (typeof item !== "string") throw badValue(where, `expected a string`);
      return;
    default: {
      if (depth > 16) throw badValue(where, `arrays nested deeper than 16`);
      const a = item as GgufArray | null;
      if (typeof a !== "object" || a === null || a.type !== GgufValueType.ARRAY) {
        throw badValue(where, `expected a nested GgufArray`);
      }
      if (!Array.isArray(a.value)) throw badValue(where, `array value is not an array`);
      const items: readonly unknown[] = a.value;
      for (let i = 0; i < items.length; i++) {
        checkGgufItem(a.elemType, items[i], `${where}[${i}]`, depth + 1);
      }
    }
  }
}

/** Throws `GgufError` (`"bad_value"`) unless `v` is a well-formed `GgufValue`. */
export function checkGgufValue(v: GgufValue, where: string): void {
  if (typeof v !== "object" || v === null) throw badValue(where, "not a GgufValue");
  checkGgufItem(v.type, v.type === GgufValueType.ARRAY ? v : v.value, where);
}

/** Builders for typed metadata values; each validates its range. */
export interface GgufValueBuilders {
  /** UINT8 value. */ u8(v: number): GgufValue;
  /** INT8 value. */ i8(v: number): GgufValue;
  /** UINT16 value. */ u16(v: number): GgufValue;
  /** INT16 value. */ i16(v: number): GgufValue;
  /** UINT32 value. */ u32(v: number): GgufValue;
  /** INT32 value. */ i32(v: number): GgufValue;
  /** FLOAT32 value (stored rounded to f32). */ f32(v: number): GgufValue;
  /** FLOAT64 value. */ f64(v: number): GgufValue;
  /** UINT64 value. */ u64(v: bigint | number): GgufValue;
  /** INT64 value. */ i64(v: bigint | number): GgufValue;
  /** BOOL value. */ bool(v: boolean): GgufValue;
  /** STRING value. */ str(v: string): GgufValue;
  /** ARRAY value of `elemType` items; typed arrays (e.g. `Int32Array`) are copied to plain arrays. */
  arr(
    elemType: GgufValueType,
    items: GgufArrayItems | ArrayLike<number> | ArrayLike<bigint>,
  ): GgufArray;
}

function mk<T extends GgufValue>(v: T): T {
  checkGgufValue(v, "gguf value");
  return v;
}

/**
 * Typed metadata value builders.
 *
 * @example
 * ```ts
 * const meta = new Map([["llama.block_count", gguf.u32(2)], ["general.name", gguf.str("tiny")]]);
 * ```
 */
export const gguf: GgufValueBuilders = {
  u8: (v) => mk({ type: GgufValueType.UINT8, value: v }),
  i8: (v) => mk({ type: GgufValueType.INT8, value: v }),
  u16: (v) => mk({ type: GgufValueType.UINT16, value: v }),
  i16: (v) => mk({ type: GgufValueType.INT16, value: v }),
  u32: (v) => mk({ type: GgufValueType.UINT32, value: v }),
  i32: (v) => mk({ type: GgufValueType.INT32, value: v }),
  f32: (v) => mk({ type: GgufValueType.FLOAT32, value: Math.fround(v) }),
  f64: (v) => mk({ type: GgufValueType.FLOAT64, value: v }),
  u64: (v) => mk({ type: GgufValueType.UINT64, value: toBig(v) }),
  i64: (v) => mk({ type: GgufValueType.INT64, value: toBig(v) }),
  bool: (v) => mk({ type: GgufValueType.BOOL, value: v }),
  str: (v) => mk({ type: GgufValueType.STRING, value: v }),
  arr: (elemType, items) =>
    mk({
      type: GgufValueType.ARRAY,
      elemType,
      value:
        (Array.isArray(items) ? items : Array.from(items as ArrayLike<unknown>)) as GgufArrayItems,
    }),
};

function toBig(v: bigint | number): bigint {
  if (typeof v === "bigint") return v;
  if (!Number.isSafeInteger(v)) throw badValue("gguf value", `${v} is not a safe integer`);
  return BigInt(v);
}
