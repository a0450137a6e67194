/**
 * `hashWide`: the change-detection hash of first-read records (see
 * `integrity_source.ts`), built for speed on the streaming miss path. The
 * same round as `hash64` (`acc = rotl(acc + w·P2, 13)·P1`), over 16 lanes
 * instead of 4: lane `j` takes little-endian 32-bit word `j` of every
 * 64-byte block, so a WASM SIMD loop (`hash_wide.c`, four v128
 * accumulators) keeps the multiplier busy: measured 0.20 ms for 4.6 MiB
 * (about 24 GB/s) against 0.97 ms for `hash64` in TypeScript on the same
 * AMD EPYC core; with the copy into the module's own memory, 0.31 ms.
 *
 * As for `hash64`: every lane round is a bijection of its state for a
 * fixed word and of the word for a fixed state, and the fold adds each
 * lane (rotated) into one of the two avalanched halves, so a change confined
 * to the words of one lane (any single-byte or single-word change, any
 * flipped bit) always changes the hash; wider changes collide with
 * probability about 2⁻⁶⁴. Not collision-resistant against an adversary:
 * manifests use SHA-256. Values are compared only within one process (they
 * are never stored), so the definition may change between versions.
 *
 * `hashWideJs` is the TypeScript reference (used where WebAssembly SIMD is
 * unavailable); both give the same value for the same bytes.
 *
 * @module
 */

const P1 = 0x9e3779b1;
const P2 = 0x85ebca77;
const P3 = 0xc2b2ae3d;
const P4 = 0x27d4eb2f;
const P5 = 0x165667b1;
const LANES = 16;
/** Bytes copied into the module's memory per call of the SIMD loop. */
const CHUNK = 1 << 20;
/** Where the 16-lane state and the data live in the module's memory (above its stack). */
const STATE_AT = 1 << 17;
const DATA_AT = STATE_AT + 64;

/** `hash_wide.c` compiled (see its header for the command). */
const WASM_B64 =
  "AGFzbQEAAAABBwFgA39/fwACDwEDZW52Bm1lbW9yeQIAAgMCAQAEBQFwAQEBBggBfwFBgIgECwcLAQdsYW5lczE2AAAKowIBoAIBBnsgAv0AADAhAyAC/QAAICEEIAL9AAAQIQUgAv0AAAAhBgJAIAFFDQADQCAA/QAAMP0Md8rrhXfK64V3yuuFd8rrhSIH/bUBIAP9rgEiCEEN/asBIAhBE/2tAf1Q/QyxeTeesXk3nrF5N56xeTeeIgj9tQEhAyAA/QAAICAH/bUBIAT9rgEiBEEN/asBIARBE/2tAf1QIAj9tQEhBCAA/QAAECAH/bUBIAX9rgEiBUEN/asBIAVBE/2tAf1QIAj9tQEhBSAA/QAAACAH/bUBIAb9rgEiB0EN/asBIAdBE/2tAf1QIAj9tQEhBiAAQcAAaiEAIAFBf2oiAQ0ACwsgAiAD/QsAMCACIAT9CwAgIAIgBf0LABAgAiAG/QsAAAs=";

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

function initState(s: Uint32Array | Int32Array): void {
  for (let j = 0; j < LANES; j++) s[j] = (P1 + Math.imul(j + 1, P3)) | 0;
}

/** Little-endian word `i` of `b` (any alignment). */
function word(b: Uint8Array, i: number): number {
  const o = i << 2;
  return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
}

/** Tail (the words after the last whole block, then 0–3 bytes with their count) and fold. */
function finish(s: Int32Array, bytes: Uint8Array, blocks: number): [number, number] {
  const len = bytes.byteLength;
  const nw = len >>> 2;
  let lane = 0;
  for (let i = blocks * LANES; i < nw; i++) s[lane] = round(s[lane++], word(bytes, i));
  const tail = len & 3;
  let t = tail;
  for (let k = 0; k < tail; k++) t |= bytes[(nw << 2) + k] << (8 * (k + 1));
  s[LANES - 1] = round(s[LANES - 1], t);
  const lenLo = len | 0, lenHi = Math.floor(len / 4294967296) | 0;
  let hi = Math.imul(lenLo, P4), lo = Math.imul(lenHi ^ lenLo, P5);
  for (let j = 0; j < LANES; j += 2) {
    const r = j + 1;
    hi = (hi + ((s[j] << r) | (s[j] >>> (32 - r)))) | 0;
    lo = (lo + ((s[j + 1] << (r + 1)) | (s[j + 1] >>> (31 - r)))) | 0;
  }
  return [avalanche(hi), avalanche(lo)];
}

function hex(p: [number, number]): string {
  return p[0].toString(16).padStart(8, "0") + p[1].toString(16).padStart(8, "0");
}

/** `hashWide` in TypeScript only (the reference; equal values, slower). */
export function hashWideJs(bytes: Uint8Array): string {
  return hex(jsParts(bytes));
}

function jsParts(bytes: Uint8Array): [number, number] {
  const s = new Int32Array(LANES);
  initState(s);
  const blocks = Math.floor(bytes.byteLength / 64);
  const aligned = (bytes.byteOffset & 3) === 0;
  const w = aligned ? new Uint32Array(bytes.buffer, bytes.byteOffset, blocks * LANES) : null;
  for (let b = 0; b < blocks; b++) {
    const base = b * LANES;
    for (let j = 0; j < LANES; j++) s[j] = round(s[j], w ? w[base + j] : word(bytes, base + j));
  }
  return finish(s, bytes, blocks);
}

interface Simd {
  readonly mem: WebAssembly.Memory;
  readonly lanes16: (p: number, nblk: number, state: number) => void;
}

let simd: Simd | null | undefined;

function loadSimd(): Simd | null {
  if (simd !== undefined) return simd;
  try {
    const bin = Uint8Array.from(atob(WASM_B64), (c) => c.charCodeAt(0));
    const mem = new WebAssembly.Memory({ initial: Math.ceil((DATA_AT + CHUNK) / 65536) });
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bin), { env: { memory: mem } });
    simd = { mem, lanes16: inst.exports.lanes16 as Simd["lanes16"] };
  } catch {
    simd = null; // no WebAssembly SIMD here: the TypeScript reference
  }
  return simd;
}

/** A WebAssembly memory whose views are hashed in place (`hashInMemory`). */
interface InPlace {
  readonly mem: WebAssembly.Memory;
  readonly lanes16: Simd["lanes16"];
  /** 64 bytes of `mem` reserved for the 16-lane state. */
  readonly state: number;
}

const inPlace = new Set<InPlace>();

/**
 * Hash views of `memory` in place from now on: `hashWide` of a view whose
 * buffer is `memory`'s runs the SIMD loop straight over the view's bytes
 * (the module instantiated over `memory`, its 16-lane state in the 64 bytes
 * at `stateAt`, which the caller reserves) instead of copying them 1 MiB at
 * a time into the hash module's own memory; same values. A WASM backend
 * registers its linear memory so streamed experts are hashed in their
 * slots (0.37 against 0.65 ms per 4.6 MiB, measured on this machine). Returns the
 * function that ends it (call before the memory is given up); a no-op
 * where it cannot apply (no WebAssembly SIMD, a shared memory).
 */
export function hashInMemory(memory: WebAssembly.Memory, stateAt: number): () => void {
  if (!loadSimd() || !Number.isInteger(stateAt) || stateAt < 0 || stateAt % 16 !== 0) {
    return () => {};
  }
  let entry: InPlace;
  try {
    const bin = Uint8Array.from(atob(WASM_B64), (c) => c.charCodeAt(0));
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bin), { env: { memory } });
    entry = { mem: memory, lanes16: inst.exports.lanes16 as Simd["lanes16"], state: stateAt };
  } catch {
    return () => {}; // e.g. a shared memory: the module imports a plain one
  }
  inPlace.add(entry);
  return () => void inPlace.delete(entry);
}

/** Whether `hashWide(bytes)` runs in place (`bytes` views a memory registered with `hashInMemory`). */
export function hashesInPlace(bytes: Uint8Array): boolean {
  return inPlaceFor(bytes) !== null;
}

/** The registered memory `bytes` is a view of, if any. */
function inPlaceFor(bytes: Uint8Array): InPlace | null {
  if (inPlace.size === 0) return null;
  for (const e of inPlace) if (e.mem.buffer === bytes.buffer) return e;
  return null;
}

/**
 * 64-bit change-detection hash of `bytes` as 16 lowercase hex digits
 * (WASM SIMD body, 1 MiB at a time; same value as `hashWideJs`).
 *
 * @example
 * ```ts
 * import { hashWide } from "./hash_wide.ts";
 * const a = hashWide(new Uint8Array([1, 2, 3]));
 * if (a === hashWide(new Uint8Array([1, 2, 4]))) throw new Error("unreachable");
 * ```
 */
export function hashWide(bytes: Uint8Array): string {
  return hex(hashWideParts(bytes));
}

/** `hashWide` as its two unsigned 32-bit halves `[hi, lo]` (for compact tables). */
export function hashWideParts(bytes: Uint8Array): [number, number] {
  const m = loadSimd();
  if (!m || bytes.byteLength < 4096) return jsParts(bytes);
  const blocks = Math.floor(bytes.byteLength / 64);
  const ip = inPlaceFor(bytes);
  if (ip) {
    const st = new Int32Array(ip.mem.buffer, ip.state, LANES);
    initState(st);
    ip.lanes16(bytes.byteOffset, blocks, ip.state);
    return finish(Int32Array.from(st), bytes, blocks);
  }
  const u8 = new Uint8Array(m.mem.buffer);
  const st = new Int32Array(m.mem.buffer, STATE_AT, LANES);
  initState(st);
  for (let done = 0; done < blocks;) {
    const n = Math.min(blocks - done, CHUNK / 64);
    u8.set(bytes.subarray(done * 64, (done + n) * 64), DATA_AT);
    m.lanes16(DATA_AT, n, STATE_AT);
    done += n;
  }
  return finish(Int32Array.from(st), bytes, blocks);
}
