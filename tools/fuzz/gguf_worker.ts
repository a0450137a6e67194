/**
 * Worker of the GGUF mutation campaign: runs the cases it is sent and posts each result, so
 * the runner can tell a hang (no result in time) from a slow case.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { runCase } from "./gguf_campaign.ts";

self.onmessage = async (ev: MessageEvent<{ seed: number; from: number; to: number }>) => {
  const { seed, from, to } = ev.data;
  for (let i = from; i < to; i++) {
    self.postMessage({ type: "started", index: i });
    self.postMessage({ type: "result", result: await runCase(seed, i) });
  }
  self.postMessage({ type: "done" });
};
