/**
 * The server edge's error mapping: every error a route throws becomes an
 * OpenAI-style body `{error:{message,type,param,code}}` with the right HTTP
 * status. Core errors (`MoeEdgeError` subclasses) know nothing of HTTP; the
 * mapping lives only here.
 *
 * @module
 */

import { GenerationError, MoeEdgeError, TokenizerError } from "../core/errors.ts";

/** Codes of {@link ServeError}, each with a fixed HTTP status. */
export type ServeErrorCode =
  | "invalid_json"
  | "invalid_request"
  | "unsupported_media_type"
  | "invalid_api_key"
  | "forbidden"
  | "not_found"
  | "model_not_found"
  | "method_not_allowed"
  | "request_timeout"
  | "body_too_large"
  | "prompt_too_long"
  | "context_length_exceeded"
  | "max_tokens_too_large"
  | "unsupported_template"
  | "template_limit"
  | "queue_full"
  | "generation_timeout"
  | "client_closed";

/** A request the server refuses; `code` decides the HTTP status. */
export class ServeError extends MoeEdgeError {
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** Seconds a client should wait before retrying (429). */
  readonly retryAfter: number | null;

  /**
   * @param code one of {@link ServeErrorCode}
   * @param message human message naming the field involved
   * @param opts the request field at fault and, for `queue_full`, a retry delay in seconds
   */
  constructor(
    code: ServeErrorCode,
    message: string,
    opts: { param?: string | null; retryAfter?: number } = {},
  ) {
    super(code, message, { param: opts.param ?? null });
    this.param = opts.param ?? null;
    this.retryAfter = opts.retryAfter ?? null;
  }
}

/** The body of every error response, as OpenAI's API returns it. */
export interface OpenAIErrorBody {
  /** The error. */
  error: {
    /** Human message. */
    message: string;
    /** Broad class, e.g. `"invalid_request_error"`. */
    type: string;
    /** Request field at fault, or null. */
    param: string | null;
    /** Machine-readable code, or null. */
    code: string | null;
  };
}

/** An error mapped for the wire. */
export interface HttpErrorInfo {
  /** HTTP status. */
  status: number;
  /** JSON body. */
  body: OpenAIErrorBody;
  /** Extra headers (`Retry-After`, `WWW-Authenticate`). */
  headers: Record<string, string>;
}

const SERVE_STATUS: Readonly<Record<ServeErrorCode, readonly [number, string]>> = {
  invalid_json: [400, "invalid_request_error"],
  invalid_request: [400, "invalid_request_error"],
  unsupported_media_type: [415, "invalid_request_error"],
  invalid_api_key: [401, "invalid_request_error"],
  forbidden: [403, "permission_error"],
  not_found: [404, "invalid_request_error"],
  model_not_found: [404, "invalid_request_error"],
  method_not_allowed: [405, "invalid_request_error"],
  request_timeout: [408, "timeout_error"],
  body_too_large: [413, "invalid_request_error"],
  prompt_too_long: [400, "invalid_request_error"],
  context_length_exceeded: [400, "invalid_request_error"],
  max_tokens_too_large: [400, "invalid_request_error"],
  unsupported_template: [400, "invalid_request_error"],
  template_limit: [422, "invalid_request_error"],
  queue_full: [429, "rate_limit_error"],
  generation_timeout: [504, "timeout_error"],
  client_closed: [499, "invalid_request_error"],
};

/** Whether `e` is an abort (client gone or deadline) rather than a failure. */
export function isAbortError(e: unknown): boolean {
  return e instanceof DOMException && (e.name === "AbortError" || e.name === "TimeoutError");
}

/**
 * Map any thrown value to status, body and headers. Bad input from the
 * client (serve, generation and tokenizer errors) keeps its message; other
 * `MoeEdgeError`s are server errors with their code; unknown errors are
 * reported without details.
 */
export function toHttpError(e: unknown): HttpErrorInfo {
  const headers: Record<string, string> = {};
  if (e instanceof ServeError) {
    const [status, type] = SERVE_STATUS[e.code as ServeErrorCode] ?? [500, "server_error"];
    if (e.retryAfter !== null) {
      headers["retry-after"] = String(Math.max(1, Math.ceil(e.retryAfter)));
    }
    if (status === 401) headers["www-authenticate"] = 'Bearer realm="moe-edge"';
    return { status, headers, body: wire(e.message, type, e.param, e.code) };
  }
  if (e instanceof GenerationError || e instanceof TokenizerError) {
    const param = e.code === "bad_max_tokens" ? "max_tokens" : null;
    return { status: 400, headers, body: wire(e.message, "invalid_request_error", param, e.code) };
  }
  if (e instanceof MoeEdgeError) {
    return {
      status: 500,
      headers,
      body: wire(`${e.name}: ${e.message}`, "server_error", null, e.code),
    };
  }
  if (isAbortError(e)) {
    return {
      status: 504,
      headers,
      body: wire("The request was cancelled before it finished", "timeout_error", null, "aborted"),
    };
  }
  return { status: 500, headers, body: wire("Internal server error", "server_error", null, null) };
}

/** A JSON error `Response` for any thrown value. */
export function errorResponse(e: unknown): Response {
  const { status, body, headers } = toHttpError(e);
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function wire(
  message: string,
  type: string,
  param: string | null,
  code: string | null,
): OpenAIErrorBody {
  return { error: { message, type, param, code } };
}
