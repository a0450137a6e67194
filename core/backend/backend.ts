/**
 * The backend contract: weight slots plus the heavy ops of a transformer.
 *
 * Backends hold weights in *slots* (byte buffers they own: JS memory for the
 * reference backend, linear memory for WASM, GPU buffers for WebGPU).
 * Activations cross the boundary as plain `Float32Array`s. Everything that
 * decides (routing, sampling, caching) lives in core or plugins, never here.
 *
 * Numerics follow llama.cpp's x86 CPU path: each matmul quantizes the
 * activation row to the weight type's `vec_dot_type` (see core/tensor/traits.ts)
 * and accumulates integer block dot products in f32.
 *
 * @module
 */

import type { GgmlType } from "../tensor/ggml_type.ts";

/** A weight slot owned by a backend. Plain data: an id and its size. */
export interface Slot {
  /** Backend-unique id. */
  readonly id: number;
  /** Capacity in bytes. */
  readonly bytes: number;
}

/**
 * A 2-D weight matrix inside a slot, ggml layout: `rows` rows of `cols`
 * elements each (ggml `ne0 = cols`, `ne1 = rows`), rows contiguous, starting
 * `offset` bytes into the slot. Quantized rows hold `cols / blockSize` blocks.
 */
export interface WeightView {
  /** The slot holding the bytes. */
  readonly slot: Slot;
  /** Byte offset of row 0 in the slot. */
  readonly offset: number;
  /** ggml type of the elements. */
  readonly type: GgmlType;
  /** Number of rows (outputs of a matmul). */
  readonly rows: number;
  /** Number of columns (inputs of a matmul); a multiple of the type's block size. */
  readonly cols: number;
}

/** RoPE flavour: `0` = NORM (adjacent pairs), `2` = NEOX (halves), as in ggml. */
export type RopeMode = 0 | 2;

/** RoPE parameters (ggml `rope_ext` without YaRN). */
export interface RopeParams {
  /** NORM or NEOX. */
  readonly mode: RopeMode;
  /** Rotated dimensions per head (`n_rot`); the rest pass through. */
  readonly nRot: number;
  /** `rope.freq_base`. */
  readonly freqBase: number;
  /** `1 / rope.scaling.factor` (1 when unscaled). */
  readonly freqScale: number;
}

/** Shape of a KV cache: one K and one V buffer per layer, stored as f16. */
export interface KvCacheSpec {
  /** Number of layers. */
  readonly layers: number;
  /** Max positions. */
  readonly nCtx: number;
  /** KV heads. */
  readonly nKvHeads: number;
  /** K head dimension. */
  readonly headDimK: number;
  /** V head dimension. */
  readonly headDimV: number;
}

/** A backend-owned KV cache. */
export interface KvCache {
  /** Backend-unique id. */
  readonly id: number;
  /** Its shape. */
  readonly spec: KvCacheSpec;
}

/** Attention call parameters (grouped-query, causal). */
export interface AttentionParams {
  /** Query heads. */
  readonly nHeads: number;
  /** KV heads; query head `h` uses KV head `floor(h / (nHeads / nKvHeads))`. */
  readonly nKvHeads: number;
  /** K/Q head dimension. */
  readonly headDimK: number;
  /** V head dimension. */
  readonly headDimV: number;
  /** Score scale, usually `1/sqrt(headDimK)`. */
  readonly scale: number;
}

/** Per-head attention sinks and a sliding window (gpt-oss), for `Backend.attentionExt`. */
export interface AttentionExtras {
  /** One sink logit per query head (`attn_sinks`), or null. */
  readonly sinks: Float32Array | null;
  /** Sliding window: a row at position p sees keys at positions > p − window (0 = full). */
  readonly window: number;
}

/** Names of the ops a backend may implement. */
export type OpName =
  | "matmul"
  | "getRows"
  | "rmsnorm"
  | "rope"
  | "attention"
  | "swiglu";

/** What a backend can do. */
export interface BackendCapabilities {
  /** Weight types `matmul`/`getRows` accept. */
  readonly formats: readonly GgmlType[];
  /** Largest single slot in bytes. */
  readonly maxSlotBytes: number;
  /**
   * Bytes the backend can hold in all (slots + KV caches + scratch), when
   * bounded and larger than one slot: the WASM backend over several 4 GiB
   * instances (wasm/sharded.ts). Absent: one slot's bound is the heap's
   * (a single wasm32 memory) or the backend has no heap of its own.
   */
  readonly heapBytes?: number;
}

/** Hints given when a slot is allocated; backends may ignore them (results never change). */
export interface SlotOptions {
  /**
   * Prepare (repack) matrices in this slot only when `prepareWeights` asks,
   * never at their first use: for bytes used a few times before they are
   * replaced (streamed experts), where a repack costs more than it saves.
   */
  readonly lazyPrepare?: boolean;
}

/**
 * A compute backend. All ops are synchronous; `out` buffers are written in
 * place and never alias inputs unless stated.
 */
export interface Backend {
  /** Registry name, e.g. `"ref"`, `"wasm"`, `"webgpu"`. */
  readonly name: string;
  /** Capabilities. */
  readonly caps: BackendCapabilities;
  /** Whether `op` is supported, for weight type `type` when the op takes one. */
  supportsOp(op: OpName, type?: GgmlType): boolean;

  /** Allocate a weight slot of `bytes` bytes. Throws `BackendError` when it cannot. */
  allocSlot(bytes: number, opts?: SlotOptions): Slot;
  /** Copy `data` into `slot` at byte `offset`. */
  writeSlot(slot: Slot, offset: number, data: Uint8Array): void;
  /** Release a slot; its views become invalid. */
  freeSlot(slot: Slot): void;
  /**
   * Optional: a writable view of `length` bytes of `slot` at `offset`, so a
   * reader can fill the slot in place (a file read straight into it, no
   * intermediate buffer or copy). Writing through it is like `writeSlot` of
   * standard-layout bytes (whatever was prepared in the range is forgotten
   * when the view is taken). The view may be over growable memory: any later
   * allocation of this backend may detach it (`byteLength` becomes 0), so
   * take it right before use and again after any allocation. Throws
   * `BackendError` `"out_of_range"` or `"bad_slot"`.
   */
  slotBytes?(slot: Slot, offset: number, length: number): Uint8Array;
  /**
   * Optional: told that the bytes of matrix `w` are complete in its slot, so
   * the backend may prepare them now (e.g. repack them in place into a
   * faster layout) instead of at first use. Never changes any op's results.
   * A later `writeSlot` over the range undoes it; call again after the
   * write. Backends without it need nothing.
   */
  prepareWeights?(w: WeightView): void;
  /**
   * Optional: after how many uses a streamed matrix of `type` is worth
   * repacking (`prepareWeights`): about the repack's cost over what one
   * use saves (the ski-rental break-even). The streaming store takes the
   * smallest over an expert's matrices when `packAfterUses` is not set
   * (3 without this method). Never changes any op's results.
   */
  repackAfterUses?(type: number): number;

  /**
   * `out[t*rows + r] = Σ_c W[r,c] · x[t*cols + c]` for `t < nTokens`, with
   * each activation row quantized to the weight type's `vec_dot_type`.
   */
  matmul(w: WeightView, x: Float32Array, nTokens: number, out: Float32Array): void;
  /** Dequantize rows `ids[i]` of `w` into `out[i*cols ..]` (token embedding). */
  getRows(w: WeightView, ids: Int32Array, out: Float32Array): void;
  /**
   * RMSNorm each of `x.length / n` rows of length `n`, then multiply by
   * `weight` (length `n`) when given: `y = x / sqrt(mean(x²) + eps) · w`.
   */
  rmsnorm(
    x: Float32Array,
    n: number,
    eps: number,
    weight: Float32Array | null,
    out: Float32Array,
  ): void;
  /**
   * Rotate, in place, `nTokens` rows of `nHeads` heads of `headDim` each;
   * row `t` is at position `positions[t]`.
   */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    p: RopeParams,
  ): void;
  /**
   * Optional fused SwiGLU expert FFN: `out = down · (silu(gate·x) ⊙ (up·x))`
   * for `nTokens` rows of `x`, gate/up `n_ff × n_embd`, down `n_embd × n_ff`.
   * Must equal `matmul(gate)`, `matmul(up)`, `swiglu`, `matmul(down)` on the
   * same backend bit for bit; it only saves round trips.
   */
  ffnSwiglu?(
    gate: WeightView,
    up: WeightView,
    down: WeightView,
    x: Float32Array,
    nTokens: number,
    out: Float32Array,
  ): void;
  /**
   * `out[i] = silu(gate[i]) · up[i]` over `out.length` elements, in rows of
   * `rowLen` (default: one row); rows matter only for SIMD-tail rounding parity.
   */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array, rowLen?: number): void;

  /** Create a KV cache (f16 storage). */
  createKvCache(spec: KvCacheSpec): KvCache;
  /** Free a KV cache. */
  freeKvCache(cache: KvCache): void;
  /**
   * Causal attention for `nTokens` new rows at positions
   * `startPos .. startPos+nTokens-1`: stores `k`, `v` (rounded to f16) in the
   * cache for `layer`, then `out = softmax(q·Kᵀ·scale + mask) · V` per head.
   * `q` is `[nTokens][nHeads*headDimK]`, `k` `[nTokens][nKvHeads*headDimK]`,
   * `v` `[nTokens][nKvHeads*headDimV]`, `out` `[nTokens][nHeads*headDimV]`.
   */
  attention(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    out: Float32Array,
  ): void;

  /**
   * Optional: `attention` with per-head sink logits (they join the softmax's max and sum but have
   * no value row, ggml `soft_max_ext` with sinks) and a sliding window, into the same cache.
   * With `sinks` null and `window` 0 it equals `attention` bit for bit. Backends without it:
   * core composes it over its own f16 rows (core/model/arch/attention.ts).
   */
  attentionExt?(
    cache: KvCache,
    layer: number,
    startPos: number,
    nTokens: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: AttentionParams,
    x: AttentionExtras,
    out: Float32Array,
  ): void;

  /** Memory the backend holds, in bytes (slots + caches + scratch). */
  memoryBytes(): number;
  /** Release everything. */
  dispose(): void;
}
