/**
 * The hook registry: small runners per hook kind (first-result-wins, chain,
 * collect), every call stamped so a failure names the plugin and the hook,
 * and the bridge from plugins to the model loader's `ModelHooks`.
 *
 * @module
 */

import { MoeEdgeError, PluginError } from "../errors.ts";
import type { HParams } from "../model/hparams.ts";
import type { ModelHooks } from "../model/model.ts";
import type { LinearAdapter, LinearName } from "../model/transformer.ts";
import type { TensorBytesInfo } from "../model/weights.ts";
import type { Expert, FfnLinear } from "../moe/expert.ts";
import type { Route, Router } from "../moe/router.ts";
import type { CachePolicy } from "../store/cache_policy.ts";
import type { Prefetcher } from "../store/prefetch.ts";
import type { HookName, ModelContext, Plugin, PluginHooks } from "./types.ts";

/** Where a plugin failed: a hook name, or `"setup"` for its factory. */
export type PluginPhase = HookName | "setup";

/**
 * A `PluginError` stamped with plugin and hook. The code is the cause's own
 * when it is a moe-edge error, else `"plugin_failed"`; `cause` keeps the original.
 */
export function pluginError(plugin: string, hook: PluginPhase, e: unknown): PluginError {
  if (e instanceof PluginError && e.details.plugin !== undefined) return e;
  const code = e instanceof MoeEdgeError ? e.code : "plugin_failed";
  const msg = e instanceof Error ? e.message : String(e);
  const err = new PluginError(code, `plugin '${plugin}' (${hook}): ${msg}`, {
    plugin,
    hook,
    cause: e instanceof Error ? e.name : typeof e,
  });
  (err as { cause?: unknown }).cause = e;
  return err;
}

/** Run `fn`, stamping anything it throws (sync or async) with plugin and hook. */
export function stamp<T>(plugin: string, hook: PluginPhase, fn: () => T): T {
  let r: T;
  try {
    r = fn();
  } catch (e) {
    throw pluginError(plugin, hook, e);
  }
  if (r instanceof Promise) {
    return r.catch((e) => Promise.reject(pluginError(plugin, hook, e))) as T;
  }
  return r;
}

type HookFn<K extends HookName> = NonNullable<PluginHooks[K]>;

function stampRouter(plugin: string, r: Router): Router {
  if (!r || typeof r.route !== "function") {
    throw pluginError(
      plugin,
      "router",
      new TypeError("hook must return a Router (an object with route())"),
    );
  }
  return {
    name: r.name,
    route(logits: Float32Array, layer: number): Route {
      try {
        return r.route(logits, layer);
      } catch (e) {
        throw pluginError(plugin, "router", e);
      }
    },
  };
}

function stampAdapter(plugin: string, a: LinearAdapter): LinearAdapter {
  if (!a || typeof a.applies !== "function" || typeof a.apply !== "function") {
    throw pluginError(
      plugin,
      "adapter",
      new TypeError("hook must return LinearAdapters (applies() and apply())"),
    );
  }
  return {
    applies(layer: number, proj: LinearName, expert = -1): boolean {
      try {
        return a.applies(layer, proj, expert);
      } catch (e) {
        throw pluginError(plugin, "adapter", e);
      }
    },
    apply(
      layer: number,
      proj: LinearName,
      x: Float32Array,
      n: number,
      out: Float32Array,
      expert = -1,
    ): void {
      try {
        a.apply(layer, proj, x, n, out, expert);
      } catch (e) {
        throw pluginError(plugin, "adapter", e);
      }
    },
  };
}

function stampExpert(plugin: string, e: Expert): Expert {
  const stamped: Expert = {
    kind: e.kind,
    layer: e.layer,
    index: e.index,
    forward(x: Float32Array, n: number, out: Float32Array): void {
      try {
        e.forward(x, n, out);
      } catch (err) {
        throw pluginError(plugin, "expertKinds", err);
      }
    },
  };
  if (!e.forwardLinear) return stamped;
  return {
    ...stamped,
    forwardLinear(x: Float32Array, n: number, out: Float32Array, linear: FfnLinear): void {
      try {
        e.forwardLinear!(x, n, out, linear);
      } catch (err) {
        throw pluginError(plugin, "expertKinds", err);
      }
    },
  };
}

/** The plugins of a model, with one runner per hook kind. */
export class PluginHost {
  /** Plugins in manifest order. */
  readonly plugins: readonly Plugin[];

  /** @param plugins plugins in application order */
  constructor(plugins: readonly Plugin[]) {
    this.plugins = plugins;
  }

  /** Whether any plugin implements `hook`. */
  has(hook: HookName): boolean {
    return this.plugins.some((p) => p.hooks[hook] !== undefined);
  }

  /** First-result-wins: the first plugin whose hook returns something other than `undefined`. */
  first<K extends HookName, R>(
    hook: K,
    call: (fn: HookFn<K>, p: Plugin) => R | undefined,
  ): R | undefined {
    for (const p of this.plugins) {
      const fn = p.hooks[hook];
      if (fn === undefined) continue;
      const r = stamp(p.name, hook, () => call(fn as HookFn<K>, p));
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** Chain: each plugin's hook gets the previous result (manifest order). */
  chain<K extends HookName, T>(hook: K, init: T, call: (fn: HookFn<K>, acc: T, p: Plugin) => T): T {
    let acc = init;
    for (const p of this.plugins) {
      const fn = p.hooks[hook];
      if (fn !== undefined) acc = stamp(p.name, hook, () => call(fn as HookFn<K>, acc, p));
    }
    return acc;
  }

  /** Collect: every plugin's result, in order. */
  async collect<K extends HookName, R>(
    hook: K,
    call: (fn: HookFn<K>, p: Plugin) => R | Promise<R>,
  ): Promise<R[]> {
    const out: R[] = [];
    for (const p of this.plugins) {
      const fn = p.hooks[hook];
      if (fn !== undefined) out.push(await stamp(p.name, hook, () => call(fn as HookFn<K>, p)));
    }
    return out;
  }

  /** `router` hooks, chained; each returned router is stamped per call. */
  wrapRouter(router: Router, layer: number, hp: HParams): Router {
    return this.chain("router", router, (fn, acc, p) => stampRouter(p.name, fn(acc, layer, hp)));
  }

  /** `adapter` hooks, collected and flattened. */
  async adapters(ctx: ModelContext): Promise<LinearAdapter[]> {
    const lists = await this.collect("adapter", async (fn, p) => {
      const r = await fn(ctx);
      const arr: readonly LinearAdapter[] = Array.isArray(r) ? r : [r as LinearAdapter];
      return arr.map((a) => stampAdapter(p.name, a));
    });
    return lists.flat();
  }

  /** `weights` hooks, chained; each must keep the byte length. */
  transformBytes(t: TensorBytesInfo, bytes: Uint8Array): Uint8Array | void {
    if (!this.has("weights")) return;
    return this.chain("weights", bytes, (fn, acc) => {
      const out = fn(t, acc);
      if (out === undefined) return acc;
      if (!(out instanceof Uint8Array) || out.length !== acc.length) {
        throw new PluginError(
          "bad_transform",
          `transform of tensor '${t.name}' must return ${acc.length} bytes: received ${
            out instanceof Uint8Array ? out.length : typeof out
          }`,
          { tensor: t.name },
        );
      }
      return out;
    });
  }

  /** `expertKinds`: the first kind (manifest order) that claims the expert replaces it. */
  wrapExpert(expert: Expert, hp: HParams): Expert {
    const made = this.first("expertKinds", (kinds, p) => {
      for (const k of kinds) {
        if (k.claims({ layer: expert.layer, index: expert.index }, hp)) {
          return stampExpert(p.name, k.create(expert, hp));
        }
      }
      return undefined;
    });
    return made ?? expert;
  }

  /** The `cache` hook of the first plugin that has one. */
  cachePolicy(hp: HParams): CachePolicy | undefined {
    return this.first("cache", (fn) => fn({ hp }));
  }

  /** The `prefetch` hook of the first plugin that has one. */
  prefetcher(hp: HParams): Prefetcher | undefined {
    return this.first("prefetch", (fn) => fn({ hp }));
  }

  /** Model-loader hooks for these plugins (router, expert kinds, adapters, weights). */
  modelHooks(): ModelHooks {
    const hooks: ModelHooks = {};
    if (this.has("router")) hooks.wrapRouter = (r, l, hp) => this.wrapRouter(r, l, hp);
    if (this.has("expertKinds")) hooks.wrapExpert = (e, hp) => this.wrapExpert(e, hp);
    if (this.has("adapter")) hooks.adapters = (hp, backend) => this.adapters({ hp, backend });
    if (this.has("weights")) hooks.transformBytes = (t, b) => this.transformBytes(t, b);
    return hooks;
  }
}
