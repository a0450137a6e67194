/**
 * The plugin contract: a plugin is a plain object with a required `name` and
 * `version` and optional typed hooks. Every hook is declared once, in
 * `PluginHooks`; `HOOKS` (an exhaustive `Record<HookName, 1>`) keeps the
 * runtime list of hook names complete.
 *
 * @module
 */

import type { Backend } from "../backend/backend.ts";
import type { HParams } from "../model/hparams.ts";
import type { LinearAdapter } from "../model/transformer.ts";
import type { TensorBytesInfo } from "../model/weights.ts";
import type { Expert, ExpertKey } from "../moe/expert.ts";
import type { Router } from "../moe/router.ts";
import type { CachePolicy } from "../store/cache_policy.ts";
import type { Prefetcher } from "../store/prefetch.ts";

/** The plugin API major version this runtime implements; manifests must declare it. */
export const PLUGIN_API_VERSION = 1;

/** What hooks that need the loaded model's shape get. */
export interface ModelContext {
  /** Hyper-parameters of the model. */
  readonly hp: HParams;
  /** Backend running the model. */
  readonly backend: Backend;
}

/**
 * Wraps or replaces the router of one MoE layer. Called once per layer at
 * load; the returned router runs per token. Plugins chain in manifest order:
 * each receives the router the previous plugin returned.
 */
export type RouterHook = (router: Router, layer: number, hp: HParams) => Router;

/** Returns linear-layer adapters (LoRA, LoRA-expert mixes); all plugins' adapters apply, in order. */
export type AdapterHook = (
  ctx: ModelContext,
) => LinearAdapter | readonly LinearAdapter[] | Promise<LinearAdapter | readonly LinearAdapter[]>;

/**
 * Transforms (or only checks) a tensor's bytes before upload, at load time
 * and when a streaming store loads an expert. Must return bytes of the same
 * length, or nothing to keep them. Plugins chain in manifest order.
 */
export type WeightsHook = (tensor: TensorBytesInfo, bytes: Uint8Array) => Uint8Array | void;

/** Creates the cache policy of the streaming expert store; the first plugin that has one wins. */
export type CacheHook = (ctx: { readonly hp: HParams }) => CachePolicy;

/** Creates a prefetcher for the streaming expert store; the first plugin that has one wins. */
export type PrefetchHook = (ctx: { readonly hp: HParams }) => Prefetcher;

/**
 * A new kind of expert: custom compute in TypeScript (optionally its own
 * WASM). `claims` decides which experts it replaces; for each expert the
 * first kind (in manifest order) that claims it wins.
 */
export interface ExpertKind {
  /** Kind name, e.g. `"zero"`; becomes the expert's `kind`. */
  readonly name: string;
  /** Whether this kind replaces expert `key`. */
  claims(key: ExpertKey, hp: HParams): boolean;
  /** The replacement; `base` is the default (SwiGLU) expert it replaces. */
  create(base: Expert, hp: HParams): Expert;
}

/** Every hook a plugin may implement. */
export interface PluginHooks {
  /** Wrap or override routers per layer. */
  router?: RouterHook;
  /** Linear-layer adapters. */
  adapter?: AdapterHook;
  /** Transform tensor bytes at load. */
  weights?: WeightsHook;
  /** Expert-store cache policy. */
  cache?: CacheHook;
  /** Expert prefetcher. */
  prefetch?: PrefetchHook;
  /** New expert kinds. */
  expertKinds?: readonly ExpertKind[];
}

/** Name of a hook. */
export type HookName = keyof PluginHooks;

/** Exhaustive: adding a hook to `PluginHooks` without listing it here is a type error. */
export const HOOKS: Readonly<Record<HookName, 1>> = Object.freeze({
  router: 1,
  adapter: 1,
  weights: 1,
  cache: 1,
  prefetch: 1,
  expertKinds: 1,
});

/** Hook names in declaration order. */
export const HOOK_NAMES: readonly HookName[] = Object.freeze(Object.keys(HOOKS) as HookName[]);

/** Whether `s` names a hook. */
export function isHookName(s: string): s is HookName {
  return Object.hasOwn(HOOKS, s);
}

/**
 * A plugin: plain data plus hook functions.
 *
 * @example
 * ```ts
 * import type { Plugin } from "./types.ts";
 * const plugin: Plugin = {
 *   name: "uniform-router",
 *   version: "1.0.0",
 *   hooks: {
 *     router: (inner) => ({ name: "uniform", route: (logits, layer) => inner.route(logits.fill(0), layer) }),
 *   },
 * };
 * ```
 */
export interface Plugin {
  /** Plugin name (must equal its manifest's `name`). */
  readonly name: string;
  /** Plugin version (must equal its manifest's `version`). */
  readonly version: string;
  /** Implemented hooks (must be exactly the manifest's `hooks`). */
  readonly hooks: PluginHooks;
}

/** What a plugin factory gets besides its (validated) config. */
export interface PluginSetup {
  /** The plugin's name. */
  readonly name: string;
  /** Directory URL of the model manifest; relative paths in config resolve against it. */
  readonly baseUrl: URL;
  /** Directory URL of the plugin itself. */
  readonly pluginUrl: URL;
  /** Resolve a config path (relative, absolute, or `file:`/`https:` URL) against `baseUrl`. */
  resolve(path: string): URL;
  /**
   * Read a file named by a config path (local file or https; plain http is
   * refused, and under a model manifest read over https a local file is
   * `ManifestError` `"local_from_remote"`). A file over `maxBytes` (default
   * 2 GiB) is `ManifestError` `"too_large"`, refused before it is read whole.
   */
  readBytes(path: string, maxBytes?: number): Promise<Uint8Array>;
}

/**
 * What a plugin entry module exports as `default`: builds the plugin from its
 * config, which the loader validated against the manifest's schema.
 */
export type PluginFactory<C = Record<string, unknown>> = (
  config: C,
  setup: PluginSetup,
) => Plugin | Promise<Plugin>;
