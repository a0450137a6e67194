/**
 * The project's deterministic pseudo-random generators, in one place (a leaf module:
 * it imports nothing). Neither is cryptographic; both give the same stream for the same
 * seed on every platform, which is what synthetic models, sampling, corpora and tests
 * need.
 *
 * - {@link Rng}: sfc32, the sampler's generator and the synthetic models' weights.
 * - {@link mulberry32}: a one-word generator for fixtures, corpora and fuzzing.
 *
 * @module
 */

/** xorshift128+-style 32-bit PRNG (sfc32), seeded deterministically. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed any 32-bit integer */
  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Uniform float in [0, 1). */
  next(): number {
    const a = this.#a, b = this.#b, c = this.#c, d = this.#d;
    const t = (((a + b) | 0) + d) | 0;
    this.#d = (d + 1) | 0;
    this.#a = b ^ (b >>> 9);
    this.#b = (c + (c << 3)) | 0;
    this.#c = ((c << 21) | (c >>> 11)) + t | 0;
    return (t >>> 0) / 4294967296;
  }
}

/**
 * Deterministic 32-bit PRNG (mulberry32): returns a function giving uniform floats in
 * [0, 1), the stream fixed by `seed` (taken modulo 2^32).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
