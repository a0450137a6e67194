/**
 * Runs the GGUF mutation campaign in workers with a per-case watchdog: a case that posts no
 * result within `hangMs` is recorded as a hang, its worker is terminated and a fresh one
 * carries on with the next case.
 *
 * @module
 */

import { type CampaignSummary, type CaseResult, summarize } from "./gguf_campaign.ts";

/** Options of `runCampaign`. */
export interface CampaignOptions {
  /** Cases to run (indices 0…cases-1). */
  cases: number;
  /** Campaign seed (default 1). */
  seed?: number;
  /** Parallel workers (default 1). */
  workers?: number;
  /** A case running longer than this is a hang (default 20 000 ms). */
  hangMs?: number;
  /** Stop dispatching new cases after this many seconds (default: no limit). */
  seconds?: number;
  /** Cases per batch sent to a worker (default 50). */
  batch?: number;
  /** Called after each case. */
  onResult?: (r: CaseResult, done: number) => void;
}

const WORKER = new URL("./gguf_worker.ts", import.meta.url).href;

/** Run the campaign; resolves with the summary (and the wall time in `wallMs`). */
export async function runCampaign(
  opts: CampaignOptions,
): Promise<CampaignSummary & { wallMs: number; timeBoxed: boolean }> {
  const seed = opts.seed ?? 1;
  const hangMs = opts.hangMs ?? 20_000;
  const batch = opts.batch ?? 50;
  const t0 = performance.now();
  const deadline = opts.seconds ? t0 + opts.seconds * 1000 : Infinity;
  const results: CaseResult[] = [];
  let next = 0;
  let timeBoxed = false;
  const take = (): [number, number] | null => {
    if (next >= opts.cases) return null;
    if (performance.now() > deadline) {
      timeBoxed = true;
      return null;
    }
    const from = next;
    next = Math.min(opts.cases, next + batch);
    return [from, next];
  };

  const lane = () =>
    new Promise<void>((resolve) => {
      let w: Worker | null = null;
      let range: [number, number] | null = null;
      let current = -1; // index of the case in flight
      let timer: ReturnType<typeof setTimeout> | undefined;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(onHang, hangMs);
      };
      const start = () => {
        w = new Worker(WORKER, { type: "module" });
        w.onmessage = onMessage;
        w.onerror = (e) => {
          e.preventDefault();
          // an error outside runCase: record it against the case in flight
          results.push(hangLike(current, "untyped", `worker error: ${e.message}`));
          restartAfter(current);
        };
      };
      const send = () => {
        range = take();
        if (!range) {
          clearTimeout(timer);
          w?.terminate();
          resolve();
          return;
        }
        current = range[0];
        arm();
        w!.postMessage({ seed, from: range[0], to: range[1] });
      };
      const restartAfter = (index: number) => {
        w?.terminate();
        start();
        if (range && index + 1 < range[1]) {
          range = [index + 1, range[1]];
          current = range[0];
          arm();
          w!.postMessage({ seed, from: range[0], to: range[1] });
        } else send();
      };
      const onHang = () => {
        results.push(hangLike(current, "hang", `no result after ${hangMs} ms`));
        opts.onResult?.(results[results.length - 1], results.length);
        restartAfter(current);
      };
      const onMessage = (ev: MessageEvent) => {
        const m = ev.data;
        if (m.type === "started") {
          current = m.index;
          arm();
        } else if (m.type === "result") {
          results.push(m.result);
          opts.onResult?.(m.result, results.length);
        } else if (m.type === "done") send();
      };
      start();
      send();
    });

  await Promise.all(Array.from({ length: Math.max(1, opts.workers ?? 1) }, lane));
  results.sort((a, b) => a.index - b.index);
  return { ...summarize(seed, results), wallMs: performance.now() - t0, timeBoxed };
}

function hangLike(index: number, outcome: "hang" | "untyped", detail: string): CaseResult {
  return {
    index,
    outcome,
    ops: [],
    detail,
    fileBytes: 0,
    slotPeak: 0,
    loadBytes: 0,
    heapGrowth: 0,
    ms: 0,
    stage: "load",
  };
}
