/**
 * Builds a tokenizer from GGUF `tokenizer.ggml.*` metadata.
 *
 * @module
 */

import { ModelError } from "../errors.ts";
import type { GgufMetadata } from "../formats/gguf_types.ts";
import {
  getBool,
  getNumber,
  getNumberArray,
  getString,
  getStringArray,
} from "../formats/gguf_meta.ts";
import { createTokenizer, type Tokenizer, type VocabSpec } from "../tokenizer/mod.ts";

function optNumber(meta: GgufMetadata, key: string): number | undefined {
  return meta.has(key) ? getNumber(meta, key) : undefined;
}

/** The tokenizer described by GGUF metadata. Throws `ModelError`/`TokenizerError` when malformed. */
export function tokenizerFromGguf(meta: GgufMetadata): Tokenizer {
  const model = getString(meta, "tokenizer.ggml.model");
  if (model !== "llama" && model !== "gpt2") {
    throw new ModelError(
      "unsupported_tokenizer",
      `Cannot load tokenizer: tokenizer.ggml.model '${model}' is not supported (llama, gpt2)`,
      { model },
    );
  }
  const spec: VocabSpec = {
    model,
    pre: meta.has("tokenizer.ggml.pre") ? getString(meta, "tokenizer.ggml.pre") : undefined,
    tokens: getStringArray(meta, "tokenizer.ggml.tokens"),
    scores: meta.has("tokenizer.ggml.scores")
      ? getNumberArray(meta, "tokenizer.ggml.scores")
      : undefined,
    tokenTypes: meta.has("tokenizer.ggml.token_type")
      ? getNumberArray(meta, "tokenizer.ggml.token_type")
      : undefined,
    merges: meta.has("tokenizer.ggml.merges")
      ? getStringArray(meta, "tokenizer.ggml.merges")
      : undefined,
    bosId: optNumber(meta, "tokenizer.ggml.bos_token_id"),
    eosId: optNumber(meta, "tokenizer.ggml.eos_token_id"),
    eotId: optNumber(meta, "tokenizer.ggml.eot_token_id"),
    unkId: optNumber(meta, "tokenizer.ggml.unknown_token_id"),
    padId: optNumber(meta, "tokenizer.ggml.padding_token_id"),
    addBos: meta.has("tokenizer.ggml.add_bos_token")
      ? getBool(meta, "tokenizer.ggml.add_bos_token")
      : undefined,
    addEos: meta.has("tokenizer.ggml.add_eos_token")
      ? getBool(meta, "tokenizer.ggml.add_eos_token")
      : undefined,
    addSpacePrefix: meta.has("tokenizer.ggml.add_space_prefix")
      ? getBool(meta, "tokenizer.ggml.add_space_prefix")
      : undefined,
  };
  return createTokenizer(spec);
}
