/**
 * Typed errors, one class per domain. Each carries a machine-readable `code`
 * and a message that names the field, offset or plugin involved.
 *
 * @module
 */

/** Base class of every error moe-edge throws on purpose. */
export class MoeEdgeError extends Error {
  /** Machine-readable error code, e.g. `"truncated"`, `"bad_magic"`. */
  readonly code: string;
  /** Structured details (field names, offsets, sizes) for programs. */
  readonly details: Readonly<Record<string, unknown>>;

  /**
   * @param code machine-readable code
   * @param message human message naming the field/offset involved
   * @param details structured details
   */
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A GGUF file is malformed or unsupported. */
export class GgufError extends MoeEdgeError {}
/** A safetensors file is malformed or unsupported. */
export class SafetensorsError extends MoeEdgeError {}
/** A tensor type or tensor shape problem. */
export class TensorError extends MoeEdgeError {}
/** A model's metadata or tensors do not fit a supported architecture. */
export class ModelError extends MoeEdgeError {}
/** A tokenizer cannot be built or cannot encode/decode. */
export class TokenizerError extends MoeEdgeError {}
/** A backend cannot run an op or cannot be created. */
export class BackendError extends MoeEdgeError {}
/** A byte source or expert store failed (I/O, range, integrity, budget). */
export class StoreError extends MoeEdgeError {}
/** A model or plugin manifest is invalid. */
export class ManifestError extends MoeEdgeError {}
/** A plugin failed; message is stamped with the plugin and hook name. */
export class PluginError extends MoeEdgeError {}
/** Bad generation parameters (sampling options, prompt, limits). */
export class GenerationError extends MoeEdgeError {}
