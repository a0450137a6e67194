/**
 * Step 1 of the default-model pipeline: generate the story corpus, train an SPM
 * (`tokenizer.ggml.model = "llama"`) vocabulary on it, and tokenize it with moe-edge's
 * own tokenizer (the one inference uses), so training sees exactly the ids that
 * `createTokenizer` produces at run time.
 *
 * Writes to `tools/train/out/`: `corpus.txt`, `vocab.json` (a {@link VocabSpec}),
 * `train.bin` / `valid.bin` (u16 LE token ids; each story is `<s> story </s>`).
 *
 * ```sh
 * deno run --allow-read --allow-write tools/train/prepare.ts
 * ```
 *
 * @module
 */

import { trainBpe } from "../../core/tokenizer/bpe_train.ts";
import { createTokenizer, type VocabSpec } from "../../core/tokenizer/mod.ts";
import { spmVocabFromPieces } from "../../core/tokenizer/test_vocab.ts";
import { buildStories } from "./corpus.ts";

/** Corpus and vocabulary settings (changing any of them changes the model). */
export const PREP = {
  trainSeed: 1,
  trainStories: 1300,
  validSeed: 2,
  validStories: 100,
  vocabSize: 640,
} as const;

const SPM_FIXED = 3 + 256; // <unk> <s> </s> + <0x00>..<0xFF>

/** The SPM vocabulary learned from `text` (whitespace-separated words, "▁"-prefixed). */
export function trainSpmVocab(text: string, size: number): VocabSpec {
  // Units: "▁"-prefixed words split into letter and non-letter runs ("▁time," → "▁time"
  // ","; '▁"Yes,' → '▁"' "Yes" ","), so that no piece mixes a word with punctuation: a
  // prompt that ends in "time" then tokenizes as the corpus's "time," does, "▁time" first.
  const words = new Map<string, number>();
  for (const w of text.split(/\s+/)) {
    if (w === "") continue;
    for (const u of ("\u2581" + w).match(/\u2581?[A-Za-z]+|\u2581?[^A-Za-z\u2581]+/g)!) {
      words.set(u, (words.get(u) ?? 0) + 1);
    }
  }
  const freq = new Map<string, number>();
  for (const [w, c] of words) for (const ch of w) freq.set(ch, (freq.get(ch) ?? 0) + c);
  // every corpus character is a piece ("▁" first, then by frequency; ties by code point)
  const chars = [...freq.keys()].filter((c) => c !== "\u2581")
    .sort((a, b) => freq.get(b)! - freq.get(a)! || (a < b ? -1 : 1));
  const pieces = ["\u2581", ...chars];
  const budget = size - SPM_FIXED;
  const trained = trainBpe(words, (w) => [...w], budget - pieces.length, new Set(pieces));
  pieces.push(...trained.tokens);
  if (pieces.length !== budget) {
    throw new Error(`corpus too small for ${size} tokens: only ${pieces.length} pieces`);
  }
  return spmVocabFromPieces(pieces);
}

function tokenizeStories(spec: VocabSpec, stories: string[]): { ids: Uint16Array; bytes: number } {
  const tok = createTokenizer(spec);
  const out: number[] = [];
  let byteTokens = 0;
  for (const s of stories) {
    const ids = tok.encode(s); // adds <s>
    if (ids[0] !== spec.bosId) throw new Error("encode did not add <s>");
    const back = tok.decode(ids.slice(1)); // drops the space prefix, as llama.cpp
    if (back !== s) throw new Error(`tokenizer round-trip failed:\n${s}\n${back}`);
    for (const id of ids) if (id >= 3 && id < SPM_FIXED) byteTokens++;
    out.push(...ids, spec.eosId!);
  }
  return { ids: Uint16Array.from(out), bytes: byteTokens };
}

if (import.meta.main) {
  const outDir = new URL("./out/", import.meta.url);
  await Deno.mkdir(outDir, { recursive: true });
  const train = buildStories(PREP.trainSeed, PREP.trainStories);
  const valid = buildStories(PREP.validSeed, PREP.validStories);
  const text = train.join("\n") + "\n";
  const spec = trainSpmVocab(text, PREP.vocabSize);
  const tr = tokenizeStories(spec, train), va = tokenizeStories(spec, valid);
  if (tr.bytes + va.bytes !== 0) throw new Error("corpus needs byte-fallback tokens");
  await Deno.writeTextFile(new URL("corpus.txt", outDir), text);
  await Deno.writeTextFile(
    new URL("vocab.json", outDir),
    JSON.stringify({ ...spec, scores: [...spec.scores!], tokenTypes: [...spec.tokenTypes!] }),
  );
  const le = (a: Uint16Array): Uint8Array => {
    const b = new Uint8Array(a.length * 2), dv = new DataView(b.buffer);
    a.forEach((v, i) => dv.setUint16(i * 2, v, true));
    return b;
  };
  await Deno.writeFile(new URL("train.bin", outDir), le(tr.ids));
  await Deno.writeFile(new URL("valid.bin", outDir), le(va.ids));
  const words = new Set(text.split(/\s+/)).size;
  console.log(
    `corpus: ${train.length} stories, ${text.length} chars, ${words} distinct words; ` +
      `vocab ${spec.tokens.length}; train ${tr.ids.length} tokens ` +
      `(${(text.length / tr.ids.length).toFixed(2)} chars/token), valid ${va.ids.length} tokens`,
  );
}
