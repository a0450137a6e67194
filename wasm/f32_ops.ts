/**
 * The WASM backend's f32 ops (RMSNorm, RoPE, SwiGLU, attention over a KV
 * cache): argument checks, copies into scratch, one kernel call, copy out.
 * `backend.ts` delegates to these.
 *
 * @module
 */

import type { AttentionExtras, AttentionParams, RopeParams } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import { attentionMismatch, type KvEntry } from "./kv_caches.ts";
import type { KernelMemory } from "./memory.ts";
import type { KernelExports } from "./pkg/moe_edge_kernels.ts";
import { RopeTable } from "./rope_table.ts";

/** What an op needs from its backend. */
export interface OpContext {
  /** Kernel exports. */
  readonly k: KernelExports;
  /** The instance's memory. */
  readonly mem: KernelMemory;
  /** Run the scalar twins. */
  readonly scalar: boolean;
  /** RoPE table of the last parameters seen (replaced when they change). */
  rope: RopeTable | null;
  /**
   * Threaded attention (set by a threaded backend): `parts` scratch regions
   * of `stride` bytes each at `sp`; `run` stores the new K/V rows, then runs
   * the KV heads over the pool, or returns false when the shape is too small
   * to be worth it (the caller then runs the one-thread kernel).
   */
  attnThreads?: {
    readonly parts: number;
    run(
      args: readonly number[],
      sp: number,
      stride: number,
      sinks: number,
      window: number,
    ): boolean;
  };
}

/** Copy the first `n` floats of `x` into linear memory at byte `ptr` (one `TypedArray.set`). */
export function copyIn(f32: Float32Array, x: Float32Array, n: number, ptr: number): void {
  const b = ptr >>> 2;
  f32.set(x.length === n ? x : x.subarray(0, n), b);
}

/**
 * Copy `n` floats from linear memory at byte `ptr` into `out` (one
 * `TypedArray.set` of a view: ~0.1 µs for 1024 floats against ~1 µs for an
 * element loop; the view is a short-lived young-generation object).
 */
export function copyOut(f32: Float32Array, ptr: number, n: number, out: Float32Array): void {
  const b = ptr >>> 2;
  out.set(f32.subarray(b, b + n));
}

/** Throw the backend's `bad_shape` error for `op`. */
export function fail(op: string, why: string): never {
  throw new BackendError("bad_shape", `Cannot run ${op} on wasm backend: ${why}`, { op });
}

/** RMSNorm each row of `n`, times `weight` when given. */
export function rmsnormOp(
  c: OpContext,
  x: Float32Array,
  n: number,
  eps: number,
  weight: Float32Array | null,
  out: Float32Array,
): void {
  if (!(n > 0 && x.length % n === 0)) {
    fail("rmsnorm", `x length ${x.length} is not a multiple of n=${n}`);
  }
  if (!(out.length >= x.length)) fail("rmsnorm", `out has ${out.length} floats, need ${x.length}`);
  if (!(weight === null || weight.length >= n)) {
    fail("rmsnorm", `weight has ${weight?.length} floats, need ${n}`);
  }
  const rows = x.length / n;
  if (rows === 0) return;
  const [xp, wp, op] = c.mem.scratch(x.length * 4, weight ? n * 4 : 0, x.length * 4);
  const f32 = c.mem.f32;
  f32.set(x, xp >>> 2);
  if (weight) copyIn(f32, weight, n, wp);
  const f = c.scalar ? c.k.rmsnorm_scalar : c.k.rmsnorm;
  f(xp, n, rows, eps, weight ? wp : 0, op);
  copyOut(f32, op, x.length, out);
}

/** Rotate `nTokens` rows of `nHeads` heads in place (`c.rope` caches the cos/sin table). */
export function ropeOp(
  c: OpContext,
  x: Float32Array,
  nTokens: number,
  nHeads: number,
  headDim: number,
  positions: Int32Array,
  p: RopeParams,
): void {
  const len = nTokens * nHeads * headDim;
  if (!(x.length >= len)) {
    fail("rope", `x has ${x.length} floats, need ${nTokens}×${nHeads}×${headDim}`);
  }
  if (!(positions.length >= nTokens)) {
    fail("rope", `${positions.length} positions for ${nTokens} tokens`);
  }
  if (!(p.nRot > 0 && p.nRot % 2 === 0 && p.nRot <= headDim)) {
    fail("rope", `nRot ${p.nRot} must be even and in (0, headDim=${headDim}]`);
  }
  if (!(p.mode === 0 || p.mode === 2)) {
    fail("rope", `mode ${p.mode} is neither NORM (0) nor NEOX (2)`);
  }
  if (len === 0) return;
  if (c.rope === null || !c.rope.matches(p)) c.rope = new RopeTable(p);
  const table = c.rope;
  const [xp, cp] = c.mem.scratch(len * 4, nTokens * p.nRot * 4);
  const f32 = c.mem.f32;
  for (let t = 0; t < nTokens; t++) {
    const pos = positions[t];
    if (!(Number.isInteger(pos) && pos >= 0)) fail("rope", `position ${pos} at ${t} is negative`);
    table.write(pos, f32, (cp >>> 2) + t * p.nRot);
  }
  copyIn(f32, x, len, xp);
  const f = c.scalar ? c.k.rope_scalar : c.k.rope;
  f(xp, nTokens, nHeads, headDim, p.nRot, p.mode, cp);
  copyOut(f32, xp, len, x);
}

/** `out[i] = silu(gate[i])·up[i]`. */
export function swigluOp(
  c: OpContext,
  gate: Float32Array,
  up: Float32Array,
  out: Float32Array,
): void {
  const n = out.length;
  if (!(gate.length >= n && up.length >= n)) fail("swiglu", `inputs shorter than out (${n})`);
  if (n === 0) return;
  const [gp, up_, op] = c.mem.scratch(n * 4, n * 4, n * 4);
  const f32 = c.mem.f32;
  copyIn(f32, gate, n, gp);
  copyIn(f32, up, n, up_);
  (c.scalar ? c.k.swiglu_scalar : c.k.swiglu)(gp, up_, op, n);
  copyOut(f32, op, n, out);
}

/**
 * Store `k`/`v` at `startPos..` (f16) and run causal GQA attention, split by
 * KV heads over the backend's threads when it has them and the layer is
 * large enough. With `x` (gpt-oss: per-head sink logits, a sliding window)
 * the `attention_ext` kernel (or its KV-head share) runs; without sinks and
 * window it runs the same operations as `attention`, so `x` of
 * `{ sinks: null, window: 0 }` gives the same bits. Errors name `op`.
 */
export function attentionOp(
  c: OpContext,
  e: KvEntry,
  layer: number,
  startPos: number,
  nTokens: number,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  p: AttentionParams,
  out: Float32Array,
  x?: AttentionExtras,
  op = "attention",
): void {
  const bad = attentionMismatch(e, layer, startPos, nTokens, p);
  if (bad !== null) fail(op, bad);
  const { nHeads, nKvHeads, headDimK, headDimV } = p;
  const sinks = x?.sinks ?? null;
  if (sinks !== null) {
    if (!(sinks.length >= nHeads)) {
      fail(op, `sinks has ${sinks.length} values, need one per head (${nHeads})`);
    }
    for (let h = 0; h < nHeads; h++) {
      // a NaN or +inf sink would turn every probability of its head into NaN
      if (!(sinks[h] < Infinity)) fail(op, `sink of head ${h} is ${sinks[h]}`);
    }
  }
  const window = x?.window ?? 0;
  if (!(Number.isInteger(window) && window >= 0 && window <= 0x7fffffff)) {
    fail(op, `window must be an integer ≥ 0, got ${window}`);
  }
  const qn = nTokens * nHeads * headDimK;
  const kn = nTokens * nKvHeads * headDimK;
  const vn = nTokens * nKvHeads * headDimV;
  const on = nTokens * nHeads * headDimV;
  if (!(q.length >= qn && k.length >= kn && v.length >= vn)) {
    fail(op, "q/k/v shorter than their shapes");
  }
  if (!(out.length >= on)) fail(op, `out has ${out.length} floats, need ${on}`);
  if (nTokens === 0) return;
  // the layer's region holds `cap` positions (grown by the caller to cover this call)
  const L = e.layers[layer];
  if (!(startPos + nTokens <= L.cap)) {
    fail(op, `KV layer ${layer} holds ${L.cap} positions`);
  }
  const sb = c.k.attention_scratch_bytes(L.cap, nHeads, nKvHeads, headDimK, headDimV);
  const th = c.scalar ? undefined : c.attnThreads;
  const stride = Math.ceil(sb / 64) * 64;
  const ns = sinks === null ? 0 : nHeads;
  const [qp, kp, vp, outp, snp, sp] = c.mem.scratch(
    qn * 4,
    kn * 4,
    vn * 4,
    on * 4,
    ns * 4,
    th === undefined ? sb : stride * th.parts,
  );
  const f32 = c.mem.f32;
  copyIn(f32, q, qn, qp);
  copyIn(f32, k, kn, kp);
  copyIn(f32, v, vn, vp);
  if (sinks !== null) copyIn(f32, sinks, ns, snp);
  const kc = L.off;
  // the kernel's arguments up to `out`, for the threaded split or one call here
  const args: AttentionHead = [
    kc,
    kc + L.cap * e.kRowBytes,
    L.cap,
    startPos,
    nTokens,
    qp,
    kp,
    vp,
    nHeads,
    nKvHeads,
    headDimK,
    headDimV,
    p.scale,
    outp,
  ];
  const sp0 = sinks === null ? 0 : snp;
  let rc: number;
  if (th !== undefined && th.run(args, sp, stride, sp0, window)) {
    rc = 0;
  } else if (x !== undefined) {
    rc = (c.scalar ? c.k.attention_ext_scalar : c.k.attention_ext)(...args, sp, sp0, window);
  } else {
    rc = (c.scalar ? c.k.attention_scalar : c.k.attention)(...args, sp);
  }
  if (rc !== 0) fail(op, "kernel rejected the shape");
  copyOut(f32, outp, on, out);
}

/** `attention`'s arguments without the trailing scratch pointer. */
type AttentionHead = Parameters<KernelExports["attention"]> extends [...infer H, number] ? H
  : never;

/** Read back the cached K (`which = "k"`) or V rows of a layer as f32 (tests, debugging). */
export function readKvOp(
  c: OpContext,
  e: KvEntry,
  layer: number,
  which: "k" | "v",
  positions: number,
): Float32Array {
  const s = e.cache.spec;
  const L = e.layers[layer];
  if (!(L !== undefined)) fail("readKv", `layer ${layer} outside [0, ${s.layers})`);
  if (!(Number.isInteger(positions) && positions >= 0 && positions <= L.cap)) {
    fail("readKv", `KV layer ${layer} holds ${L.cap} positions, asked for ${positions}`);
  }
  const n = positions * s.nKvHeads * (which === "k" ? s.headDimK : s.headDimV);
  const [op] = c.mem.scratch(n * 4);
  const src = L.off + (which === "k" ? 0 : L.cap * e.kRowBytes);
  c.k.f16_to_f32(src, op, n);
  return c.mem.f32.slice(op >>> 2, (op >>> 2) + n);
}
