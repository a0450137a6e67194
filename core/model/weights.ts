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

/** A 2-D matrix inside the file: `rows` rows of `cols` elements at `fileOffset`. */
export interface MatrixRef {
  /** Tensor name (with `[e]` for an expert slice). */
  readonly name: string;
  /** ggml type. */
  readonly type: number;
  /** Output rows. */
  readonly rows: number;
  /** Input columns. */
  readonly cols: number;
  /** Absolute byte offset in the file. */
  readonly fileOffset: number;
  /** Byte length. */
  readonly nbytes: number;
}

/** Where one expert's matrices are in the file. */
export interface ExpertLocation {
  /** Layer. */
  readonly layer: number;
  /** Expert index. */
  readonly index: number;
  /** Gate projection, null when the model has none. */
  readonly gate: MatrixRef | null;
  /** Up projection. */
  readonly up: MatrixRef;
  /** Down projection. */
  readonly down: MatrixRef;
  /** Total bytes of the three matrices. */
  readonly bytes: number;
}

/** Weights of one block. */
export interface LayerWeights {
  /** attn_norm. */
  readonly attnNorm: Float32Array;
  /** Q/K/V/O projections. */
  readonly wq: WeightView;
  readonly wk: WeightView;
  readonly wv: WeightView;
  readonly wo: WeightView;
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
  /** Dense FFN, for layers without experts. */
  readonly dense: ExpertWeights | null;
  /** Shared expert (Qwen2-MoE). */
  readonly shared: { weights: ExpertWeights; gate: WeightView | null } | null;
  /** Routed experts' locations in the file. */
  readonly experts: readonly ExpertLocation[];
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

/** Loads weights for one model into one backend. */
export class WeightLoader {
  readonly #file: GgufFile;
  readonly #backend: Backend;
  readonly #progress?: LoadProgress;
  #loaded = 0;
  readonly #total: number;
  readonly #transform?: TensorBytesHook;
  /** Slots this loader allocated (freed by the model's dispose). */
  readonly slots: Slot[] = [];

  /** @param file parsed GGUF; @param backend target; @param total bytes expected (for progress); @param transform bytes hook */
  constructor(
    file: GgufFile,
    backend: Backend,
    total: number,
    progress?: LoadProgress,
    transform?: TensorBytesHook,
  ) {
    this.#file = file;
    this.#backend = backend;
    this.#total = total;
    this.#progress = progress;
    this.#transform = transform;
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
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
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
    const raw = await this.#file.readTensorBytes(t);
    const bytes = this.#transform?.(t, raw) ?? raw;
    const out = new Float32Array(n);
    traitsOf(t.type as never).dequantize(bytes, 0, n, out, 0);
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

async function ffn(
  ld: WeightLoader,
  pre: string,
  suffix: string,
  nEmbd: number,
  nFf: number,
): Promise<ExpertWeights> {
  return {
    gate: await ld.matrix(`${pre}.ffn_gate${suffix}.weight`, nEmbd, nFf, false),
    up: await ld.matrix(`${pre}.ffn_up${suffix}.weight`, nEmbd, nFf),
    down: await ld.matrix(`${pre}.ffn_down${suffix}.weight`, nFf, nEmbd),
  };
}

function expertLocations(ld: WeightLoader, hp: HParams, l: number): ExpertLocation[] {
  const pre = `blk.${l}`;
  const { nEmbd, nFfExp: nFf, nExpert } = hp;
  let gate: (MatrixRef | null)[] | null, up: MatrixRef[], down: MatrixRef[];
  if (ld.info(`${pre}.ffn_up_exps.weight`, false) || !hp.arch.legacyExperts) {
    up = ld.expertSlices(`${pre}.ffn_up_exps.weight`, nEmbd, nFf, nExpert)!;
    down = ld.expertSlices(`${pre}.ffn_down_exps.weight`, nFf, nEmbd, nExpert)!;
    gate = ld.expertSlices(`${pre}.ffn_gate_exps.weight`, nEmbd, nFf, nExpert, false);
  } else {
    up = [], down = [], gate = [];
    for (let e = 0; e < nExpert; e++) {
      up.push(ld.matrixRef(`${pre}.ffn_up.${e}.weight`, nEmbd, nFf));
      down.push(ld.matrixRef(`${pre}.ffn_down.${e}.weight`, nFf, nEmbd));
      gate.push(
        ld.info(`${pre}.ffn_gate.${e}.weight`, false)
          ? ld.matrixRef(`${pre}.ffn_gate.${e}.weight`, nEmbd, nFf)
          : null,
      );
    }
  }
  return up.map((u, e) => {
    const g = gate ? gate[e] : null;
    return {
      layer: l,
      index: e,
      gate: g,
      up: u,
      down: down[e],
      bytes: u.nbytes + down[e].nbytes + (g?.nbytes ?? 0),
    };
  });
}

/** Load and check every non-expert weight; locate the experts. */
export async function loadWeights(ld: WeightLoader, hp: HParams): Promise<ModelWeights> {
  const { nEmbd, nVocab, nHead, nHeadKv, headDimK, headDimV, arch } = hp;
  const qDim = nHead * headDimK, kDim = nHeadKv * headDimK, vDim = nHeadKv * headDimV;
  const tokEmbd = await ld.matrix("token_embd.weight", nEmbd, nVocab);
  const outputNorm = await ld.vector("output_norm.weight", nEmbd);
  const output = arch.tiedOutput
    ? (await ld.matrix("output.weight", nEmbd, nVocab, false)) ?? tokEmbd
    : await ld.matrix("output.weight", nEmbd, nVocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < hp.nLayer; l++) {
    const pre = `blk.${l}`;
    const qkN = arch.qkNorm === "per_head"
      ? [headDimK, headDimK]
      : arch.qkNorm === "full"
      ? [qDim, kDim]
      : null;
    const isMoe = hp.nExpert > 0;
    const shared = arch.sharedExpert && ld.info(`${pre}.ffn_up_shexp.weight`, false)
      ? {
        weights: await ffn(ld, pre, "_shexp", nEmbd, hp.nFfShexp),
        gate: await ld.matrix(`${pre}.ffn_gate_inp_shexp.weight`, nEmbd, 1, false),
      }
      : null;
    layers.push({
      attnNorm: await ld.vector(`${pre}.attn_norm.weight`, nEmbd),
      wq: await ld.matrix(`${pre}.attn_q.weight`, nEmbd, qDim),
      wk: await ld.matrix(`${pre}.attn_k.weight`, nEmbd, kDim),
      wv: await ld.matrix(`${pre}.attn_v.weight`, nEmbd, vDim),
      wo: await ld.matrix(`${pre}.attn_output.weight`, nHead * headDimV, nEmbd),
      bq: await ld.vector(`${pre}.attn_q.bias`, qDim, false),
      bk: await ld.vector(`${pre}.attn_k.bias`, kDim, false),
      bv: await ld.vector(`${pre}.attn_v.bias`, vDim, false),
      bo: await ld.vector(`${pre}.attn_output.bias`, nEmbd, false),
      qNorm: qkN ? await ld.vector(`${pre}.attn_q_norm.weight`, qkN[0]) : null,
      kNorm: qkN ? await ld.vector(`${pre}.attn_k_norm.weight`, qkN[1]) : null,
      ffnNorm: await ld.vector(`${pre}.ffn_norm.weight`, nEmbd),
      gateInp: isMoe ? await ld.matrix(`${pre}.ffn_gate_inp.weight`, nEmbd, hp.nExpert) : null,
      dense: isMoe ? null : await ffn(ld, pre, "", nEmbd, hp.nFf),
      shared,
      experts: isMoe ? expertLocations(ld, hp, l) : [],
    });
  }
  return { tokEmbd, outputNorm, output, layers, residentBytes: 0 };
}
