/**
 * The memory-read ceiling of the machine: GB/s of a read-only WASM SIMD
 * stream (the one `matvec.ts` uses: four v128 loads per 64 bytes XOR-ed into
 * four accumulators) over a buffer far larger than the last-level cache, on
 * one thread alone, then on this thread and a worker at once (each over its
 * own buffer). The 2-thread / 1-thread ratio is the most any memory-bound
 * 2-thread speed-up (decode reading its weights) can reach on this machine;
 * run it next to `cpu_ceiling.ts` (compute) before reading a threads figure.
 *
 *   deno run -A wasm/bench/bw_ceiling.ts [--mb 256] [--rounds 5]
 *
 * @module
 */

import { cpuModel } from "./bench_args.ts";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import { parseArgs } from "node:util";

/** `read(p, n)`: XOR of the 16-byte words of [p, p+n), n a multiple of 64 (clang-19 -O2 -msimd128). */
const STREAM_WASM =
  "AGFzbQEAAAABBwFgAn9/AX8CDwEDZW52Bm1lbW9yeQIAAgMCAQAEBQFwAQEBBggBfwFBgIgECwcIAQRyZWFkAAAKnQEBmgEBBHsCQCABQQFODQD9DAAAAAAAAAAAAAAAAAAAAAD9GwAPCyAAIAFqIQH9DAAAAAAAAAAAAAAAAAAAAAAiAiEDIAIhBCACIQUDQCAA/QAAMCAC/VEhAiAA/QAAICAD/VEhAyAA/QAAECAE/VEhBCAA/QAAACAF/VEhBSAAQcAAaiIAIAFJDQALIAQgBf1RIAP9USAC/VH9GwAL";

/** A reader over its own `mb` MiB buffer: `pass()` streams it once and returns ms. */
export function makeReader(mb: number): { pass(): number; bytes: number } {
  const bytes = mb << 20;
  const memory = new WebAssembly.Memory({ initial: (bytes >> 16) + 2 });
  const u8 = new Uint8Array(memory.buffer);
  for (let i = 65536; i < u8.length; i += 4096) u8[i] = i & 255; // touch every page
  const inst = new WebAssembly.Instance(
    new WebAssembly.Module(Uint8Array.from(atob(STREAM_WASM), (c) => c.charCodeAt(0))),
    { env: { memory } },
  ).exports as { read(p: number, n: number): number };
  return {
    bytes,
    pass() {
      const t0 = performance.now();
      inst.read(65536, bytes);
      return performance.now() - t0;
    },
  };
}

if (!isMainThread) {
  let reader: ReturnType<typeof makeReader> | null = null;
  parentPort!.on("message", (m: { mb?: number; passes?: number }) => {
    if (m.mb !== undefined) reader = makeReader(m.mb);
    let ms = 0;
    for (let i = 0; i < (m.passes ?? 0); i++) ms += reader!.pass();
    parentPort!.postMessage(ms);
  });
} else if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { mb: { type: "string", default: "256" }, rounds: { type: "string", default: "5" } },
  });
  const mb = Number(values.mb), rounds = Number(values.rounds), passes = 4;
  const cpu = cpuModel();
  console.log(`CPU: ${cpu}; load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  const me = makeReader(mb);
  const w = new Worker(new URL(import.meta.url));
  const ask = (m: object) =>
    new Promise<number>((r) => {
      w.once("message", r);
      w.postMessage(m);
    });
  await ask({ mb, passes: 1 });
  me.pass();
  let one = 0, two = 0;
  for (let k = 0; k < rounds; k++) {
    let t0 = performance.now();
    for (let i = 0; i < passes; i++) me.pass();
    one = Math.max(one, (passes * me.bytes) / (performance.now() - t0) / 1e6);
    t0 = performance.now();
    const p = ask({ passes });
    for (let i = 0; i < passes; i++) me.pass();
    await p;
    two = Math.max(two, (2 * passes * me.bytes) / (performance.now() - t0) / 1e6);
  }
  await w.terminate();
  console.log(
    `read stream over ${mb} MiB per thread: 1 thread ${one.toFixed(1)} GB/s, 2 threads ${
      two.toFixed(1)
    } GB/s (${(two / one).toFixed(2)}×)`,
  );
}
