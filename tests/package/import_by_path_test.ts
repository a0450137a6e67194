/**
 * The package works when imported by path from outside the repository: no import map, no
 * deno.json, no node_modules of ours. Every dependency of a non-test module must therefore be a
 * full `npm:` specifier (a bare `hono` resolves only through this repository's deno.json).
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

async function runOutside(code: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-outside-" });
  try {
    // an empty config stops Deno from looking for one above the temp dir
    await Deno.writeTextFile(`${dir}/deno.json`, "{}\n");
    await Deno.writeTextFile(`${dir}/main.ts`, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--check", "main.ts"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("package: mod.ts imported by path from another directory generates text", async () => {
  const r = await runOutside(`
import { generateText, loadModel } from "${ROOT}/mod.ts";
import { defaultModelBytes } from "${ROOT}/core/model/default_model.ts";
import { createApp, createRuntime } from "${ROOT}/serve/mod.ts";
const model = await loadModel(defaultModelBytes());
const r = await generateText(model, "The little fox", { maxTokens: 8 });
// the server side too (Hono, Ajv): one completion through the app
const app = createApp(createRuntime(model));
const res = await app.fetch(new Request("http://x/v1/completions", {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ prompt: "The little fox", max_tokens: 8, temperature: 0 }),
}));
const body = await res.json();
console.log(JSON.stringify({ text: r.text, status: res.status, api: body.choices?.[0]?.text }));
model.dispose();
`);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.ok(out.text.startsWith(" woke"), out.text);
  assert.equal(out.status, 200);
  assert.equal(out.api, out.text);
});

Deno.test("package: the CLI runs from another directory", async () => {
  const r = await runOutside(`
const { main } = await import("${ROOT}/cli.ts");
Deno.exit(await main(["generate", "--prompt", "The little fox", "-n", "4", "--json"]));
`);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout).text.startsWith(" woke"), r.stdout);
});

Deno.test("package: no non-test module imports a bare npm package name", async () => {
  const bare: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(`${ROOT}/${dir}`)) {
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory) {
        if (
          !["node_modules", "tests", "testdata", "bench", "tools", ".git", "target", "pkg"]
            .includes(e.name)
        ) {
          await walk(path);
        }
      } else if (/\.(ts|js|mjs)$/.test(e.name) && !/_test\.ts$|test_util\.ts$/.test(e.name)) {
        const text = await Deno.readTextFile(`${ROOT}/${path}`);
        // import/export … from "x", import "x", import("x"); not in comments (JSDoc examples)
        const re = /(?:\bfrom\s+|^\s*import\s+|\bimport\(\s*)["']([^"'.\/][^"']*)["']/;
        for (const line of text.split("\n")) {
          if (/^\s*(\*|\/\/|\/\*)/.test(line)) continue;
          const m = re.exec(line);
          if (m && !/^(npm|jsr|node|https?|data):/.test(m[1])) bare.push(`${path}: ${m[1]}`);
        }
      }
    }
  };
  await walk("");
  assert.deepEqual(bare, [], "bare specifiers resolve only through this repository's deno.json");
});
