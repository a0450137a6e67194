/** The CLI's streaming surface: `manifest`, `trace`, `generate --expert-budget-mb … --json`. */

import assert from "node:assert/strict";
import { parseExpertManifest, parseRouteTrace } from "../mod.ts";
import { modelBytes, SPEC } from "../core/store/store_test_util.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("cli: manifest, trace and budgeted generate", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/m.gguf`;
    await Deno.writeFile(model, modelBytes());

    const man = await cli(
      "manifest",
      "--model",
      model,
      "--pin",
      "0:1",
      "--out",
      `${dir}/experts.json`,
    );
    assert.equal(man.code, 0, man.stderr);
    const manifest = parseExpertManifest(
      JSON.parse(await Deno.readTextFile(`${dir}/experts.json`)),
    );
    assert.equal(manifest.experts.length, SPEC.nLayer);
    assert.equal(manifest.experts[0].length, SPEC.nExpert);
    assert.deepEqual(manifest.pinned, [{ layer: 0, index: 1 }]);
    assert.equal(manifest.version, 2, "tensors and header too");
    assert.ok(manifest.tensors!.some((t) => t.name === "token_embd.weight"));

    const tr = await cli(
      "trace",
      "--model",
      model,
      "--prompt-tokens",
      "1,2,3",
      "--max-tokens",
      "5",
      "--out",
      `${dir}/trace.json`,
    );
    assert.equal(tr.code, 0, tr.stderr);
    const traceJson = JSON.parse(await Deno.readTextFile(`${dir}/trace.json`));
    const trace = parseRouteTrace(traceJson);
    assert.equal(trace.tokens.length, 3 + 5 - 1, "prompt + generated tokens that were evaluated");
    assert.equal(traceJson.affinity[0].length, SPEC.nExpert);

    const args = [
      "generate",
      "--model",
      model,
      "--prompt-tokens",
      "1,2,3",
      "--max-tokens",
      "6",
      "--json",
    ];
    const full = JSON.parse((await cli(...args)).stdout);
    const r = await cli(
      ...args,
      "--expert-budget-mb",
      "0.2",
      "--expert-manifest",
      `${dir}/experts.json`,
    );
    assert.equal(r.code, 0, r.stderr);
    const streamed = JSON.parse(r.stdout);
    assert.deepEqual(streamed.tokens, full.tokens);
    const ex = streamed.experts;
    assert.ok(ex.misses > 0 && ex.evictions > 0);
    assert.equal(ex.per_layer.length, SPEC.nLayer);
    for (
      const k of [
        "hits",
        "bytes_fetched",
        "stall_ms",
        "hit_rate",
        "prefetch_accuracy",
        "wasted_prefetches",
      ]
    ) {
      assert.equal(typeof ex[k], "number", k);
    }
    assert.equal(full.experts.misses, 0, "resident store reports too");

    const small = await cli(...args, "--expert-budget-mb", "0.01");
    assert.equal(small.code, 1);
    assert.match(small.stderr, /budget_too_small/);

    const experts = manifest.experts.map((row) => [...row]);
    experts[2][3] = "0".repeat(64);
    await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ ...manifest, experts }));
    const bad = await cli(
      ...args,
      "--expert-budget-mb",
      "0.2",
      "--expert-manifest",
      `${dir}/bad.json`,
      "--max-tokens",
      "30",
    );
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /StoreError:integrity/);

    // a manifest checks resident loads too
    const resident = await cli(...args, "--expert-manifest", `${dir}/experts.json`);
    assert.equal(resident.code, 0, resident.stderr);
    assert.deepEqual(JSON.parse(resident.stdout).tokens, full.tokens);
    const unchecked = await cli(...args, "--no-verify");
    assert.equal(unchecked.code, 0, unchecked.stderr);
    assert.deepEqual(JSON.parse(unchecked.stdout).tokens, full.tokens);
    const pinned = await cli(...args, "--pin-content", "--expert-budget-mb", "0.2");
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.deepEqual(JSON.parse(pinned.stdout).tokens, full.tokens);
    assert.equal((await cli(...args, "--pin-content", "--no-verify")).code, 2, "one or the other");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: verify checks every byte against the manifest; corrupted weights are exit 1 'integrity'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/m.gguf`;
    await Deno.writeFile(model, modelBytes());
    const man = await cli("manifest", "--model", model, "--out", `${dir}/m.json`);
    assert.equal(man.code, 0, man.stderr);
    const manifest = parseExpertManifest(JSON.parse(await Deno.readTextFile(`${dir}/m.json`)));
    const ok = await cli(
      "verify",
      "--model",
      model,
      "--expert-manifest",
      `${dir}/m.json`,
      "--json",
    );
    assert.equal(ok.code, 0, ok.stderr);
    const report = JSON.parse(ok.stdout);
    assert.equal(report.experts, SPEC.nLayer * SPEC.nExpert);
    assert.equal(report.tensors, manifest.tensors!.length);
    assert.ok(report.bytes > 0.9 * modelBytes().byteLength, "nearly every byte was hashed");
    // one non-expert weight changed: verify and a resident generate with the manifest both fail
    const norm = manifest.tensors!.find((t) => t.name === "blk.2.ffn_norm.weight")!;
    const bad = modelBytes().slice();
    bad[norm.offset + 5] ^= 0x01;
    await Deno.writeFile(model, bad);
    const v = await cli("verify", "--model", model, "--expert-manifest", `${dir}/m.json`);
    assert.equal(v.code, 1);
    assert.match(v.stderr, /blk\.2\.ffn_norm\.weight.*StoreError:integrity/);
    const g = await cli(
      "generate",
      "--model",
      model,
      "--prompt-tokens",
      "1,2",
      "--max-tokens",
      "2",
      "--expert-manifest",
      `${dir}/m.json`,
    );
    assert.equal(g.code, 1);
    assert.match(g.stderr, /StoreError:integrity/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --expert-fallback serves misses from resident copies; bad uses are usage errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/m.gguf`;
    await Deno.writeFile(model, modelBytes());
    const base = [
      "generate",
      "--model",
      model,
      "--prompt-tokens",
      "1,17,42,99",
      "--max-tokens",
      "6",
    ];
    const budget = ["--expert-budget-mb", String(4 * 3 * 128 * 2 * 34 / 2 ** 20)];
    const ok = await cli(
      ...base,
      ...budget,
      "--expert-fallback",
      "q4_0",
      "--json",
      "--backend",
      "ref",
    );
    assert.equal(ok.code, 0, ok.stderr);
    const ex = JSON.parse(ok.stdout).experts;
    for (const k of ["fallback_hits", "loads", "read_ms", "verify_ms", "repack_ms", "stall_ms"]) {
      assert.equal(typeof ex[k], "number", k);
    }
    assert.ok(ex.fallback_hits > 0);
    const noBudget = await cli(...base, "--expert-fallback", "q4_0");
    assert.equal(noBudget.code, 2, noBudget.stderr);
    assert.match(noBudget.stderr, /--expert-budget-mb/);
    const badType = await cli(...base, ...budget, "--expert-fallback", "q9_9");
    assert.equal(badType.code, 2, badType.stderr);
    assert.match(badType.stderr, /q9_9/);
    // --expert-fallback-loads: none = nothing loads in the background (every miss falls back)
    const none = await cli(
      ...base,
      ...budget,
      "--expert-fallback",
      "q4_0",
      "--expert-critical-weight",
      "2",
      "--expert-fallback-loads",
      "none",
      "--json",
      "--backend",
      "ref",
    );
    assert.equal(none.code, 0, none.stderr);
    const exNone = JSON.parse(none.stdout).experts;
    assert.ok(exNone.fallback_hits > 0);
    assert.equal(exNone.loads, 0);
    assert.equal(exNone.prefetches, 0);
    // ... while all queues a background load on every fallback use
    const all = await cli(
      ...base,
      ...budget,
      "--expert-fallback",
      "q4_0",
      "--expert-critical-weight",
      "2",
      "--expert-fallback-loads",
      "all",
      "--json",
      "--backend",
      "ref",
    );
    assert.equal(all.code, 0, all.stderr);
    // background loads are queued as prefetches (whether they land before the run ends is timing)
    assert.ok(JSON.parse(all.stdout).experts.prefetches > 0);
    const badLoads = await cli(
      ...base,
      ...budget,
      "--expert-fallback",
      "q4_0",
      "--expert-fallback-loads",
      "often",
    );
    assert.equal(badLoads.code, 2, badLoads.stderr);
    assert.match(badLoads.stderr, /--expert-fallback-loads/);
    // Q2_K needs 256-wide rows: the model's 64-wide ones are a clear store error, exit 1
    const tooNarrow = await cli(...base, ...budget, "--expert-fallback", "q2_k");
    assert.equal(tooNarrow.code, 1, tooNarrow.stderr);
    assert.match(tooNarrow.stderr, /multiple of its block/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
