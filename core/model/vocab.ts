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
  /** `get(meta, "tokenizer.ggml." + key)` when the key is present, else undefined. */
  const opt = <T>(key: string, get: (m: GgufMetadata, k: string) => T): T | undefined => {
    const k = `tokenizer.ggml.${key}`;
    return meta.has(k) ? get(meta, k) : undefined;
  };
  const spec: VocabSpec = {
    model,
    pre: opt("pre", getString),
    tokens: getStringArray(meta, "tokenizer.ggml.tokens"),
    scores: opt("scores", getNumberArray),
    tokenTypes: opt("token_type", getNumberArray),
    merges: opt("merges", getStringArray),
    bosId: opt("bos_token_id", getNumber),
    eosId: opt("eos_token_id", getNumber),
    eotId: opt("eot_token_id", getNumber),
    unkId: opt("unknown_token_id", getNumber),
    padId: opt("padding_token_id", getNumber),
    addBos: opt("add_bos_token", getBool),
    addEos: opt("add_eos_token", getBool),
    addSpacePrefix: opt("add_space_prefix", getBool),
  };
  return createTokenizer(spec);
}
