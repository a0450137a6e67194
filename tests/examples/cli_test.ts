/**
 * Round trip: a manifest on disk → `cli.ts generate --manifest … --json` in a
 * child process → tokens, compared with the library path; a broken manifest
 * exits 1 with every problem on stderr.
 */
import assert from "node:assert/strict";
import { generateText, loadFromManifest } from "../../mod.ts";
import { smoraFixture } from "../../core/plugin/adapters_test_util.ts";
import {
  cleanup,
  tempDir,
  writeAdapter,
  writeJson,
  writeModel,
  writePlugin,
} from "../../core/plugin/plugin_test_util.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("cli: generate --manifest runs the plugins and gives the library's tokens", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await writeAdapter(`${dir}/adapters/smora`, {
      peft_type: "SRMOLE",
      r: 8,
      lora_alpha: 4,
      activate_r: 2,
    }, smoraFixture(41, 2, ["q", "o"], 8).tensors);
    const path = await writeJson(dir, "model.json", {
      $schema: "../../schemas/model-manifest.schema.json",
      manifestVersion: 1,
      model: { source: "model.gguf" },
      backend: "ref",
      plugins: [
        { use: "router-bias", config: { bias: { "*": [0.5, 0, -0.5, 0] } } },
        { use: "smora", config: { adapter: "adapters/smora" } },
        { use: "route-top-p", config: { p: 0.6, maxK: 3 } },
      ],
    });
    const args = [
      "generate",
      "--manifest",
      path,
      "--prompt-tokens",
      "1,5,9,13",
      "--max-tokens",
      "8",
      "--temperature",
      "0",
      "--json",
    ];
    const r = await cli(args);
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    const { model } = await loadFromManifest(path);
    const lib = await generateText(model, [1, 5, 9, 13], { maxTokens: 8, temperature: 0 });
    assert.deepEqual(json.tokens, lib.tokens);
    assert.equal(json.tokens.length, 8);
    assert.equal(json.backend, "ref");
    const plain = JSON.parse(
      (await cli(["generate", "--model", `${dir}/model.gguf`, ...args.slice(3)])).stdout.trim()
        .split("\n").at(-1)!,
    );
    assert.notDeepEqual(plain.tokens, json.tokens, "the plugins changed the generated tokens");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("cli: a broken manifest exits 1 listing every problem; --manifest with --model is a usage error", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const use = await writePlugin(dir, "p", "export default 1;", { apiVersion: 3 });
    const path = await writeJson(dir, "bad.json", {
      manifestVersion: 1,
      model: { source: "model.gguf" },
      plugins: [{ use, config: {} }, { use: "mola", config: {} }, {
        use: "route-top-p",
        config: { p: "high" },
      }],
    });
    const r = await cli(["generate", "--manifest", path, "--prompt-tokens", "1", "--json"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ManifestError:invalid_manifest/);
    assert.match(r.stderr, /3 problems/);
    assert.match(r.stderr, /plugins\[0\] \(p\) manifest: apiVersion/);
    assert.match(r.stderr, /plugins\[1\] \(mola\): config\.adapter: is required/);
    assert.match(r.stderr, /plugins\[2\] \(route-top-p\): config\.p: must be number/);
    const u = await cli([
      "generate",
      "--manifest",
      path,
      "--model",
      "x.gguf",
      "--prompt-tokens",
      "1",
    ]);
    assert.equal(u.code, 2);
    assert.match(u.stderr, /--manifest cannot be combined/);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("cli: the shipped adapter examples change the default model's text in their trained direction", async () => {
  const ex = (name: string) =>
    new URL(`../../examples/${name}/model.json`, import.meta.url).pathname;
  const text = async (args: string[]): Promise<string> => {
    const r = await cli(["generate", ...args, "--max-tokens", "10", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!).text;
  };
  const fox = ["--prompt", "The little fox"];
  const qa = ["--prompt", "Tom found a blue ball in the park. Q: What did Tom find? A:"];
  const [base, sea, baseQa, smora] = await Promise.all([
    text(fox),
    text(["--manifest", ex("mola-sea"), ...fox]),
    text(qa),
    text(["--manifest", ex("smora-qa"), ...qa]),
  ]);
  assert.ok(!/sail|ship|boat|sea|island/.test(base), `base: ${base}`);
  assert.match(sea, /sailed/, `mola-sea: ${sea}`); // the sea-voyage domain
  assert.ok(!baseQa.startsWith(" a blue ball."), `base: ${baseQa}`);
  assert.ok(smora.startsWith(" a blue ball."), `smora-qa: ${smora}`); // the Q/A task format
});

Deno.test("cli: --adapter picks a named adapter of --manifest; an unknown one or no manifest is a usage error", async () => {
  const m = new URL("../../examples/adapters/model.json", import.meta.url).pathname;
  const run = (args: string[]) =>
    cli(["generate", "--prompt", "The little fox", "--max-tokens", "8", "--json", ...args]);
  const text = (r: { code: number; stdout: string; stderr: string }): string => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!).text;
  };
  const single = new URL("../../examples/mola-sea/model.json", import.meta.url).pathname;
  const [viaName, viaOwn, base] = await Promise.all([
    run(["--manifest", m, "--adapter", "sea"]),
    run(["--manifest", single]),
    run(["--manifest", m]),
  ]);
  assert.equal(text(viaName), text(viaOwn), "named adapter = its own manifest");
  assert.notEqual(text(viaName), text(base));
  for (const args of [["--manifest", m, "--adapter", "nope"], ["--adapter", "sea"]]) {
    const r = await run(args);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--adapter/);
    assert.match(r.stderr, /UsageError:bad_flag/);
  }
});
