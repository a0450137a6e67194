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

/** Reads bytes behind a `file:` or `https:` URL. */
export type ByteReader = (url: URL) => Promise<Uint8Array>;

/**
 * A reader for `file:` (Deno.readFile) and `https:` (fetch) URLs. Throws
 * `ManifestError` `"not_found"` / `"fetch_failed"` / `"unsupported_scheme"`.
 */
export function byteReader(fetchFn: typeof fetch = globalThis.fetch): ByteReader {
  return async (url: URL): Promise<Uint8Array> => {
    if (url.protocol === "file:") {
      try {
        return await Deno.readFile(url);
      } catch (e) {
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
    if (url.protocol === "https:" || url.protocol === "http:") {
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
      return new Uint8Array(await res.arrayBuffer());
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
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let s = "";
  for (const b of d) s += String.fromCharCode(b);
  return `sha256-${btoa(s)}`;
}

/** Whether `bytes` match an SRI `sha256-…` string. */
export async function checkIntegrity(bytes: Uint8Array, integrity: string): Promise<boolean> {
  return (await sriSha256(bytes)) === integrity;
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
