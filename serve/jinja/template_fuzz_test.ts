/**
 * A CI-sized mutation campaign over chat templates (the larger one is
 * `tools/fuzz/templates.ts`): every mutant of a real template either
 * renders (within the output bound) or fails with a typed
 * `ChatTemplateError`, within its time bound, without the heap growing past
 * the memory bound.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { ChatTemplateError } from "../chat_template.ts";
import { DEFAULT_RENDER_LIMITS, Template } from "./render.ts";
import { mutant } from "./template_mutations_test_util.ts";

/** The outcome of one mutant, checked against the bounds. */
function check(seed: number): "ok" | "typed" {
  const m = mutant(seed);
  const heap0 = Deno.memoryUsage().heapUsed;
  const t0 = performance.now();
  let outcome: "ok" | "typed";
  try {
    const out = new Template(m.source).render(m.vars);
    assert.ok(out.length <= DEFAULT_RENDER_LIMITS.maxOutput);
    outcome = "ok";
  } catch (e) {
    assert.ok(
      e instanceof ChatTemplateError,
      `seed ${seed}: untyped ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`,
    );
    outcome = "typed";
  }
  const ms = performance.now() - t0;
  assert.ok(
    ms < DEFAULT_RENDER_LIMITS.maxMs + 1000,
    `seed ${seed} (${m.base}): ${ms.toFixed(0)} ms`,
  );
  // heap growth (garbage included: no GC is forced) stays within the memory bound
  const grown = Deno.memoryUsage().heapUsed - heap0;
  assert.ok(
    grown < 2 * DEFAULT_RENDER_LIMITS.maxAllocated,
    `seed ${seed} (${m.base}): heap grew by ${(grown / 2 ** 20).toFixed(0)} MiB`,
  );
  return outcome;
}

Deno.test("template mutation campaign: only typed errors, no hang, no over-bound allocation", () => {
  const seen = { ok: 0, typed: 0 };
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
      seen[check(seed)]++;
    }),
    { numRuns: 150, seed: 20261207 },
  );
  // the campaign exercises both sides: mutants that still render and ones that fail
  assert.ok(seen.ok > 10 && seen.typed > 10, JSON.stringify(seen));
});

Deno.test("mutants are deterministic per seed", () => {
  assert.deepEqual(mutant(42), mutant(42));
  assert.notEqual(mutant(1).source, mutant(2).source);
});
