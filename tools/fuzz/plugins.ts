/**
 * The plugin-input mutation campaign at a large count, time-boxed, in a
 * worker with a per-case watchdog (a case silent for `--hang-ms` is a hang;
 * the worker is replaced and the campaign goes on with the next case).
 *
 * ```sh
 * deno run -A tools/fuzz/plugins.ts --cases 100000 --seconds 180 --seed 1
 * ```
 *
 * Prints a JSON summary (outcomes, typed codes, hangs, reads over their
 * input's size, slowest case, peak RSS) and exits 1 when any case was
 * untyped, a silent NaN, plugin code escaping its folder, a hang, or over
 * the allocation bound.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CaseResult, summarize } from "./plugins_campaign.ts";

/** Peak-RSS bound of the whole campaign process (bytes). */
export const RSS_BOUND = 1536 * 1024 * 1024;

/** Run cases `[0, cases)` of `seed` until `seconds` pass; returns the results. */
export async function runInWorkers(
  opts: { cases: number; seed: number; seconds: number; hangMs: number },
): Promise<{ results: CaseResult[]; wallMs: number; timeBoxed: boolean; peakRss: number }> {
  const t0 = performance.now();
  const deadline = t0 + opts.seconds * 1000;
  const results: CaseResult[] = [];
  let peakRss = Deno.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  }, 250);
  let next = 0;
  let timeBoxed = false;
  while (next < opts.cases) {
    if (performance.now() > deadline) {
      timeBoxed = true;
      break;
    }
    const from = next;
    const to = opts.cases;
    await new Promise<void>((resolve) => {
      const w = new Worker(new URL("./plugins_worker.ts", import.meta.url).href, {
        type: "module",
      });
      let current = from;
      let started = performance.now();
      const stop = () => {
        clearInterval(timer);
        w.terminate();
        resolve();
      };
      const timer = setInterval(() => {
        if (performance.now() - started > opts.hangMs) {
          results.push({
            index: current,
            family: "watchdog",
            outcome: "untyped",
            detail: `hang: no result after ${opts.hangMs} ms`,
            ms: performance.now() - started,
            readRatio: 0,
          });
          next = current + 1;
          stop();
        } else if (performance.now() > deadline) {
          next = opts.cases;
          timeBoxed = true;
          stop();
        }
      }, 100);
      w.onmessage = (e) => {
        const m = e.data as { started?: number; result?: CaseResult; done?: boolean };
        if (m.started !== undefined) {
          current = m.started;
          started = performance.now();
        } else if (m.result) {
          results.push(m.result);
          next = m.result.index + 1;
        } else if (m.done) {
          next = to;
          stop();
        }
      };
      w.onerror = (e) => {
        e.preventDefault();
        results.push({
          index: current,
          family: "worker",
          outcome: "untyped",
          detail: `worker error: ${e.message}`,
          ms: performance.now() - started,
          readRatio: 0,
        });
        next = current + 1;
        stop();
      };
      w.postMessage({ seed: opts.seed, from, to });
    });
  }
  clearInterval(sampler);
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  return { results, wallMs: performance.now() - t0, timeBoxed, peakRss };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      cases: { type: "string", default: "1000000" },
      seed: { type: "string", default: "1" },
      seconds: { type: "string", default: "180" },
      "hang-ms": { type: "string", default: "10000" },
    },
  });
  const hangMs = Number(values["hang-ms"]);
  const run = await runInWorkers({
    cases: Number(values.cases),
    seed: Number(values.seed),
    seconds: Number(values.seconds),
    hangMs,
  });
  const s = summarize(run.results, hangMs);
  const report = {
    ...s,
    seed: Number(values.seed),
    wallSeconds: Math.round(run.wallMs / 100) / 10,
    timeBoxed: run.timeBoxed,
    casesPerSecond: Math.round(s.cases / (run.wallMs / 1000)),
    peakRssMiB: Math.round(run.peakRss / 2 ** 20),
    rssBoundMiB: RSS_BOUND / 2 ** 20,
    bounds: {
      hangMs,
      read: "largest single read ≤ the input's size",
      rss: `peak RSS ≤ ${RSS_BOUND / 2 ** 20} MiB`,
    },
  };
  console.log(JSON.stringify(report, null, 2));
  const bad = s.outcomes.untyped + s.outcomes.silent_nan + s.outcomes.code_escape + s.hangs +
    s.overAlloc + (run.peakRss > RSS_BOUND ? 1 : 0);
  Deno.exit(bad ? 1 : 0);
}
