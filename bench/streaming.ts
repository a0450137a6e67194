/**
 * Expert streaming benchmark (not a test). A synthesized MoE whose experts
 * dominate its bytes runs at expert budgets of 100/50/25 % from a local file
 * and from nginx over HTTP loopback, with LRU and LFU, each without and with
 * next-layer prefetch. For each run: decode tok/s relative to the fully
 * resident model (same backend, measured right before each run), hit rate, and hit rate relative
 * to Belady's optimum on the same access trace. Prints a markdown table.
 *
 * ```sh
 * deno run -A bench/streaming.ts [--backend ref|wasm] [--tokens 48] [--repeats 2]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  beladySimulate,
  type ByteSource,
  type CachePolicy,
  createBackend,
  FileSource,
  generateText,
  GgmlType,
  hitRate,
  HttpSource,
  loadModel,
  type Model,
  prefetchAccuracy,
  type Prefetcher,
  type StreamingExpertStore,
  synthesizeModel,
} from "../mod.ts";
import { createLruPolicy } from "../plugins/cache-lru/mod.ts";
import { createLfuPolicy } from "../plugins/cache-lfu/mod.ts";
import { createNextLayerPrefetcher } from "../plugins/prefetch-next-layer/mod.ts";
import { findNginx, startNginx } from "../tests/streaming/nginx.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "ref" },
    tokens: { type: "string", default: "48" },
    repeats: { type: "string", default: "2" },
  },
});
const N_TOKENS = Number(values.tokens);
const REPEATS = Number(values.repeats);
if (values.backend === "wasm") await import("../wasm/mod.ts");

const SPEC = {
  nEmbd: 256,
  nLayer: 4,
  nExpert: 16,
  nExpertUsed: 2,
  nFf: 512,
  type: GgmlType.Q8_0,
  seed: 5,
};
const PROMPT = [1, 20, 300, 41, 5, 160, 77, 8];

interface Run {
  tokPerS: number;
  tokens: number[];
  model: Model;
}

async function run(
  src: ByteSource,
  budget?: number,
  policy?: () => CachePolicy,
  prefetch?: () => Prefetcher,
  steps?: number[][],
): Promise<Run> {
  let best: Run | null = null;
  for (let r = 0; r < REPEATS; r++) {
    const rec: number[][] = [];
    const model = await loadModel(src, {
      backend: await createBackend(values.backend),
      expertBudgetBytes: budget,
      streaming: budget === undefined ? undefined : {
        policy: policy?.(),
        prefetcher: prefetch?.(),
        onStep: (_l, keys) => rec.push([...keys]),
      },
    });
    const out = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    if (!best || out.timings.decodeTokensPerS > best.tokPerS) {
      best?.model.dispose();
      best = { tokPerS: out.timings.decodeTokensPerS, tokens: out.tokens, model };
      if (steps) steps.splice(0, steps.length, ...rec);
    } else model.dispose();
  }
  return best!;
}

const fmt = (x: number, d = 2): string => x.toFixed(d);

const bytes = synthesizeModel(SPEC);
const dir = await Deno.makeTempDir({ prefix: "moe-edge-bench-" });
const path = `${dir}/bench.gguf`;
await Deno.writeFile(path, bytes);
const sources: [string, () => Promise<ByteSource>][] = [["file", () => FileSource.open(path)]];
const nginx = findNginx() ? await startNginx({ "bench.gguf": bytes }) : null;
if (nginx) sources.push(["http", () => HttpSource.open(`${nginx.baseUrl}bench.gguf`)]);

try {
  const fileSrc = await FileSource.open(path);
  await run(fileSrc); // warm-up (JIT)
  const resident = await run(fileSrc);
  const experts = resident.model.transformer.weights.layers.flatMap((l) => l.experts);
  const expertBytes = experts.reduce((a, e) => a + e.bytes, 0);
  const rows: string[] = [];
  const checks: string[] = [];
  for (const [sname, open] of sources) {
    const src = await open();
    for (const frac of [1, 0.5, 0.25]) {
      const budget = Math.floor(expertBytes * frac);
      for (
        const [pname, policy] of [["lru", () => createLruPolicy()], [
          "lfu",
          () => createLfuPolicy(),
        ]] as const
      ) {
        for (const withPrefetch of [false, true]) {
          // resident speed measured right before, so machine-load drift cancels in the ratio
          const base = await run(fileSrc);
          base.model.dispose();
          const steps: number[][] = [];
          const r = await run(
            src,
            budget,
            policy,
            withPrefetch ? () => createNextLayerPrefetcher() : undefined,
            steps,
          );
          if (r.tokens.join() !== resident.tokens.join()) {
            throw new Error(`tokens differ: ${sname} ${frac} ${pname}`);
          }
          const store = r.model.store as StreamingExpertStore;
          const st = store.stats();
          const opt = beladySimulate(steps, store.capacity);
          const rel = r.tokPerS / base.tokPerS;
          const hr = hitRate(st);
          const covered = (st.hits + (st.prefetchLate ?? 0)) / (st.hits + st.misses);
          rows.push(
            `| ${sname} | ${frac * 100}% | ${pname} | ${withPrefetch ? "next-layer" : "—"} | ${
              fmt(r.tokPerS, 1)
            } | ${fmt(base.tokPerS, 1)} | ${fmt(rel)}× | ${fmt(hr * 100, 1)}% | ${
              fmt(opt.hitRate * 100, 1)
            }% | ${fmt(hr / opt.hitRate)}× | ${
              withPrefetch ? `${fmt(covered * 100, 1)}% (${fmt(covered / opt.hitRate)}×)` : "—"
            } | ${withPrefetch ? `${fmt(prefetchAccuracy(st) * 100, 0)}%` : "—"} | ${
              fmt(st.stallMs / (N_TOKENS + PROMPT.length), 2)
            } |`,
          );
          if (sname === "file" && frac === 0.25 && pname === "lru" && !withPrefetch) {
            checks.push(
              `- 25 % budget, local file, LRU: ${fmt(rel)}× resident decode speed (target ≥ 0.5×)`,
            );
          }
          if (frac === 0.25 && pname === "lru" && withPrefetch) {
            checks.push(
              `- 25 % budget, ${sname}, LRU + prefetch: ${
                fmt(hr / opt.hitRate)
              }× Belady hit rate, ${
                fmt(covered / opt.hitRate)
              }× counting prefetches still in flight (target ≥ 0.9×)`,
            );
          }
          r.model.dispose();
        }
      }
    }
    await src.close?.();
  }
  console.log(
    `Expert streaming, backend '${values.backend}', synthesized ${
      SPEC.type === GgmlType.Q8_0 ? "Q8_0" : ""
    } MoE ` +
      `(n_embd ${SPEC.nEmbd}, ${SPEC.nLayer} layers × ${SPEC.nExpert} experts, top-${SPEC.nExpertUsed}, ff ${SPEC.nFf}): ` +
      `${experts.length} experts × ${experts[0].bytes} B = ${fmt(expertBytes / 2 ** 20)} MiB of ${
        fmt(bytes.length / 2 ** 20)
      } MiB. ` +
      `Prompt ${PROMPT.length} tokens, ${N_TOKENS} greedy tokens, best of ${REPEATS}. ` +
      `Fully resident: ${fmt(resident.tokPerS, 1)} tok/s.${
        nginx ? "" : " (nginx not installed: no HTTP rows)"
      }\n`,
  );
  console.log(
    "| source | budget | policy | prefetch | decode tok/s | resident tok/s | × resident | hit rate | Belady | × Belady | hit + in-flight prefetch (× Belady) | prefetch accuracy | stall ms/token |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(r);
  console.log(`\n${checks.join("\n")}`);
  resident.model.dispose();
  fileSrc.close();
} finally {
  await nginx?.stop();
  await Deno.remove(dir, { recursive: true });
}
