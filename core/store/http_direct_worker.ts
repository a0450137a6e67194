/**
 * The worker thread of direct HTTP reads (`DirectHttp` with views over
 * shared memory): it runs the same keep-alive socket reads as the JS
 * thread would, on its own event loop, writing each body straight into the
 * shared memory view it is given, so bodies move while the JS thread
 * computes. Each read is answered once it settled (after its last write).
 *
 * @module
 */

import { DirectHttp, type DirectWorkerReply, type DirectWorkerRequest } from "./http_direct.ts";

const http = new DirectHttp({ thread: false });
const aborts = new Map<number, AbortController>();

async function onMessage(m: DirectWorkerRequest, reply: (r: DirectWorkerReply) => void) {
  if (m.type === "abort") {
    aborts.get(m.id)?.abort();
    return;
  }
  const ac = new AbortController();
  aborts.set(m.id, ac);
  let ok = false;
  try {
    ok = await http.read(
      {
        url: new URL(m.url),
        headers: new Headers(m.headers),
        offset: m.offset,
        size: m.size,
        etag: m.etag,
        lastModified: m.lastModified,
        timeoutMs: m.timeoutMs,
      },
      new Uint8Array(m.buffer, m.byteOffset, m.length),
      ac.signal,
    );
  } catch {
    ok = false;
  } finally {
    aborts.delete(m.id);
  }
  reply({ id: m.id, ok });
}

const { parentPort } = await import("node:worker_threads");
const port = parentPort!;
port.on("message", (m: DirectWorkerRequest) => void onMessage(m, (r) => port.postMessage(r)));
