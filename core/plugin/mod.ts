/**
 * Plugins: the `Plugin` contract, model/plugin manifests and their
 * validation, the loader, the hook registry, and the LoRA/PEFT building
 * blocks adapter plugins share.
 *
 * @module
 */

export * from "./types.ts";
export {
  fieldPath,
  type ManifestProblem,
  manifestError,
  type ModelManifest,
  type PluginManifest,
  type PluginRef,
  validateModelManifest,
  validatePluginConfig,
  validatePluginManifest,
} from "./manifest.ts";
export {
  instantiatePlugins,
  type LoadedPlugin,
  loadPlugins,
  type PluginLoaderOptions,
  type PreparedPlugin,
  preparePlugins,
} from "./loader.ts";
export { PluginHost, pluginError, type PluginPhase, stamp } from "./registry.ts";
export { BUILTIN_ROOT, checkIntegrity, sriSha256, type UseKind, useKind } from "./resolve.ts";
export {
  type LoadFromManifestOptions,
  loadFromManifest,
  type ManifestLoadResult,
  type ManifestStoreFactory,
  sha256OfSource,
} from "./from_manifest.ts";
export {
  ADAPTABLE_PROJECTIONS,
  addLoraDelta,
  checkPair,
  type LinearShape,
  linearShape,
  type LoraPair,
  loraScale,
  matVecF32,
  mergeLora,
  mergeLoraBytes,
  perLayer,
  projectA,
  projectionAdapter,
  type ProjectionDelta,
  targetShape,
} from "./lora.ts";
export {
  type AdapterFileReader,
  openPeftAdapter,
  patternValue,
  type PeftAdapter,
  type PeftKey,
  type PeftModule,
  type PeftTensorKind,
  parsePeftKey,
  readPeftAdapter,
  readTensor,
} from "./peft.ts";
