/**
 * Test helper: an HTTP/1.1 Range server on 127.0.0.1 that injects faults on
 * demand: connection drops mid-body, 5xx, short bodies, wrong bytes, a
 * changed ETag, slow answers, bad Content-Range, ignored ranges. It speaks
 * HTTP over a raw TCP listener (one request per connection) so a fault can
 * cut a connection exactly where a real network would. The served file can
 * be replaced while running (`replace`), with validators that change (an
 * honest server), stay the same (a lying one) or are never sent.
 *
 * @module
 */

/** One injected fault, applied to one request. */
export type Fault =
  | "drop" // send the headers and half the body, then close the connection
  | "500"
  | "503" // with Retry-After: 0
  | "truncate" // a clean but short body (no Content-Length, ended by close)
  | "wrong" // right length, flipped bytes
  | "etag" // a different ETag, If-Match ignored
  | "etag-412" // the file changed: If-Match fails
  | "slow" // headers only after `slowMs`
  | "bad-range" // Content-Range off by one
  | "ignore-range" // 200 with the whole file
  | "long" // more bytes than asked for
  | "flip"; // right length and headers, one byte changed (a corrupting proxy)

/** A running fault server. */
export interface FaultServer {
  /** URL of the served file. */
  readonly url: string;
  /** Faults for the next requests, consumed front first. */
  readonly queue: Fault[];
  /** A fault applied to every request while set. */
  always: Fault | null;
  /** Requests answered so far. */
  readonly requests: number;
  /**
   * Serve `bytes` from now on. `validators`: `"change"` gives new ETag and
   * Last-Modified (honest server), `"keep"` keeps the old ones (a lying
   * server whose preconditions still pass).
   */
  replace(bytes: Uint8Array, validators: "change" | "keep"): void;
  /** Called with the request count as each request arrives, before it is answered. */
  onRequest: ((n: number) => void) | null;
  /** Stop the server and close its connections. */
  stop(): Promise<void>;
}

const enc = new TextEncoder();

async function readHead(conn: Deno.Conn): Promise<Map<string, string> | null> {
  const buf = new Uint8Array(16384);
  let len = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(len));
    if (n === null) return null;
    len += n;
    const text = new TextDecoder().decode(buf.subarray(0, len));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) {
      if (len === buf.length) return null;
      continue;
    }
    const [line, ...rest] = text.slice(0, end).split("\r\n");
    const h = new Map<string, string>([[":line", line]]);
    for (const r of rest) {
      const i = r.indexOf(":");
      if (i > 0) h.set(r.slice(0, i).trim().toLowerCase(), r.slice(i + 1).trim());
    }
    return h;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Which validators the server sends: a strong ETag (default), Last-Modified only, a weak ETag only, none. */
export type ServerValidators = "etag" | "last-modified" | "weak-etag" | "none";

/** Serve `bytes` at `/model.gguf` with ETag `"v1"` (or the `validators` chosen). */
export function startFaultServer(
  bytes: Uint8Array,
  slowMs = 1500,
  validators: ServerValidators = "etag",
): FaultServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const state = {
    queue: [] as Fault[],
    always: null as Fault | null,
    requests: 0,
    onRequest: null as ((n: number) => void) | null,
  };
  const conns = new Set<Deno.Conn>();
  const waits = new Map<ReturnType<typeof setTimeout>, () => void>();
  let size = bytes.byteLength;
  let version = 1;
  const tagOf = (v: number): string => `"v${v}"`;
  const lmOf = (v: number): string => new Date(Date.UTC(2026, 0, 1, 0, 0, v)).toUTCString();
  let etag = tagOf(1);
  let lastModified = lmOf(1);
  const validatorHeaders = (tag: string): Record<string, string> =>
    validators === "etag"
      ? { etag: tag, "last-modified": lastModified }
      : validators === "last-modified"
      ? { "last-modified": lastModified }
      : validators === "weak-etag"
      ? { etag: `W/${tag}` }
      : {};

  const respond = async (
    conn: Deno.Conn,
    status: string,
    headers: Record<string, string>,
    body: Uint8Array,
  ) => {
    const lines = [
      `HTTP/1.1 ${status}`,
      "connection: close",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    await writeAll(conn, enc.encode(lines.join("\r\n") + "\r\n\r\n"));
    await writeAll(conn, body);
  };

  const handle = async (conn: Deno.Conn): Promise<void> => {
    const h = await readHead(conn);
    if (!h) return;
    state.requests++;
    state.onRequest?.(state.requests);
    const fault = state.queue.shift() ?? state.always;
    const m = /^bytes=(\d+)-(\d+)$/.exec(h.get("range") ?? "");
    const len = (n: number) => ({ "content-length": String(n) });
    if (fault === "500") {
      return await respond(conn, "500 Internal Server Error", len(4), enc.encode("boom"));
    }
    if (fault === "503") {
      return await respond(
        conn,
        "503 Service Unavailable",
        { ...len(4), "retry-after": "0" },
        enc.encode("busy"),
      );
    }
    if (fault === "etag-412") {
      return await respond(conn, "412 Precondition Failed", len(0), new Uint8Array(0));
    }
    if (fault === "slow") {
      await new Promise<void>((r) => {
        const id = setTimeout(() => {
          waits.delete(id);
          r();
        }, slowMs);
        waits.set(id, r);
      });
    }
    if (fault === "ignore-range" || !m) {
      return await respond(conn, "200 OK", { ...len(size), ...validatorHeaders(etag) }, bytes);
    }
    const ifMatch = h.get("if-match");
    const ifUnmodified = h.get("if-unmodified-since");
    if (
      fault !== "etag" &&
      ((ifMatch && ifMatch !== etag) || (ifUnmodified && ifUnmodified !== lastModified))
    ) {
      return await respond(conn, "412 Precondition Failed", len(0), new Uint8Array(0));
    }
    const a = Number(m[1]), b = Math.min(Number(m[2]), size - 1);
    if (a >= size) {
      return await respond(conn, "416 Range Not Satisfiable", {
        ...len(0),
        "content-range": `bytes */${size}`,
      }, new Uint8Array(0));
    }
    let body = bytes.slice(a, b + 1);
    const headers: Record<string, string> = {
      ...validatorHeaders(fault === "etag" ? tagOf(version + 1000) : etag),
      "content-range": fault === "bad-range"
        ? `bytes ${a + 1}-${b + 1}/${size}`
        : `bytes ${a}-${b}/${size}`,
    };
    if (fault === "wrong") body = body.map((v) => v ^ 0xff);
    if (fault === "flip" && body.byteLength > 0) {
      body[(a * 7919 + state.requests) % body.byteLength] ^= 0x10;
    }
    if (fault === "long") body = new Uint8Array([...body, 1, 2, 3]);
    if (fault === "drop") {
      // promise the whole body, deliver half, hang up
      return await respond(
        conn,
        "206 Partial Content",
        { ...headers, ...len(body.byteLength) },
        body.subarray(0, body.byteLength >> 1),
      );
    }
    if (fault === "truncate") {
      return await respond(
        conn,
        "206 Partial Content",
        headers,
        body.subarray(0, body.byteLength >> 1),
      );
    }
    await respond(conn, "206 Partial Content", { ...headers, ...len(body.byteLength) }, body);
  };

  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      handle(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed by stop() */ }
      });
    }
  })().catch(() => {});

  return {
    url: `http://127.0.0.1:${port}/model.gguf`,
    get queue(): Fault[] {
      return state.queue;
    },
    get always(): Fault | null {
      return state.always;
    },
    set always(f: Fault | null) {
      state.always = f;
    },
    get requests(): number {
      return state.requests;
    },
    get onRequest(): ((n: number) => void) | null {
      return state.onRequest;
    },
    set onRequest(f: ((n: number) => void) | null) {
      state.onRequest = f;
    },
    replace(next: Uint8Array, v: "change" | "keep"): void {
      bytes = next;
      size = next.byteLength;
      if (v === "change") {
        version++;
        etag = tagOf(version);
        lastModified = lmOf(version);
      }
    },
    async stop(): Promise<void> {
      listener.close();
      for (const [id, r] of waits) {
        clearTimeout(id);
        r();
      }
      waits.clear();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      conns.clear();
      await serving;
    },
  };
}
