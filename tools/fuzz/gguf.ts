/**
 * GGUF mutation campaign (see gguf_campaign.ts for what each case checks).
 *
 *   deno run -A tools/fuzz/gguf.ts --cases 30000 [--seed 1] [--workers 2] [--seconds 180]
 *   deno run -A tools/fuzz/gguf.ts --seed 1 --case 1234 [--out case.gguf]   # one case, in-process
 *
 * Prints a summary (add --json for JSON) and exits 1 when any case was an untyped error, a
 * hang, an allocation over the bound, a silent NaN or a leak.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { failureCount, HEAP_BOUND, makeCase, runCase } from "./gguf_campaign.ts";
import { runCampaign } from "./gguf_runner.ts";
import { LOAD_BUDGET } from "../../core/model/model.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    cases: { type: "string", default: "30000" },
    seed: { type: "string", default: "1" },
    workers: { type: "string" },
    seconds: { type: "string" },
    "hang-ms": { type: "string", default: "20000" },
    case: { type: "string" },
    out: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const seed = Number(a.seed);

if (a.case !== undefined) {
  const i = Number(a.case);
  if (a.out) await Deno.writeFile(a.out, (await makeCase(seed, i)).bytes);
  const r = await runCase(seed, i);
  console.log(JSON.stringify(r, null, 2));
  Deno.exit(r.outcome === "ok" || r.outcome === "typed" ? 0 : 1);
}

const cases = Number(a.cases);
const workers = Number(a.workers ?? Math.max(1, Math.min(4, navigator.hardwareConcurrency - 1)));
const rss0 = Deno.memoryUsage().rss;
let rssPeak = rss0;
const poll = setInterval(() => rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss), 200);
const t0 = performance.now();
let shown = 0;
const s = await runCampaign({
  cases,
  seed,
  workers,
  hangMs: Number(a["hang-ms"]),
  seconds: a.seconds ? Number(a.seconds) : undefined,
  onResult: (_r, done) => {
    if (!a.json && done - shown >= 5000) {
      shown = done;
      console.error(`… ${done} cases, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
  },
});
clearInterval(poll);
const bad = failureCount(s);
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
if (a.json) {
  console.log(JSON.stringify({ ...s, workers, rss0, rssPeak }, null, 2));
} else {
  const o = s.outcomes;
  console.log(
    `GGUF mutation campaign: seed ${s.seed}, ${s.cases} cases${
      s.timeBoxed ? " (time box reached)" : ""
    }, ${workers} workers, ${(s.wallMs / 1000).toFixed(1)} s`,
  );
  console.log(`  loaded and generated: ${s.generated}; typed errors: ${o.typed}`);
  console.log(
    `  untyped errors: ${o.untyped}, hangs: ${o.hang}, over bound: ${o.over_bound}, silent NaN: ${o.silent_nan}, leaks: ${o.leak}`,
  );
  console.log(
    `  bounds: slots ≤ file; loader ≤ ${LOAD_BUDGET.perFileByte}×file + ${
      MiB(LOAD_BUDGET.overheadBytes)
    }; heap+external growth ≤ ${HEAP_BOUND.perFileByte}×file + ${MiB(HEAP_BOUND.overheadBytes)}`,
  );
  console.log(
    `  peaks: slots/file ${s.maxSlotRatio.toFixed(3)}, loader/file ${
      s.maxLoadRatio.toFixed(3)
    }, heap+external growth ${MiB(s.maxHeapGrowth)} (largest file ${
      MiB(s.maxFileBytes)
    }), process RSS ${MiB(rss0)} → peak ${MiB(rssPeak)}`,
  );
  console.log(
    `  case time: p50 ${s.msP50.toFixed(1)} ms, p99 ${s.msP99.toFixed(1)} ms, max ${
      s.msMax.toFixed(0)
    } ms`,
  );
  const codes = Object.entries(s.codes).sort((x, y) => y[1] - x[1]);
  console.log(`  typed error codes: ${codes.map(([k, v]) => `${k} ${v}`).join(", ")}`);
  for (const f of s.failures) {
    console.log(
      `  FAIL case ${f.index} ${f.outcome}: ${f.ops.join(" ")}\n    ${
        f.detail?.split("\n").slice(0, 4).join("\n    ")
      }`,
    );
  }
  console.log(`${s.cases - bad} passed, ${bad} failed`);
}
Deno.exit(bad === 0 ? 0 : 1);
