/**
 * Maps an architecture's GGUF tensors to backend weight views, checking every
 * name and shape. Non-expert weights are uploaded at load; expert tensors are
 * described by `ExpertLocation`s (byte ranges in the file) so an expert store
 * can load them all up front or stream them on demand.
 *
 * @module
 */

import type { Backend, Slot, WeightView } from "../backend/backend.ts";
import { ModelError } from "../errors.ts";
import type { GgufFile, GgufTensorInfo } from "../formats/gguf_reader.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import { ggmlTypeName } from "../tensor/ggml_type.ts";
import { rowBytes, traitsOf } from "../tensor/traits.ts";
import type { HParams } from "./hparams.ts";
import type { ExpertLocation, MatrixRef } from "../store/expert_location.ts";

// Where expert matrices sit in the file is the store's input, so the types live in
// core/store (model depends on store, not the reverse); re-exported for existing imports.
export type { ExpertLocation, MatrixRef } from "../store/expert_location.ts";

/** Weights of one block. */
export interface LayerWeights {
  /** attn_norm. */
  readonly attnNorm: Float32Array;
  /** Q/K/V projections (null with multi-head latent attention, see `mla`). */
  readonly wq: WeightView | null;
  readonly wk: WeightView | null;
  readonly wv: WeightView | null;
  /** Attention output projection. */
  readonly wo: WeightView;
  /** Multi-head latent attention tensors (deepseek2), null otherwise. */
  readonly mla: MlaWeights | null;
  /** Optional biases. */
  readonly bq: Float32Array | null;
  readonly bk: Float32Array | null;
  readonly bv: Float32Array | null;
  readonly bo: Float32Array | null;
  /** Q/K norms (per-head or full, per the architecture). */
  readonly qNorm: Float32Array | null;
  readonly kNorm: Float32Array | null;
  /** ffn_norm. */
  readonly ffnNorm: Float32Array;
  /** Router (`ffn_gate_inp`), null for a dense layer. */
  readonly gateInp: WeightView | null;
  /** Per-expert selection bias (`exp_probs_b`, DeepSeek), added before top-k only. */
  readonly expProbsB: Float32Array | null;
  /** Router bias (`ffn_gate_inp.bias`, gpt-oss). */
  readonly gateInpB?: Float32Array | null;
  /** Routed experts' biases (gpt-oss): `[n_expert][n_ff]` gate/up, `[n_expert][n_embd]` down. */
  readonly expertBiases?: ExpertBiases | null;
  /** Attention sinks (`attn_sinks`, one logit per head, gpt-oss). */
  readonly attnSinks?: Float32Array | null;
  /** Dense FFN, for layers without experts. */
  readonly dense: ExpertWeights | null;
  /** Shared expert (Qwen2-MoE: gated; Granite, DeepSeek: plain). */
  readonly shared: { weights: ExpertWeights; gate: WeightView | null } | null;
  /** Routed experts' locations in the file. */
  readonly experts: readonly ExpertLocation[];
}

/** Biases of a layer's routed experts, expert-major (`[n_expert][width]`). */
export interface ExpertBiases {
  /** `ffn_gate_exps.bias`. */
  readonly gate: Float32Array;
  /** `ffn_up_exps.bias`. */
  readonly up: Float32Array;
  /** `ffn_down_exps.bias`. */
  readonly down: Float32Array;
}

/** Multi-head latent attention tensors of one block (llama.cpp deepseek2, MLA form). */
export interface MlaWeights {
  /** `attn_q` (`n_embd → n_head·key_length_mla`), when `q_lora_rank` is 0. */
  readonly wq: WeightView | null;
  /** `attn_q_a` (`n_embd → q_lora_rank`), `attn_q_a_norm`, `attn_q_b` (`→ n_head·key_length_mla`). */
  readonly wqA: WeightView | null;
  readonly qANorm: Float32Array | null;
  readonly wqB: WeightView | null;
  /** `attn_kv_a_mqa` (`n_embd → kv_lora_rank + n_rot`): the latent and the shared rope key. */
  readonly wkvA: WeightView;
  /** `attn_kv_a_norm` (`kv_lora_rank`). */
  readonly kvANorm: Float32Array;
  /** `attn_k_b[h]` (`qk_nope → kv_lora_rank`): absorbs the no-rope query into the latent space. */
  readonly wkB: readonly WeightView[];
  /** `attn_v_b[h]` (`kv_lora_rank → value_length_mla`): decompresses each head's output. */
  readonly wvB: readonly WeightView[];
  /** `attn_kv_b` (`kv_lora_rank → n_head·(qk_nope + v)`), older conversions without MLA. */
  readonly wkvB: WeightView | null;
}

/** All weights of a model. */
export interface ModelWeights {
  /** token_embd (`[n_vocab][n_embd]`). */
  readonly tokEmbd: WeightView;
  /** output_norm. */
  readonly outputNorm: Float32Array;
  /** output (tied to tokEmbd when absent). */
  readonly output: WeightView;
  /** Blocks. */
  readonly layers: readonly LayerWeights[];
  /** Bytes uploaded for non-expert weights. */
  readonly residentBytes: number;
}

/** Progress callback: bytes loaded so far out of total. */
export type LoadProgress = (loaded: number, total: number) => void;

/** A tensor about to be uploaded; expert slices are named `blk.N.ffn_up_exps.weight[e]`. */
export interface TensorBytesInfo {
  /** Tensor name. */
  readonly name: string;
  /** ggml type. */
  readonly type: number;
  /** ggml dims (`[cols, rows, …]`). */
  readonly dims: readonly number[];
}

/** Checks or transforms tensor bytes before upload (plugins' `weights` hook); same length out. */
export type TensorBytesHook = (tensor: TensorBytesInfo, bytes: Uint8Array) => Uint8Array | void;

function shapeError(t: GgufTensorInfo, want: readonly number[]): ModelError {
  return new ModelError(
    "shape_mismatch",
    `Cannot load tensor '${t.name}': shape [${t.dims.join(", ")}] does not match expected [${
      want.join(", ")
    }]`,
    { tensor: t.name, dims: t.dims, expected: want },
  );
}

function checkDims(t: GgufTensorInfo, want: readonly number[]): void {
  const dims = [...t.dims];
  while (dims.length > want.length && dims[dims.length - 1] === 1) dims.pop();
  const w = [...want];
  while (dims.length < w.length && w[w.length - 1] === 1) w.pop();
  if (dims.length !== w.length || dims.some((d, i) => d !== w[i])) throw shapeError(t, want);
}

function nonFinite(name: string, index: number, value: number): ModelError {
  return new ModelError(
    "non_finite_weight",
    `Cannot load tensor '${name}': element ${index} is ${value} (weights must be finite)`,
    { tensor: name, index, value },
  );
}

/** Throws `ModelError` `"non_finite_weight"` naming the tensor when `v` holds NaN or ±Infinity. */
export function checkFiniteF32(name: string, v: Float32Array, base = 0): void {
  for (let i = 0; i < v.length; i++) {
    // x - x is 0 for finite x, NaN for NaN and ±Infinity
    if (v[i] - v[i] !== 0) throw nonFinite(name, base + i, v[i]);
  }
}

/**
 * Dequantize `rows` rows of `cols` elements of `type` from `bytes`, one row at a time, and throw
 * `ModelError` `"non_finite_weight"` at the first NaN or ±Infinity. O(bytes); used at load only
 * when asked (`LoadModelOptions.checkWeights`), since generation's logit guard catches the rest.
 */
export function checkFiniteBytes(
  name: string,
  type: number,
  bytes: Uint8Array,
  rows: number,
  cols: number,
): void {
  const tr = traitsOf(type as never);
  const rb = rowBytes(type as never, cols);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    tr.dequantize(bytes, r * rb, cols, row, 0);
    checkFiniteF32(name, row, r * cols);
  }
}

/** Options of a `WeightLoader`. */
export interface WeightLoaderOptions {
  /** Scan every uploaded matrix for non-finite values (O(file); default false). */
  checkFinite?: boolean;
  /**
   * Most bytes this loader may allocate, slots and f32 vectors together (default: unbounded).
   * `loadModel` sets it from the file size, so a file never makes it allocate more than it holds.
   */
  budgetBytes?: number;
}

/** Loads weights for one model into one backend. */
export class WeightLoader {
  readonly #file: GgufFile;
  readonly #backend: Backend;
  readonly #progress?: LoadProgress;
  #loaded = 0;
  readonly #total: number;
  readonly #transform?: TensorBytesHook;
  readonly #checkFinite: boolean;
  readonly #budget: number;
  readonly #uploaded = new Set<string>();
  /** Bytes allocated so far: backend slots plus f32 copies of vectors. */
  allocatedBytes = 0;
  /** Slots this loader allocated (freed by the model's dispose, or by `free` when loading fails). */
  readonly slots: Slot[] = [];

  /** @param file parsed GGUF; @param backend target; @param total bytes expected (for progress); @param transform bytes hook */
  constructor(
    file: GgufFile,
    backend: Backend,
    total: number,
    progress?: LoadProgress,
    transform?: TensorBytesHook,
    opts: WeightLoaderOptions = {},
  ) {
    this.#file = file;
    this.#backend = backend;
    this.#total = total;
    this.#progress = progress;
    this.#transform = transform;
    this.#checkFinite = opts.checkFinite ?? false;
    this.#budget = opts.budgetBytes ?? Infinity;
  }

  /** Whether matrices are scanned for non-finite values. */
  get checksFinite(): boolean {
    return this.#checkFinite;
  }

  /**
   * Count `bytes` against the budget before allocating them; throws `ModelError`
   * `"load_budget"` naming `what` when they would exceed it.
   */
  reserve(bytes: number, what: string): void {
    if (this.allocatedBytes + bytes > this.#budget) {
      throw new ModelError(
        "load_budget",
        `Cannot load '${what}': ${bytes} more bytes would exceed the load budget of ${this.#budget} ` +
          `bytes (${this.allocatedBytes} allocated; the bound follows from the file's size)`,
        { tensor: what, bytes, allocated: this.allocatedBytes, budget: this.#budget },
      );
    }
    this.allocatedBytes += bytes;
  }

  /** Allocate a slot of `bytes` under the budget; the loader owns it until the model does. */
  allocSlot(bytes: number, what: string): Slot {
    this.reserve(bytes, what);
    const slot = this.#backend.allocSlot(bytes);
    this.slots.push(slot);
    return slot;
  }

  /** Free every slot this loader allocated (loading failed). Never throws. */
  free(): void {
    for (const s of this.slots) {
      try {
        this.#backend.freeSlot(s);
      } catch { /* already gone */ }
    }
    this.slots.length = 0;
  }

  #once(t: GgufTensorInfo): void {
    // each tensor is loaded at most once, so the loader's total stays below the file's
    if (this.#uploaded.has(t.name)) {
      throw new ModelError("duplicate_load", `Cannot load tensor '${t.name}' twice`, {
        tensor: t.name,
      });
    }
    this.#uploaded.add(t.name);
  }

  /** Tensor info, or null when absent and not required. */
  info(name: string, required: boolean): GgufTensorInfo | null {
    if (this.#file.hasTensor(name)) return this.#file.tensor(name);
    if (!required) return null;
    throw new ModelError("missing_tensor", `Cannot load model: tensor '${name}' is missing`, {
      tensor: name,
    });
  }

  #checkType(t: GgufTensorInfo): void {
    if (!this.#backend.supportsOp("matmul", t.type as never)) {
      throw new ModelError(
        "unsupported_type",
        `Cannot load tensor '${t.name}': type ${
          ggmlTypeName(t.type)
        } is not supported by backend '${this.#backend.name}'`,
        { tensor: t.name, type: t.type },
      );
    }
  }

  /** Upload a matrix `[rows][cols]` (ggml dims `[cols, rows]`). */
  async matrix(name: string, cols: number, rows: number): Promise<WeightView>;
  async matrix(
    name: string,
    cols: number,
    rows: number,
    required: false,
  ): Promise<WeightView | null>;
  async matrix(
    name: string,
    cols: number,
    rows: number,
    required = true,
  ): Promise<WeightView | null> {
    const t = this.info(name, required);
    if (!t) return null;
    checkDims(t, [cols, rows]);
    this.#checkType(t);
    const slot = await this.upload(t);
    const view: WeightView = { slot, offset: 0, type: t.type as never, rows, cols };
    this.#backend.prepareWeights?.(view);
    return view;
  }

  /** Upload a tensor's bytes into a new slot. */
  async upload(t: GgufTensorInfo): Promise<Slot> {
    this.#once(t);
    this.reserve(t.nbytes, t.name);
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    if (this.#checkFinite) {
      const cols = t.dims[0] ?? 1;
      const n = t.dims.reduce((a, d) => a * d, 1);
      checkFiniteBytes(t.name, t.type, bytes, cols > 0 ? n / cols : 0, cols);
    }
    const slot = this.#backend.allocSlot(t.nbytes);
    this.slots.push(slot);
    this.#backend.writeSlot(slot, 0, bytes);
    this.advance(t.nbytes);
    return slot;
  }

  /** Report progress. */
  advance(n: number): void {
    this.#loaded += n;
    this.#progress?.(this.#loaded, this.#total);
  }

  /** Read a small vector (norm weights, biases) as f32. */
  async vector(name: string, n: number): Promise<Float32Array>;
  async vector(name: string, n: number, required: false): Promise<Float32Array | null>;
  async vector(name: string, n: number, required = true): Promise<Float32Array | null> {
    const t = this.info(name, required);
    if (!t) return null;
    checkDims(t, [n]);
    this.#once(t);
    const tr = traitsOf(t.type as never);
    this.reserve(4 * n, t.name);
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    const out = new Float32Array(n);
    tr.dequantize(bytes, 0, n, out, 0);
    // vectors are already f32 here: checking them costs nothing
    checkFiniteF32(t.name, out);
    this.advance(t.nbytes);
    return out;
  }

  /**
   * Upload a stack of `n` matrices `[cols, rows, n]` (ggml dims), one slot per matrix (per-head
   * weights such as `attn_k_b`), so each is an ordinary view a backend may prepare on its own.
   */
  async matrixStack(name: string, cols: number, rows: number, n: number): Promise<WeightView[]> {
    const t = this.info(name, true)!;
    checkDims(t, [cols, rows, n]);
    this.#checkType(t);
    this.#once(t);
    this.reserve(t.nbytes, t.name);
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    if (this.#checkFinite) checkFiniteBytes(t.name, t.type, bytes, rows * n, cols);
    const per = rows * rowBytes(t.type as never, cols);
    const views: WeightView[] = [];
    for (let i = 0; i < n; i++) {
      const slot = this.#backend.allocSlot(per);
      this.slots.push(slot);
      this.#backend.writeSlot(slot, 0, bytes.subarray(i * per, (i + 1) * per));
      const view: WeightView = { slot, offset: 0, type: t.type as never, rows, cols };
      this.#backend.prepareWeights?.(view);
      views.push(view);
    }
    this.advance(t.nbytes);
    return views;
  }

  /**
   * Upload a fused matrix `[cols, Σ parts]` (ggml dims; `attn_qkv`) as one matrix per consecutive
   * row range of `parts[i]` rows, one slot each: row `r` of part `i` is row `Σ parts[<i] + r` of
   * the tensor, so each part's products are the fused matrix's rows, bit for bit.
   */
  async matrixSplit(name: string, cols: number, parts: readonly number[]): Promise<WeightView[]> {
    const t = this.info(name, true)!;
    const rowsTotal = parts.reduce((a, r) => a + r, 0);
    checkDims(t, [cols, rowsTotal]);
    this.#checkType(t);
    this.#once(t);
    this.reserve(t.nbytes, t.name);
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    if (this.#checkFinite) checkFiniteBytes(t.name, t.type, bytes, rowsTotal, cols);
    const rb = rowBytes(t.type as never, cols);
    const views: WeightView[] = [];
    let row = 0;
    for (const rows of parts) {
      const slot = this.#backend.allocSlot(rows * rb);
      this.slots.push(slot);
      this.#backend.writeSlot(slot, 0, bytes.subarray(row * rb, (row + rows) * rb));
      const view: WeightView = { slot, offset: 0, type: t.type as never, rows, cols };
      this.#backend.prepareWeights?.(view);
      views.push(view);
      row += rows;
    }
    this.advance(t.nbytes);
    return views;
  }

  /** Read a small `[cols, rows]` table (per-expert biases) as f32, row-major; checked finite. */
  async table(name: string, cols: number, rows: number): Promise<Float32Array> {
    const t = this.info(name, true)!;
    checkDims(t, [cols, rows]);
    this.#once(t);
    const n = cols * rows;
    this.reserve(4 * n, t.name);
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    const out = new Float32Array(n);
    const tr = traitsOf(t.type as never);
    const rb = rowBytes(t.type as never, cols);
    for (let r = 0; r < rows; r++) tr.dequantize(bytes, r * rb, cols, out, r * cols);
    checkFiniteF32(t.name, out);
    this.advance(t.nbytes);
    return out;
  }

  /** Locations of the `nExpert` slices of a merged `[cols, rows, nExpert]` tensor. */
  expertSlices(
    name: string,
    cols: number,
    rows: number,
    nExpert: number,
    required = true,
  ): MatrixRef[] | null {
    const t = this.info(name, required);
    if (!t) return null;
    checkDims(t, [cols, rows, nExpert]);
    this.#checkType(t);
    const per = rows * rowBytes(t.type as never, cols);
    return Array.from({ length: nExpert }, (_, e) => ({
      name: `${name}[${e}]`,
      type: t.type,
      rows,
      cols,
      fileOffset: t.fileOffset + e * per,
      nbytes: per,
    }));
  }

  /** Location of a legacy per-expert 2-D tensor. */
  matrixRef(name: string, cols: number, rows: number): MatrixRef {
    const t = this.info(name, true)!;
    checkDims(t, [cols, rows]);
    this.#checkType(t);
    return { name, type: t.type, rows, cols, fileOffset: t.fileOffset, nbytes: t.nbytes };
  }
}

/** Load and check every non-expert weight; locate the experts (each block through its architecture module). */
export async function loadWeights(ld: WeightLoader, hp: HParams): Promise<ModelWeights> {
  const { nEmbd, nVocab, arch } = hp;
  const tokEmbd = await ld.matrix("token_embd.weight", nEmbd, nVocab);
  const outputNorm = await ld.vector("output_norm.weight", nEmbd);
  const output = arch.tiedOutput
    ? (await ld.matrix("output.weight", nEmbd, nVocab, false)) ?? tokEmbd
    : await ld.matrix("output.weight", nEmbd, nVocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < hp.nLayer; l++) layers.push(await arch.loadLayer(ld, hp, l));
  return { tokEmbd, outputNorm, output, layers, residentBytes: 0 };
}
