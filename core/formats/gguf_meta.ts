/**
 * Typed getters over GGUF metadata for the model loader and tokenizer. Strict
 * getters mirror llama.cpp's typed loader; lenient ones accept any numeric type.
 * A missing key throws `GgufError` `"missing_key"` (unless a default is given);
 * a wrong type throws `"wrong_type"`. Both name the key.
 *
 * @module
 */

import { GgufError } from "../errors.ts";
import {
  type GgufArray,
  type GgufMetadata,
  type GgufValue,
  GgufValueType,
  ggufValueTypeName,
} from "./gguf_types.ts";

function missing(key: string): GgufError {
  return new GgufError("missing_key", `GGUF metadata key '${key}' is missing`, { key });
}

function wrongType(key: string, got: string, want: string): GgufError {
  return new GgufError(
    "wrong_type",
    `GGUF metadata key '${key}' has type ${got}, expected ${want}`,
    { key, got, want },
  );
}

/** The raw typed value of `key`; throws `"missing_key"` when absent. */
export function getValue(meta: GgufMetadata, key: string): GgufValue {
  const v = meta.get(key);
  if (v === undefined) throw missing(key);
  return v;
}

function strict<T>(
  meta: GgufMetadata,
  key: string,
  type: GgufValueType,
  def: T | undefined,
): T {
  const v = meta.get(key);
  if (v === undefined) {
    if (def !== undefined) return def;
    throw missing(key);
  }
  if (v.type !== type) throw wrongType(key, ggufValueTypeName(v.type), ggufValueTypeName(type));
  return v.value as T;
}

/** A UINT32 value (strict type), or `def` when the key is absent. */
export function getU32(meta: GgufMetadata, key: string, def?: number): number {
  return strict(meta, key, GgufValueType.UINT32, def);
}

/** A FLOAT32 value (strict type), or `def` when the key is absent. */
export function getF32(meta: GgufMetadata, key: string, def?: number): number {
  return strict(meta, key, GgufValueType.FLOAT32, def);
}

/** A STRING value (strict type), or `def` when the key is absent. */
export function getString(meta: GgufMetadata, key: string, def?: string): string {
  return strict(meta, key, GgufValueType.STRING, def);
}

/** A BOOL value (strict type), or `def` when the key is absent. */
export function getBool(meta: GgufMetadata, key: string, def?: boolean): boolean {
  return strict(meta, key, GgufValueType.BOOL, def);
}

/** An ARRAY value; when `elemType` is given its element type must match. */
export function getArray(meta: GgufMetadata, key: string, elemType?: GgufValueType): GgufArray {
  const v = getValue(meta, key);
  if (v.type !== GgufValueType.ARRAY) throw wrongType(key, ggufValueTypeName(v.type), "ARRAY");
  if (elemType !== undefined && v.elemType !== elemType) {
    throw wrongType(
      key,
      `ARRAY of ${ggufValueTypeName(v.elemType)}`,
      `ARRAY of ${ggufValueTypeName(elemType)}`,
    );
  }
  return v;
}

function isNumeric(t: GgufValueType): boolean {
  return t !== GgufValueType.BOOL && t !== GgufValueType.STRING && t !== GgufValueType.ARRAY;
}

function toNumber(key: string, x: number | bigint): number {
  if (typeof x === "number") return x;
  const n = Number(x);
  if (!Number.isSafeInteger(n)) {
    throw new GgufError("wrong_type", `GGUF metadata key '${key}': ${x} is not a safe integer`, {
      key,
    });
  }
  return n;
}

/**
 * A number from any integer or float type (64-bit integers must be safe integers),
 * or `def` when the key is absent.
 */
export function getNumber(meta: GgufMetadata, key: string, def?: number): number {
  const v = meta.get(key);
  if (v === undefined) {
    if (def !== undefined) return def;
    throw missing(key);
  }
  if (!isNumeric(v.type)) throw wrongType(key, ggufValueTypeName(v.type), "a number");
  return toNumber(key, v.value as number | bigint);
}

/** A numeric array (any integer/float element type) as `number[]`. */
export function getNumberArray(meta: GgufMetadata, key: string): number[] {
  const a = getArray(meta, key);
  if (!isNumeric(a.elemType)) {
    throw wrongType(key, `ARRAY of ${ggufValueTypeName(a.elemType)}`, "ARRAY of numbers");
  }
  return (a.value as (number | bigint)[]).map((x) => toNumber(key, x));
}

/** A string array as `string[]`. */
export function getStringArray(meta: GgufMetadata, key: string): string[] {
  return getArray(meta, key, GgufValueType.STRING).value as string[];
}

/**
 * A scalar or per-layer array of numbers (llama.cpp `get_key_or_arr`), or `def`
 * when the key is absent.
 */
export function getNumberOrArray(
  meta: GgufMetadata,
  key: string,
  def?: number,
): number | number[] {
  const v = meta.get(key);
  if (v === undefined) {
    if (def !== undefined) return def;
    throw missing(key);
  }
  return v.type === GgufValueType.ARRAY ? getNumberArray(meta, key) : getNumber(meta, key);
}

/**
 * A per-layer value expanded to `nLayer` entries: a scalar is repeated; an array
 * must have exactly `nLayer` items (`"wrong_length"` otherwise).
 */
export function getPerLayer(
  meta: GgufMetadata,
  key: string,
  nLayer: number,
  def?: number,
): number[] {
  const v = getNumberOrArray(meta, key, def);
  if (typeof v === "number") return new Array<number>(nLayer).fill(v);
  if (v.length !== nLayer) {
    throw new GgufError(
      "wrong_length",
      `GGUF metadata key '${key}' has ${v.length} entries, expected ${nLayer} (one per layer)`,
      { key, length: v.length, expected: nLayer },
    );
  }
  return v;
}
