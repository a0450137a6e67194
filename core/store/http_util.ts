/**
 * Helpers of the HTTP byte source: backoff delays, abortable sleeps, and
 * reading a response body into an exactly sized buffer.
 *
 * @module
 */

import { StoreError } from "../errors.ts";

/** The error a caller's abort gives. */
export function abortError(name: string): StoreError {
  return new StoreError("aborted", `Cannot read ${name}: the read was aborted`);
}

/**
 * Delay before retry `attempt` (0-based): `base · 2^attempt` capped at
 * `max`, with jitter in [50%, 100%]; a server's `Retry-After` wins when it
 * is within `max`.
 */
export function retryDelay(
  attempt: number,
  base: number,
  max: number,
  retryAfterMs?: number,
): number {
  if (retryAfterMs !== undefined && retryAfterMs <= max) return retryAfterMs;
  const d = Math.min(max, base * 2 ** attempt);
  return d * (0.5 + Math.random() * 0.5);
}

/** Sleep `ms`, rejecting with `"aborted"` when `signal` fires. */
export function sleep(ms: number, signal: AbortSignal | undefined, name: string): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError(name));
  return new Promise((resolve, reject) => {
    const done = (): void => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    };
    const id = setTimeout(done, ms);
    const onAbort = (): void => {
      clearTimeout(id);
      reject(abortError(name));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Read `res`'s body into exactly `want` bytes. A body that ends early or
 * breaks off gives `truncated(msg)` (or what `interrupted()` returns when a
 * signal fired); a longer one gives `StoreError` `"bad_response"`.
 */
export async function readBody(
  res: Response,
  want: number,
  interrupted: () => Error | null,
  truncated: (msg: string) => Error,
  where: string,
  into?: Uint8Array,
): Promise<Uint8Array> {
  const out = into ?? new Uint8Array(want);
  if (!res.body) {
    if (want === 0) return out;
    throw truncated(`empty body, wanted ${want} bytes`);
  }
  const reader = res.body.getReader();
  let got = 0, complete = false;
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw interrupted() ??
          truncated(`connection broke after ${got} of ${want} bytes: ${(e as Error).message}`);
      }
      if (chunk.done) {
        complete = true;
        break;
      }
      const v = chunk.value;
      // `into` detached (memory growth): stop; the caller reads again into a fresh view
      if (out.byteLength !== want) return out;
      if (got + v.byteLength > want) {
        throw new StoreError(
          "bad_response",
          `Cannot read ${where}: body is longer than the ${want} bytes asked for`,
          {
            want,
          },
        );
      }
      out.set(v, got);
      got += v.byteLength;
    }
  } finally {
    if (!complete) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  if (got < want) throw truncated(`body ended after ${got} of ${want} bytes`);
  return out;
}
