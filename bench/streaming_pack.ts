/**
 * What a streamed expert's compute costs on the WASM backend (not a test):
 * one Q4_0 matrix of the bench MoE's shape (2816×1024) matvec'd in the
 * standard layout (a lazily prepared slot, as streamed experts are), repacked
 * in place (`prepareWeights`), then matvec'd packed. Minimum of N rounds, so
 * preemption on a shared machine drops out. Decides when repacking pays:
 * with pack ≈ p, unpacked ≈ s and packed ≈ k per use, packing at load wins
 * from u uses on where p + k·u < s·u.
 *
 * ```sh
 * deno run -A bench/streaming_pack.ts [rounds]
 * ```
 *
 * @module
 */

import { createWasmBackend } from "../wasm/backend.ts";
import { GgmlType } from "../mod.ts";

const ROUNDS = Number(Deno.args[0] ?? 30);
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
