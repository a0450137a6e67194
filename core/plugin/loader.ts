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

import { ManifestError, MoeEdgeError, PluginError } from "../errors.ts";
import {
  manifestError,
  type ManifestProblem,
  type PluginManifest,
  type PluginRef,
  validatePluginConfig,
  validatePluginManifest,
} from "./manifest.ts";
import { pluginError, stamp } from "./registry.ts";
import { sep as SEP } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  BUILTIN_ROOT,
  type ByteReader,
  byteReader,
  checkIntegrity,
  cwdUrl,
  dataUrl,
  entryStaysInside,
  jsrPackageUrl,
  MAX_MANIFEST_BYTES,
  moduleMediaType,
  NPM_TARBALL_MAX_BYTES,
  npmTarballUrl,
  parseJson,
  parsePackageSpec,
  resolveUrl,
  sri,
  sriSha256,
  unpackNpmTarball,
  urlInside,
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
  /**
   * Module specifier to import: a `data:` URL of the verified bytes (declared
   * `entryIntegrity`, https, jsr:, npm:), else the entry's real file URL
   * (local plugins) or its URL (built-ins).
   */
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

interface FoundManifest {
  readonly kind: UseKind;
  readonly json: unknown;
  /** Plugin folder URL (for npm, the specifier as an opaque URL). */
  readonly pluginUrl: URL;
  /** Files of a verified npm tarball, by package-relative path. */
  readonly files?: ReadonlyMap<string, Uint8Array>;
}

type Found = FoundManifest | { problem: ManifestProblem };

const PACKAGE_INTEGRITY_HELP =
  "npm: the package tarball's integrity as npm records it (sha512-…); jsr: sha256-… of manifest.json";

/** Locate and read a plugin's manifest (integrity-checked when asked); no plugin code runs. */
async function findManifest(ref: PluginRef, at: string, ctx: Ctx): Promise<Found> {
  const fail = (field: string, code: string, message: string): Found => ({
    problem: { path: `${at}${field}`, code, message },
  });
  const integrity = typeof ref.integrity === "string" ? ref.integrity : undefined;
  let kind = useKind(ref.use);
  const verified = async (url: URL, bytes: Uint8Array): Promise<Found | undefined> => {
    if (integrity && !(await checkIntegrity(bytes, integrity))) {
      const algo = /^sha(384|512)-/.test(integrity) ? integrity.slice(0, 6) : "sha256";
      return fail(
        ".integrity",
        "integrity_mismatch",
        `${url.href} hashes to ${await sri(algo, bytes)}`,
      );
    }
    return undefined;
  };
  try {
    if (kind === "package") {
      const spec = parsePackageSpec(ref.use);
      if (typeof spec === "string") return fail(".use", "unpinned_package", spec);
      if (!integrity) {
        return fail(
          ".integrity",
          "missing_field",
          `is required for ${ref.use} (${PACKAGE_INTEGRITY_HELP})`,
        );
      }
      if (spec.registry === "npm") {
        const url = npmTarballUrl(spec);
        const tgz = await ctx.read(url, NPM_TARBALL_MAX_BYTES);
        const bad = await verified(url, tgz);
        if (bad) return bad;
        const files = await unpackNpmTarball(tgz);
        const man = files.get("manifest.json");
        if (!man) return fail(".use", "not_found", `${url.href} has no manifest.json at its root`);
        return {
          kind,
          json: parseJson(man, `${ref.use}/manifest.json`),
          pluginUrl: new URL(`npm:${spec.name}@${spec.version}/`),
          files,
        };
      }
      const url = new URL("manifest.json", jsrPackageUrl(spec));
      const bytes = await ctx.read(url, MAX_MANIFEST_BYTES);
      const bad = await verified(url, bytes);
      if (bad) return bad;
      return { kind, json: parseJson(bytes, url.href), pluginUrl: new URL(".", url) };
    }
    let url: URL;
    if (kind === "builtin") url = new URL(`${ref.use}/manifest.json`, ctx.root);
    else {
      const u = resolveUrl(ref.use, ctx.base);
      url = u.pathname.endsWith(".json")
        ? u
        : new URL("manifest.json", u.href.replace(/\/?$/, "/"));
      if (url.protocol === "file:" && ctx.base.protocol !== "file:") {
        return fail(
          ".use",
          "local_from_remote",
          `a manifest read from ${ctx.base.origin} cannot load local code (${url.href})`,
        );
      }
    }
    if (kind === "local" && url.protocol !== "file:") {
      kind = "remote"; // a relative path under a remote model manifest is remote code
      if (!integrity) {
        return fail(
          ".integrity",
          "missing_field",
          `is required: '${ref.use}' resolves to ${url.href}`,
        );
      }
    }
    const bytes = await ctx.read(url, MAX_MANIFEST_BYTES);
    const bad = await verified(url, bytes);
    if (bad) return bad;
    return { kind, json: parseJson(bytes, url.href), pluginUrl: new URL(".", url) };
  } catch (e) {
    const code = (e as { code?: string }).code ?? "load_failed";
    if (kind !== "builtin" || code !== "not_found") return fail(".use", code, (e as Error).message);
    const known = await builtinNames(ctx.root);
    const list = known.length ? ` (built-ins: ${known.join(", ")})` : "";
    return fail(".use", "unknown_plugin", `no built-in plugin '${ref.use}'${list}`);
  }
}

/**
 * The module specifier to import for a plugin's entry, or the problem that
 * forbids it. The entry must resolve inside the plugin folder, both as a URL
 * and, for files, after following symlinks. Code that must be verified — a
 * declared `entryIntegrity`, anything fetched over https (remote and jsr:
 * plugins), npm: packages — is read once, hashed, and imported from a `data:`
 * URL of exactly those bytes, so nothing can change between check and import.
 * Built-in plugins ship with the runtime and import from their own URL.
 */
async function resolveEntry(
  found: FoundManifest,
  m: PluginManifest,
  label: string,
  ctx: Ctx,
): Promise<string | ManifestProblem> {
  const path = `${label} manifest: entry`;
  const ipath = `${label} manifest: entryIntegrity`;
  const problem = (p: string, code: string, message: string): ManifestProblem => ({
    path: p,
    code,
    message,
  });
  const declared = m.entryIntegrity;
  const verify = async (bytes: Uint8Array, where: string): Promise<string | ManifestProblem> =>
    declared && !(await checkIntegrity(bytes, declared))
      ? problem(ipath, "integrity_mismatch", `${where} hashes to ${await sriSha256(bytes)}`)
      : dataUrl(bytes, moduleMediaType(m.entry));
  if (!entryStaysInside(m.entry)) {
    return problem(
      path,
      "entry_outside",
      `must stay inside the plugin folder: ${JSON.stringify(m.entry)}`,
    );
  }
  if (found.files) { // npm: the whole tarball matched the manifest's integrity
    const bytes = found.files.get(m.entry);
    if (!bytes) return problem(path, "not_found", `${m.entry} is not in the package`);
    return await verify(bytes, `${found.pluginUrl.href}${m.entry}`);
  }
  const url = new URL(m.entry, found.pluginUrl);
  if (!urlInside(url, found.pluginUrl)) {
    return problem(path, "entry_outside", `${url.href} is outside ${found.pluginUrl.href}`);
  }
  try {
    if (url.protocol === "file:") {
      const dir = await Deno.realPath(fileURLToPath(found.pluginUrl));
      const real = await Deno.realPath(fileURLToPath(url));
      if (!real.startsWith(dir.endsWith(SEP) ? dir : dir + SEP)) {
        return problem(path, "entry_outside", `${url.href} resolves to ${real}, outside ${dir}`);
      }
      if (!declared) return pathToFileURL(real).href;
      return await verify(await ctx.read(pathToFileURL(real), MAX_MANIFEST_BYTES), real);
    }
    if (found.kind === "builtin") return url.href;
    if (!declared) {
      return problem(
        ipath,
        "missing_field",
        `is required for plugin code loaded from ${url.origin}`,
      );
    }
    return await verify(await ctx.read(url, MAX_MANIFEST_BYTES), url.href);
  } catch (e) {
    const nf = e instanceof Deno.errors.NotFound;
    return problem(
      path,
      e instanceof MoeEdgeError ? e.code : nf ? "not_found" : "read_failed",
      nf ? `${url.href} does not exist` : (e as Error).message,
    );
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Resolve and check every plugin of a manifest without running plugin code.
 * Returns the prepared plugins and every problem found: a plugin whose
 * manifest is invalid still has its config checked (when its config schema
 * compiles), so one pass reports everything. Items that are not objects with
 * a string `use` are skipped (the model manifest's schema reports them).
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
    if (!isObject(ref) || typeof ref.use !== "string") continue;
    const at = `${src}: plugins[${i}]`;
    const found = await findManifest(ref, at, ctx);
    if ("problem" in found) {
      problems.push(found.problem);
      continue;
    }
    const { kind, json } = found;
    const name = (json as Partial<PluginManifest> | null)?.name;
    const label = `${at} (${typeof name === "string" ? name : ref.use})`;
    const mp = validatePluginManifest(json, `${label} manifest`);
    problems.push(...mp);
    const manifest = json as PluginManifest;
    if (kind === "builtin" && isObject(json) && json.name !== ref.use) {
      problems.push({
        path: `${at}.use`,
        code: "name_mismatch",
        message: `built-in folder '${ref.use}' holds plugin '${String(json.name)}'`,
      });
    }
    const schemaOk = isObject(json) && isObject(json.config) &&
      !mp.some((p) => p.code === "bad_config_schema");
    const cfgOk = ref.config === undefined || isObject(ref.config);
    const { config, problems: cp } = schemaOk && cfgOk
      ? validatePluginConfig(manifest.config, ref.config, label)
      : { config: {}, problems: [] };
    problems.push(...cp);
    if (mp.length) continue;
    const entry = await resolveEntry(found, manifest, label, ctx);
    if (typeof entry !== "string") {
      problems.push(entry);
      continue;
    }
    prepared.push({ index: i, kind, ref, manifest, pluginUrl: found.pluginUrl, config, entry });
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
      readBytes: (path: string, maxBytes?: number) => {
        const url = resolveUrl(path, base);
        if (url.protocol === "file:" && base.protocol !== "file:") {
          return Promise.reject(
            new ManifestError(
              "local_from_remote",
              `a manifest read from ${base.origin} cannot read local files (${url.href})`,
              { url: url.href },
            ),
          );
        }
        return read(url, maxBytes);
      },
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
