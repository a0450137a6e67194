/**
 * The larger mutation campaign over chat templates, time-boxed: mutants of
 * real templates (serve/jinja/template_mutations_test_util.ts) rendered the way the
 * server renders them, in the Worker sandbox with its deadline, while the
 * process's memory is sampled. Reports untyped errors, hangs (renders the
 * deadline had to kill), over-bound allocations (RSS over the bound) and the
 * outcome classes; exits 1 when any of the first three is non-zero.
 *
 *   deno run -A tools/fuzz/templates.ts [seconds=180] [firstSeed=1]
 *
 * @module
 */

import { ChatTemplateError } from "../../serve/chat_template.ts";
import { BudgetError } from "../../serve/jinja/budget.ts";
import { DEFAULT_RENDER_LIMITS, Template } from "../../serve/jinja/render.ts";
import { TemplateSandbox } from "../../serve/jinja/sandbox.ts";
import { mutant } from "../../serve/jinja/template_mutations_test_util.ts";

const seconds = Number(Deno.args[0] ?? 180);
let seed = Number(Deno.args[1] ?? 1);
/** RSS a render may add over the idle process: the renderer's bound (~128 MiB) plus the worker and slack. */
const RSS_BOUND = 2 * DEFAULT_RENDER_LIMITS.maxAllocated + (128 << 20);

const sandbox = new TemplateSandbox();
const counts = new Map<string, number>();
const bump = (k: string): void => void counts.set(k, (counts.get(k) ?? 0) + 1);
const failures: string[] = [];
let untyped = 0, hangs = 0, overBound = 0, runs = 0, slowest = 0;
let rssPeak = 0;

// warm up: the first spawn loads the worker module
await sandbox.render("{{ 1 }}", {});
const rss0 = Deno.memoryUsage().rss;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
}, 5);

const deadline = performance.now() + seconds * 1000;
while (performance.now() < deadline) {
  const m = mutant(seed);
  runs++;
  // parse in-process first, as ChatTemplate does at start-up
  let parsed = true;
  try {
    new Template(m.source);
  } catch (e) {
    parsed = false;
    if (e instanceof ChatTemplateError) bump(`parse:${e.code}`);
    else {
      untyped++;
      failures.push(`seed ${seed}: untyped parse error ${String(e)}`);
    }
  }
  if (parsed) {
    const t0 = performance.now();
    try {
      const out = await sandbox.render(m.source, m.vars);
      bump(out.length <= DEFAULT_RENDER_LIMITS.maxOutput ? "rendered" : "rendered-over-output");
    } catch (e) {
      if (e instanceof BudgetError) bump(`limit:${e.kind}`);
      else if (e instanceof ChatTemplateError) bump(`render:${e.code}`);
      else {
        untyped++;
        failures.push(`seed ${seed}: untyped ${String(e)}`);
      }
      if (e instanceof BudgetError && /was stopped/.test(e.message)) {
        hangs++;
        failures.push(`seed ${seed}: hang, killed by the deadline`);
      }
    }
    slowest = Math.max(slowest, performance.now() - t0);
  }
  const rss = Math.max(rssPeak, Deno.memoryUsage().rss);
  if (rss - rss0 > RSS_BOUND) {
    overBound++;
    failures.push(`seed ${seed}: RSS ${((rss - rss0) / 2 ** 20).toFixed(0)} MiB over idle`);
    rssPeak = 0;
  }
  seed++;
}
clearInterval(sampler);
sandbox.close();

const report = {
  runs,
  seeds: `${seed - runs}..${seed - 1}`,
  untyped,
  hangs,
  overBound,
  slowestRenderMs: Math.round(slowest),
  rssIdleMiB: Math.round(rss0 / 2 ** 20),
  rssPeakMiB: Math.round(Math.max(rssPeak, rss0) / 2 ** 20),
  workersKilled: sandbox.killed,
  outcomes: Object.fromEntries([...counts].sort()),
  failures: failures.slice(0, 20),
};
console.log(JSON.stringify(report, null, 2));
if (untyped + hangs + overBound > 0) Deno.exit(1);
