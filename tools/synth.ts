/**
 * Write a real-size synthetic MoE model (random weights, real shape, llama.cpp
 * type mix) to disk, streaming (little RAM however large the file):
 *
 * ```sh
 * deno run -A tools/synth.ts --preset qwen3-30b-a3b --mix Q4_K_M --out qwen3.gguf
 * deno run -A tools/synth.ts --preset olmoe-1b-7b --layers 2 --out small.gguf   # reduced depth
 * deno run -A tools/synth.ts --list
 * ```
 *
 * Options: `--preset NAME`, `--mix Q4_K_M|Q3_K_M|Q2_K` (default Q4_K_M),
 * `--out FILE`, `--layers N`, `--experts N`, `--vocab N`, `--seed N`, `--list`.
 *
 * @module
 */

import { PRESET_MIXES, PRESETS, presetSpec } from "../core/model/presets.ts";
import type { QuantMix } from "../core/model/synthetic.ts";
import { streamHeader, writeSyntheticFile } from "../core/model/synthetic_stream.ts";

/** Parsed command line. */
export interface SynthArgs {
  /** Preset name. */
  preset?: string;
  /** Type mix. */
  mix: QuantMix;
  /** Output path. */
  out?: string;
  /** Reduced depth. */
  layers?: number;
  /** Reduced expert count. */
  experts?: number;
  /** Vocabulary override. */
  vocab?: number;
  /** Seed. */
  seed?: number;
  /** List presets and exit. */
  list: boolean;
}

/** Parse `args`; throws an `Error` naming the bad flag. */
export function parseSynthArgs(args: readonly string[]): SynthArgs {
  const r: SynthArgs = { mix: "Q4_K_M", list: false };
  const int = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < 1) {
      throw new Error(`${flag} needs a positive integer: received ${v}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[i + 1];
    switch (a) {
      case "--list":
        r.list = true;
        break;
      case "--preset":
        r.preset = v;
        i++;
        break;
      case "--mix":
        if (!PRESET_MIXES.includes(v as QuantMix)) {
          throw new Error(`--mix must be one of ${PRESET_MIXES.join(", ")}: received ${v}`);
        }
        r.mix = v as QuantMix;
        i++;
        break;
      case "--out":
        r.out = v;
        i++;
        break;
      case "--layers":
        r.layers = int(a, v);
        i++;
        break;
      case "--experts":
        r.experts = int(a, v);
        i++;
        break;
      case "--vocab":
        r.vocab = int(a, v);
        i++;
        break;
      case "--seed":
        r.seed = int(a, v);
        i++;
        break;
      default:
        throw new Error(`unknown flag ${a}`);
    }
  }
  if (!r.list && (r.preset === undefined || r.out === undefined)) {
    throw new Error("needs --preset NAME and --out FILE (or --list)");
  }
  return r;
}

async function main(): Promise<number> {
  let a: SynthArgs;
  try {
    a = parseSynthArgs(Deno.args);
  } catch (e) {
    console.error(`synth: ${(e as Error).message}`);
    return 2;
  }
  if (a.list) {
    for (const [name, p] of Object.entries(PRESETS)) {
      const gb = (m: QuantMix) =>
        (streamHeader(presetSpec(name, { mix: m })).dataBytes / 1e9).toFixed(2);
      console.log(
        `${name.padEnd(22)} ${p.model.padEnd(42)} ${
          PRESET_MIXES.map((m) => `${m} ${gb(m)} GB`).join("  ")
        }`,
      );
    }
    return 0;
  }
  const spec = presetSpec(a.preset!, a);
  const t0 = performance.now();
  let last = -1;
  const r = await writeSyntheticFile(a.out!, spec, (w, total) => {
    const pct = Math.floor((100 * w) / total);
    if (pct !== last) {
      last = pct;
      Deno.stderr.writeSync(new TextEncoder().encode(`\rsynth ${a.out}: ${pct}%`));
    }
  });
  const s = (performance.now() - t0) / 1000;
  console.error(
    `\nwrote ${a.out}: ${(r.bytes / 1e9).toFixed(3)} GB, ${r.tensors} tensors, ${s.toFixed(1)} s ` +
      `(${(r.bytes / 1e6 / s).toFixed(0)} MB/s)`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
