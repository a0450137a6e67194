/**
 * Tensor numerics: ggml type ids, fp16/bf16 conversions, and the quant-format traits table
 * (dequantize, weight quantize, x86-AVX2-exact activation quantization and dot products).
 *
 * @module
 */

export * from "./ggml_type.ts";
export * from "./f16.ts";
export * from "./traits.ts";
export { roundHalfAway, roundHalfEven } from "./block_util.ts";
export { quantizeActQ8_0, quantizeActQ8_1 } from "./quant_legacy_dot.ts";
export { quantizeActQ8_K, scaleMinK4 } from "./quant_k.ts";
export { dotF32Arrays } from "./quant_float.ts";
