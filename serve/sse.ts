/**
 * Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk
 * and `data: [DONE]\n\n` at the end. The stream is pull-driven, so a slow
 * reader slows its own generation instead of buffering it, and a reader
 * that goes away cancels it.
 *
 * @module
 */

/** Marks the end of an OpenAI stream. */
export const DONE: unique symbol = Symbol("DONE");

const enc = new TextEncoder();

/** Encode one SSE event. */
export function sseEvent(data: unknown): Uint8Array {
  return enc.encode(`data: ${data === DONE ? "[DONE]" : JSON.stringify(data)}\n\n`);
}

/**
 * A `text/event-stream` response over `events`; `onCancel` runs when the
 * client disconnects (the stream is cancelled) before the events end.
 */
export function sseResponse(
  events: AsyncGenerator<unknown, void, void>,
  onCancel: (reason: unknown) => void,
): Response {
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        const r = await events.next();
        if (r.done) ctrl.close();
        else ctrl.enqueue(sseEvent(r.value));
      } catch (e) {
        ctrl.error(e);
      }
    },
    async cancel(reason) {
      onCancel(reason);
      await events.return();
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      // no-transform: keeps Deno.serve from gzip-buffering the stream
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
    },
  });
}
