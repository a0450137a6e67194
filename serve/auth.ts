/**
 * Bearer-token authentication through Hono's `bearer-auth` middleware: it
 * compares SHA-256 digests of the presented and the expected key in constant
 * time. Every refusal is an OpenAI-style 401 `invalid_api_key`.
 *
 * @module
 */

import type { MiddlewareHandler } from "npm:hono@4";
import { bearerAuth as honoBearerAuth } from "npm:hono@4/bearer-auth";
import { errorResponse, ServeError } from "./errors.ts";

/**
 * The characters a key may have: RFC 6750's `b64token`, the syntax Hono's
 * middleware accepts in the header (a key outside it could never match).
 */
export const API_KEY_SYNTAX: RegExp = /^[A-Za-z0-9._~+/-]+=*$/;

const refuse = (message: string) => (): Response =>
  errorResponse(new ServeError("invalid_api_key", message));

/**
 * Middleware that requires `Authorization: Bearer <apiKey>`; answers 401
 * with an OpenAI-style error otherwise. Throws a `RangeError` for an empty
 * key or one outside {@link API_KEY_SYNTAX}.
 */
export function bearerAuth(apiKey: string): MiddlewareHandler {
  if (!API_KEY_SYNTAX.test(apiKey)) {
    throw new RangeError(
      "Cannot create bearer auth: the API key must be letters, digits and . _ ~ + / - " +
        `(optionally ending in =), as RFC 6750 bearer tokens are: received ${apiKey.length} chars`,
    );
  }
  const missing = refuse("Missing API key: send 'Authorization: Bearer <key>'");
  return honoBearerAuth({
    token: apiKey,
    realm: "moe-edge",
    noAuthenticationHeader: { message: missing },
    invalidAuthenticationHeader: { message: missing },
    invalidToken: { message: refuse("Incorrect API key provided") },
  });
}
