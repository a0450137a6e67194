/**
 * A byte source over HTTP(S) Range requests: per-attempt timeouts, bounded
 * retries with exponential backoff, a strong validator on every range
 * request (`If-Match` with the ETag seen at open, or `If-Unmodified-Since`
 * with its Last-Modified when there is no strong ETag) and both compared on
 * every response (a file replaced underneath gives `StoreError` `"changed"`,
 * never mixed bytes); by default a server that sends neither is refused at
 * open (`"no_validator"`). Strict checks of `206` + `Content-Range` + exact
 * body length, and
 * an optional second tier in the Web Cache API (`caches.open`) where the
 * runtime has one.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import { type ByteSource, checkRange } from "./byte_source.ts";
import { abortError, readBody, retryDelay, sleep } from "./http_util.ts";
import { DirectHttp } from "./http_direct.ts";

/** Options of `HttpSource.open`. */
export interface HttpSourceOptions {
  /** Milliseconds one attempt may take, headers and body (default 30000). */
  timeoutMs?: number;
  /** Extra attempts after a retryable failure (default 4). */
  retries?: number;
  /** First backoff delay in ms; doubles per attempt, with jitter (default 100). */
  backoffMs?: number;
  /** Largest backoff delay in ms (default 5000). */
  maxBackoffMs?: number;
  /** Extra request headers (auth). */
  headers?: HeadersInit;
  /** Web Cache API cache name for a second tier of ranges; unset = no tier. */
  cacheName?: string;
  /** `fetch` to use (tests, proxies). */
  fetch?: typeof fetch;
  /** Cancels the opening request. */
  signal?: AbortSignal;
  /**
   * Read ranges into slot views over a direct keep-alive HTTP/1.1
   * connection (`http:` URLs on Deno, without a custom `fetch` or a cache
   * tier; default true): the body lands in the view in a few socket reads
   * instead of 64 KiB `fetch` chunks, each copied on the JS thread. An
   * answer that is not a clean `206` falls back to `fetch`, which owns the
   * errors and retries. Same bytes and checks either way.
   */
  directReads?: boolean;
  /**
   * Run direct reads on a worker thread (default false): Deno moves socket
   * bytes only while the asking thread's event loop runs, so on the JS
   * thread a body stalls during every kernel; a worker keeps reading then,
   * into shared-memory views directly, else into a staging buffer copied on
   * landing. Measured no faster on two shared vCPUs (docs/streaming.md);
   * for machines with idle cores. Same bytes and checks either way.
   */
  readThread?: boolean;
  /**
   * `"require"` (default): refuse at open (`StoreError` `"no_validator"`) a
   * server that sends neither a strong ETag nor Last-Modified, since a change
   * of its file could not be detected; `"use"`: use them when present (for a
   * caller that verifies bytes otherwise, with a manifest, or opted out).
   */
  validators?: "require" | "use";
}

/** Counters of an `HttpSource`. */
export interface HttpSourceStats {
  /** HTTP requests sent (attempts, including retries). */
  requests: number;
  /** Attempts that failed and were retried. */
  retries: number;
  /** Body bytes received. */
  bytes: number;
  /** Reads served by the Web Cache tier. */
  cacheHits: number;
}

const RANGE_RE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** A failure worth another attempt. */
class Retryable extends Error {
  constructor(readonly code: string, message: string, readonly retryAfterMs?: number) {
    super(message);
  }
}

/** Random-access reads of a remote file through HTTP Range requests. */
export class HttpSource implements ByteSource {
  readonly size: number;
  readonly name: string;
  /** Strong ETag seen at open (sent as `If-Match`), or null when the server sent none. */
  readonly etag: string | null;
  readonly #url: string;
  readonly #opts: Required<
    Omit<
      HttpSourceOptions,
      "cacheName" | "signal" | "headers" | "validators" | "directReads" | "readThread"
    >
  >;
  readonly #headers: Headers;
  readonly #validator: string | null;
  readonly #lastModified: string | null;
  #cache: Promise<Cache | null> | null;
  readonly #direct: DirectHttp | null;
  #parsedUrl: URL | null = null;
  readonly #stats: HttpSourceStats = { requests: 0, retries: 0, bytes: 0, cacheHits: 0 };
  #closed = false;

  private constructor(url: string, size: number, res: Headers, opts: HttpSourceOptions) {
    this.#url = url;
    this.name = url;
    this.size = size;
    this.#opts = {
      timeoutMs: opts.timeoutMs ?? 30_000,
      retries: opts.retries ?? 4,
      backoffMs: opts.backoffMs ?? 100,
      maxBackoffMs: opts.maxBackoffMs ?? 5_000,
      fetch: opts.fetch ?? globalThis.fetch,
    };
    this.#headers = new Headers(opts.headers);
    this.#headers.set("accept-encoding", "identity");
    const tag = res.get("etag");
    this.#validator = tag;
    this.etag = tag && !tag.startsWith("W/") ? tag : null;
    this.#lastModified = res.get("last-modified");
    const cs = (globalThis as { caches?: CacheStorage }).caches;
    this.#cache = opts.cacheName && cs ? cs.open(opts.cacheName).catch(() => null) : null;
    this.#direct = opts.directReads !== false && !opts.fetch && !this.#cache &&
        DirectHttp.supports(url)
      ? new DirectHttp({ thread: opts.readThread })
      : null;
  }

  /**
   * Probe `url` with a one-byte Range request: learns the size and ETag and
   * checks that the server honours ranges. Throws `StoreError`
   * (`"range_unsupported"`, `"http_status"`, `"timeout"`, `"network"`, …).
   *
   * @example
   * ```ts ignore
   * const src = await HttpSource.open("https://example.com/model.gguf", { cacheName: "moe-edge" });
   * const head = await src.read(0, 4); // "GGUF"
   * ```
   */
  static async open(url: string, opts: HttpSourceOptions = {}): Promise<HttpSource> {
    const probe = new HttpSource(url, 1, new Headers(), opts);
    const { headers, total } = await probe.#attempts("probe", 0, 0, opts.signal, null);
    const src = new HttpSource(url, total, headers, opts);
    const mode = opts.validators ?? "require";
    if (mode !== "require" && mode !== "use") {
      throw new StoreError(
        "bad_option",
        `Cannot open ${url}: validators must be "require" or "use": received ${
          JSON.stringify(mode)
        }`,
      );
    }
    if (mode === "require" && total > 0 && !src.etag && !src.#lastModified) {
      throw new StoreError(
        "no_validator",
        `Cannot open ${url}: the server sends neither a strong ETag nor Last-Modified, so a change ` +
          `of the file could not be detected; give an integrity manifest, or opt out ` +
          `(integrity: "off", --no-verify)`,
        { url, etag: headers.get("etag") },
      );
    }
    return src;
  }

  /** Last-Modified seen at open (sent as `If-Unmodified-Since` when there is no strong ETag). */
  get lastModified(): string | null {
    return this.#lastModified;
  }

  /** Counters so far. */
  stats(): HttpSourceStats {
    return { ...this.#stats };
  }

  /** Range reads served over direct connections (`offThread`: by the worker), and those handed back to `fetch`. */
  get directReads(): { served: number; declined: number; offThread: number } {
    return {
      served: this.#direct?.served ?? 0,
      declined: this.#direct?.declined ?? 0,
      offThread: this.#direct?.servedOffThread ?? 0,
    };
  }

  /** Read exactly `length` bytes at `offset` (Web Cache tier first, when enabled). */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    checkRange(this.name, this.size, offset, length);
    if (this.#closed) throw new StoreError("closed", `Cannot read ${this.name}: source is closed`);
    if (length === 0) return new Uint8Array(0);
    const cache = this.#cache ? await this.#cache : null;
    const key = cache ? this.#cacheKey(offset, length) : null;
    if (cache && key) {
      const hit = await cache.match(key).catch(() => undefined);
      if (hit) {
        const bytes = new Uint8Array(await hit.arrayBuffer());
        if (bytes.byteLength === length && hit.headers.get("etag") === (this.#validator ?? "")) {
          this.#stats.cacheHits++;
          return bytes;
        }
        await cache.delete(key).catch(() => false);
      }
    }
    const { body } = await this.#attempts("read", offset, length, signal, this.etag);
    if (cache && key) {
      const res = new Response(body.slice(), {
        headers: { "content-length": String(length), etag: this.#validator ?? "" },
      });
      await cache.put(key, res).catch(() => {});
    }
    return body;
  }

  /**
   * Read `dest.byteLength` bytes at `offset` straight into `dest` (a slot
   * view): the body's chunks are written there as they arrive, with the same
   * validators, retries and errors as `read` (a retry rewrites the range). A
   * `dest` detached meanwhile stops the body early without error (the caller
   * reads again into a fresh view). With the Web Cache tier, reads and copies.
   */
  async readInto(offset: number, dest: Uint8Array, signal?: AbortSignal): Promise<void> {
    const length = dest.byteLength;
    checkRange(this.name, this.size, offset, length);
    if (this.#closed) throw new StoreError("closed", `Cannot read ${this.name}: source is closed`);
    if (length === 0) return;
    if (this.#cache) {
      const b = await this.read(offset, length, signal);
      if (dest.byteLength === length) dest.set(b);
      return;
    }
    const direct = this.#direct;
    if (direct?.usable) {
      const headers = new Headers(this.#headers);
      if (this.etag) headers.set("if-match", this.etag);
      else if (this.#lastModified) headers.set("if-unmodified-since", this.#lastModified);
      this.#stats.requests++;
      const ok = await direct.read(
        {
          url: new URL(this.#url),
          headers,
          offset,
          size: this.size,
          etag: this.#validator,
          lastModified: this.#lastModified,
          timeoutMs: this.#opts.timeoutMs,
        },
        dest,
        signal,
      );
      if (signal?.aborted) throw abortError(this.name);
      if (dest.byteLength !== length) return;
      if (ok) {
        this.#stats.bytes += length;
        return;
      }
    }
    await this.#attempts("read", offset, length, signal, this.etag, dest);
  }

  /** Stop further reads. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#direct?.close();
  }

  #cacheKey(offset: number, length: number): Request {
    const u = new URL(this.#url);
    u.searchParams.set("moe-edge-range", `${offset}-${offset + length - 1}`);
    u.searchParams.set("moe-edge-etag", this.#validator ?? this.#lastModified ?? "");
    return new Request(u.href);
  }

  async #attempts(
    kind: "probe" | "read",
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
    ifMatch: string | null,
    into?: Uint8Array,
  ): Promise<{ body: Uint8Array; headers: Headers; total: number }> {
    const { retries, backoffMs, maxBackoffMs } = this.#opts;
    for (let attempt = 0;; attempt++) {
      try {
        return await this.#once(kind, offset, length, signal, ifMatch, into);
      } catch (e) {
        if (!(e instanceof Retryable)) throw e;
        if (attempt >= retries) {
          throw new StoreError(
            e.code,
            `Cannot read ${this.name} [${offset}, ${
              offset + length
            }): ${e.message} (gave up after ${attempt + 1} attempts)`,
            { url: this.#url, offset, length, attempts: attempt + 1 },
          );
        }
        this.#stats.retries++;
        await sleep(
          retryDelay(attempt, backoffMs, maxBackoffMs, e.retryAfterMs),
          signal,
          this.name,
        );
      }
    }
  }

  async #once(
    kind: "probe" | "read",
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
    ifMatch: string | null,
    into?: Uint8Array,
  ): Promise<{ body: Uint8Array; headers: Headers; total: number }> {
    const want = kind === "probe" ? 1 : length;
    const end = offset + want - 1;
    const headers = new Headers(this.#headers);
    headers.set("range", `bytes=${offset}-${end}`);
    if (ifMatch) headers.set("if-match", ifMatch);
    else if (kind === "read" && this.#lastModified) {
      headers.set("if-unmodified-since", this.#lastModified);
    }
    const timeout = AbortSignal.timeout(this.#opts.timeoutMs);
    const sig = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const where = `${this.name} [${offset}, ${offset + want})`;
    this.#stats.requests++;
    let res: Response;
    try {
      res = await this.#opts.fetch(this.#url, { headers, signal: sig });
    } catch (e) {
      if (signal?.aborted) throw abortError(this.name);
      if (timeout.aborted) {
        throw new Retryable("timeout", `no response within ${this.#opts.timeoutMs} ms`);
      }
      throw new Retryable("network", (e as Error).message);
    }
    const status = res.status;
    if (status !== 206 && status !== 200) {
      await res.body?.cancel().catch(() => {});
      if (status === 412) {
        throw this.#changed(where, "the server refused the validator precondition (412)");
      }
      if (status === 416 && kind === "probe") {
        const m = /^bytes \*\/(\d+)$/.exec(res.headers.get("content-range") ?? "");
        if (m) return { body: new Uint8Array(0), headers: res.headers, total: Number(m[1]) };
      }
      if (status >= 500 || status === 408 || status === 429) {
        const ra = res.headers.get("retry-after")?.trim();
        throw new Retryable(
          "http_status",
          `HTTP ${status}`,
          ra && /^\d+$/.test(ra) ? Number(ra) * 1000 : undefined,
        );
      }
      throw new StoreError("http_status", `Cannot read ${where}: HTTP ${status}`, {
        url: this.#url,
        status,
      });
    }
    let total: number;
    if (status === 200) {
      // a server that ignores Range sends the whole file: only usable when that is what we asked for
      const len = Number(res.headers.get("content-length"));
      if (kind === "probe" && res.headers.get("content-length") === "0") {
        // an empty file has no byte 0 to range over; servers answer 200
        await res.body?.cancel().catch(() => {});
        return { body: new Uint8Array(0), headers: res.headers, total: 0 };
      }
      if (kind === "probe" || offset !== 0 || length !== this.size || len !== this.size) {
        await res.body?.cancel().catch(() => {});
        throw new StoreError(
          "range_unsupported",
          `Cannot read ${where}: the server ignored the Range header (HTTP 200)`,
          { url: this.#url },
        );
      }
      total = this.size;
    } else {
      const m = RANGE_RE.exec(res.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== offset || Number(m[2]) !== end || m[3] === "*") {
        await res.body?.cancel().catch(() => {});
        throw new StoreError(
          "bad_response",
          `Cannot read ${where}: Content-Range '${
            res.headers.get("content-range")
          }' does not match the request`,
          { url: this.#url, contentRange: res.headers.get("content-range") },
        );
      }
      total = Number(m[3]);
      if (kind === "read" && total !== this.size) {
        await res.body?.cancel().catch(() => {});
        throw this.#changed(where, `its size changed from ${this.size} to ${total}`);
      }
    }
    if (kind === "read") {
      const tag = res.headers.get("etag");
      if (this.#validator && tag && tag !== this.#validator) {
        await res.body?.cancel().catch(() => {});
        throw this.#changed(where, `its ETag changed from ${this.#validator} to ${tag}`);
      }
      const lm = res.headers.get("last-modified");
      if (this.#lastModified && lm && lm !== this.#lastModified) {
        await res.body?.cancel().catch(() => {});
        throw this.#changed(where, `its Last-Modified changed from ${this.#lastModified} to ${lm}`);
      }
    }
    const body = await readBody(
      res,
      want,
      () => {
        if (signal?.aborted) return abortError(this.name);
        if (timeout.aborted) {
          return new Retryable(
            "timeout",
            `body not complete within ${this.#opts.timeoutMs} ms`,
          );
        }
        return null;
      },
      (msg) => new Retryable("truncated", msg),
      where,
      kind === "read" ? into : undefined,
    );
    this.#stats.bytes += body.byteLength;
    return { body, headers: res.headers, total };
  }

  #changed(where: string, why: string): StoreError {
    return new StoreError(
      "changed",
      `Cannot read ${where}: the file changed on the server: ${why}`,
      {
        url: this.#url,
        etag: this.#validator,
      },
    );
  }
}
