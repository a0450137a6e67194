/**
 * `quantize-experts`: write the per-expert plan and the low-bit copies of a
 * model's experts (a side GGUF), with the side file's expert manifest.
 *
 * ```sh
 * deno run -A plugins/quant-experts/quantize.ts --model m.gguf --mode hobbit --type q2_k --out m.q2_k.gguf
 * deno run -A plugins/quant-experts/quantize.ts --model m.gguf --mode edgemoe --memory-mb 40 --out m.edge.gguf
 * ```
 *
 * Writes `OUT`, `OUT.manifest.json` (an expert manifest over the copies:
 * give it as the copies' manifest) and `OUT.plan.json` (types per expert).
 * `edgemoe`/`mc-moe` measure routing on `--calib` tokens (default: the
 * model's own greedy continuation of a fixed prompt).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { FileSource, generateText, ggmlTypeName, loadModel, parseGgmlType } from "../../mod.ts";
import {
  expertLocations,
  planExperts,
  type QuantMode,
  routingStats,
  writeExpertCopies,
} from "./mod.ts";

/** Run the tool on `args`; returns the plan summary. */
export async function quantizeExpertsCli(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      mode: { type: "string", default: "hobbit" },
      type: { type: "string", default: "q2_k" },
      "memory-mb": { type: "string" },
      alpha: { type: "string" },
      out: { type: "string" },
      "calib-tokens": { type: "string", default: "256" },
    },
  });
  const mode = values.mode as QuantMode;
  if (!["hobbit", "edgemoe", "mc-moe"].includes(mode)) {
    throw new Error(`--mode must be hobbit, edgemoe or mc-moe: received ${values.mode}`);
  }
  if (!values.model || !values.out) throw new Error("--model and --out are required");
  const type = parseGgmlType(values.type!);
  if (type === undefined) throw new Error(`Unknown --type ${values.type}`);
  const src = await FileSource.open(values.model);
  try {
    const locations = await expertLocations(src);
    let stats;
    if (mode !== "hobbit") {
      const model = await loadModel(src, { backend: "auto" });
      const n = Number(values["calib-tokens"]);
      const out = await generateText(model, [1], { maxTokens: n, temperature: 0.8, seed: 1 });
      stats = await routingStats(model, [1, ...out.tokens]);
      model.dispose();
    }
    const memoryBytes = values["memory-mb"] === undefined
      ? undefined
      : Math.floor(Number(values["memory-mb"]) * 2 ** 20);
    const plan = planExperts(locations, {
      mode,
      type,
      memoryBytes,
      alpha: values.alpha === undefined ? undefined : Number(values.alpha),
    }, stats);
    const { gguf, manifest } = await writeExpertCopies(src, locations, plan);
    await Deno.writeFile(values.out, gguf);
    await Deno.writeTextFile(`${values.out}.manifest.json`, JSON.stringify(manifest));
    await Deno.writeTextFile(
      `${values.out}.plan.json`,
      JSON.stringify({
        mode,
        bytes: plan.bytes,
        types: plan.types.map((r) => r.map((t) => ggmlTypeName(t))),
      }),
    );
    const counts = new Map<string, number>();
    for (const t of plan.types.flat()) {
      counts.set(ggmlTypeName(t), (counts.get(ggmlTypeName(t)) ?? 0) + 1);
    }
    return `${mode}: ${[...counts].map(([t, n]) => `${n}× ${t}`).join(", ")}; ${
      (plan.bytes / 2 ** 20).toFixed(2)
    } MiB of copies → ${values.out}`;
  } finally {
    src.close();
  }
}

if (import.meta.main) console.log(await quantizeExpertsCli(Deno.args));
