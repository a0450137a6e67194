/**
 * The thread-count settings outside the backend: CLI `--threads` parsing and
 * the server's `MOE_EDGE_THREADS` (range checks, default = CPU count).
 */
import { equal, throws } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { InvalidArgumentError } from "npm:commander@^14.0.3";
import { parseThreads } from "../cli/options.ts";
import { ConfigError, readConfig } from "../serve/config.ts";

Deno.test("--threads accepts integers 1-64 and refuses everything else", () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), (n) => equal(parseThreads(String(n)), n)));
  for (const bad of ["0", "-1", "65", "1.5", "two", ""]) {
    throws(() => parseThreads(bad), InvalidArgumentError, bad);
  }
});

Deno.test("MOE_EDGE_THREADS: 1-64, a ConfigError otherwise, default the CPU count", () => {
  const cfg = (v: string | undefined) =>
    readConfig((k) => (k === "MOE_EDGE_THREADS" ? v : undefined));
  fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), (n) => equal(cfg(String(n)).threads, n)));
  for (const bad of ["0", "65", "-2", "x", "2.5"]) throws(() => cfg(bad), ConfigError, bad);
  equal(cfg(undefined).threads, Math.max(1, Math.min(64, navigator.hardwareConcurrency || 1)));
});

Deno.test("loadModel and createBackend('wasm') default to the CPU count; threads: 1 stays on one thread", async () => {
  await import("./register.ts");
  const { loadModel } = await import("../core/model/model.ts");
  const { createBackend } = await import("../core/backend/registry.ts");
  const { defaultModelBytes } = await import("../core/model/default_model.ts");
  const { generateText } = await import("../core/generate/generate.ts");
  const { defaultThreads } = await import("./threads.ts");
  const { sharedMemorySupported } = await import("./pkg/moe_edge_kernels.ts");
  const want = defaultThreads(sharedMemorySupported());
  const threadsOf = (b: object) => (b as { threads?: number }).threads ?? 1;
  const bytes = defaultModelBytes();
  const auto = await loadModel(bytes, { backend: "wasm" });
  const one = await loadModel(bytes, { backend: "wasm", threads: 1 });
  try {
    equal(threadsOf(auto.backend), want);
    equal(threadsOf(one.backend), 1);
    // results do not depend on the count
    const a = await generateText(auto, "Once upon a time", { maxTokens: 6 });
    const b = await generateText(one, "Once upon a time", { maxTokens: 6 });
    equal(a.text, b.text);
  } finally {
    auto.dispose();
    one.dispose();
  }
  const be = await createBackend("wasm");
  try {
    equal(threadsOf(be), want);
  } finally {
    be.dispose();
  }
});
