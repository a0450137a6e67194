/**
 * The package root stays light: `mod.ts`'s static module graph holds neither the
 * server (`serve/`) nor the embedded default model (2.8 MB of base64); those are the
 * subpath exports `./serve` and `./default-model`. Checked with `deno info --json`,
 * the graph Deno itself resolves (dynamic imports of literal paths included).
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);

interface InfoModule {
  specifier: string;
  size?: number;
}

/** The local (file:) modules of `entry`'s graph, as paths relative to the repository. */
async function graph(entry: string): Promise<Map<string, number>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
  const root = ROOT.href;
  const local = new Map<string, number>();
  for (const m of info.modules) {
    if (m.specifier.startsWith(root)) local.set(m.specifier.slice(root.length), m.size ?? 0);
  }
  return local;
}

const heavy = (path: string) => path.startsWith("serve/") || /default_model/.test(path);

Deno.test("mod.ts's module graph holds neither serve/ nor the default model", async () => {
  const g = await graph("mod.ts");
  assert.ok(g.has("mod.ts") && g.has("core/model/model.ts"), "the graph was read");
  assert.deepEqual([...g.keys()].filter(heavy), []);
  // The largest modules the root needs are the compiled kernels as base64 (wasm/pkg/*_bytes.ts,
  // 0.3-0.55 MiB each with the packed K-quant and standard-row kernels); embedded data such as
  // the default model (2.8 MB) stays out.
  const big = [...g].filter(([, size]) => size > 1024 * 1024).map(([p]) => p);
  assert.deepEqual(big, [], "no module of the root graph is over 1 MiB");
});

Deno.test("the subpath exports ./serve and ./default-model hold what the root leaves out", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.equal(cfg.exports["./serve"], "./serve/mod.ts");
  assert.equal(cfg.exports["./default-model"], "./core/model/default_model.ts");
  const serve = await graph("serve/mod.ts");
  assert.ok(serve.has("serve/app.ts") && serve.has("serve/runtime.ts"));
  const dm = await graph("core/model/default_model.ts");
  assert.ok((dm.get("core/model/default_model_bytes.ts") ?? 0) > 1_000_000);
  const { defaultModelBytes } = await import("../../core/model/default_model.ts");
  const serveMod = await import("../../serve/mod.ts");
  assert.equal(typeof serveMod.createApp, "function");
  assert.equal(typeof serveMod.createRuntime, "function");
  assert.equal(typeof defaultModelBytes, "function");
  const root = await import("../../mod.ts") as Record<string, unknown>;
  for (const name of ["createApp", "createRuntime", "defaultModelBytes", "DEFAULT_MODEL_SPEC"]) {
    assert.equal(root[name], undefined, `${name} is not exported by the root`);
  }
});
