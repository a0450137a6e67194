/**
 * What integrity by default costs: hash throughput (hash64 against SHA-256),
 * the per-read cost of the checks on a local file, and end-to-end streamed
 * generation with `integrity: "verify"` against `"off"`, measured in one run.
 *
 * `deno run -A bench/integrity.ts`
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  FileSource,
  generateText,
  hash64,
  IntegritySource,
  loadModel,
  MemorySource,
  PinnedSource,
  sha256Hex,
} from "../mod.ts";
import { ALL_EXPERT_BYTES, modelBytes, PROMPT } from "../core/store/store_test_util.ts";

async function rate(f: () => unknown, bytes: number, ms = 800): Promise<number> {
  for (let i = 0; i < 3; i++) await f();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    await f();
    n++;
  }
  return (n * bytes) / ((performance.now() - t0) / 1000) / 1e9;
}

async function perCall(f: () => Promise<unknown>, ms = 800): Promise<number> {
  for (let i = 0; i < 20; i++) await f();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    await f();
    n++;
  }
  return ((performance.now() - t0) * 1000) / n;
}

const buf = new Uint8Array(4 << 20).map((_, i) => (i * 131 + (i >> 11)) & 255);
console.log("| hash over 4 MiB | GB/s |\n|---|---|");
console.log(
  `| hash64 (JS, 4 lanes) | ${(await rate(() => hash64(buf), buf.byteLength)).toFixed(2)} |`,
);
console.log(
  `| SHA-256 node:crypto (sync) | ${
    (await rate(() => createHash("sha256").update(buf).digest(), buf.byteLength)).toFixed(2)
  } |`,
);
console.log(
  `| SHA-256 crypto.subtle (async) | ${
    (await rate(() => sha256Hex(buf), buf.byteLength)).toFixed(2)
  } |`,
);

const big = new Uint8Array(64 << 20).map((_, i) => (i * 131 + (i >> 13)) & 255);
const pinRate = await rate(() => PinnedSource.pin(new MemorySource(big)), big.byteLength, 1500);
console.log(
  `| pin (SHA-256 + hash64 per 64 KiB block), 64 MiB in memory | ${pinRate.toFixed(2)} |`,
);

const path = await Deno.makeTempFile({ suffix: ".gguf" });
try {
  await Deno.writeFile(path, new Uint8Array(8 << 20).map((_, i) => i & 255));
  console.log("\n| one read from a local file (page cache) | off µs | verify µs |\n|---|---|---|");
  for (const size of [26_112, 1 << 20, 4 << 20]) {
    const off = await FileSource.open(path, { checkChanges: false });
    const on = new IntegritySource(await FileSource.open(path));
    const a = await perCall(() => off.read(4096, size));
    const b = await perCall(() => on.read(4096, size));
    console.log(`| ${size} B | ${a.toFixed(1)} | ${b.toFixed(1)} |`);
    off.close();
    await on.close();
  }
  await Deno.writeFile(path, modelBytes());
  console.log(
    "\n| streamed generation, 25 % expert budget, test model from a file | off ms | verify ms |\n|---|---|---|",
  );
  const times: Record<string, number[]> = { off: [], verify: [] };
  for (let i = 0; i < 6; i++) {
    for (const mode of ["off", "verify"] as const) {
      const t0 = performance.now();
      const m = await loadModel(path, {
        backend: "ref",
        integrity: mode,
        expertBudgetBytes: ALL_EXPERT_BYTES / 4,
      });
      await generateText(m, PROMPT, { maxTokens: 24, temperature: 0 });
      m.dispose();
      times[mode].push(performance.now() - t0);
    }
  }
  const med = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  console.log(
    `| load + 24 tokens (median of 6) | ${med(times.off).toFixed(1)} | ${
      med(times.verify).toFixed(1)
    } |`,
  );
} finally {
  await Deno.remove(path);
}
