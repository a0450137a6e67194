/**
 * moe-edge: Mixture-of-Experts inference for Deno and edge functions.
 *
 * Load a GGUF MoE model (Mixtral-style `llama`, `qwen2moe`, `qwen3moe`,
 * `olmoe`) and generate tokens that match llama.cpp.
 *
 * @example
 * ```ts ignore
 * import { generateText, loadModel } from "@moe-edge/runtime";
 * const model = await loadModel("model.gguf");
 * const out = await generateText(model, "Once upon a time", { maxTokens: 32 });
 * console.log(out.text);
 * ```
 *
 * The root stays light: the OpenAI-compatible server is `@moe-edge/runtime/serve`
 * and the embedded default model (2 MB of weights) is
 * `@moe-edge/runtime/default-model`; neither is loaded by importing this module.
 *
 * @module
 */

import "./wasm/register.ts";

export * from "./core/errors.ts";
export { createWasmBackend, WasmBackend } from "./wasm/backend.ts";
export { GgmlType, ggmlTypeName, parseGgmlType } from "./core/tensor/ggml_type.ts";
export type * from "./core/backend/backend.ts";
export {
  type BackendFactory,
  backendNames,
  createBackend,
  registerBackend,
} from "./core/backend/registry.ts";
export { createRefBackend, RefBackend } from "./core/backend/ref_backend.ts";
export {
  type ByteSource,
  FileSource,
  type FileSourceOptions,
  MemorySource,
} from "./core/io/byte_source.ts";
export {
  type ExpertArrivals,
  type ExpertStore,
  type ExpertStoreStats,
  ResidentExpertStore,
} from "./core/store/expert_store.ts";
export type { Expert, ExpertKey, ExpertWeights } from "./core/moe/expert.ts";
export {
  type Gating,
  type Route,
  type Router,
  softmaxInPlace,
  topK,
  TopKRouter,
  type TopKRouterOptions,
} from "./core/moe/router.ts";
export { readGguf } from "./core/formats/gguf_reader.ts";
export type { GgufFile, GgufTensorInfo } from "./core/formats/gguf_reader.ts";
export { writeGguf } from "./core/formats/gguf_writer.ts";
export {
  firstNonFinite,
  readSafetensors,
  SAFETENSORS_DTYPE_BITS,
  type SafetensorsFile,
  type SafetensorsTensorInfo,
  type SafetensorsWriteTensor,
  writeSafetensors,
} from "./core/formats/safetensors.ts";
export { gguf, type GgufValue, GgufValueType } from "./core/formats/gguf_types.ts";
export type { HParams } from "./core/model/hparams.ts";
export { type ArchSpec, archSpec, SUPPORTED_ARCHS } from "./core/model/arch.ts";
export {
  loadModel,
  type LoadModelOptions,
  Model,
  type ModelHooks,
  type ModelSource,
  type StoreContext,
} from "./core/model/model.ts";
export { synthesizeModel, type SyntheticModelSpec } from "./core/model/synthetic.ts";
export {
  describePlan,
  type MemoryPlan,
  type ModelNeeds,
  modelNeeds,
  planMemory,
  type PlanOptions,
} from "./core/model/memory_plan.ts";
export { type ModelPreset, type PresetOptions, PRESETS, presetSpec } from "./core/model/presets.ts";
export { writeSyntheticFile, writeSyntheticStream } from "./core/model/synthetic_stream.ts";
export { Session, type SessionOptions } from "./core/generate/session.ts";
export { Sampler, type SamplingOptions } from "./core/generate/sampler.ts";
export {
  type FinishReason,
  generate,
  type GenerateOptions,
  type GenerateResult,
  type GenerateStep,
  generateText,
} from "./core/generate/generate.ts";
export type { Tokenizer } from "./core/tokenizer/mod.ts";
export type { LinearAdapter, LinearName } from "./core/model/transformer.ts";
export type {
  ExpertLocation,
  MatrixRef,
  TensorBytesHook,
  TensorBytesInfo,
} from "./core/model/weights.ts";
export * from "./core/plugin/mod.ts";
export {
  HttpSource,
  type HttpSourceOptions,
  type HttpSourceStats,
} from "./core/store/http_source.ts";
export type { LayerStoreStats } from "./core/store/expert_store.ts";
export {
  type CachePolicy,
  type CachePolicyFactory,
  type CachePolicyInit,
  createRecencyPolicy,
  expertKey,
  type LoadReason,
  pickVictim,
} from "./core/store/cache_policy.ts";
export {
  nextMoeLayer,
  type PrefetchContext,
  type Prefetcher,
  type PrefetcherFactory,
  type PrefetchHint,
  type PrefetchLayer,
} from "./core/store/prefetch.ts";
export {
  copyLocation,
  type CopyPlan,
  type FallbackCopiesOptions,
  loadFallbackCopies,
  quantizeExpert,
  type ResidentCopies,
  sideLocations,
  writeCopiesGguf,
} from "./core/store/fallback_copies.ts";
export { mergeRanges, readRanges } from "./core/store/read_ranges.ts";
export {
  type BackgroundLoadPolicy,
  DEFAULT_BACKGROUND_LOADS,
  DEFAULT_CRITICAL_WEIGHT,
} from "./core/store/streaming_options.ts";
export {
  createStreamingStore,
  type ExpertFallback,
  StreamingExpertStore,
  type StreamingStoreContext,
  streamingStoreFromRequest,
  type StreamingStoreOptions,
  type StreamingStoreRequest,
} from "./core/store/streaming_store.ts";
export {
  beladySimulate,
  type CacheSimOptions,
  type CacheSimResult,
  simulatePolicy,
} from "./core/store/belady.ts";
export {
  affinityFromTrace,
  type AffinityTable,
  moeLayersOf,
  parseRouteTrace,
  RouteRecorder,
  type RouteTrace,
  stepsFromTrace,
} from "./core/store/route_trace.ts";
export {
  buildExpertManifest,
  checkManifestFits,
  type ExpertManifest,
  type ExpertRef,
  type ManifestTensor,
  parseExpertManifest,
  readExpertBytes,
  sha256Hex,
} from "./core/store/expert_manifest.ts";
export {
  beginVerifiedLoad,
  buildIntegrityManifest,
  checkManifestTensors,
  expertTensorNames,
  type IntegrityMode,
  type VerifiedLoad,
} from "./core/store/integrity.ts";
export { IntegritySource, type IntegrityStats } from "./core/store/integrity_source.ts";
export { PIN_BLOCK_BYTES, PinnedSource, type PinOptions } from "./core/store/pinned_source.ts";
export { hash64 } from "./core/store/hash64.ts";
export { hitRate, prefetchAccuracy, statsJson } from "./core/store/store_stats.ts";
