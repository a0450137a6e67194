/**
 * The integrity campaign (see integrity_campaign.ts) as a test: with no
 * manifest, every run against a server or file whose bytes change gives the
 * resident tokens or a typed `StoreError` — never wrong tokens.
 */

import assert from "node:assert/strict";
import {
  ASSERTED,
  campaignRun,
  type RunResult,
  tally,
} from "../../tools/fuzz/integrity_campaign.ts";

const SEEDS = 8;

Deno.test(`integrity campaign: ${ASSERTED.length} scenarios × ${SEEDS} seeds, never wrong tokens`, async () => {
  const results: RunResult[] = [];
  for (const s of ASSERTED) {
    for (let seed = 1; seed <= SEEDS; seed++) results.push(await campaignRun(s, seed));
  }
  const bad = results.filter((r) => r.outcome === "wrong" || r.outcome === "untyped");
  assert.deepEqual(bad, [], "no run gave wrong tokens or an untyped error");
  const t = tally(results);
  for (const s of ASSERTED) {
    assert.ok(t.get(s)!.typed > 0, `${s}: the change was caught at least once`);
  }
  // the default refuses a server that cannot say its file changed
  assert.equal(t.get("no-validator")!.typed, SEEDS);
  for (const r of results.filter((r) => r.scenario === "no-validator")) {
    assert.equal(r.detail, "no_validator");
  }
});
