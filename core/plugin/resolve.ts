/**
 * Where plugin code and data come from: classifying a manifest's `use`
 * (built-in name, local path, https URL, npm:/jsr: specifier), reading
 * local or remote bytes, and Subresource-Integrity (`sha256-<base64>`) checks.
 *
 * @module
 */

import { pathToFileURL } from "node:url";
import { ManifestError } from "../errors.ts";

/** How a `use` string is resolved. */
export type UseKind = "builtin" | "local" | "remote" | "package";

/** Built-in plugin names: one path segment of lower-case letters, digits, `-`, `_`, `.`. */
const BUILTIN_RE = /^[a-z0-9][a-z0-9._-]*$/;

/** Classify a plugin's `use`. */
export function useKind(use: string): UseKind {
  if (/^(npm|jsr):/.test(use)) return "package";
  if (/^https?:\/\//.test(use)) return "remote";
  if (BUILTIN_RE.test(use) && !use.endsWith(".json")) return "builtin";
  return "local";
}

/** Directory URL of the built-in plugins (`plugins/` of this package). */
export const BUILTIN_ROOT: URL = new URL("../../plugins/", import.meta.url);

/** The directory of the current working directory as a `file:` URL (with trailing slash). */
export function cwdUrl(): URL {
  return pathToFileURL(`${Deno.cwd()}/`);
}

/** Resolve a path or URL against a directory URL. Absolute paths become `file:` URLs. */
export function resolveUrl(path: string, base: URL): URL {
  const drive = /^[a-z]:[\\/]/i.test(path);
  if (/^[a-z][a-z0-9+.-]*:/i.test(path) && !drive) return new URL(path);
  if (drive || path.startsWith("/")) return pathToFileURL(path);
  return new URL(path.replace(/\\/g, "/"), base);
}

/** The directory URL containing `url`. */
export function dirUrl(url: URL): URL {
  return new URL(".", url);
}

/**
 * Reads bytes behind a `file:` or `https:` URL, refusing (`ManifestError`
 * `"too_large"`) anything over `maxBytes` before reading it all.
 */
export type ByteReader = (url: URL, maxBytes?: number) => Promise<Uint8Array>;

/** Largest manifest or plugin module the loader reads (bytes). */
export const MAX_MANIFEST_BYTES = 16 << 20;
/** Default bound of one file read through a `ByteReader` (adapter weights included). */
export const MAX_READ_BYTES = 2 ** 31;

function tooLarge(url: URL, size: number, max: number): ManifestError {
  return new ManifestError(
    "too_large",
    `Cannot read ${url.href}: ${size} bytes is over the ${max}-byte bound`,
    { url: url.href, size, max },
  );
}

/**
 * A reader for `file:` (Deno.readFile) and `https:` (fetch) URLs. Throws
 * `ManifestError` `"not_found"` / `"fetch_failed"` / `"unsupported_scheme"`,
 * and `"insecure_source"` for plain `http:`.
 */
export function byteReader(fetchFn: typeof fetch = globalThis.fetch): ByteReader {
  return async (url: URL, max = MAX_READ_BYTES): Promise<Uint8Array> => {
    if (url.protocol === "file:") {
      try {
        const size = (await Deno.stat(url)).size;
        if (size > max) throw tooLarge(url, size, max);
        const bytes = await Deno.readFile(url);
        if (bytes.length > max) throw tooLarge(url, bytes.length, max);
        return bytes;
      } catch (e) {
        if (e instanceof ManifestError) throw e;
        const nf = e instanceof Deno.errors.NotFound;
        throw new ManifestError(
          nf ? "not_found" : "read_failed",
          `Cannot read ${url.href}: ${(e as Error).message}`,
          {
            url: url.href,
          },
        );
      }
    }
    if (url.protocol === "http:") {
      throw new ManifestError(
        "insecure_source",
        `Cannot read ${url.href}: plain http is refused (use https)`,
        { url: url.href },
      );
    }
    if (url.protocol === "https:") {
      let res: Response;
      try {
        res = await fetchFn(url);
      } catch (e) {
        throw new ManifestError(
          "fetch_failed",
          `Cannot fetch ${url.href}: ${(e as Error).message}`,
          {
            url: url.href,
          },
        );
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new ManifestError(
          res.status === 404 ? "not_found" : "fetch_failed",
          `Cannot fetch ${url.href}: HTTP ${res.status}`,
          { url: url.href, status: res.status },
        );
      }
      const declared = Number(res.headers.get("content-length") ?? NaN);
      if (declared > max) {
        await res.body?.cancel();
        throw tooLarge(url, declared, max);
      }
      const chunks: Uint8Array[] = [];
      let total = 0;
      try {
        for await (const c of res.body ?? new ReadableStream<Uint8Array>()) {
          total += c.length;
          if (total > max) throw tooLarge(url, total, max);
          chunks.push(c);
        }
      } catch (e) {
        if (e instanceof ManifestError) throw e;
        throw new ManifestError(
          "fetch_failed",
          `Cannot fetch ${url.href}: ${(e as Error).message}`,
          { url: url.href },
        );
      }
      const out = new Uint8Array(total);
      let o = 0;
      for (const c of chunks) out.set(c, o), o += c.length;
      return out;
    }
    throw new ManifestError(
      "unsupported_scheme",
      `Cannot read ${url.href}: scheme ${url.protocol} is not supported`,
      {
        url: url.href,
      },
    );
  };
}

/** `sha256-<base64>` of `bytes` (Subresource Integrity form). */
export async function sriSha256(bytes: Uint8Array): Promise<string> {
  return await sri("sha256", bytes);
}

const SRI_ALGOS: Readonly<Record<string, string>> = {
  sha256: "SHA-256",
  sha384: "SHA-384",
  sha512: "SHA-512",
};

/** `<algo>-<base64>` of `bytes` for `sha256`, `sha384` or `sha512`. */
export async function sri(algo: string, bytes: Uint8Array): Promise<string> {
  const name = SRI_ALGOS[algo];
  if (!name) throw new ManifestError("bad_integrity", `unsupported integrity algorithm '${algo}'`);
  const d = new Uint8Array(await crypto.subtle.digest(name, bytes as Uint8Array<ArrayBuffer>));
  let s = "";
  for (const b of d) s += String.fromCharCode(b);
  return `${algo}-${btoa(s)}`;
}

/**
 * Whether `bytes` match an SRI string (`sha256-…`, `sha384-…` or
 * `sha512-…`, the last being what npm records for package tarballs).
 */
export async function checkIntegrity(bytes: Uint8Array, integrity: string): Promise<boolean> {
  const algo = integrity.slice(0, integrity.indexOf("-"));
  if (!Object.hasOwn(SRI_ALGOS, algo)) return false;
  return (await sri(algo, bytes)) === integrity;
}

/** Parse JSON bytes; a readable `SyntaxError` message on failure. */
export function parseJson(bytes: Uint8Array, label: string): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ManifestError("bad_json", `${label}: not UTF-8 text`, { file: label });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ManifestError("bad_json", `${label}: not valid JSON: ${(e as Error).message}`, {
      file: label,
    });
  }
}

/** Media type Deno uses for a module by extension (for `data:` imports of verified bytes). */
export function moduleMediaType(path: string): string {
  return path.endsWith(".ts") ? "application/typescript" : "text/javascript";
}

/** A `data:` URL holding `bytes`, so exactly the verified bytes are imported. */
export function dataUrl(bytes: Uint8Array, mediaType: string): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `data:${mediaType};base64,${btoa(s)}`;
}

/** A pinned `npm:`/`jsr:` plugin specifier. */
export interface PackageSpec {
  /** Registry. */
  readonly registry: "npm" | "jsr";
  /** Package name, e.g. `@scope/name` or `name`. */
  readonly name: string;
  /** Exact version. */
  readonly version: string;
}

const EXACT_VERSION =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const NPM_NAME = /^(?:@[a-z0-9~-][a-z0-9._~-]*\/)?[a-z0-9~-][a-z0-9._~-]*$/;
const JSR_NAME = /^@[a-z0-9][a-z0-9-]*\/[a-z0-9][a-z0-9-]*$/;

/**
 * Parse `npm:<name>@<x.y.z>` / `jsr:@<scope>/<name>@<x.y.z>`: the version must
 * be exact (no range, tag or missing version) and there is no sub-path (the
 * package root is the plugin folder). Returns the spec, or why it is refused.
 */
export function parsePackageSpec(use: string): PackageSpec | string {
  const m = /^(npm|jsr):(.+)$/.exec(use);
  if (!m) return "not an npm: or jsr: specifier";
  const registry = m[1] as "npm" | "jsr";
  const rest = m[2].replace(/^\//, "");
  const at = rest.indexOf("@", 1);
  if (at < 0) return `no version: pin an exact one, e.g. ${use}@1.2.3`;
  const name = rest.slice(0, at), version = rest.slice(at + 1);
  if (!(registry === "npm" ? NPM_NAME : JSR_NAME).test(name)) {
    return `'${name}' is not a valid ${registry} package name (sub-paths are not allowed)`;
  }
  if (!EXACT_VERSION.test(version)) {
    return `version '${version}' is not exact (ranges, tags and sub-paths are not allowed)`;
  }
  return { registry, name, version };
}

/** Base URL npm tarballs are fetched from (`<base><name>/-/<basename>-<version>.tgz`). */
export const NPM_REGISTRY = "https://registry.npmjs.org/";
/** Base URL of JSR package files (`<base><@scope/name>/<version>/<path>`). */
export const JSR_REGISTRY = "https://jsr.io/";

/** Tarball URL of an npm package version. */
export function npmTarballUrl(p: PackageSpec): URL {
  const base = p.name.slice(p.name.lastIndexOf("/") + 1);
  return new URL(`${p.name}/-/${base}-${p.version}.tgz`, NPM_REGISTRY);
}

/** Folder URL of a JSR package version. */
export function jsrPackageUrl(p: PackageSpec): URL {
  return new URL(`${p.name}/${p.version}/`, JSR_REGISTRY);
}

/** Largest npm plugin tarball accepted, compressed and unpacked. */
export const NPM_TARBALL_MAX_BYTES = 32 << 20;

/**
 * Unpack an npm tarball (gzip'd ustar, files under `package/`) into
 * package-relative paths → bytes. Bounded: at most `NPM_TARBALL_MAX_BYTES`
 * unpacked. Throws `ManifestError` `"bad_package"`.
 */
export async function unpackNpmTarball(tgz: Uint8Array): Promise<Map<string, Uint8Array>> {
  const bad = (why: string) => new ManifestError("bad_package", `npm tarball: ${why}`);
  if (tgz.length > NPM_TARBALL_MAX_BYTES) throw bad(`over ${NPM_TARBALL_MAX_BYTES} bytes`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    const stream = new Blob([tgz as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
      new DecompressionStream("gzip"),
    );
    for await (const c of stream) {
      total += c.length;
      if (total > NPM_TARBALL_MAX_BYTES) {
        throw bad(`unpacks to over ${NPM_TARBALL_MAX_BYTES} bytes`);
      }
      chunks.push(c);
    }
  } catch (e) {
    if (e instanceof ManifestError) throw e;
    throw bad(`not gzip: ${(e as Error).message}`);
  }
  const tar = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) tar.set(c, o), o += c.length;
  const files = new Map<string, Uint8Array>();
  const text = (a: number, n: number) => {
    const b = tar.subarray(a, a + n);
    const z = b.indexOf(0);
    return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
  };
  let paxPath: string | undefined;
  for (let at = 0; at + 512 <= tar.length;) {
    if (tar.subarray(at, at + 512).every((b) => b === 0)) break;
    const sizeText = text(at + 124, 12).trim();
    if (!/^[0-7]+$/.test(sizeText)) throw bad(`bad size field at ${at}`);
    const size = parseInt(sizeText, 8);
    const type = String.fromCharCode(tar[at + 156] || 0x30);
    const body = at + 512;
    if (body + size > tar.length) throw bad(`entry at ${at} runs past the end`);
    const data = tar.subarray(body, body + size);
    if (type === "x") {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(new TextDecoder().decode(data));
      paxPath = m ? m[1] : undefined;
    } else if (type === "0" || type === "\0") {
      const prefix = text(at + 345, 155);
      const name = paxPath ?? (prefix ? `${prefix}/${text(at, 100)}` : text(at, 100));
      paxPath = undefined;
      const rel = name.replace(/^[^/]+\//, ""); // npm packs under "package/"
      if (!files.has(rel)) files.set(rel, data);
    } else paxPath = undefined; // directories, links: skipped (links never followed)
    at = body + Math.ceil(size / 512) * 512;
  }
  return files;
}

/**
 * Whether the relative module path `entry` stays inside its folder: no empty,
 * `.` or `..` segment, no `%` escape (URL resolution would decode `%2e%2e`),
 * no backslash, query, fragment, scheme or leading `/`.
 */
export function entryStaysInside(entry: string): boolean {
  if (/[%\\?#:]/.test(entry) || entry.startsWith("/")) return false;
  return entry.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/** Whether `url` lies inside folder URL `folder` (same origin, path under it) after normalisation. */
export function urlInside(url: URL, folder: URL): boolean {
  const f = folder.href.endsWith("/") ? folder.href : `${folder.href}/`;
  return url.href.startsWith(f) && url.search === "" && url.hash === "";
}
