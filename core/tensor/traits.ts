/**
 * The quant-format traits table: one row per ggml type the reference backend can compute.
 *
 * Each matmul row product follows llama.cpp's x86-64 AVX2 CPU path (docs/specs-llamacpp.md §2.3-2.5):
 * the activation row is converted to the weight type's `vecDotType` with
 * {@link quantizeActivation} (x86 rule), then `traits.vecDot` runs the integer block dot with
 * the block-scale algebra accumulated in f32.
 *
 * @example
 * ```ts
 * import { activationBytes, quantizeActivation, rowBytes, traitsOf } from "./traits.ts";
 * import { GgmlType } from "./ggml_type.ts";
 *
 * const t = traitsOf(GgmlType.Q8_0);
 * const w = new Uint8Array(rowBytes(GgmlType.Q8_0, 64));
 * t.quantize(new Float32Array(64).fill(0.5), 0, 64, w, 0);
 * const act = new Uint8Array(activationBytes(t.vecDotType, 64));
 * quantizeActivation(t.vecDotType, new Float32Array(64).fill(2), 0, 64, act, 0);
 * const y = t.vecDot(64, w, 0, act, 0); // ≈ 64
 * ```
 *
 * @module
 */

import { TensorError } from "../errors.ts";
import { GgmlType, ggmlTypeName } from "./ggml_type.ts";
import {
  dequantizeBF16,
  dequantizeF16,
  dequantizeF32,
  quantizeBF16,
  quantizeF16,
  quantizeF32,
  vecDotBF16,
  vecDotF16,
  vecDotF32,
} from "./quant_float.ts";
import {
  dequantizeQ4_0,
  dequantizeQ4_1,
  dequantizeQ5_0,
  dequantizeQ5_1,
  dequantizeQ8_0,
  dequantizeQ8_1,
  quantizeQ4_0,
  quantizeQ4_1,
  quantizeQ5_0,
  quantizeQ5_1,
  quantizeQ8_0,
  quantizeQ8_1,
} from "./quant_legacy.ts";
import {
  quantizeActQ8_0,
  quantizeActQ8_1,
  vecDotQ4_0,
  vecDotQ4_1,
  vecDotQ5_0,
  vecDotQ5_1,
  vecDotQ8_0,
} from "./quant_legacy_dot.ts";
import {
  dequantizeQ4_K,
  dequantizeQ5_K,
  dequantizeQ6_K,
  dequantizeQ8_K,
  quantizeActQ8_K,
  vecDotQ4_K,
  vecDotQ5_K,
  vecDotQ6_K,
} from "./quant_k.ts";
import { quantizeQ4_K, quantizeQ5_K, quantizeQ6_K } from "./quant_k_quantize.ts";
import {
  dequantizeQ2_K,
  dequantizeQ3_K,
  quantizeQ2_K,
  quantizeQ3_K,
  vecDotQ2_K,
  vecDotQ3_K,
} from "./quant_k_low.ts";
import {
  dequantizeIQ4_NL,
  dequantizeIQ4_XS,
  dequantizeMXFP4,
  quantizeIQ4_NL,
  quantizeIQ4_XS,
  quantizeMXFP4,
  vecDotIQ4_NL,
  vecDotIQ4_XS,
  vecDotMXFP4,
} from "./quant_iq4.ts";

/** Decode `n` elements (a multiple of blockSize) from bytes at `srcOffset` into `out[outOffset..]`. */
export type DequantizeFn = (
  src: Uint8Array,
  srcOffset: number,
  n: number,
  out: Float32Array,
  outOffset: number,
) => void;

/** Encode `n` floats from `src[srcOffset..]` into blocks at byte `outOffset` of `out`. */
export type QuantizeFn = (
  src: Float32Array,
  srcOffset: number,
  n: number,
  out: Uint8Array,
  outOffset: number,
) => void;

/**
 * Dot product of one weight row (`n` elements of the row's type at byte `wOffset` of `w`) with
 * one activation row already in the `vecDotType` layout (at byte `aOffset` of `a`).
 */
export type VecDotFn = (
  n: number,
  w: Uint8Array,
  wOffset: number,
  a: Uint8Array,
  aOffset: number,
) => number;

/** One row of the traits table. Functions do no bounds or shape checks (hot path). */
export interface TypeTraits {
  /** ggml type id. */
  readonly type: GgmlType;
  /** Upper-case name, e.g. `"Q4_K"`. */
  readonly name: string;
  /** Elements per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
  /** Layout activations are converted to for `vecDot` (llama.cpp `vec_dot_type`, CPU). */
  readonly vecDotType: GgmlType;
  /** False for activation-only formats (Q8_1, Q8_K): their `vecDot` throws. */
  readonly isWeight: boolean;
  /** Bytes → f32 (llama.cpp `dequantize_row_*`). */
  readonly dequantize: DequantizeFn;
  /**
   * f32 → bytes as a weight (llama.cpp `quantize_row_*_ref` for F16/BF16/Q4_0…Q8_1, Q2_K, Q3_K,
   * IQ4_NL, IQ4_XS, MXFP4; a simple scale search for Q4_K…Q6_K, see quant_k_quantize.ts). Not the activation rule: use
   * {@link quantizeActivation} for that.
   */
  readonly quantize: QuantizeFn;
  /** Weight row · activation row (in `vecDotType` layout), llama.cpp CPU evaluation order. */
  readonly vecDot: VecDotFn;
}

function noDot(type: GgmlType): VecDotFn {
  return () => {
    throw new TensorError(
      "unsupported_type",
      `${
        ggmlTypeName(type)
      } is an activation-only format: llama.cpp has no CPU vec_dot with it as the weight`,
      { type },
    );
  };
}

function row(
  type: GgmlType,
  blockSize: number,
  typeSize: number,
  vecDotType: GgmlType,
  dequantize: DequantizeFn,
  quantize: QuantizeFn,
  vecDot: VecDotFn | null,
): TypeTraits {
  return Object.freeze({
    type,
    name: ggmlTypeName(type),
    blockSize,
    typeSize,
    vecDotType,
    isWeight: vecDot !== null,
    dequantize,
    quantize,
    vecDot: vecDot ?? noDot(type),
  });
}

const T = GgmlType;
const ROWS: readonly TypeTraits[] = [
  row(T.F32, 1, 4, T.F32, dequantizeF32, quantizeF32, vecDotF32),
  row(T.F16, 1, 2, T.F16, dequantizeF16, quantizeF16, vecDotF16),
  row(T.BF16, 1, 2, T.BF16, dequantizeBF16, quantizeBF16, vecDotBF16),
  row(T.Q4_0, 32, 18, T.Q8_0, dequantizeQ4_0, quantizeQ4_0, vecDotQ4_0),
  row(T.Q4_1, 32, 20, T.Q8_1, dequantizeQ4_1, quantizeQ4_1, vecDotQ4_1),
  row(T.Q5_0, 32, 22, T.Q8_0, dequantizeQ5_0, quantizeQ5_0, vecDotQ5_0),
  row(T.Q5_1, 32, 24, T.Q8_1, dequantizeQ5_1, quantizeQ5_1, vecDotQ5_1),
  row(T.Q8_0, 32, 34, T.Q8_0, dequantizeQ8_0, quantizeQ8_0, vecDotQ8_0),
  row(T.Q8_1, 32, 36, T.Q8_1, dequantizeQ8_1, quantizeQ8_1, null),
  row(T.Q2_K, 256, 84, T.Q8_K, dequantizeQ2_K, quantizeQ2_K, vecDotQ2_K),
  row(T.Q3_K, 256, 110, T.Q8_K, dequantizeQ3_K, quantizeQ3_K, vecDotQ3_K),
  row(T.Q4_K, 256, 144, T.Q8_K, dequantizeQ4_K, quantizeQ4_K, vecDotQ4_K),
  row(T.Q5_K, 256, 176, T.Q8_K, dequantizeQ5_K, quantizeQ5_K, vecDotQ5_K),
  row(T.Q6_K, 256, 210, T.Q8_K, dequantizeQ6_K, quantizeQ6_K, vecDotQ6_K),
  row(T.Q8_K, 256, 292, T.Q8_K, dequantizeQ8_K, quantizeActQ8_K, null),
  row(T.IQ4_NL, 32, 18, T.Q8_0, dequantizeIQ4_NL, quantizeIQ4_NL, vecDotIQ4_NL),
  row(T.IQ4_XS, 256, 136, T.Q8_K, dequantizeIQ4_XS, quantizeIQ4_XS, vecDotIQ4_XS),
  row(T.MXFP4, 32, 17, T.Q8_0, dequantizeMXFP4, quantizeMXFP4, vecDotMXFP4),
];

const TABLE: ReadonlyMap<number, TypeTraits> = new Map(ROWS.map((r) => [r.type, r]));

/** Every type with a traits row (weights and activation-only formats). */
export const SUPPORTED_TYPES: readonly GgmlType[] = Object.freeze(ROWS.map((r) => r.type));

/** Types usable as matmul weights (`traits.isWeight`). */
export const WEIGHT_TYPES: readonly GgmlType[] = Object.freeze(
  ROWS.filter((r) => r.isWeight).map((r) => r.type),
);

/** Whether `type` has a traits row. */
export function isSupportedType(type: number): boolean {
  return TABLE.has(type);
}

/**
 * The traits row of `type`.
 * @throws TensorError `unsupported_type` naming the type when it has no row.
 */
export function traitsOf(type: number): TypeTraits {
  const t = TABLE.get(type);
  if (t === undefined) {
    throw new TensorError(
      "unsupported_type",
      `tensor type ${ggmlTypeName(type)} (id ${type}) is not supported by the traits table; ` +
        `supported: ${ROWS.map((r) => r.name).join(", ")}`,
      { type },
    );
  }
  return t;
}

/**
 * Bytes taken by `n` elements of `type`.
 * @throws TensorError `unsupported_type`, or `bad_shape` when `n` is not a whole number of blocks.
 */
export function rowBytes(type: number, n: number): number {
  const t = traitsOf(type);
  if (!Number.isInteger(n) || n < 0 || n % t.blockSize !== 0) {
    throw new TensorError(
      "bad_shape",
      `row length ${n} is not a multiple of ${t.name}'s block size ${t.blockSize}`,
      { type, n, blockSize: t.blockSize },
    );
  }
  return (n / t.blockSize) * t.typeSize;
}

/**
 * Bytes of an activation row of `n` elements converted to `vecDotType` (same as `rowBytes`).
 * @throws TensorError as {@link rowBytes}.
 */
export function activationBytes(vecDotType: number, n: number): number {
  return rowBytes(vecDotType, n);
}

/**
 * Convert activations `x[xOffset..xOffset+n)` to `vecDotType` bytes at `outOffset` of `out`,
 * with llama.cpp's **x86-64 AVX2** `from_float` rule (docs/specs-llamacpp.md §2.4):
 * - Q8_0: `d = amax/127`, `id = amax ? 127/amax : 0`, `q = roundTiesToEven(fround(x*id))`,
 *   stored `f16(d)`; Q8_1 also `s = f16(d*Σq)` with the unrounded `d`.
 * - Q8_K: `quantize_row_q8_K_ref` (RNE, `iscale = -127/max`, f32 `d`, `bsums`).
 * - F16 / BF16: each element rounded to nearest even; F32: raw bytes.
 * @throws TensorError `unsupported_type` for any other type, `bad_shape` when `n` is not whole blocks.
 */
export function quantizeActivation(
  vecDotType: number,
  x: Float32Array,
  xOffset: number,
  n: number,
  out: Uint8Array,
  outOffset: number,
): void {
  const bytes = activationBytes(vecDotType, n);
  if (outOffset + bytes > out.length || xOffset + n > x.length) {
    throw new TensorError(
      "out_of_range",
      `quantizeActivation(${
        ggmlTypeName(vecDotType)
      }, n=${n}) needs ${bytes} bytes at ${outOffset} ` +
        `(have ${out.length}) and ${n} inputs at ${xOffset} (have ${x.length})`,
      { vecDotType, n, outOffset, xOffset },
    );
  }
  switch (vecDotType) {
    case T.F32:
      return quantizeF32(x, xOffset, n, out, outOffset);
    case T.F16:
      return quantizeF16(x, xOffset, n, out, outOffset);
    case T.BF16:
      return quantizeBF16(x, xOffset, n, out, outOffset);
    case T.Q8_0:
      return quantizeActQ8_0(x, xOffset, n, out, outOffset);
    case T.Q8_1:
      return quantizeActQ8_1(x, xOffset, n, out, outOffset);
    case T.Q8_K:
      return quantizeActQ8_K(x, xOffset, n, out, outOffset);
    default:
      throw new TensorError(
        "unsupported_type",
        `${
          ggmlTypeName(vecDotType)
        } is not an activation (vec_dot) type; expected F32, F16, BF16, Q8_0, Q8_1 or Q8_K`,
        { type: vecDotType },
      );
  }
}
