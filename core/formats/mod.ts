/**
 * File formats: GGUF (read/write, typed metadata) and safetensors (read/write)
 * over the `ByteSource` contract.
 *
 * @module
 */

export type { ByteSource } from "../io/byte_source.ts";
export {
  checkGgufItem,
  checkGgufValue,
  gguf,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_NAME,
  GGUF_MAX_STRING,
  type GgufArray,
  type GgufArrayItems,
  type GgufBigIntType,
  type GgufMetadata,
  type GgufNumberType,
  ggufScalarSize,
  type GgufValue,
  type GgufValueBuilders,
  GgufValueType,
  ggufValueTypeName,
  isGgufValueType,
  padTo,
} from "./gguf_types.ts";
export {
  getArray,
  getBool,
  getF32,
  getNumber,
  getNumberArray,
  getNumberOrArray,
  getPerLayer,
  getString,
  getStringArray,
  getU32,
  getValue,
} from "./gguf_meta.ts";
export {
  type GgmlBlockInfo,
  ggmlBlockInfo,
  ggmlBlockName,
  ggmlTensorBytes,
  KNOWN_GGML_TYPES,
} from "./ggml_blocks.ts";
export {
  type GgufFile,
  type GgufReadOptions,
  type GgufTensorInfo,
  readGguf,
} from "./gguf_reader.ts";
export { type GgufWriteSpec, type GgufWriteTensor, writeGguf } from "./gguf_writer.ts";
export {
  readSafetensors,
  SAFETENSORS_DTYPE_BITS,
  SAFETENSORS_MAX_HEADER,
  type SafetensorsFile,
  type SafetensorsTensorInfo,
  type SafetensorsWriteTensor,
  writeSafetensors,
} from "./safetensors.ts";
