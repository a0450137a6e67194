/**
 * Block geometry of every ggml tensor type a GGUF file may name, so the
 * container code can size tensors it cannot compute. This is the formats
 * layer's own copy (it imports nothing from `core/tensor/`); the numerics
 * live in the tensor traits table.
 *
 * Source: llama.cpp `ggml/src/ggml.c` `type_traits[]` and `ggml-common.h`.
 *
 * @module
 */

import { GgufError } from "../errors.ts";

/** Block size (elements per block) and type size (bytes per block) of a ggml type. */
export interface GgmlBlockInfo {
  /** Name as llama.cpp prints it in upper case, e.g. `"Q8_0"`. */
  readonly name: string;
  /** Elements per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

const TABLE: ReadonlyArray<readonly [number, string, number, number]> = [
  [0, "F32", 1, 4],
  [1, "F16", 1, 2],
  [2, "Q4_0", 32, 18],
  [3, "Q4_1", 32, 20],
  [6, "Q5_0", 32, 22],
  [7, "Q5_1", 32, 24],
  [8, "Q8_0", 32, 34],
  [9, "Q8_1", 32, 36],
  [10, "Q2_K", 256, 84],
  [11, "Q3_K", 256, 110],
  [12, "Q4_K", 256, 144],
  [13, "Q5_K", 256, 176],
  [14, "Q6_K", 256, 210],
  [15, "Q8_K", 256, 292],
  [16, "IQ2_XXS", 256, 66],
  [17, "IQ2_XS", 256, 74],
  [18, "IQ3_XXS", 256, 98],
  [19, "IQ1_S", 256, 50],
  [20, "IQ4_NL", 32, 18],
  [21, "IQ3_S", 256, 110],
  [22, "IQ2_S", 256, 82],
  [23, "IQ4_XS", 256, 136],
  [24, "I8", 1, 1],
  [25, "I16", 1, 2],
  [26, "I32", 1, 4],
  [27, "I64", 1, 8],
  [28, "F64", 1, 8],
  [29, "IQ1_M", 256, 56],
  [30, "BF16", 1, 2],
  [34, "TQ1_0", 256, 54],
  [35, "TQ2_0", 256, 66],
  [39, "MXFP4", 32, 17],
  [40, "NVFP4", 64, 36],
  [41, "Q1_0", 128, 18],
  [42, "Q2_0", 64, 18],
];

const BY_ID: ReadonlyMap<number, GgmlBlockInfo> = new Map(
  TABLE.map(([id, name, blockSize, typeSize]) => [id, { name, blockSize, typeSize }]),
);

/** Every ggml type id the formats layer knows (removed ids 4, 5, 31-33, 36-38 excluded). */
export const KNOWN_GGML_TYPES: readonly number[] = TABLE.map((r) => r[0]);

/** Block geometry of ggml type `type`, or `undefined` when the id is unknown or removed. */
export function ggmlBlockInfo(type: number): GgmlBlockInfo | undefined {
  return BY_ID.get(type);
}

/** Name of a ggml type id (e.g. `"Q8_0"`), or `"type#N"` when unknown. */
export function ggmlBlockName(type: number): string {
  return BY_ID.get(type)?.name ?? `type#${type}`;
}

/**
 * Bytes taken by a tensor of ggml type `type` with dims `ne` (ne[0] innermost):
 * `ne0/blockSize * typeSize * ne1*ne2*ne3`. Throws `GgufError` with code
 * `"unknown_type"`, `"bad_dims"` (negative, non-integer, ne0 not a multiple of the
 * block size) or `"too_large"` (not a safe integer), naming `what`.
 *
 * @example
 * ```ts
 * ggmlTensorBytes(8, [64, 2]); // Q8_0: 2 blocks per row × 34 bytes × 2 rows = 136
 * ```
 */
export function ggmlTensorBytes(type: number, ne: readonly number[], what = "tensor"): number {
  const info = BY_ID.get(type);
  if (!info) {
    throw new GgufError("unknown_type", `${what}: unknown ggml type ${type}`, { type });
  }
  let rest = 1;
  for (let i = 0; i < ne.length; i++) {
    const d = ne[i];
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new GgufError("bad_dims", `${what}: ne[${i}] = ${d} is not a non-negative integer`, {
        dim: i,
        value: d,
      });
    }
    if (i > 0) {
      rest *= d;
      if (!Number.isSafeInteger(rest)) {
        throw new GgufError("too_large", `${what}: element count overflows`, { dims: [...ne] });
      }
    }
  }
  const ne0 = ne.length > 0 ? ne[0] : 1;
  if (ne0 % info.blockSize !== 0) {
    throw new GgufError(
      "bad_dims",
      `${what}: ne[0] = ${ne0} is not a multiple of the ${info.name} block size ${info.blockSize}`,
      { ne0, blockSize: info.blockSize },
    );
  }
  const rowBytes = (ne0 / info.blockSize) * info.typeSize;
  const total = rowBytes * rest;
  if (!Number.isSafeInteger(total) || !Number.isSafeInteger(ne0 * rest)) {
    throw new GgufError("too_large", `${what}: byte size overflows`, { dims: [...ne] });
  }
  return total;
}
