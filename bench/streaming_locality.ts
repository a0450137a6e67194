/**
 * Hit rate against Belady's optimum on routing traces with locality (not a
 * test). Real MoEs route with locality (consecutive tokens reuse experts,
 * some experts are hot, an expert at one layer predicts the next layer's);
 * random-weight models route uniformly. This replays a synthesized trace
 * with those three properties through the streaming store on the bench MoE
 * (q4_0, WASM backend, local file): the default policy (LRU) with an
 * affinity prefetcher (next layer's experts predicted from this layer's,
 * table counted on a separate training trace), a fixed compute time per
 * layer between steps, and a prefetch still in flight counted as a miss
 * (the store's own counting). Belady sees the same demand trace with the
 * same capacity and no prefetch.
 *
 * ```sh
 * deno run -A bench/streaming_locality.ts [--tokens 96] [--layer-ms 4]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  affinityFromTrace,
  beladySimulate,
  createBackend,
  FileSource,
  hitRate,
  loadModel,
  type RouteTrace,
  StreamingExpertStore,
  type StreamingStoreContext,
} from "../mod.ts";
import { ensureBenchModel } from "./bench_model.ts";
import { mulberry32 } from "../core/util/rng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tokens: { type: "string", default: "96" },
    "layer-ms": { type: "string", default: "4" },
    stay: { type: "string", default: "0.6" },
    "min-prob": { type: "string", default: "0.3" },
  },
});
const N = Number(values.tokens), LAYER_MS = Number(values["layer-ms"]);
const STAY = Number(values.stay);
const MIN_PROB = Number(values["min-prob"]);
await import("../wasm/mod.ts");

const NL = 8, NE = 8, K = 2;

/** Deterministic PRNG (mulberry32, `core/util/rng.ts`). */
const rng: (seed: number) => () => number = mulberry32;

/**
 * A trace with locality: each token keeps each of its previous experts at a
 * layer with probability `stay`; otherwise draws from a Zipf(1) popularity
 * per layer, tilted towards the experts that follow its previous layer's
 * first expert (layer-to-layer affinity).
 */
function localityTrace(n: number, seed: number, stay: number): number[][][] {
  const r = rng(seed);
  const follow = Array.from(
    { length: NL },
    () => Array.from({ length: NE }, () => Math.floor(r() * NE)),
  );
  const rank = Array.from({ length: NL }, () => [...Array(NE).keys()].sort(() => r() - 0.5));
  const pick = (l: number, prevFirst: number, not: number[]): number => {
    for (;;) {
      let e: number;
      if (l > 0 && r() < 0.5) e = follow[l][prevFirst];
      else {
        const u = r() * 2.718;
        e = rank[l][Math.min(NE - 1, Math.floor(Math.exp(u) - 1))];
      }
      if (!not.includes(e)) return e;
      if (r() < 0.3) return [...Array(NE).keys()].find((x) => !not.includes(x))!;
    }
  };
  const out: number[][][] = [];
  let prev: number[][] | null = null;
  for (let t = 0; t < n; t++) {
    const tok: number[][] = [];
    for (let l = 0; l < NL; l++) {
      const chosen: number[] = [];
      for (let j = 0; j < K; j++) {
        const p = prev?.[l][j];
        chosen.push(
          p !== undefined && !chosen.includes(p) && r() < stay
            ? p
            : pick(l, tok[l - 1]?.[0] ?? 0, chosen),
        );
      }
      tok.push(chosen);
    }
    out.push(tok);
    prev = tok;
  }
  return out;
}

const bench = await ensureBenchModel("q4_0");
const src = await FileSource.open(bench.path);
let ctx: StreamingStoreContext | null = null;
const probe = await loadModel(src, {
  backend: await createBackend("wasm", { threads: 1 }),
  hooks: {
    createStore: (c) => {
      ctx = c;
      return {
        ensure() {},
        weights: () => null as never,
        stats: () => ({ hits: 0, misses: 0, evictions: 0, bytesFetched: 0, stallMs: 0 }),
      };
    },
  },
});
const expertBytes = ctx!.locations[0][0].bytes;
const train: RouteTrace = {
  format: "moe-edge.route-trace",
  version: 1,
  nLayer: NL,
  nExpert: NE,
  nExpertUsed: K,
  tokens: localityTrace(400, 1, STAY),
};
const table = affinityFromTrace(train, 0.5);
const test = localityTrace(N, 2, STAY);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

console.log(
  `Locality trace (stay ${STAY}, Zipf popularity, layer affinity), ${N} tokens × ${NL} layers, ` +
    `bench MoE q4_0 experts (${(expertBytes / 2 ** 20).toFixed(2)} MiB) from a local file, WASM, ` +
    `${LAYER_MS} ms compute per layer. Load average ${
      Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
    }.\n`,
);
console.log(
  "| budget | prefetch | hit rate | Belady | × Belady | prefetches | late (counted as misses) |",
);
console.log("|---|---|---|---|---|---|---|");
for (const frac of [0.25, 0.5]) {
  for (const prefetch of [false, true]) {
    const steps: number[][] = [];
    const store = await StreamingExpertStore.create(ctx!, {
      expertBudgetBytes: Math.floor(NL * NE * expertBytes * frac),
      onStep: (_l, keys) => steps.push([...keys]),
    });
    for (const tok of test) {
      for (let l = 0; l < NL; l++) {
        await store.ensure(l, tok[l]);
        if (prefetch && l + 1 < NL) {
          const score = new Float64Array(NE);
          for (const e of tok[l]) for (let f = 0; f < NE; f++) score[f] += table[l][e][f];
          const next = [...score.keys()].sort((a, b) => score[b] - score[a]).slice(0, K)
            .filter((f) => score[f] / tok[l].length >= MIN_PROB);
          store.prefetch(l + 1, next);
        }
        await sleep(LAYER_MS);
      }
    }
    const st = store.stats();
    const opt = beladySimulate(steps, store.capacity);
    const hr = hitRate(st);
    console.log(
      `| ${frac * 100} % | ${prefetch ? "affinity" : "—"} | ${(hr * 100).toFixed(1)} % | ${
        (opt.hitRate * 100).toFixed(1)
      } % | **${(hr / opt.hitRate).toFixed(2)}×** | ${st.prefetches} | ${st.prefetchLate} |`,
    );
    store.dispose();
  }
}
probe.dispose();
src.close();
