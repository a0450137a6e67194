/**
 * Tokenizers built from GGUF vocabulary metadata, matching llama.cpp: SentencePiece
 * BPE (`tokenizer.ggml.model = "llama"`) and byte-level BPE (`"gpt2"`) with the
 * `qwen2`, `llama3`/`llama-bpe`, `gpt-2`/`olmo` and default pre-tokenizers.
 *
 * @example
 * ```ts
 * import { buildTestVocab, createTokenizer, StreamDecoder } from "./mod.ts";
 * const tok = createTokenizer(buildTestVocab("gpt2", { pre: "qwen2" }));
 * const ids = tok.encode("Hello, world!");
 * tok.decode(ids); // "Hello, world!"
 * const stream = new StreamDecoder(tok);
 * const text = ids.map((id) => stream.push(id)).join("") + stream.flush();
 * ```
 *
 * @module
 */

export {
  type DecodeOptions,
  type EncodeOptions,
  TokenAttr,
  type Tokenizer,
  TokenType,
  type VocabSpec,
} from "./types.ts";
export { cleanSpaces, createTokenizer } from "./tokenizer.ts";
export { StreamDecoder, type StreamDecoderOptions } from "./stream.ts";
export { SUPPORTED_PRE } from "./pretokenize.ts";
export {
  buildTestVocab,
  type GgufKeyValue,
  GPT2_TEST_SPECIALS,
  type TestVocabOptions,
  vocabToGgufKeys,
} from "./test_vocab.ts";
