/**
 * Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), after llama.cpp's
 * `llm_tokenizer_bpe_session`: regex pre-split, GPT-2 byte→unicode mapping, then per
 * word repeatedly merge the adjacent pair with the lowest merge rank (ties: leftmost).
 *
 * @module
 */

import { Heap } from "./heap.ts";
import { preTokenize } from "./pretokenize.ts";
import { byteEncode } from "./unicode.ts";
import type { Vocab } from "./vocab.ts";

interface Bigram {
  left: number;
  right: number;
  rank: number;
  text: string;
}

const before = (a: Bigram, b: Bigram): boolean =>
  a.rank < b.rank || (a.rank === b.rank && a.left < b.left);

/**
 * Tokenizes one byte-level-encoded word, appending ids to `out`. A final symbol that
 * is not a token falls back, like llama.cpp, to the one-byte tokens of the symbol's
 * UTF-8 bytes; bytes with no such token (all non-ASCII ones) are dropped.
 */
export function bpeTokenizeWord(vocab: Vocab, word: string, out: number[]): void {
  const { tokenToId, ranks } = vocab;
  if (vocab.ignoreMerges) {
    const id = tokenToId.get(word);
    if (id !== undefined) {
      out.push(id);
      return;
    }
  }
  // byte-level chars are all BMP, so every symbol starts as one UTF-16 unit
  const n = word.length;
  const len = new Int32Array(n).fill(1);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const sym = (i: number): string => word.slice(i, i + len[i]);

  const queue = new Heap<Bigram>(before);
  const add = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const l = sym(left);
    const r = sym(right);
    const rank = ranks.get(l + " " + r);
    if (rank === undefined) return;
    queue.push({ left, right, rank, text: l + r });
  };
  for (let i = 1; i < n; i++) add(i - 1, i);

  for (let bg = queue.pop(); bg !== undefined; bg = queue.pop()) {
    const { left, right } = bg;
    if (len[left] === 0 || len[right] === 0) continue;
    if (sym(left) + sym(right) !== bg.text) continue; // outdated
    len[left] += len[right];
    len[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    add(prev[left], left);
    add(left, next[left]);
  }

  for (let i = 0; i !== -1 && n > 0; i = next[i]) {
    const piece = sym(i);
    const id = tokenToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    for (const ch of piece) {
      const cp = ch.codePointAt(0)!;
      if (cp >= 0x80) continue; // its UTF-8 bytes are no valid one-byte strings
      const bid = tokenToId.get(ch);
      if (bid !== undefined) out.push(bid);
    }
  }
}

/** Bounded memo of word → ids (results are pure functions of the word). */
export class WordCache {
  #map = new Map<string, number[]>();
  readonly #limit: number;

  /** @param limit entries kept before the cache is cleared */
  constructor(limit = 65536) {
    this.#limit = limit;
  }

  /** Cached ids of `word`, computing them with `compute` on a miss. */
  get(word: string, compute: (word: string, out: number[]) => void): number[] {
    let ids = this.#map.get(word);
    if (ids === undefined) {
      ids = [];
      compute(word, ids);
      if (this.#map.size >= this.#limit) this.#map.clear();
      this.#map.set(word, ids);
    }
    return ids;
  }
}

/** Tokenizes one raw-text fragment with the vocabulary's BPE pre-tokenizer, appending to `out`. */
export function bpeTokenize(vocab: Vocab, cache: WordCache, text: string, out: number[]): void {
  const words = preTokenize(text, vocab.pre!.regexes);
  const compute = (w: string, o: number[]): void => bpeTokenizeWord(vocab, w, o);
  for (const w of words) {
    for (const id of cache.get(byteEncode(w), compute)) out.push(id);
  }
}
