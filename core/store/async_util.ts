/**
 * Small async helpers of the streaming store: a macrotask yield and an
 * abortable wait.
 *
 * @module
 */

import { StoreError } from "../errors.ts";

/**
 * Resolve after one macrotask turn in which pending I/O is polled:
 * `setImmediate` where there is one (Deno, Node: ~8 µs a turn), else a
 * MessageChannel message, else `setTimeout`. Under Deno a MessageChannel
 * turn does **not** poll I/O: reads that finished on the I/O pool during
 * compute stayed unapplied after 50 such turns (measured, docs/streaming.md
 * session 8), and chained `setTimeout(0)` turns are clamped to ~2 ms.
 */
export function macrotask(): Promise<void> {
  return new Promise((resolve) => {
    const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
    if (typeof immediate === "function") {
      immediate(() => resolve());
      return;
    }
    if (typeof MessageChannel !== "function") {
      setTimeout(resolve, 0);
      return;
    }
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(null);
  });
}

/** `p`, or a `StoreError` `"aborted"` as soon as `signal` fires. */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  const aborted = (): StoreError => new StoreError("aborted", "Cannot ensure experts: aborted");
  if (signal.aborted) return Promise.reject(aborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(aborted());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
