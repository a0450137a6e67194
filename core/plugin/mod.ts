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
  manifestError,
  type ManifestProblem,
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
export { pluginError, PluginHost, type PluginPhase, stamp } from "./registry.ts";
export {
  BUILTIN_ROOT,
  checkIntegrity,
  entryStaysInside,
  JSR_REGISTRY,
  NPM_REGISTRY,
  NPM_TARBALL_MAX_BYTES,
  type PackageSpec,
  parsePackageSpec,
  sri,
  sriSha256,
  unpackNpmTarball,
  urlInside,
  type UseKind,
  useKind,
} from "./resolve.ts";
export {
  compilePatternMap,
  compilePeftPattern,
  compileSafeRegExp,
  PATTERN_MAX_KEYS,
  PATTERN_MAX_LENGTH,
  PATTERN_MAX_STATES,
  type PatternFlavor,
  type PeftPattern,
  type SafeRegExp,
} from "./pattern.ts";
export {
  loadFromManifest,
  type LoadFromManifestOptions,
  type ManifestLoadResult,
  type ManifestStoreFactory,
  type NamedAdapter,
  sha256OfSource,
} from "./from_manifest.ts";
export {
  ADAPTABLE_PROJECTIONS,
  type AdapterLayout,
  addLoraDelta,
  addLoraRow,
  checkPair,
  isDenseLayer,
  isExpertProjection,
  type LinearShape,
  linearShape,
  type LoraPair,
  loraScale,
  matVecF32,
  mergeLora,
  mergeLoraBytes,
  pairInGgufLayout,
  perLayer,
  permuteQkRows,
  projectA,
  projectionAdapter,
  type ProjectionDelta,
  qkPermutationHeads,
  targetShape,
} from "./lora.ts";
export {
  type AdapterFileReader,
  openPeftAdapter,
  parsePeftKey,
  patternValue,
  type PeftAdapter,
  type PeftKey,
  type PeftModule,
  type PeftTensorKind,
  readPeftAdapter,
  readTensor,
} from "./peft.ts";
