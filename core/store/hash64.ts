/**
 * A fast non-cryptographic 64-bit hash for change detection on the hot
 * streaming path (trust-on-first-read records of byte ranges). Four
 * independent xxHash32-style lanes over little-endian 32-bit words, folded to
 * two 32-bit halves. Every lane round is a bijection of its state for a fixed
 * word and of the word for a fixed state, so a change confined to the words of
 * one lane (any single-byte or single-word change, any flipped bit) always
 * changes the hash; wider changes collide with probability about 2⁻⁶⁴.
 *
 * Not collision-resistant against an adversary: manifests use SHA-256.
 * Measured at about 6 GB/s in Deno 2.9 on one AMD EPYC core (see
 * docs/integrity.md), 3–4× the throughput of native SHA-256.
 *
 * @module
 */

const P1 = 0x9e3779b1;
const P2 = 0x85ebca77;
const P3 = 0xc2b2ae3d;
const P4 = 0x27d4eb2f;
const P5 = 0x165667b1;

function round(acc: number, w: number): number {
  acc = (acc + Math.imul(w, P2)) | 0;
  acc = (acc << 13) | (acc >>> 19);
  return Math.imul(acc, P1);
}

function avalanche(h: number): number {
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * 64-bit hash of `bytes` as 16 lowercase hex digits. Equal bytes give equal
 * hashes whatever the view's alignment.
 *
 * @example
 * ```ts
 * import { hash64 } from "./hash64.ts";
 * const a = hash64(new Uint8Array([1, 2, 3]));
 * if (a === hash64(new Uint8Array([1, 2, 4]))) throw new Error("unreachable");
 * ```
 */
export function hash64(bytes: Uint8Array): string {
  const [hi, lo] = hash64Parts(bytes);
  return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
}

/** `hash64` as its two unsigned 32-bit halves `[hi, lo]` (for compact tables). */
export function hash64Parts(bytes: Uint8Array): [number, number] {
  const len = bytes.byteLength;
  const nw = len >>> 2;
  // an unaligned view is copied once so the word view below is legal
  const src = (bytes.byteOffset & 3) === 0 ? bytes : bytes.slice();
  const w = new Uint32Array(src.buffer, src.byteOffset, nw);
  let a = (P1 + P2) | 0, b = P2, c = 0, d = (0 - P1) | 0;
  let i = 0;
  for (const end = nw & ~3; i < end; i += 4) {
    a = round(a, w[i]);
    b = round(b, w[i + 1]);
    c = round(c, w[i + 2]);
    d = round(d, w[i + 3]);
  }
  // the last 0–3 whole words go to their own lanes, in order
  if (i < nw) a = round(a, w[i++]);
  if (i < nw) b = round(b, w[i++]);
  if (i < nw) c = round(c, w[i++]);
  // 0–3 tail bytes, packed with their count (so trailing zero bytes count)
  const tail = len & 3;
  let t = tail;
  for (let k = 0; k < tail; k++) t |= src[(nw << 2) + k] << (8 * (k + 1));
  d = round(d, t);
  const lenLo = len | 0, lenHi = Math.floor(len / 4294967296) | 0;
  const hi = avalanche((a + ((c << 7) | (c >>> 25)) + Math.imul(lenLo, P4)) | 0);
  const lo = avalanche((b + ((d << 7) | (d >>> 25)) + Math.imul(lenHi ^ lenLo, P5)) | 0);
  return [hi, lo];
}
