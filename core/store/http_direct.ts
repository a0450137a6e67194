/**
 * Direct HTTP/1.1 range reads into a caller's buffer (`HttpSource.readInto`
 * on `http:` URLs): one keep-alive TCP connection per concurrent request,
 * the request written by hand and the body read with `Deno.Conn.read`
 * straight into the destination view (a slot of WASM memory). `fetch`
 * hands the body to JavaScript in 64 KiB chunks, each a fresh buffer, a
 * JS turn and a copy; a socket read fills the view in a few operations
 * (measured on nginx over loopback: 3.6 against 8.5 ms per 4.6 MiB expert,
 * load 6).
 *
 * Deno runs socket reads on the event loop of the thread that asks, so on
 * the JS thread a body only moves while JavaScript yields, never while a
 * kernel computes (file reads run on a blocking thread pool and do not
 * wait). With `thread: true` the requests run on a worker thread
 * (`http_direct_worker.ts`): into the view
 * itself where it is over shared memory (a threaded WASM backend's
 * `SharedArrayBuffer`), else into a pooled shared staging buffer that is
 * copied into the view once the body is complete (one memcpy on the JS
 * thread). Off by default: on two shared vCPUs it measured no faster, in
 * isolation or end to end (the worker finds no free core either; what an
 * HTTP miss costs there is CPU: nginx, the loopback and the copies;
 * docs/streaming.md).
 *
 * Only a clean answer is taken here: `206` with the exact `Content-Range`,
 * a `Content-Length` equal to the range, no transfer or content coding and
 * the validators seen at open. Anything else (another status, a redirect, a
 * changed ETag, a broken or slow connection) returns `false` after every
 * write into the view is over, and the caller asks again through `fetch`,
 * whose path owns the errors, retries and messages.
 *
 * @module
 */

/** What one direct range request needs to send and to check. */
export interface DirectRequest {
  /** Absolute `http:` URL. */
  readonly url: URL;
  /** Request headers besides Host and Range (validators, auth, accept-encoding). */
  readonly headers: Headers;
  /** First byte. */
  readonly offset: number;
  /** Total size of the file (checked against `Content-Range`). */
  readonly size: number;
  /** ETag the answer must carry when it sends one. */
  readonly etag: string | null;
  /** Last-Modified the answer must carry when it sends one. */
  readonly lastModified: string | null;
  /** Milliseconds the request may take; past it, `false`. */
  readonly timeoutMs: number;
}

const CRLF2 = [13, 10, 13, 10];
const MAX_HEAD = 32 * 1024;
/** Idle connections kept per host. */
const MAX_IDLE = 8;
/** Idle staging buffers kept (one per concurrent range read of a few experts). */
const MAX_STAGES = 12;
/** Staging buffers are sized in steps of this many bytes (so ranges of similar size share them). */
const STAGE_STEP = 1 << 20;

function roundUp(n: number): number {
  return Math.ceil(n / STAGE_STEP) * STAGE_STEP;
}

/** Declined reads in a row after which a source stops trying (a redirect, a server that never answers 206). */
const MAX_DECLINED_IN_A_ROW = 4;

/** Where the response head ends (index after CRLFCRLF), or -1. */
function headEnd(b: Uint8Array, n: number, from: number): number {
  for (let i = Math.max(3, from); i < n; i++) {
    if (
      b[i] === CRLF2[3] && b[i - 1] === CRLF2[2] && b[i - 2] === CRLF2[1] && b[i - 3] === CRLF2[0]
    ) {
      return i + 1;
    }
  }
  return -1;
}

/** What the JS thread sends the read worker (`http_direct_worker.ts`). */
export type DirectWorkerRequest =
  | {
    readonly type: "read";
    readonly id: number;
    readonly url: string;
    readonly headers: [string, string][];
    readonly offset: number;
    readonly size: number;
    readonly etag: string | null;
    readonly lastModified: string | null;
    readonly timeoutMs: number;
    readonly buffer: SharedArrayBuffer;
    readonly byteOffset: number;
    readonly length: number;
  }
  | { readonly type: "abort"; readonly id: number };

/** The worker's answer: the read settled (`ok`: every byte is in the view). */
export interface DirectWorkerReply {
  readonly id: number;
  readonly ok: boolean;
}

/** The part of a `node:worker_threads` worker used here. */
interface ReadWorker {
  postMessage(m: DirectWorkerRequest): void;
  on(ev: "message", f: (m: DirectWorkerReply) => void): void;
  on(ev: "error" | "exit", f: (x: unknown) => void): void;
  ref(): void;
  unref(): void;
  terminate(): unknown;
}

/** Keep-alive connections of one host and the direct reads over them. */
export class DirectHttp {
  readonly #idle: Deno.Conn[] = [];
  readonly #enc = new TextEncoder();
  readonly #dec = new TextDecoder();
  #closed = false;
  #declinedInARow = 0;
  /** Requests answered directly. */
  served = 0;
  /** Requests handed back to `fetch`. */
  declined = 0;
  /** Requests served by the worker thread (part of `served`). */
  servedOffThread = 0;
  /** Whether reads go to the worker (false once it failed to start or died). */
  #useThread: boolean;
  #worker: Promise<ReadWorker | null> | null = null;
  #nextId = 0;
  readonly #pending = new Map<number, (ok: boolean) => void>();
  /** Idle staging buffers. */
  readonly #stages: SharedArrayBuffer[] = [];

  /**
   * `thread` (default false): run the requests on a worker thread (see
   * the module doc); false: on this thread.
   */
  constructor(opts: { thread?: boolean } = {}) {
    this.#useThread = opts.thread === true;
  }

  /**
   * Whether direct reads can serve `url` in this runtime: Deno, `http:`, no
   * credentials in the URL, and no HTTP proxy configured (`fetch` would go
   * through it).
   */
  static supports(url: string): boolean {
    const D = (globalThis as { Deno?: typeof Deno }).Deno;
    if (typeof D?.connect !== "function" || !url.startsWith("http:")) return false;
    try {
      const u = new URL(url);
      if (u.username || u.password) return false;
    } catch {
      return false;
    }
    try {
      for (const k of ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]) {
        if (D.env.get(k)) return false;
      }
    } catch { /* no env permission: fetch cannot see a proxy either */ }
    return true;
  }

  /** Whether reads should still try the direct path (off after repeated declines, e.g. a redirect). */
  get usable(): boolean {
    return !this.#closed && this.#declinedInARow < MAX_DECLINED_IN_A_ROW;
  }

  /**
   * Read `dest.byteLength` bytes at `req.offset` into `dest`. Resolves true
   * when they are all there, false otherwise: the caller checks `signal`
   * (aborted) and `dest`'s length (detached by memory growth), else asks
   * again through `fetch`. Never rejects; settles after the last write into
   * `dest`.
   */
  async read(req: DirectRequest, dest: Uint8Array, signal?: AbortSignal): Promise<boolean> {
    if (this.#closed || signal?.aborted) return false;
    if (this.#useThread) {
      const w = await (this.#worker ??= startWorker().then((x) => {
        if (x) this.#listen(x);
        return x;
      }));
      if (w && this.#useThread && !this.#closed) {
        if (dest.buffer instanceof SharedArrayBuffer) {
          return this.#count(await this.#readOff(w, req, dest, signal));
        }
        // plain memory (a one-thread backend): the worker fills a shared staging buffer, copied here
        const want = dest.byteLength;
        const stage = this.#stage(want);
        try {
          const ok = await this.#readOff(w, req, stage, signal);
          if (ok && dest.byteLength === want) dest.set(stage);
          return this.#count(ok && dest.byteLength === want);
        } finally {
          this.#unstage(stage);
        }
      }
      this.#useThread = false;
    }
    const want = dest.byteLength;
    for (let attempt = 0; attempt < 2; attempt++) {
      const pooled = this.#idle.pop();
      let conn: Deno.Conn;
      try {
        conn = pooled ?? await Deno.connect({
          hostname: req.url.hostname,
          port: Number(req.url.port || 80),
        });
      } catch {
        this.declined++;
        return false;
      }
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        conn.close();
      }, req.timeoutMs);
      const onAbort = (): void => {
        try {
          conn.close();
        } catch { /* closed already */ }
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      let r: "ok" | "last" | "stale" | "no";
      try {
        r = await this.#exchange(conn, req, dest, want, pooled !== undefined);
      } catch {
        r = pooled !== undefined && !timedOut ? "stale" : "no";
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      }
      if (signal?.aborted) {
        try {
          conn.close();
        } catch { /* closed already */ }
        return false;
      }
      if (r === "ok" || r === "last") {
        this.served++;
        this.#declinedInARow = 0;
        if (r === "ok" && !this.#closed && this.#idle.length < MAX_IDLE) this.#idle.push(conn);
        else conn.close();
        return true;
      }
      try {
        conn.close();
      } catch { /* closed already */ }
      // a kept-alive connection the server closed meanwhile: once more on a fresh one
      if (r === "stale" && dest.byteLength === want) continue;
      break;
    }
    this.declined++;
    this.#declinedInARow++;
    return false;
  }

  /** A shared staging view of `n` bytes (pooled buffers: fresh memory costs page faults on every use). */
  #stage(n: number): Uint8Array {
    const i = this.#stages.findIndex((b) => b.byteLength >= n);
    const buf = i >= 0 ? this.#stages.splice(i, 1)[0] : new SharedArrayBuffer(roundUp(n));
    return new Uint8Array(buf, 0, n);
  }

  #unstage(v: Uint8Array): void {
    const buf = v.buffer as SharedArrayBuffer;
    if (this.#stages.length < MAX_STAGES) this.#stages.push(buf);
  }

  #count(ok: boolean): boolean {
    if (ok) {
      this.served++;
      this.servedOffThread++;
      this.#declinedInARow = 0;
    } else {
      this.declined++;
      this.#declinedInARow++;
    }
    return ok;
  }

  /** One read on the worker; settles once the worker's read did (after its last write into `dest`). */
  #readOff(
    w: ReadWorker,
    req: DirectRequest,
    dest: Uint8Array,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const id = ++this.#nextId;
    const headers: [string, string][] = [];
    req.headers.forEach((v, k) => headers.push([k, v]));
    return new Promise<boolean>((resolve) => {
      const onAbort = (): void => w.postMessage({ type: "abort", id });
      if (this.#pending.size === 0) w.ref();
      this.#pending.set(id, (ok) => {
        signal?.removeEventListener("abort", onAbort);
        if (this.#pending.size === 0) {
          w.unref();
          // closed meanwhile: the last read in flight stops the worker
          if (this.#closed) void w.terminate();
        }
        resolve(ok && !signal?.aborted);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      w.postMessage({
        type: "read",
        id,
        url: req.url.href,
        headers,
        offset: req.offset,
        size: req.size,
        etag: req.etag,
        lastModified: req.lastModified,
        timeoutMs: req.timeoutMs,
        buffer: dest.buffer as SharedArrayBuffer,
        byteOffset: dest.byteOffset,
        length: dest.byteLength,
      });
    });
  }

  /** Settle every read the worker still owes (it died: nothing writes any more). */
  #drop(): void {
    this.#useThread = false;
    const ps = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of ps) p(false);
  }

  /** Replies and failures of the worker. */
  #listen(w: ReadWorker): void {
    w.on("message", (m) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      p(m.ok);
    });
    w.on("error", () => this.#drop());
    w.on("exit", () => this.#drop());
  }

  /** Close the idle connections; later reads decline. */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) {
      try {
        c.close();
      } catch { /* closed already */ }
    }
    // reads in flight on the worker still settle; the last one stops it
    this.#worker?.then((x) => {
      if (x && this.#pending.size === 0) void x.terminate();
    });
  }

  /** One request and its answer on `conn`: "ok" with the body in `dest`; "stale" on a dead kept-alive connection. */
  async #exchange(
    conn: Deno.Conn,
    req: DirectRequest,
    dest: Uint8Array,
    want: number,
    reused: boolean,
  ): Promise<"ok" | "last" | "stale" | "no"> {
    const end = req.offset + want - 1;
    let head = `GET ${req.url.pathname}${req.url.search} HTTP/1.1\r\nHost: ${req.url.host}\r\n` +
      `Range: bytes=${req.offset}-${end}\r\n`;
    req.headers.forEach((v, k) => {
      if (k !== "host" && k !== "range" && k !== "connection") head += `${k}: ${v}\r\n`;
    });
    head += "\r\n";
    const out = this.#enc.encode(head);
    for (let w = 0; w < out.byteLength;) w += await conn.write(out.subarray(w));
    const hb = new Uint8Array(MAX_HEAD);
    let n = 0, he = -1;
    while (he < 0) {
      if (n === hb.byteLength) return "no";
      const r = await conn.read(hb.subarray(n));
      if (r === null) return reused && n === 0 ? "stale" : "no";
      he = headEnd(hb, n + r, n);
      n += r;
    }
    const lines = this.#dec.decode(hb.subarray(0, he - 4)).split("\r\n");
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!status || status[1] !== "206") return "no";
    const h = new Map<string, string>();
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(":");
      if (c <= 0) return "no";
      const k = lines[i].slice(0, c).trim().toLowerCase();
      // repeated headers that matter here are refused rather than merged
      if (h.has(k) && (k === "content-length" || k === "content-range")) return "no";
      h.set(k, lines[i].slice(c + 1).trim());
    }
    if (h.get("content-range") !== `bytes ${req.offset}-${end}/${req.size}`) return "no";
    if (h.get("content-length") !== String(want)) return "no";
    if (h.has("transfer-encoding")) return "no";
    const ce = h.get("content-encoding");
    if (ce !== undefined && ce.toLowerCase() !== "identity") return "no";
    const tag = h.get("etag");
    if (req.etag !== null && tag !== undefined && tag !== req.etag) return "no";
    const lm = h.get("last-modified");
    if (req.lastModified !== null && lm !== undefined && lm !== req.lastModified) return "no";
    const early = n - he;
    if (early > want) return "no";
    if (dest.byteLength !== want) return "no";
    dest.set(hb.subarray(he, n));
    let got = early;
    while (got < want) {
      // memory growth detached the view: stop (the connection is not reused)
      if (dest.byteLength !== want) return "no";
      const r = await conn.read(dest.subarray(got));
      if (r === null) return "no";
      got += r;
    }
    if (dest.byteLength !== want) return "no";
    return h.get("connection")?.toLowerCase() === "close" ? "last" : "ok";
  }
}

/**
 * Start the read worker (`node:worker_threads`, unreferenced while no read
 * is in flight, so it never keeps the process alive); null where the
 * runtime has none.
 */
async function startWorker(this: void): Promise<ReadWorker | null> {
  try {
    const { Worker } = await import("node:worker_threads");
    const w = new Worker(
      new URL("./http_direct_worker.ts", import.meta.url),
    ) as unknown as ReadWorker;
    w.unref();
    return w;
  } catch {
    return null;
  }
}
