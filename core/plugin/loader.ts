/**
 * The plugin loader, in two phases. `preparePlugins` resolves every `use`,
 * reads and validates every plugin manifest (API version, hooks, entry,
 * config schema), checks integrity and validates each config, collecting
 * ALL problems without running any plugin code. `instantiatePlugins` then
 * imports the entry modules, calls their factories and checks that each
 * plugin implements exactly the hooks its manifest declares.
 *
 * @module
 */

import { PluginError } from "../errors.ts";
import {
  manifestError,
  type ManifestProblem,
  type PluginManifest,
  type PluginRef,
  validatePluginConfig,
  validatePluginManifest,
} from "./manifest.ts";
import { pluginError, stamp } from "./registry.ts";
import {
  BUILTIN_ROOT,
  type ByteReader,
  byteReader,
  checkIntegrity,
  cwdUrl,
  dataUrl,
  moduleMediaType,
  parseJson,
  resolveUrl,
  sriSha256,
  type UseKind,
  useKind,
} from "./resolve.ts";
import {
  HOOK_NAMES,
  isHookName,
  type Plugin,
  type PluginFactory,
  type PluginSetup,
} from "./types.ts";

/** Options of the plugin loader. */
export interface PluginLoaderOptions {
  /** Directory URL that relative `use` paths and config paths resolve against (default: cwd). */
  baseUrl?: URL;
  /** `fetch` for https plugins and files (tests, proxies). */
  fetch?: typeof fetch;
  /** Folder of built-in plugins (default: this package's `plugins/`). */
  builtinRoot?: URL;
  /** Label of the model manifest in problem paths (default `"manifest"`). */
  source?: string;
}

/** A plugin whose manifest and config passed every check; no code has run. */
export interface PreparedPlugin {
  /** Position in the manifest. */
  readonly index: number;
  /** How `use` resolved. */
  readonly kind: UseKind;
  /** The manifest entry. */
  readonly ref: PluginRef;
  /** The plugin's validated manifest. */
  readonly manifest: PluginManifest;
  /** Plugin folder URL (the package specifier as a URL for npm:/jsr:). */
  readonly pluginUrl: URL;
  /** Config with schema defaults filled in. */
  readonly config: Record<string, unknown>;
  /** Module specifier to import. */
  readonly entry: string;
}

/** A plugin built from its manifest. */
export interface LoadedPlugin {
  /** The plugin object its factory returned. */
  readonly plugin: Plugin;
  /** Its manifest. */
  readonly manifest: PluginManifest;
  /** The manifest entry it came from. */
  readonly ref: PluginRef;
  /** Its validated config. */
  readonly config: Readonly<Record<string, unknown>>;
}

const EXCLUSIVE_HOOKS = ["cache", "prefetch"] as const;

async function builtinNames(root: URL): Promise<string[]> {
  if (root.protocol !== "file:") return [];
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.isDirectory && !e.name.startsWith("_")) names.push(e.name);
    }
  } catch { /* listing is only a hint */ }
  return names.sort();
}

interface Ctx {
  readonly base: URL;
  readonly root: URL;
  readonly read: ByteReader;
}

type Found = { kind: UseKind; json: unknown; pluginUrl: URL } | { problem: ManifestProblem };

/** Locate and read a plugin's manifest (integrity-checked when asked); no plugin code runs. */
async function findManifest(ref: PluginRef, at: string, ctx: Ctx): Promise<Found> {
  const fail = (field: string, code: string, message: string): Found => ({
    problem: { path: `${at}${field}`, code, message },
  });
  let kind = useKind(ref.use);
  try {
    if (kind === "package") {
      if (ref.integrity) {
        return fail(
          ".integrity",
          "integrity_unsupported",
          "npm:/jsr: packages are verified by Deno's lockfile; remove it",
        );
      }
      const json = (await import(`${ref.use}/manifest.json`, { with: { type: "json" } })).default;
      return { kind, json, pluginUrl: new URL(ref.use) };
    }
    let url: URL;
    if (kind === "builtin") url = new URL(`${ref.use}/manifest.json`, ctx.root);
    else {
      const u = resolveUrl(ref.use, ctx.base);
      url = u.pathname.endsWith(".json")
        ? u
        : new URL("manifest.json", u.href.replace(/\/?$/, "/"));
    }
    if (kind === "local" && url.protocol !== "file:") {
      kind = "remote"; // a relative path under a remote model manifest is remote code
      if (!ref.integrity) {
        return fail(
          ".integrity",
          "missing_field",
          `is required: '${ref.use}' resolves to ${url.href}`,
        );
      }
    }
    const bytes = await ctx.read(url);
    if (ref.integrity && !(await checkIntegrity(bytes, ref.integrity))) {
      return fail(
        ".integrity",
        "integrity_mismatch",
        `${url.href} hashes to ${await sriSha256(bytes)}`,
      );
    }
    return { kind, json: parseJson(bytes, url.href), pluginUrl: new URL(".", url) };
  } catch (e) {
    const code = (e as { code?: string }).code ?? "load_failed";
    if (kind !== "builtin" || code !== "not_found") return fail(".use", code, (e as Error).message);
    const known = await builtinNames(ctx.root);
    const list = known.length ? ` (built-ins: ${known.join(", ")})` : "";
    return fail(".use", "unknown_plugin", `no built-in plugin '${ref.use}'${list}`);
  }
}

/** Fetch a remote entry and check it against `entryIntegrity`; returns a `data:` URL of the verified bytes. */
async function verifiedEntry(
  m: PluginManifest,
  url: URL,
  label: string,
  read: ByteReader,
): Promise<string | ManifestProblem> {
  const path = `${label} manifest: entryIntegrity`;
  if (!m.entryIntegrity) {
    return { path, code: "missing_field", message: "is required for plugins loaded over https" };
  }
  try {
    const code = await read(url);
    if (await checkIntegrity(code, m.entryIntegrity)) {
      return dataUrl(code, moduleMediaType(m.entry));
    }
    return {
      path,
      code: "integrity_mismatch",
      message: `${url.href} hashes to ${await sriSha256(code)}`,
    };
  } catch (e) {
    return {
      path: `${label} manifest: entry`,
      code: (e as { code?: string }).code ?? "load_failed",
      message: (e as Error).message,
    };
  }
}

/**
 * Resolve and check every plugin of a manifest without running plugin code.
 * Returns the prepared plugins and every problem found.
 */
export async function preparePlugins(
  refs: readonly PluginRef[],
  opts: PluginLoaderOptions = {},
): Promise<{ prepared: PreparedPlugin[]; problems: ManifestProblem[] }> {
  const src = opts.source ?? "manifest";
  const ctx: Ctx = {
    base: opts.baseUrl ?? cwdUrl(),
    root: opts.builtinRoot ?? BUILTIN_ROOT,
    read: byteReader(opts.fetch),
  };
  const problems: ManifestProblem[] = [];
  const prepared: PreparedPlugin[] = [];
  for (let i = 0; i < refs.length; i++) {
    const ref = refs[i];
    const at = `${src}: plugins[${i}]`;
    const found = await findManifest(ref, at, ctx);
    if ("problem" in found) {
      problems.push(found.problem);
      continue;
    }
    const { kind, json, pluginUrl } = found;
    const name = (json as Partial<PluginManifest> | null)?.name;
    const label = `${at} (${typeof name === "string" ? name : ref.use})`;
    const mp = validatePluginManifest(json, `${label} manifest`);
    if (mp.length) {
      problems.push(...mp);
      continue;
    }
    const manifest = json as PluginManifest;
    if (kind === "builtin" && manifest.name !== ref.use) {
      problems.push({
        path: `${at}.use`,
        code: "name_mismatch",
        message: `built-in folder '${ref.use}' holds plugin '${manifest.name}'`,
      });
    }
    let entry = kind === "package"
      ? `${ref.use}/${manifest.entry}`
      : new URL(manifest.entry, pluginUrl).href;
    if (kind === "remote") {
      const v = await verifiedEntry(manifest, new URL(entry), label, ctx.read);
      if (typeof v === "string") entry = v;
      else problems.push(v);
    }
    const { config, problems: cp } = validatePluginConfig(manifest.config, ref.config, label);
    problems.push(...cp);
    prepared.push({ index: i, kind, ref, manifest, pluginUrl, config, entry });
  }
  for (const hook of EXCLUSIVE_HOOKS) {
    const users = prepared.filter((p) => p.manifest.hooks.includes(hook));
    if (users.length > 1) {
      const names = users.map((p) => `plugins[${p.index}] (${p.manifest.name})`).join(", ");
      problems.push({
        path: `${src}: plugins`,
        code: "conflicting_hooks",
        message: `only one plugin may implement '${hook}': ${names}`,
      });
    }
  }
  return { prepared, problems };
}

function check(p: PreparedPlugin, plugin: unknown): Plugin {
  const m = p.manifest;
  const fail = (code: string, msg: string) =>
    pluginError(m.name, "setup", new PluginError(code, msg));
  if (typeof plugin !== "object" || plugin === null) {
    throw fail("bad_plugin", "factory must return a plugin object");
  }
  const pl = plugin as Partial<Plugin>;
  if (pl.name !== m.name) {
    throw fail("name_mismatch", `plugin calls itself '${pl.name}', manifest says '${m.name}'`);
  }
  if (pl.version !== m.version) {
    throw fail(
      "version_mismatch",
      `plugin version '${pl.version}' differs from manifest version '${m.version}'`,
    );
  }
  if (typeof pl.hooks !== "object" || pl.hooks === null) {
    throw fail("bad_plugin", "plugin.hooks must be an object");
  }
  const have = Object.keys(pl.hooks).filter((k) =>
    (pl.hooks as Record<string, unknown>)[k] !== undefined
  );
  for (const k of have) {
    if (!isHookName(k)) {
      throw fail("unknown_hook", `unknown hook '${k}' (known: ${HOOK_NAMES.join(", ")})`);
    }
    if (!m.hooks.includes(k)) {
      throw fail("undeclared_hook", `implements '${k}', which its manifest does not declare`);
    }
    const v = pl.hooks[k];
    if (k === "expertKinds" ? !Array.isArray(v) : typeof v !== "function") {
      throw fail(
        "bad_hook",
        `hook '${k}' must be ${k === "expertKinds" ? "an array of expert kinds" : "a function"}`,
      );
    }
  }
  for (const k of m.hooks) {
    if (!have.includes(k)) {
      throw fail("missing_hook", `manifest declares '${k}', plugin lacks it`);
    }
  }
  return pl as Plugin;
}

/** Import each prepared plugin's entry, call its factory, and check the result against its manifest. */
export async function instantiatePlugins(
  prepared: readonly PreparedPlugin[],
  opts: PluginLoaderOptions = {},
): Promise<LoadedPlugin[]> {
  const base = opts.baseUrl ?? cwdUrl();
  const read = byteReader(opts.fetch);
  const out: LoadedPlugin[] = [];
  for (const p of prepared) {
    const name = p.manifest.name;
    const mod = await stamp(name, "setup", () => import(p.entry));
    const factory = (mod as { default?: unknown }).default;
    if (typeof factory !== "function") {
      throw pluginError(
        name,
        "setup",
        new PluginError(
          "bad_entry",
          `${p.manifest.entry} must export a factory function as default`,
        ),
      );
    }
    const setup: PluginSetup = {
      name,
      baseUrl: base,
      pluginUrl: p.pluginUrl,
      resolve: (path: string) => resolveUrl(path, base),
      readBytes: (path: string) => read(resolveUrl(path, base)),
    };
    const plugin = await stamp(
      name,
      "setup",
      () => (factory as PluginFactory)(structuredClone(p.config), setup),
    );
    out.push({ plugin: check(p, plugin), manifest: p.manifest, ref: p.ref, config: p.config });
  }
  return out;
}

/**
 * Prepare (throwing one `ManifestError` listing every problem) and then
 * instantiate the plugins of a manifest.
 */
export async function loadPlugins(
  refs: readonly PluginRef[],
  opts: PluginLoaderOptions = {},
): Promise<LoadedPlugin[]> {
  const { prepared, problems } = await preparePlugins(refs, opts);
  if (problems.length) throw manifestError(problems, opts.source ?? "manifest");
  return await instantiatePlugins(prepared, opts);
}
