/**
 * ggml tensor type ids as stored in GGUF (`enum ggml_type`).
 *
 * @module
 */

/** ggml type ids (GGUF `ggml_type` field). */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ4_NL: 20,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  BF16: 30,
  MXFP4: 39,
} as const;

/** A ggml type id. */
export type GgmlType = typeof GgmlType[keyof typeof GgmlType];

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(GgmlType).map(([k, v]) => [v, k]),
);

/** Name of a ggml type id (e.g. `"Q8_0"`), or `"type#N"` when unknown. */
export function ggmlTypeName(t: number): string {
  return NAMES[t] ?? `type#${t}`;
}

/** Parse a type name such as `"q8_0"` or `"F16"`; returns undefined when unknown. */
export function parseGgmlType(name: string): GgmlType | undefined {
  const v = (GgmlType as Record<string, number>)[name.toUpperCase()];
  return v === undefined ? undefined : v as GgmlType;
}
