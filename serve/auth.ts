/**
 * Bearer-token authentication. Both the expected key and the presented one
 * are hashed with SHA-256 and the digests compared in constant time, so
 * neither the key's content nor its length leaks through timing.
 *
 * @module
 */

import type { MiddlewareHandler } from "npm:hono@4";
import { errorResponse, ServeError } from "./errors.ts";

const enc = new TextEncoder();

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(s)));
}

/** Compare two byte arrays in time that depends only on their lengths. */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) diff |= (a[i % (a.length || 1)] ?? 0) ^ (b[i % (b.length || 1)] ?? 0);
  return diff === 0;
}

/** Whether `presented` equals `expected`, compared through SHA-256 digests in constant time. */
export async function keysMatch(presented: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([digest(presented), digest(expected)]);
  return timingSafeEqual(a, b);
}

/**
 * Middleware that requires `Authorization: Bearer <apiKey>`; answers 401
 * with an OpenAI-style error otherwise.
 */
export function bearerAuth(apiKey: string): MiddlewareHandler {
  if (apiKey === "") throw new RangeError("Cannot create bearer auth: the API key is empty");
  const expected = digest(apiKey);
  return async function bearerAuthMiddleware(c, next) {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer[ \t]+(.+)$/i.exec(header.trim());
    const ok = m !== null && timingSafeEqual(await digest(m[1]), await expected);
    if (!ok) {
      const msg = m === null
        ? "Missing API key: send 'Authorization: Bearer <key>'"
        : "Incorrect API key provided";
      return errorResponse(new ServeError("invalid_api_key", msg));
    }
    await next();
  };
}
