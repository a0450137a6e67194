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
