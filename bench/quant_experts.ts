/**
 * Quantized experts on the embedded trained default model (not a test):
 * memory, decode speed and quality of the three `quant-experts` modes
 * against full precision (its Q8_0 experts, fully resident).
 *
 * - quality: perplexity of a fixed story text (teacher-forced, token by
 *   token) and agreement = share of positions whose argmax equals the full
 *   model's on the same text;
 * - memory: bytes of expert weights held (budget + copies);
 * - speed: decode tok/s against the full model measured right before.
 *
 * The default model's matrices are 128 wide: K-quants (256-wide blocks)
 * cannot hold them, so its low-bit types are Q4_0 (4.5 bits) and Q5_0
 * (5.5 bits) under its Q8_0 (8.5 bits).
 *
 * ```sh
 * deno run -A bench/quant_experts.ts [--backend wasm]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createBackend,
  generateText,
  GgmlType,
  ggmlTypeName,
  loadModel,
  type LoadModelOptions,
  MemorySource,
  type Model,
  Session,
  type StreamingExpertStore,
} from "../mod.ts";
import {
  copyPlan,
  expertLocations,
  type ExpertPlan,
  planExperts,
  routingStats,
  skipRoute,
} from "../plugins/quant-experts/mod.ts";
import { defaultModelBytes } from "../core/model/default_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "wasm" },
    tokens: { type: "string", default: "200" },
  },
});
if (values.backend === "wasm") await import("../wasm/mod.ts");
const N_TOKENS = Number(values.tokens);

const TEXT =
  "The little fox woke up early and went to the field. It saw a red shell. It was happy.";
const CALIB =
  "Once upon a time a cat lived in a small house. Every day it walked to the park and met a dog.";

const bytes = defaultModelBytes();
const src = new MemorySource(bytes);
const locations = await expertLocations(src);
const expertBytes = locations.flat().reduce((a, l) => a + l.bytes, 0);
const fmt = (x: number, d = 2): string => x.toFixed(d);

async function load(opts: LoadModelOptions = {}): Promise<Model> {
  return await loadModel(bytes, {
    backend: await createBackend(values.backend, { threads: 1 }),
    ...opts,
  });
}

/** Log-likelihoods and argmaxes of `ids` fed one by one. */
async function teacher(model: Model, ids: number[]): Promise<{ nll: number[]; argmax: number[] }> {
  const s = new Session(model);
  const nll: number[] = [], argmax: number[] = [];
  let logits = await s.eval([ids[0]]);
  for (let i = 1; i < ids.length; i++) {
    let max = -Infinity, best = 0;
    for (let v = 0; v < logits.length; v++) {
      if (logits[v] > max) {
        max = logits[v];
        best = v;
      }
    }
    let z = 0;
    for (let v = 0; v < logits.length; v++) z += Math.exp(logits[v] - max);
    nll.push(-(logits[ids[i]] - max - Math.log(z)));
    argmax.push(best);
    logits = await s.eval([ids[i]]);
  }
  s.dispose();
  return { nll, argmax };
}

/** Decode tok/s of one greedy run. */
async function speed(model: Model): Promise<number> {
  const out = await generateText(model, [1, 40, 50], { maxTokens: N_TOKENS, temperature: 0 });
  return out.timings.decodeTokensPerS;
}

const full = await load();
// the text: the README's story opening, then the full model's own sampled continuation (in distribution)
const opening = full.tokenizer.encode(TEXT);
const sampled = await generateText(full, opening, { maxTokens: 96, temperature: 0.8, seed: 3 });
const ids = [...opening, ...sampled.tokens];
const ref = await teacher(full, ids);
const stats = await routingStats(full, full.tokenizer.encode(CALIB));
await speed(full); // warm-up
full.dispose();
const ppl = (nll: number[]) => Math.exp(nll.reduce((a, b) => a + b, 0) / nll.length);

interface Row {
  name: string;
  memory: number;
  opts: LoadModelOptions;
  detail: string;
}
const k = 2, one = locations[0][0].bytes;
const target = Math.floor(expertBytes * 0.6);
const ladder = [GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q8_0];
const edge = planExperts(locations, { mode: "edgemoe", memoryBytes: target, ladder }, stats);
const mc = planExperts(locations, { mode: "mc-moe", memoryBytes: target, ladder }, stats);
const hobbit = planExperts(locations, { mode: "hobbit", type: GgmlType.Q4_0 });
const mix = (p: ExpertPlan) => {
  const c = new Map<string, number>();
  for (const t of p.types.flat()) c.set(ggmlTypeName(t), (c.get(ggmlTypeName(t)) ?? 0) + 1);
  return [...c].map(([t, n]) => `${n}× ${t}`).join(", ");
};
const replace = (p: ExpertPlan): LoadModelOptions["streaming"] => ({
  fallbackCopies: { plan: copyPlan(p), criticalWeight: Infinity, loadOnFallback: false },
});
const rows: Row[] = [
  { name: "full precision (Q8_0, resident)", memory: expertBytes, opts: {}, detail: "—" },
  {
    name: "HOBBIT: 25 % budget + Q4_0 copies (critical ≥ 0.8 waits)",
    memory: Math.floor(expertBytes * 0.25) + hobbit.bytes,
    opts: {
      expertBudgetBytes: Math.floor(expertBytes * 0.25),
      streaming: { fallbackCopies: { type: GgmlType.Q4_0 } },
    },
    detail: mix(hobbit),
  },
  {
    name: "EdgeMoE: per-expert widths by importance, 60 % target",
    memory: edge.bytes,
    opts: { expertBudgetBytes: k * one, streaming: replace(edge) },
    detail: mix(edge),
  },
  {
    name: "MC-MoE: frequency + gate weight widths, 60 % target",
    memory: mc.bytes,
    opts: { expertBudgetBytes: k * one, streaming: replace(mc) },
    detail: mix(mc),
  },
  {
    name: "MC-MoE + skip experts with weight < 0.3",
    memory: mc.bytes,
    opts: {
      expertBudgetBytes: k * one,
      streaming: replace(mc),
      hooks: {
        wrapRouter: (r) => ({
          name: `${r.name}+skip`,
          route: (logits, layer, out) => skipRoute(r.route(logits, layer, out), 0.3),
        }),
      },
    },
    detail: mix(mc),
  },
];

console.log(
  `Quantized experts on the default model (${values.backend}; ${
    fmt(expertBytes / 2 ** 20)
  } MiB of Q8_0 experts), ${ids.length} text tokens teacher-forced, speed over ${N_TOKENS} greedy tokens. ` +
    `Load average ${
      Deno.loadavg().map((x) => fmt(x)).join(" ")
    } on ${navigator.hardwareConcurrency} CPUs.\n`,
);
console.log(
  "| mode | expert memory | × full | decode tok/s | full tok/s | × full speed | perplexity (full " +
    fmt(ppl(ref.nll), 3) + ") | agreement | fallback uses / misses | plan |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  // alternate the two models five times and keep each one's best (a tiny model: noise dominates)
  const base = await load();
  const m = await load(r.opts);
  let baseTps = 0, tps = 0;
  for (let i = 0; i < 5; i++) {
    baseTps = Math.max(baseTps, await speed(base));
    tps = Math.max(tps, await speed(m));
  }
  base.dispose();
  m.dispose();
  const q = await load(r.opts);
  const t = await teacher(q, ids);
  const st = (q.store as StreamingExpertStore).stats();
  q.dispose();
  const agree = t.argmax.filter((a, i) => a === ref.argmax[i]).length / t.argmax.length;
  console.log(
    `| ${r.name} | ${fmt(r.memory / 2 ** 20)} MiB | ${fmt(r.memory / expertBytes)} | ${
      fmt(tps, 1)
    } | ${fmt(baseTps, 1)} | ${fmt(tps / baseTps)}× | ${fmt(ppl(t.nll), 3)} | ${
      fmt(agree * 100, 1)
    } % | ${st.fallbackHits ?? 0} / ${st.misses} | ${r.detail} |`,
  );
}
