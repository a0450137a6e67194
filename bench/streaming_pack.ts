/**
 * What a streamed expert's compute costs on the WASM backend (not a test):
 * one Q4_0 matrix of the bench MoE's shape (2816×1024) matvec'd in the
 * standard layout (a lazily prepared slot, as streamed experts are), repacked
 * in place (`prepareWeights`), then matvec'd packed. Minimum of N rounds, so
 * preemption on a shared machine drops out. Decides when repacking pays:
 * with pack ≈ p, unpacked ≈ s and packed ≈ k per use, packing at load wins
 * from u uses on where p + k·u < s·u.
 *
 * With `--model`, also the bench MoE fully resident with and without
 * repacking (`packWeights: false`: every matmul in the standard layout, as
 * streamed experts used once compute), best of 3 alternated pairs.
 *
 * ```sh
 * deno run -A bench/streaming_pack.ts [rounds] [--model]
 * ```
 *
 * @module
 */

import { createWasmBackend } from "../wasm/backend.ts";
import { FileSource, generateText, GgmlType, loadModel } from "../mod.ts";
import { ensureBenchModel } from "./bench_model.ts";

const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 30);
const be = await createWasmBackend();
const rows = 2816, cols = 1024;
const bytes = new Uint8Array(rows * (cols / 32) * 18);
for (let i = 0; i < bytes.length; i++) bytes[i] = Math.imul(i, 2654435761) >>> 24;
// every block scale 0.01 (f16 0x211f), so the packed layout's finite-scale check passes
for (let b = 0; b < (rows * cols) / 32; b++) {
  bytes[b * 18] = 0x1f;
  bytes[b * 18 + 1] = 0x21;
}
const x = new Float32Array(cols).map((_, i) => Math.sin(i));
const out = new Float32Array(rows);
const min: Record<string, number> = {};
const time = (k: string, f: () => unknown): void => {
  const t0 = performance.now();
  f();
  min[k] = Math.min(min[k] ?? Infinity, performance.now() - t0);
};
for (let r = 0; r < ROUNDS; r++) {
  const slot = be.allocSlot(bytes.length, { lazyPrepare: true });
  be.writeSlot(slot, 0, bytes);
  const w = { slot, offset: 0, type: GgmlType.Q4_0, rows, cols };
  time("matvec, standard layout", () => be.matmul(w, x, 1, out));
  time("repack in place", () => be.prepareWeights(w));
  time("matvec, packed", () => be.matmul(w, x, 1, out));
  be.freeSlot(slot);
}
const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
console.log(
  `Q4_0 ${rows}×${cols}, WASM (${be.variant}), min of ${ROUNDS}; ${cpu}; load average ${
    Deno.loadavg().map((v) => v.toFixed(2)).join(" ")
  }`,
);
for (const [k, v] of Object.entries(min)) console.log(`${k.padEnd(26)} ${v.toFixed(3)} ms`);
const s = min["matvec, standard layout"], p = min["repack in place"], k = min["matvec, packed"];
console.log(`repacking at load pays from ${(p / (s - k)).toFixed(2)} uses on`);

if (Deno.args.includes("--model")) {
  const bench = await ensureBenchModel("q4_0");
  const best = { packed: 0, standard: 0 };
  for (let pair = 0; pair < 3; pair++) {
    for (const packWeights of [true, false]) {
      const src = await FileSource.open(bench.path);
      const m = await loadModel(src, { backend: await createWasmBackend({ packWeights }) });
      const r = await generateText(m, [1, 20, 300, 41, 5, 160, 77, 8], {
        maxTokens: 24,
        temperature: 0,
      });
      const k = packWeights ? "packed" : "standard";
      best[k] = Math.max(best[k], r.timings.decodeTokensPerS);
      m.dispose();
      src.close();
    }
  }
  console.log(
    `bench MoE q4_0 resident decode, best of 3 pairs: packed ${best.packed.toFixed(1)} tok/s, ` +
      `standard layout ${best.standard.toFixed(1)} tok/s (${
        (best.standard / best.packed).toFixed(2)
      }×); load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`,
  );
}
