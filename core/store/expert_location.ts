/**
 * Where an expert's matrices are in the model file: the byte ranges an expert store
 * loads up front or streams on demand. The model's weight loader (`core/model/weights.ts`)
 * fills them in; the store reads them. Interfaces only.
 *
 * @module
 */

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
