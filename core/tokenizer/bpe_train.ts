/**
 * A tiny deterministic BPE trainer and corpus generator, used to build the test
 * vocabularies (`test_vocab.ts`). Not a production trainer.
 *
 * @module
 */

import { mulberry32 } from "../util/rng.ts";

/** Result of {@link trainBpe}. */
export interface TrainedBpe {
  /** Merges in rank order. */
  merges: [string, string][];
  /** New tokens (merge results not already known), in creation order. */
  tokens: string[];
}

/** Deterministic 32-bit PRNG (mulberry32), floats in [0, 1); from `core/util/rng.ts`. */
export const prng: (seed: number) => () => number = mulberry32;

const BASE_TEXT =
  "The quick brown fox jumps over the lazy dog. A mixture of experts routes each token " +
  "to a few experts, and the router learns which experts are good at what. In 2024 the " +
  "model had 64 experts, 8 of them active per token; it ran at 100 tokens per second.\n" +
  "Hello, world! What's new? It's the end of the line, isn't it? We'll see, they've said.\n" +
  "Café, naïve, über, façade — déjà vu. Ünïcödé is fun: 你好，世界。 こんにちは 🙂\n";

const SYLLABLES = [
  "the",
  "an",
  "er",
  "in",
  "on",
  "at",
  "en",
  "es",
  "or",
  "re",
  "ti",
  "ka",
  "to",
  "ri",
  "mo",
  "la",
  "shi",
  "tra",
  "pe",
  "do",
  "ing",
  "st",
  "ch",
  "qu",
  "al",
  "ex",
  "per",
  "ro",
  "ut",
  "is",
  "ne",
  "ve",
  "li",
  "ma",
  "co",
  "de",
  "se",
  "po",
  "un",
  "ly",
];

/**
 * Builds a deterministic English-like corpus: {@link BASE_TEXT} repeated, plus
 * sentences of generated words with Zipf-like frequencies.
 */
export function buildCorpus(seed = 0x5eed, nWords = 420, nSentences = 700): string {
  const rand = prng(seed);
  const words: string[] = [];
  const seen = new Set<string>();
  while (words.length < nWords) {
    const k = 1 + Math.floor(rand() * 4);
    let w = "";
    for (let i = 0; i < k; i++) w += SYLLABLES[Math.floor(rand() * SYLLABLES.length)];
    if (!seen.has(w)) {
      seen.add(w);
      words.push(w);
    }
  }
  const parts: string[] = [BASE_TEXT.repeat(4)];
  for (let s = 0; s < nSentences; s++) {
    const len = 3 + Math.floor(rand() * 9);
    const sentence: string[] = [];
    for (let i = 0; i < len; i++) {
      // Zipf-ish: small ranks much more likely
      const u = rand();
      const r = Math.floor(nWords * u * u * u);
      sentence.push(words[r]);
      if (rand() < 0.08) sentence.push(String(Math.floor(rand() * 1000)));
    }
    sentence[0] = sentence[0][0].toUpperCase() + sentence[0].slice(1);
    parts.push(sentence.join(" ") + (rand() < 0.2 ? ",\n" : ". "));
  }
  return parts.join("");
}

function pairKey(a: string, b: string): string {
  return `${a.length}:${a}${b}`;
}

/**
 * Greedy BPE training: repeatedly merges the most frequent adjacent pair (ties: the
 * lexicographically smallest `(left, right)`) until `maxNew` new tokens exist or no
 * pair is left. `known` are tokens that exist already (merges producing them add none).
 */
export function trainBpe(
  words: Map<string, number>,
  symbolize: (word: string) => string[],
  maxNew: number,
  known: ReadonlySet<string>,
): TrainedBpe {
  interface Pair {
    a: string;
    b: string;
    n: number;
    words: Set<number>;
  }
  const seqs: { syms: string[]; count: number }[] = [];
  for (const [w, count] of words) seqs.push({ syms: symbolize(w), count });
  const pairs = new Map<string, Pair>();
  const account = (w: number, sign: 1 | -1): void => {
    const { syms, count } = seqs[w];
    for (let i = 0; i + 1 < syms.length; i++) {
      const k = pairKey(syms[i], syms[i + 1]);
      let e = pairs.get(k);
      if (e === undefined) pairs.set(k, e = { a: syms[i], b: syms[i + 1], n: 0, words: new Set() });
      e.n += sign * count;
      if (sign > 0) e.words.add(w);
      else e.words.delete(w);
      if (e.n === 0) pairs.delete(k);
    }
  };
  seqs.forEach((_, w) => account(w, 1));
  const merges: [string, string][] = [];
  const tokens: string[] = [];
  const have = new Set(known);
  while (tokens.length < maxNew) {
    let best: Pair | undefined;
    for (const e of pairs.values()) {
      if (
        best === undefined || e.n > best.n ||
        (e.n === best.n && (e.a < best.a || (e.a === best.a && e.b < best.b)))
      ) best = e;
    }
    if (best === undefined) break;
    const { a, b } = best;
    merges.push([a, b]);
    const ab = a + b;
    if (!have.has(ab)) {
      have.add(ab);
      tokens.push(ab);
    }
    for (const w of [...best.words]) {
      account(w, -1);
      const { syms } = seqs[w];
      const out: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          out.push(ab);
          i++;
        } else out.push(syms[i]);
      }
      seqs[w].syms = out;
      account(w, 1);
    }
  }
  return { merges, tokens };
}
