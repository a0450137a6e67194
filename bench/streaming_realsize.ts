/**
 * Expert streaming on a real-size file: decode speed resident against expert
 * budgets (fractions of the file's expert bytes) on the default WASM backend,
 * one fresh process per run, runs interleaved round by round (resident, then
 * each budget) so a busy machine moves them alike. Prints the CPU, the load
 * average and a markdown table; tokens are teacher-forced on the resident
 * run's greedy tokens and compared.
 *
 * ```sh
 * deno run -A bench/streaming_realsize.ts --model olmoe-q4km.gguf [--budgets 25,50] [--tokens 16] [--rounds 2]
 * ```
 *
 * @module
 */

import { loadModel } from "../core/model/model.ts";
import { Session } from "../core/generate/session.ts";
import { argmax } from "../core/generate/sampler.ts";
import { FileSource } from "../core/io/byte_source.ts";
import { expertLocations } from "../plugins/quant-experts/mod.ts";
import "../wasm/register.ts";

const PROMPT = [5, 77, 120, 9, 33, 250, 17];

interface Run {
  /** Budget in percent of the expert bytes, or null for resident. */
  pct: number | null;
  steps: number;
  forced: number[] | null;
}

interface RunResult {
  decodeTokS: number;
  tokens: number[];
  misses: number;
  hits: number;
  loadMs: number;
  error?: string;
}

/** The measured child: load, prompt, `steps` decode steps (teacher-forced when `forced`). */
async function child(r: Run, model: string): Promise<RunResult> {
  let budget: number | undefined;
  if (r.pct !== null) {
    const src = await FileSource.open(model);
    const bytes = (await expertLocations(src)).flat().reduce((a, e) => a + e.bytes, 0);
    await src.close?.();
    budget = Math.floor((bytes * r.pct) / 100);
  }
  const t0 = performance.now();
  const m = await loadModel(model, { backend: "wasm", threads: 1, expertBudgetBytes: budget });
  const loadMs = performance.now() - t0;
  const s = new Session(m);
  let logits = await s.eval(PROMPT);
  const tokens = [argmax(logits)];
  const t1 = performance.now();
  for (let i = 1; i < r.steps; i++) {
    logits = await s.eval([r.forced ? r.forced[i - 1] : tokens[i - 1]]);
    tokens.push(argmax(logits));
  }
  const decodeTokS = (r.steps - 1) / ((performance.now() - t1) / 1000);
  const st = m.store.stats();
  m.dispose();
  return { decodeTokS, tokens, misses: st.misses, hits: st.hits, loadMs };
}

async function main(): Promise<void> {
  const a = Deno.args;
  const get = (k: string) => (a.indexOf(k) >= 0 ? a[a.indexOf(k) + 1] : undefined);
  if (a[0] === "--child") {
    const r = JSON.parse(a[1]) as Run & { model: string };
    try {
      console.log(JSON.stringify(await child(r, r.model)));
    } catch (e) {
      console.log(JSON.stringify({ error: String(e) }));
    }
    return;
  }
  const model = get("--model");
  if (!model) {
    console.error(
      "usage: bench/streaming_realsize.ts --model FILE [--budgets 25,50] [--tokens 16] [--rounds 2]",
    );
    Deno.exit(2);
  }
  const budgets = (get("--budgets") ?? "25,50").split(",").map(Number);
  const steps = Number(get("--tokens") ?? 16);
  const rounds = Number(get("--rounds") ?? 2);
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`model ${model}; CPU ${navigator.hardwareConcurrency} × ${cpu}`);
  console.log(`start ${new Date().toISOString()}, load average ${load()}`);
  const run = async (r: Run): Promise<RunResult> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(import.meta.url).pathname,
        "--child",
        JSON.stringify({ ...r, model }),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "{}";
    return JSON.parse(line) as RunResult;
  };
  const best = new Map<string, RunResult>();
  const all = new Map<string, number[]>();
  let forced: number[] | null = null;
  for (let round = 0; round < rounds; round++) {
    for (const pct of [null, ...budgets]) {
      const r = await run({ pct, steps, forced: pct === null ? null : forced });
      const key = pct === null ? "resident" : `${pct} %`;
      if (r.error) {
        console.error(`${key}: ${r.error}`);
        continue;
      }
      if (pct === null && forced === null) forced = r.tokens;
      console.log(`round ${round + 1} ${key}: ${r.decodeTokS.toFixed(2)} tok/s (load ${load()})`);
      all.set(key, [...(all.get(key) ?? []), r.decodeTokS]);
      const b = best.get(key);
      if (!b || r.decodeTokS > b.decodeTokS) best.set(key, r);
    }
  }
  const res = best.get("resident");
  console.log(
    "\n| run | decode tok/s (best) | × resident | all rounds tok/s | hits / misses | tokens = resident |",
  );
  console.log("| --- | ---: | ---: | --- | --- | --- |");
  for (const [k, r] of best) {
    const ratio = res ? (r.decodeTokS / res.decodeTokS).toFixed(2) + "×" : "—";
    const same = forced && k !== "resident"
      ? (r.tokens.join() === forced.join() ? "yes" : "no")
      : "—";
    console.log(
      `| ${k} | ${r.decodeTokS.toFixed(2)} | ${ratio} | ${
        all.get(k)!.map((x) => x.toFixed(2)).join(", ")
      } | ${r.hits} / ${r.misses} | ${same} |`,
    );
  }
  console.log(`\nend ${new Date().toISOString()}, load average ${load()}`);
}

await main();
