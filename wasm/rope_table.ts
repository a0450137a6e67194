/**
 * RoPE cos/sin tables, computed in TypeScript and cached per position.
 *
 * ggml (`ops.cpp` rope, docs/specs-llamacpp.md §4) iterates `theta` in f32:
 * `theta_scale = powf(base, -2/n_dims)`, `theta = pos`, and per pair
 * `cos(freq_scale·theta)`, `sin(…)`, then `theta *= theta_scale`. We evaluate
 * `Math.pow`/`Math.cos`/`Math.sin` in f64 and round once to f32, which is the
 * correctly rounded f32 value in all but rare double-rounding cases — as
 * close to glibc's `powf`/`cosf`/`sinf` as a hand-written f32 polynomial in
 * the WASM module could be, and cheaper: a table row is computed once per
 * position and reused by every layer. Only the iteration itself runs in f32
 * (`Math.fround` after every step), which is what fixes the angles bit-for-bit.
 *
 * @module
 */

import type { RopeParams } from "../core/backend/backend.ts";

/** Cos/sin rows for one parameter set: row `pos` = `nRot/2` cos, then `nRot/2` sin. */
export class RopeTable {
  readonly #nRot: number;
  readonly #thetaScale: number;
  readonly #freqScale: number;
  #rows: Float32Array = new Float32Array(0);
  #have: Uint8Array = new Uint8Array(0);

  /** @param p RoPE parameters (mode does not affect the table). */
  constructor(p: RopeParams) {
    this.#nRot = p.nRot;
    const f = Math.fround;
    this.#thetaScale = f(Math.pow(f(p.freqBase), f(-2 / p.nRot)));
    this.#freqScale = f(p.freqScale);
  }

  /** Whether this table serves `p`. */
  matches(p: RopeParams): boolean {
    const f = Math.fround;
    return p.nRot === this.#nRot &&
      f(Math.pow(f(p.freqBase), f(-2 / p.nRot))) === this.#thetaScale &&
      f(p.freqScale) === this.#freqScale;
  }

  /** Write the row of position `pos` into `dst` at `at` (`nRot` floats). */
  write(pos: number, dst: Float32Array, at: number): void {
    const n = this.#nRot;
    if (pos >= this.#have.length) this.#reserve(pos + 1);
    if (this.#have[pos] === 0) this.#compute(pos);
    dst.set(this.#rows.subarray(pos * n, pos * n + n), at);
  }

  #reserve(count: number): void {
    const cap = Math.max(count, this.#have.length * 2, 64);
    const rows = new Float32Array(cap * this.#nRot);
    rows.set(this.#rows);
    const have = new Uint8Array(cap);
    have.set(this.#have);
    this.#rows = rows;
    this.#have = have;
  }

  #compute(pos: number): void {
    const f = Math.fround;
    const half = this.#nRot / 2;
    const base = pos * this.#nRot;
    let theta = f(pos);
    for (let j = 0; j < half; j++) {
      const th = f(this.#freqScale * theta);
      this.#rows[base + j] = Math.cos(th);
      this.#rows[base + half + j] = Math.sin(th);
      theta = f(theta * this.#thetaScale);
    }
    this.#have[pos] = 1;
  }
}
