/**
 * A connection guard in front of `Deno.serve`, which has no header-read or
 * idle timeout (denoland/deno#3515): the public listener is a raw TCP socket
 * (`Deno.listen`); every accepted connection is relayed byte for byte to the
 * HTTP server on an internal loopback port, and the guard
 *
 * - closes a connection whose first request head (up to `\r\n\r\n`) has not
 *   arrived within `headerTimeoutMs`;
 * - closes a connection on which no byte moved either way for
 *   `idleTimeoutMs`, never while one of its requests is being handled (a
 *   non-streaming generation) — a streaming response that sends data is not
 *   idle;
 * - refuses connections beyond `maxConnections` with a `503` and closes them.
 *
 * Keep-alive: only the first request head of a connection has a deadline;
 * later requests on the same connection are bounded by the idle timeout (the
 * guard does not parse HTTP).
 *
 * The client's address survives the relay: the guard records which internal
 * connection (by its loopback source port) carries which client, and the
 * handler is called with the client's address as `info.remoteAddr`, so the
 * loopback-only default of the app sees the real client. A connection made
 * to the internal port directly (not through the guard) keeps its own
 * address, which is loopback, as it really is.
 *
 * @module
 */

/** Options of {@link guardedServe}. */
export interface GuardOptions {
  /** Public address to listen on. */
  hostname: string;
  /** Public port (0 = any free port). */
  port: number;
  /** Milliseconds for the first request head to arrive (default 10 000). */
  headerTimeoutMs?: number;
  /** Milliseconds without a byte either way before a connection is closed (default 60 000). */
  idleTimeoutMs?: number;
  /** Most client connections open at once; more get 503 and are closed (default 512). */
  maxConnections?: number;
  /** Called once the public listener is bound. */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** Counters of a guard, for tests and logs. */
export interface GuardStats {
  /** Client connections open now. */
  open: number;
  /** Closed because the first request head was late. */
  headerTimeouts: number;
  /** Closed after the idle timeout. */
  idleTimeouts: number;
  /** Refused over `maxConnections`. */
  refused: number;
}

/** A running guarded server. */
export interface GuardedServer {
  /** The public address. */
  addr: Deno.NetAddr;
  /** Counters. */
  stats: GuardStats;
  /** Stop accepting, close every connection and the internal server. */
  shutdown(): Promise<void>;
  /** Resolves when the guard and the internal server have stopped. */
  finished: Promise<void>;
}

/** The handler `Deno.serve` takes. */
export type ServeHandler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** A client connection seen by the internal server. */
interface Relayed {
  remote: Deno.NetAddr;
  /** Requests of this connection being handled now. */
  busy: number;
  touch(): void;
}

/**
 * Tracks, over a byte stream fed in chunks, whether a request head has ended:
 * an empty line (`\r\n\r\n`, or the bare-LF forms `\n\n` / `\n\r\n` that
 * HTTP/1 parsers also accept) after at least one byte that is not CR or LF
 * (empty lines before the request line, which RFC 9112 lets servers skip, do
 * not count).
 */
export class HeadEnd {
  /** 0: in a line; 1: just after LF; 2: after LF CR. */
  #state = 0;
  #text = false;
  /** Whether the head has ended. */
  done = false;
  /** Feed a chunk; returns whether the head has ended so far. */
  feed(chunk: Uint8Array): boolean {
    for (let i = 0; i < chunk.length && !this.done; i++) {
      const b = chunk[i];
      if (!this.#text) {
        this.#text = b !== 13 && b !== 10;
        continue;
      }
      if (b === 10) {
        if (this.#state !== 0) this.done = true;
        else this.#state = 1;
      } else if (b === 13) {
        this.#state = this.#state === 1 ? 2 : 0;
      } else {
        this.#state = 0;
      }
    }
    return this.done;
  }
}

async function writeAll(dst: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await dst.write(data.subarray(off));
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

const REFUSED_BODY =
  '{"error":{"message":"Too many connections","type":"server_error","code":"too_many_connections"}}';
const REFUSED = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n" +
    `retry-after: 1\r\ncontent-length: ${REFUSED_BODY.length}\r\n\r\n${REFUSED_BODY}`,
);

/**
 * Serve `handler` behind the connection guard on `hostname:port`. Throws the
 * `Deno.listen` errors (`AddrInUse`, `AddrNotAvailable`, `NotCapable`…).
 */
export function guardedServe(opts: GuardOptions, handler: ServeHandler): GuardedServer {
  const headerMs = opts.headerTimeoutMs ?? 10_000;
  const idleMs = opts.idleTimeoutMs ?? 60_000;
  const maxConns = opts.maxConnections ?? 512;
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  /** Internal connections by their loopback source port. */
  const byPort = new Map<number, Relayed>();
  const conns = new Set<Deno.Conn>();
  const stats: GuardStats = { open: 0, headerTimeouts: 0, idleTimeouts: 0, refused: 0 };
  let inner: Deno.HttpServer<Deno.NetAddr>;
  try {
    inner = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req, info) => {
      const r = byPort.get(info.remoteAddr.port);
      if (!r) return handler(req, info); // a direct loopback client of the internal port
      r.busy++;
      r.touch();
      const done = (): void => {
        r.busy--;
        r.touch();
      };
      try {
        // info's fields are getters on its prototype: name each one (a spread would drop them)
        const relayed: Deno.ServeHandlerInfo<Deno.NetAddr> = {
          remoteAddr: r.remote,
          get completed() {
            return info.completed;
          },
        };
        const res = handler(req, relayed);
        if (res instanceof Promise) return res.finally(done);
        done();
        return res;
      } catch (e) {
        done();
        throw e;
      }
    });
  } catch (e) {
    listener.close();
    throw e;
  }
  const innerPort = inner.addr.port;

  async function relay(client: Deno.Conn): Promise<void> {
    let upstream: Deno.Conn | null = null;
    let closed = false;
    let last = Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const head = new HeadEnd();
    const entry: Relayed = {
      remote: client.remoteAddr as Deno.NetAddr,
      busy: 0,
      touch: () => void (last = Date.now()),
    };
    const close = (): void => {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      closeQuietly(client);
      if (upstream) closeQuietly(upstream);
    };
    const arm = (ms: number): void => {
      clearTimeout(timer);
      timer = setTimeout(check, Math.max(1, ms));
    };
    const t0 = Date.now();
    function check(): void {
      if (closed) return;
      const now = Date.now();
      if (!head.done && now - t0 >= headerMs) {
        stats.headerTimeouts++;
        return close();
      }
      if (entry.busy === 0 && now - last >= idleMs) {
        stats.idleTimeouts++;
        return close();
      }
      const toIdle = entry.busy > 0 ? idleMs : idleMs - (now - last);
      arm(head.done ? toIdle : Math.min(headerMs - (now - t0), toIdle));
    }
    arm(Math.min(headerMs, idleMs));
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: innerPort });
      if (closed) return void closeQuietly(upstream);
      const up = upstream;
      const localPort = (up.localAddr as Deno.NetAddr).port;
      byPort.set(localPort, entry);
      // 2 × 16 KiB per connection: 16 MiB at the default 512 connections
      const buf1 = new Uint8Array(16 * 1024);
      const buf2 = new Uint8Array(16 * 1024);
      const toServer = (async () => {
        for (;;) {
          const n = await client.read(buf1);
          if (n === null) break;
          last = Date.now();
          const chunk = buf1.subarray(0, n);
          head.feed(chunk);
          await writeAll(up, chunk);
        }
        // the client finished sending: pass the half-close on, keep reading the answer
        try {
          await up.closeWrite();
        } catch { /* gone */ }
      })();
      const toClient = (async () => {
        for (;;) {
          const n = await up.read(buf2);
          if (n === null) break;
          last = Date.now();
          await writeAll(client, buf2.subarray(0, n));
        }
      })();
      // a failed read or write on the client's side ends the connection
      toServer.catch(close);
      // the server's side ending (or any error) ends the connection
      await toClient;
    } catch {
      // a reset, or a close by the timers: nothing to report
    } finally {
      if (upstream) byPort.delete((upstream.localAddr as Deno.NetAddr).port);
      close();
    }
  }

  let accepting = true;
  const acceptLoop = (async () => {
    for (;;) {
      let c: Deno.Conn;
      try {
        c = await listener.accept();
      } catch {
        if (!accepting) break;
        // e.g. out of file descriptors: back off instead of spinning
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (stats.open >= maxConns) {
        stats.refused++;
        writeAll(c, REFUSED).catch(() => {}).finally(() => closeQuietly(c));
        continue;
      }
      stats.open++;
      conns.add(c);
      relay(c).finally(() => {
        stats.open--;
        conns.delete(c);
      });
    }
  })();
  const addr = listener.addr as Deno.NetAddr;
  opts.onListen?.(addr);
  return {
    addr,
    stats,
    finished: Promise.all([acceptLoop, inner.finished]).then(() => {}),
    async shutdown(): Promise<void> {
      accepting = false;
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of conns) closeQuietly(c);
      await acceptLoop;
      await inner.shutdown();
    },
  };
}
