/**
 * Typed bindings for the kernel modules built by `wasm/build.sh` from
 * `wasm/kernels/`: `moe_edge_kernels.wasm` (simd128) and
 * `moe_edge_kernels_relaxed.wasm` (the same crate plus relaxed-SIMD group
 * kernels; bit-identical results, faster where the engine lowers
 * `i32x4.relaxed_dot_i8x16_i7x16_add_s` to VNNI). Both export the same
 * functions. Pointers are byte offsets into the instance's linear memory;
 * counts are u32. Kernels with a SIMD body have a `_scalar` twin with the
 * same signature. Functions returning a status give 0 on success and -1 for
 * an unsupported type or shape.
 *
 * Each module is compiled once per isolate and cached; every
 * {@linkcode instantiateKernels} call makes a fresh instance with its own
 * memory. The relaxed module is used when the engine validates it (unless
 * `variant: "simd128"` is asked for).
 *
 * @example
 * ```ts
 * import { instantiateKernels } from "./moe_edge_kernels.ts";
 * const k = await instantiateKernels();
 * console.log(k.exports.abi_version()); // 3
 * ```
 *
 * @module
 */

import { WASM_BASE64 } from "./moe_edge_kernels_bytes.ts";
import { WASM_BASE64 as WASM_RELAXED_BASE64 } from "./moe_edge_kernels_relaxed_bytes.ts";
import { WASM_BASE64 as WASM_MT_BASE64 } from "./moe_edge_kernels_mt_bytes.ts";
import { WASM_BASE64 as WASM_RELAXED_MT_BASE64 } from "./moe_edge_kernels_relaxed_mt_bytes.ts";

/** ABI version these bindings were written for (`abi_version()`). */
export const KERNEL_ABI_VERSION = 3;

/** Flag OR-ed into a weight type id for a matrix repacked by `pack_weights`. */
export const PACKED_FLAG = 0x100;

/** Which kernel module to instantiate. */
export type KernelVariant = "auto" | "simd128" | "relaxed";

/** Row converter: `(x: *f32, y: *out, n)`. */
export type RowFn = (x: number, y: number, n: number) => void;

/** Attention: `(kc, vc, nCtx, start, nTok, q, k, v, nHeads, nKv, hdK, hdV, scale, out, scratch) → status`. */
export type AttentionFn = (
  kc: number,
  vc: number,
  nCtx: number,
  start: number,
  nTok: number,
  q: number,
  k: number,
  v: number,
  nHeads: number,
  nKvHeads: number,
  headDimK: number,
  headDimV: number,
  scale: number,
  out: number,
  scratch: number,
) => number;

/**
 * `AttentionFn` with per-head sink logits (`sinks`: `nHeads` f32 at that address, 0 for none)
 * and a sliding window (`window` > 0: a row at position p sees keys at positions > p − window).
 */
export type AttentionExtFn = (
  ...args: [...Parameters<AttentionFn>, sinks: number, window: number]
) => number;

/** Matmul on f32 input: `(type, w, rows, cols, x, nTok, out, scratch) → status`. */
export type MatmulFn = (
  type: number,
  w: number,
  rows: number,
  cols: number,
  x: number,
  nTok: number,
  out: number,
  scratch: number,
) => number;

/** Matmul on prepared activations: `(type, w, rows, cols, act, nTok, out, scratch) → status`. */
export type MatmulPreparedFn = (
  type: number,
  w: number,
  rows: number,
  cols: number,
  act: number,
  nTok: number,
  out: number,
  scratch: number,
) => number;

/** Row range of a matmul: `(type, w, rows, cols, act, nTok, out, ldo, scratch) → status`, writes `out[t*ldo + r]`. */
export type MatmulPreparedLdFn = (
  type: number,
  w: number,
  rows: number,
  cols: number,
  act: number,
  nTok: number,
  out: number,
  ldo: number,
  scratch: number,
) => number;

/** Activation conversion: `(type, x, cols, nTok, dst) → status`. */
export type PrepareActFn = (type: number, x: number, cols: number, nTok: number, dst: number) => number;

/** RMSNorm: `(x, n, rows, eps, w (0 = none), out)`. */
export type RmsnormFn = (x: number, n: number, rows: number, eps: number, w: number, out: number) => void;

/** RoPE in place: `(x, nTok, nHeads, headDim, nRot, mode, cs)`. */
export type RopeFn = (
  x: number,
  nTok: number,
  nHeads: number,
  headDim: number,
  nRot: number,
  mode: number,
  cs: number,
) => void;

/** SwiGLU: `(gate, up, out, n)`. */
export type SwigluFn = (g: number, u: number, out: number, n: number) => void;

/** Fused SwiGLU FFN: `(tGate, wGate, tUp, wUp, tDown, wDown, nEmbd, nFf, x, nTok, out, scratch) → status`. */
export type FfnSwigluFn = (
  tGate: number,
  wGate: number,
  tUp: number,
  wUp: number,
  tDown: number,
  wDown: number,
  nEmbd: number,
  nFf: number,
  x: number,
  nTok: number,
  out: number,
  scratch: number,
) => number;

/** Everything `moe_edge_kernels.wasm` exports. */
export interface KernelExports {
  /** The instance's linear memory. */
  readonly memory: WebAssembly.Memory;
  /** ABI version (see {@linkcode KERNEL_ABI_VERSION}). */
  abi_version(): number;
  /** First byte after static data and stack; the host arena starts here. */
  heap_base(): number;
  /** 1 if `matmul`/`get_rows` accept weight type `type`. */
  type_supported(type: number): number;
  /** Bytes of one prepared activation row for weight `type`; 0 if unsupported. */
  act_row_bytes(type: number, cols: number): number;
  /** Bytes of one weight row; 0 if unsupported. */
  weight_row_bytes(type: number, cols: number): number;

  /** f32 → Q8_0 blocks (x86 AVX2 rule). */
  quantize_q8_0: RowFn;
  /** Scalar twin of `quantize_q8_0`. */
  quantize_q8_0_scalar: RowFn;
  /** f32 → Q8_1 blocks. */
  quantize_q8_1: RowFn;
  /** Scalar twin of `quantize_q8_1`. */
  quantize_q8_1_scalar: RowFn;
  /** f32 → Q8_K blocks (ggml ref rule). */
  quantize_q8_k: RowFn;
  /** Scalar twin of `quantize_q8_k`. */
  quantize_q8_k_scalar: RowFn;
  /** f32 → f16 bits (RNE). */
  round_f16: RowFn;
  /** Scalar twin of `round_f16`. */
  round_f16_scalar: RowFn;
  /** f32 → bf16 bits (RNE). */
  round_bf16: RowFn;
  /** Scalar twin of `round_bf16`. */
  round_bf16_scalar: RowFn;
  /** f16 bits → f32: `(h, y, n)`. */
  f16_to_f32: RowFn;
  /** `y = expf(x)`. */
  exp_f32: RowFn;
  /** Scalar twin of `exp_f32`. */
  exp_f32_scalar: RowFn;

  /** Convert activations to the weight type's vec_dot_type. */
  prepare_act: PrepareActFn;
  /** Scalar twin of `prepare_act`. */
  prepare_act_scalar: PrepareActFn;
  /** Scratch bytes `matmul` needs: `(type, cols, nTok)` (also enough for `matmul_prepared`). */
  matmul_scratch_bytes(type: number, cols: number, nTok: number): number;
  /** Matmul on prepared activations (SIMD path expands them into `scratch`). */
  matmul_prepared: MatmulPreparedFn;
  /** `matmul_prepared` with output row stride `ldo ≥ rows` (one thread's row range; bit-identical). */
  matmul_prepared_ld: MatmulPreparedLdFn;
  /** Scalar twin of `matmul_prepared`. */
  matmul_prepared_scalar: MatmulPreparedFn;
  /** Matmul on f32 input (converts into `scratch`, sized by `matmul_scratch_bytes`). */
  matmul: MatmulFn;
  /** Scalar twin of `matmul`. */
  matmul_scalar: MatmulFn;
  /** Dequantize rows: `(type, w, cols, ids, n, out) → status` (`type | PACKED_FLAG` for packed). */
  get_rows(type: number, w: number, cols: number, ids: number, n: number, out: number): number;

  /** Kernel family: 1 = simd128, 2 = relaxed SIMD (packed byte orders are private to it). */
  kernel_variant(): number;
  /**
   * Relaxed build: set (`mode` 0 = split i16 dot + `dot_i16x8`, 1 = fused
   * `i32x4.relaxed_dot_i8x16_i7x16_add_s`) and return the dot form of the
   * relaxed-SIMD kernels; other values only read it. Same results either way.
   * simd128 build: always 0. Absent from older modules.
   */
  relaxed_dot_mode?(mode: number): number;
  /** Scratch bytes `pack_weights` needs: `(type, cols)`; 0 if the type has no packed layout. */
  pack_scratch_bytes(type: number, cols: number): number;
  /**
   * Repack a matrix in place: `(type, w, rows, cols, tmp, inverse) → 0` done, `1` refused
   * (ineligible, bytes untouched), `-1` unsupported. Pass `type | PACKED_FLAG` to the
   * matmul/get_rows/ffn kernels for a packed matrix.
   */
  pack_weights(type: number, w: number, rows: number, cols: number, tmp: number, inverse: number): number;

  /** RMSNorm (+ weight). */
  rmsnorm: RmsnormFn;
  /** Scalar twin of `rmsnorm`. */
  rmsnorm_scalar: RmsnormFn;
  /** RoPE NORM/NEOX in place. */
  rope: RopeFn;
  /** Scalar twin of `rope`. */
  rope_scalar: RopeFn;
  /** `out = silu(g)·u`. */
  swiglu: SwigluFn;
  /** Scalar twin of `swiglu`. */
  swiglu_scalar: SwigluFn;

  /** Scratch bytes attention needs: `(nCtx, nHeads, nKv, hdK, hdV)`. */
  attention_scratch_bytes(nCtx: number, nHeads: number, nKvHeads: number, hdK: number, hdV: number): number;
  /** Causal GQA attention over one layer's f16 KV cache. */
  attention: AttentionFn;
  /** Scalar twin of `attention`. */
  attention_scalar: AttentionFn;
  /** `attention` with sinks and a sliding window (gpt-oss); with neither, the same operations. */
  attention_ext: AttentionExtFn;
  /** Scalar twin of `attention_ext`. */
  attention_ext_scalar: AttentionExtFn;
  /**
   * `attention` for KV heads `[kv0, kv1)` only, storing the new K/V rows first when `store` is 1
   * (a thread's share); `sinks` (an address, 0: none) and `window` (0: full) as `attention_ext`.
   */
  attention_heads(
    kc: number,
    vc: number,
    nCtx: number,
    start: number,
    nTok: number,
    q: number,
    k: number,
    v: number,
    nHeads: number,
    nKvHeads: number,
    headDimK: number,
    headDimV: number,
    scale: number,
    out: number,
    scratch: number,
    kv0: number,
    kv1: number,
    store: number,
    sinks: number,
    window: number,
  ): number;

  /** Scratch bytes `ffn_swiglu` needs: `(tGate, tUp, tDown, nEmbd, nFf, nTok)`. */
  ffn_swiglu_scratch_bytes(tGate: number, tUp: number, tDown: number, nEmbd: number, nFf: number, nTok: number): number;
  /** Fused expert FFN `down · (silu(gate·x) ⊙ up·x)`. */
  ffn_swiglu: FfnSwigluFn;
  /** Scalar twin of `ffn_swiglu`. */
  ffn_swiglu_scalar: FfnSwigluFn;
}

/** Names of all exported functions, for validation. */
export const KERNEL_FUNCTIONS: readonly (Exclude<keyof KernelExports, "memory">)[] = [
  "abi_version",
  "heap_base",
  "type_supported",
  "act_row_bytes",
  "weight_row_bytes",
  "quantize_q8_0",
  "quantize_q8_0_scalar",
  "quantize_q8_1",
  "quantize_q8_1_scalar",
  "quantize_q8_k",
  "quantize_q8_k_scalar",
  "round_f16",
  "round_f16_scalar",
  "round_bf16",
  "round_bf16_scalar",
  "f16_to_f32",
  "exp_f32",
  "exp_f32_scalar",
  "prepare_act",
  "prepare_act_scalar",
  "matmul_scratch_bytes",
  "matmul_prepared",
  "matmul_prepared_ld",
  "matmul_prepared_scalar",
  "matmul",
  "matmul_scalar",
  "get_rows",
  "kernel_variant",
  "pack_scratch_bytes",
  "pack_weights",
  "rmsnorm",
  "rmsnorm_scalar",
  "rope",
  "rope_scalar",
  "swiglu",
  "swiglu_scalar",
  "attention_scratch_bytes",
  "attention",
  "attention_scalar",
  "attention_ext",
  "attention_ext_scalar",
  "attention_heads",
  "ffn_swiglu_scratch_bytes",
  "ffn_swiglu",
  "ffn_swiglu_scalar",
];

/** An instantiated kernel module. */
export interface KernelModule {
  /** The typed exports. */
  readonly exports: KernelExports;
  /** The instance's linear memory (same as `exports.memory`). */
  readonly memory: WebAssembly.Memory;
  /** Which module it is. */
  readonly variant: "simd128" | "relaxed";
  /** Whether it is the shared-memory (threads) build over an imported shared memory. */
  readonly shared: boolean;
}

/** Options of {@linkcode instantiateKernels}. */
export interface InstantiateOptions {
  /**
   * Instantiate the shared-memory build over this memory (created with
   * `shared: true` and a maximum of at most 65536 pages) instead of the
   * single-threaded build with its own memory.
   */
  readonly sharedMemory?: WebAssembly.Memory;
}

const cachedModules = new Map<string, Promise<WebAssembly.Module>>();
let sharedOk: boolean | null = null;
let relaxedOk: boolean | null = null;

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Whether this engine validates the relaxed-SIMD module (checked once). */
export function relaxedSimdSupported(): boolean {
  if (relaxedOk === null) {
    try {
      relaxedOk = WebAssembly.validate(decodeBase64(WASM_RELAXED_BASE64));
    } catch {
      relaxedOk = false;
    }
  }
  return relaxedOk;
}

function resolveVariant(v: KernelVariant): "simd128" | "relaxed" {
  if (v === "simd128") return "simd128";
  if (v === "relaxed") return "relaxed";
  return relaxedSimdSupported() ? "relaxed" : "simd128";
}

/**
 * Whether this engine can run the shared-memory build: shared
 * `WebAssembly.Memory`, `SharedArrayBuffer`, `Atomics` and `Worker` exist and
 * the module validates (checked once).
 */
export function sharedMemorySupported(): boolean {
  if (sharedOk === null) {
    try {
      sharedOk = typeof SharedArrayBuffer === "function" && typeof Atomics === "object" &&
        typeof Worker === "function" &&
        new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof SharedArrayBuffer &&
        WebAssembly.validate(decodeBase64(WASM_MT_BASE64));
    } catch {
      sharedOk = false;
    }
  }
  return sharedOk;
}

/** The module bytes of a resolved variant (`shared`: the threads build). */
export function kernelBytes(variant: "simd128" | "relaxed", shared: boolean): Uint8Array<ArrayBuffer> {
  if (shared) return decodeBase64(variant === "relaxed" ? WASM_RELAXED_MT_BASE64 : WASM_MT_BASE64);
  return decodeBase64(variant === "relaxed" ? WASM_RELAXED_BASE64 : WASM_BASE64);
}

/** Resolve `"auto"` to the module this engine runs. */
export function resolveKernelVariant(variant: KernelVariant): "simd128" | "relaxed" {
  return resolveVariant(variant);
}

/**
 * A compiled kernel module, compiled at most once per isolate, variant and
 * build (`shared`: the shared-memory threads build).
 */
export function compileKernels(variant: KernelVariant = "auto", shared = false): Promise<WebAssembly.Module> {
  const v = resolveVariant(variant);
  const key = shared ? `${v}-mt` : v;
  let m = cachedModules.get(key);
  if (m === undefined) {
    m = WebAssembly.compile(kernelBytes(v, shared));
    cachedModules.set(key, m);
    // A failed compile is not cached, so a later call may retry.
    m.catch(() => cachedModules.delete(key));
  }
  return m;
}

/**
 * Instantiate the kernels: a new instance (and linear memory) over the
 * cached compiled module of `variant` (default `"auto"`: relaxed SIMD when
 * the engine supports it). Throws if the module's ABI version or exports do
 * not match these bindings.
 */
export async function instantiateKernels(
  variant: KernelVariant = "auto",
  opts: InstantiateOptions = {},
): Promise<KernelModule> {
  const v = resolveVariant(variant);
  const shared = opts.sharedMemory !== undefined;
  const module = await compileKernels(v, shared);
  const instance = await WebAssembly.instantiate(
    module,
    shared ? { env: { memory: opts.sharedMemory } } : {},
  );
  const raw = { ...instance.exports } as Record<string, unknown>;
  if (shared) raw.memory = opts.sharedMemory;
  for (const name of KERNEL_FUNCTIONS) {
    if (typeof raw[name] !== "function") {
      throw new Error(`Cannot instantiate kernels: missing export: received no function "${name}"`);
    }
  }
  if (!(raw.memory instanceof WebAssembly.Memory)) {
    throw new Error("Cannot instantiate kernels: missing export: received no memory");
  }
  const exports = raw as unknown as KernelExports;
  const ver = exports.abi_version();
  if (ver !== KERNEL_ABI_VERSION) {
    throw new Error(
      `Cannot instantiate kernels: ABI version mismatch: expected ${KERNEL_ABI_VERSION}, received ${ver}`,
    );
  }
  if (v === "relaxed") tuneRelaxedDot(exports);
  return { exports, memory: exports.memory, variant: v, shared };
}

/** The relaxed dot form picked by {@linkcode tuneRelaxedDot} in this isolate (null: not yet). */
let relaxedDotPick: number | null = null;

/**
 * Relaxed build: pick the faster of the two dot forms of the relaxed-SIMD
 * kernels (same results bit for bit) and set it on `k`. V8 lowers the fused
 * `i32x4.relaxed_dot_i8x16_i7x16_add_s` to one `vpdpbusd` only with AVX-VNNI;
 * without it (e.g. AMD Zen 4, AVX512-VNNI only) the split form is ~1.2–1.5×
 * faster. The first call in an isolate times both on a small packed Q4_0
 * matvec (about 10 ms: 40 short samples of each, alternating; the fused form
 * only if it is 5 % faster) in `k`'s memory
 * above `heap_base`, zeroed afterwards, so call it before anything is
 * allocated there; later calls reuse the pick. `instantiateKernels` calls it
 * for every relaxed instance. Returns the mode in effect (0 split, 1 fused),
 * or -1 when the module has no choice.
 */
export function tuneRelaxedDot(k: KernelExports): number {
  const mode = k.relaxed_dot_mode;
  if (typeof mode !== "function") return -1;
  if (relaxedDotPick !== null) return mode.call(k, relaxedDotPick);
  const Q4_0 = 2, rows = 256, cols = 1024;
  const wBytes = rows * (cols / 32) * 18;
  const base = (k.heap_base() + 63) & ~63;
  const xp = base + wBytes, op = xp + 4 * cols, tp = op + 4 * rows + 64;
  const sp = tp + Math.max(k.pack_scratch_bytes(Q4_0, cols), 64) + 64;
  const end = sp + k.matmul_scratch_bytes(Q4_0 | PACKED_FLAG, cols, 1) + 64;
  const mem = k.memory;
  if (end > mem.buffer.byteLength) mem.grow(Math.ceil((end - mem.buffer.byteLength) / 65536));
  const u8 = new Uint8Array(mem.buffer, base, end - base);
  let seed = 12345;
  for (let b = 0; b < wBytes; b += 18) {
    u8[b] = 0x00;
    u8[b + 1] = 0x2c; // d = 0.0625 (finite: packable)
    for (let j = 2; j < 18; j++) u8[b + j] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  }
  const x = new Float32Array(mem.buffer, xp, cols);
  for (let i = 0; i < cols; i++) x[i] = Math.sin(i * 0.37);
  let pick = 0;
  if (k.pack_weights(Q4_0, base, rows, cols, tp, 0) === 0) {
    const run = () => k.matmul(Q4_0 | PACKED_FLAG, base, rows, cols, xp, 1, op, sp);
    // warm-up (lets the engine tier the kernels up), then many short samples (8 calls, ~0.1 ms)
    // alternating the forms: the fastest sample of each is rarely hit by a time slice lost to
    // another process on a busy machine
    const w0 = performance.now();
    for (let i = 0; performance.now() - w0 < 3; i++) {
      mode.call(k, i & 1);
      run();
    }
    const best = [Infinity, Infinity];
    for (let r = 0; r < 80; r++) {
      const m = r & 1;
      mode.call(k, m);
      const t0 = performance.now();
      for (let i = 0; i < 8; i++) run();
      best[m] = Math.min(best[m], performance.now() - t0);
    }
    // the fused form only when clearly faster (it is ~1.2–1.5× slower without AVX-VNNI)
    pick = best[1] < 0.95 * best[0] ? 1 : 0;
  }
  new Uint8Array(mem.buffer, base, end - base).fill(0);
  relaxedDotPick = pick;
  return mode.call(k, pick);
}
