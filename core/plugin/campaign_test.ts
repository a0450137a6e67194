/**
 * The plugin-input mutation campaign (tools/fuzz/plugins_campaign.ts) at CI
 * size: mutated adapter safetensors, adapter configs (rank/alpha patterns),
 * poisoned adapter values, plugin and model manifests. Zero untyped errors,
 * zero silent NaN, zero plugin code escaping its folder or running despite a
 * manifest problem, no case over the time bound, no read over its input.
 * `deno run -A tools/fuzz/plugins.ts` runs the same cases at a large count.
 */
import assert from "node:assert/strict";
import {
  type CaseResult,
  closeEnv,
  openEnv,
  runCase,
  summarize,
} from "../../tools/fuzz/plugins_campaign.ts";

const CASES = 320;
const HANG_MS = 3000;

Deno.test("campaign: 320 mutated plugin inputs end typed, finite, contained and bounded", async () => {
  const env = await openEnv();
  const results: CaseResult[] = [];
  try {
    for (let i = 0; i < CASES; i++) results.push(await runCase(env, 20261207, i));
  } finally {
    await closeEnv(env);
  }
  const s = summarize(results, HANG_MS);
  const show = JSON.stringify(s.failures, null, 2);
  assert.equal(s.outcomes.untyped, 0, `untyped: ${show}`);
  assert.equal(s.outcomes.silent_nan, 0, `silent NaN: ${show}`);
  assert.equal(s.outcomes.code_escape, 0, `code escape: ${show}`);
  assert.equal(s.hangs, 0, `over ${HANG_MS} ms: ${show}`);
  assert.equal(s.overAlloc, 0, `read over the input size: ${show}`);
  // the mutations reach every layer: the reader, the value scan, patterns, manifests, run time
  const codes = Object.keys(s.codes).join(" ");
  for (
    const want of [
      "SafetensorsError:non_finite",
      "SafetensorsError:truncated",
      "ManifestError:bad_pattern",
      "ManifestError:bad_adapter_config",
      "ManifestError:invalid_manifest",
    ]
  ) assert.ok(codes.includes(want), `no ${want} among ${codes}`);
  assert.ok(s.outcomes.ok > 10, `only ${s.outcomes.ok} cases loaded`);
});
