/**
 * SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`), after llama.cpp's
 * `llm_tokenizer_spm_session`: split into code points, repeatedly merge the adjacent
 * pair whose concatenation is a token with the highest score (ties: leftmost), then
 * emit each symbol as its token or as `<0xXX>` byte tokens.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { Heap } from "./heap.ts";
import { utf8 } from "./unicode.ts";
import type { Vocab } from "./vocab.ts";

interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

const before = (a: Bigram, b: Bigram): boolean =>
  a.score > b.score || (a.score === b.score && a.left < b.left);

/**
 * Byte → token table for SPM byte fallback: `"<0xXX>"` (uppercase hex), else the
 * one-byte string itself (ASCII only), else -1 (llama.cpp throws when it is used).
 */
export function spmByteTokens(vocab: Vocab): Int32Array {
  const t = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const hex = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    const id = vocab.tokenToId.get(hex) ??
      (b < 0x80 ? vocab.tokenToId.get(String.fromCharCode(b)) : undefined);
    if (id !== undefined) t[b] = id;
  }
  return t;
}

/**
 * Tokenizes one raw-text fragment whose spaces are already escaped to `▁` (and which
 * already carries the space prefix when due), appending ids to `out`.
 * @throws TokenizerError `no_byte_token` when a byte needs a fallback token the vocab lacks.
 */
export function spmTokenize(
  vocab: Vocab,
  byteTokens: Int32Array,
  text: string,
  out: number[],
): void {
  if (text.length === 0) return;
  const { tokenToId, scores } = vocab;
  // symbols: code points, as UTF-16 ranges [start, start + len)
  const start: number[] = [];
  const len: number[] = [];
  for (let i = 0; i < text.length;) {
    const w = text.codePointAt(i)! > 0xffff ? 2 : 1;
    start.push(i);
    len.push(w);
    i += w;
  }
  const n = start.length;
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }

  const queue = new Heap<Bigram>(before);
  const tryAdd = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const size = len[left] + len[right];
    const id = tokenToId.get(text.slice(start[left], start[left] + size));
    if (id === undefined) return;
    queue.push({ left, right, score: scores[id], size });
  };
  for (let i = 1; i < n; i++) tryAdd(i - 1, i);

  for (let bg = queue.pop(); bg !== undefined; bg = queue.pop()) {
    const { left, right } = bg;
    // stale: one side already merged away, or either side grew since it was queued
    if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== bg.size) continue;
    len[left] += len[right];
    len[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    tryAdd(prev[left], left);
    tryAdd(left, next[left]);
  }

  for (let i = 0; i !== -1; i = next[i]) {
    const piece = text.slice(start[i], start[i] + len[i]);
    const id = tokenToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    // A merged symbol is always a token, so only single code points reach here.
    for (const b of utf8(piece)) {
      const bt = byteTokens[b];
      if (bt < 0) {
        throw new TokenizerError(
          "no_byte_token",
          `byte 0x${b.toString(16).padStart(2, "0")} of ${JSON.stringify(piece)} has no token ` +
            `(neither "<0x${b.toString(16).toUpperCase().padStart(2, "0")}>" nor the byte itself)`,
          { byte: b, piece },
        );
      }
      out.push(bt);
    }
  }
}
