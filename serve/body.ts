/**
 * Reads a JSON request body under a byte limit and a time limit: a declared
 * `Content-Length` over the limit is refused before reading, a chunked body
 * is cut off as soon as it passes the limit, and a client that sends too
 * slowly gets 408.
 *
 * @module
 */

import { ServeError } from "./errors.ts";

/** Limits of {@link readJsonBody}. */
export interface BodyLimits {
  /** Most bytes. */
  maxBytes: number;
  /** Most milliseconds to receive the whole body. */
  timeoutMs: number;
}

/** Read and parse the JSON body of `req`, or throw a `ServeError` (400, 408, 413, 415). */
export async function readJsonBody(req: Request, limits: BodyLimits): Promise<unknown> {
  const type = req.headers.get("content-type");
  if (type !== null && !/^application\/(.+\+)?json\s*(;|$)/i.test(type.trim())) {
    throw new ServeError(
      "unsupported_media_type",
      `Content-Type must be application/json: received '${type}'`,
    );
  }
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limits.maxBytes) {
    throw tooLarge(limits.maxBytes, Number(declared));
  }
  if (!req.body) {
    throw new ServeError("invalid_json", "The request body is empty; expected a JSON object");
  }
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ServeError(
            "request_timeout",
            `The request body did not arrive within ${limits.timeoutMs} ms`,
          ),
        ),
      limits.timeoutMs,
    );
  });
  try {
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), timeout]);
      if (done) break;
      size += value.byteLength;
      if (size > limits.maxBytes) throw tooLarge(limits.maxBytes, null);
      chunks.push(value);
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.byteLength;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ServeError("invalid_json", "The request body is not valid UTF-8");
  }
  if (text.trim() === "") {
    throw new ServeError("invalid_json", "The request body is empty; expected a JSON object");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ServeError(
      "invalid_json",
      `The request body is not valid JSON: ${(e as Error).message}`,
    );
  }
}

function tooLarge(max: number, got: number | null): ServeError {
  const tail = got === null ? "" : `: received ${got} bytes`;
  return new ServeError(
    "body_too_large",
    `The request body exceeds the limit of ${max} bytes${tail}`,
  );
}
