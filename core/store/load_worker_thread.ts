/**
 * The worker thread of off-thread expert loads (`load_worker.ts`): it reads
 * a streamed expert's ranges from a local file straight into the backend's
 * shared memory (positioned reads on its own file handle, the three ranges
 * of an expert at once on the runtime's I/O pool) and hashes each range
 * there (`hashWide`, optionally SHA-256 over the whole expert), so neither
 * the read nor the integrity hash runs on the JS thread. The JS thread only
 * compares the hashes it gets back. At most `MAX_RUNNING` loads run at
 * once; the others queue, demand loads before background ones
 * (prefetches, HOBBIT loads); a queued load can be raised to demand or
 * cancelled. Each load is answered once, after its last write into the
 * shared memory.
 *
 * @module
 */

import { closeSync, fstatSync, openSync, read as fsRead } from "node:fs";
import { createHash } from "node:crypto";
import { hashWide } from "./hash_wide.ts";
import type { LoadReply, LoadRequest, WorkerMessage } from "./load_worker.ts";

interface Open {
  readonly fd: number;
  readonly size: number;
  readonly mtimeMs: number | null;
}

const files = new Map<string, Open>();
const queue: LoadRequest[] = [];
/**
 * Loads whose reads run at once (each expert's three ranges in parallel on
 * the runtime's I/O pool): two steps' misses; later ones queue, demand first.
 */
const MAX_RUNNING = 4;
let running = 0;
let nextStart = 0;

class LoadFailure extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** The file at `path`, opened once; it must still have the size and mtime the JS thread saw. */
function open(m: LoadRequest): Open {
  const { path, size, mtimeMs } = m;
  const key = `${path}\0${size}\0${mtimeMs}\0${m.dev}\0${m.ino}`;
  const have = files.get(key);
  if (have) return have;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new LoadFailure("open_failed", `Cannot open ${path}: ${(e as Error).message}`);
  }
  const o: Open = { fd, size, mtimeMs };
  try {
    const st = fstatSync(fd);
    if (Number(st.dev) !== m.dev || Number(st.ino) !== m.ino) {
      throw new LoadFailure(
        "changed",
        `Cannot read ${path}: the path now names another file than the one opened`,
      );
    }
    unchanged(o, path);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  files.set(key, o);
  return o;
}

/** The file still has the size and mtime seen at open (`FileSource`'s check), else `"changed"`. */
function unchanged(o: Open, path: string): void {
  const st = fstatSync(o.fd);
  if (st.size !== o.size || (o.mtimeMs !== null && st.mtimeMs !== o.mtimeMs)) {
    throw new LoadFailure(
      "changed",
      `Cannot read ${path}: the file changed while open (size ${o.size} → ${st.size}, mtime ${o.mtimeMs} → ${st.mtimeMs})`,
    );
  }
}

function preadOnce(fd: number, v: Uint8Array, at: number, n: number, pos: number): Promise<number> {
  return new Promise((res, rej) => fsRead(fd, v, at, n, pos, (e, got) => e ? rej(e) : res(got)));
}

/** All ranges read at once (the runtime's I/O pool), each hashed here as soon as it landed. */
async function runAsync(m: LoadRequest): Promise<LoadReply> {
  const started = nextStart++;
  const t0 = performance.now();
  const f = open(m);
  let hashMs = 0;
  const hashes = await Promise.all(m.ranges.map(async (r) => {
    const view = new Uint8Array(m.buffer, r.at, r.length);
    let got = 0;
    while (got < r.length) {
      let n: number;
      try {
        n = await preadOnce(f.fd, view, got, r.length - got, r.offset + got);
      } catch (e) {
        throw new LoadFailure("read_failed", `Cannot read ${m.path}: ${(e as Error).message}`);
      }
      if (n === 0) {
        throw new LoadFailure(
          "short_read",
          `Cannot read ${m.path}: file ended at ${r.offset + got}, wanted ${r.offset + r.length}`,
        );
      }
      got += n;
    }
    unchanged(f, m.path);
    const h0 = performance.now();
    const h = m.hash ? hashWide(view) : "";
    hashMs += performance.now() - h0;
    return h;
  }));
  let sha256: string | null = null;
  if (m.sha256 !== null) {
    const h0 = performance.now();
    const h = createHash("sha256");
    const [at, n] = m.sha256;
    // in pieces copied out of the shared memory (hashing APIs may refuse shared views)
    const piece = new Uint8Array(Math.min(n, 1 << 20));
    for (let o = 0; o < n; o += piece.byteLength) {
      const len = Math.min(piece.byteLength, n - o);
      piece.set(new Uint8Array(m.buffer, at + o, len));
      h.update(piece.subarray(0, len));
    }
    sha256 = h.digest("hex");
    hashMs += performance.now() - h0;
  }
  const wallMs = performance.now() - t0;
  return {
    id: m.id,
    ok: true,
    hashes: m.hash ? hashes : [],
    sha256,
    readMs: wallMs - hashMs,
    hashMs,
    wallMs,
    started,
  };
}

/** The next load: the oldest demand one, else the oldest. */
function take(): LoadRequest | undefined {
  const i = queue.findIndex((q) => q.urgent);
  return queue.splice(i >= 0 ? i : 0, 1)[0];
}

/** Start queued loads while fewer than `MAX_RUNNING` run (demand ones first). */
function pump(): void {
  while (running < MAX_RUNNING) {
    const m = take();
    if (!m) return;
    running++;
    runAsync(m).catch((e): LoadReply =>
      e instanceof LoadFailure
        ? { id: m.id, ok: false, code: e.code, message: e.message }
        : { id: m.id, ok: false, code: "load_failed", message: String((e as Error)?.message ?? e) }
    ).then((r) => {
      running--;
      port.postMessage(r);
      pump();
    });
  }
}

const { parentPort } = await import("node:worker_threads");
const port = parentPort!;
port.on("message", (m: WorkerMessage) => {
  if (m.type === "load") {
    queue.push(m);
    pump();
    return;
  }
  if (m.type === "stall") {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, m.ms);
    return;
  }
  const i = queue.findIndex((q) => q.id === m.id);
  if (i < 0) return;
  if (m.type === "urgent") queue[i].urgent = true;
  else if (m.type === "cancel") {
    queue.splice(i, 1);
    port.postMessage({ id: m.id, ok: false, code: "cancelled", message: "cancelled while queued" });
  }
});
