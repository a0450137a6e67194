/**
 * Worker of the plugin campaign: runs cases `[from, to)` of `seed` in order and
 * posts each result; the parent's watchdog terminates it on a hang.
 *
 * @module
 */

import { closeEnv, openEnv, runCase } from "./plugins_campaign.ts";

const self = globalThis as unknown as {
  onmessage: (e: MessageEvent<{ seed: number; from: number; to: number }>) => void;
  postMessage: (m: unknown) => void;
};

self.onmessage = async (e) => {
  const { seed, from, to } = e.data;
  const env = await openEnv();
  try {
    for (let i = from; i < to; i++) {
      self.postMessage({ started: i });
      self.postMessage({ result: await runCase(env, seed, i) });
    }
  } finally {
    await closeEnv(env);
  }
  self.postMessage({ done: true });
};
