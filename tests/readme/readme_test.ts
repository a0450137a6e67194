/**
 * Every fenced code block of README.md runs (or is checked) here, with the default model, as a
 * newcomer would run it: from a scratch directory that imports the package by path (an import
 * map names `@moe-edge/runtime` and `jsr:@moe-edge/runtime`), not through this repository's
 * deno.json.
 *
 * How a block is treated is said by an HTML comment on the line before it,
 * `<!-- readme-test: MODE [ARG] -->` (invisible on GitHub/JSR; blank lines may follow it):
 *
 * | mode       | what the test does                                                                    |
 * | ---------- | ------------------------------------------------------------------------------------- |
 * | (none), ts | type-checks and runs the block as a module                                            |
 * | (none), sh | runs every `deno task cli …` / `deno eval …` line; each must exit 0                   |
 * | `output`   | a `$ command` line, then its exact stdout                                             |
 * | `stderr`   | runs the `$ command` lines; the rest is the start of their stderr                     |
 * | `synopsis` | every `--flag` shown exists in that command's `--help`                                |
 * | `json`     | parses as JSON                                                                        |
 * | `json-cli` | `generate --json`'s object: the same keys as a real run (`…` stands for any value)    |
 * | `as P`     | replaces the example file P in the scratch checkout (type-checked if TS), then        |
 * |            | `cli generate --manifest <P's folder>/model.json` runs with it                          |
 * | `server`   | runs against `main.ts` serving the default model (its port replaces `8000`)            |
 * | `http`     | runs with `https://models.example.com/…` replaced by a local HTTP Range server      |
 * | `skip WHY` | not run; WHY must say why (e.g. the block runs the whole test suite)                  |
 */

import assert from "node:assert/strict";
import { defaultModelBytes } from "../../core/model/default_model.ts";
import { startFaultServer } from "../../core/store/fault_server_test_util.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const README = await Deno.readTextFile(`${ROOT}/README.md`);

/** One fenced block. */
interface Block {
  lang: string;
  code: string;
  line: number;
  mode: string;
  arg: string;
}

function blocks(md: string): Block[] {
  const out: Block[] = [];
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    // the directive is the nearest non-blank line above (deno fmt puts a blank line between)
    let p = start - 1;
    while (p >= 0 && lines[p].trim() === "") p--;
    const prev = lines[p] ?? "";
    const d = /^<!-- readme-test: (\S+)\s*(.*?)\s*-->$/.exec(prev.trim());
    out.push({
      lang: open[1],
      code: body.join("\n") + "\n",
      line: start + 1,
      mode: d ? d[1] : open[1] || "text",
      arg: d ? d[2] : "",
    });
  }
  return out;
}

const all = blocks(README);

/** The scratch directory: what a user who cloned the repository works in, importing by path. */
async function scratch(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-readme-" });
  const cfg = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const imports: Record<string, string> = {
    "@moe-edge/runtime": `${ROOT}/mod.ts`,
    "jsr:@moe-edge/runtime": `${ROOT}/mod.ts`,
  };
  for (const [k, v] of Object.entries(cfg.exports as Record<string, string>)) {
    if (k !== ".") imports[`@moe-edge/runtime${k.slice(1)}`] = `${ROOT}/${v.slice(2)}`;
  }
  await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify({ imports }, null, 2));
  // the repository's layout where blocks name it: ./mod.ts and the example plugins
  await Deno.writeTextFile(`${dir}/mod.ts`, `export * from "${ROOT}/mod.ts";\n`);
  await copyDir(`${ROOT}/examples`, `${dir}/examples`);
  // files the README's text says the reader has: a model of their own, the default model written
  // next to the examples (an earlier README step), a model manifest, a manifest with mistakes
  await Deno.writeFile(`${dir}/big.gguf`, defaultModelBytes());
  await Deno.writeFile(`${dir}/examples/model.gguf`, defaultModelBytes());
  await Deno.writeTextFile(
    `${dir}/bad.json`,
    JSON.stringify({
      manifestVersion: 1,
      model: { source: "big.gguf" },
      plugins: [
        { use: "./examples/expert-kind", config: { experts: [0], limit: -1 } },
        { use: "route-top-p", config: { p: 0.5, maxk: 2 } },
      ],
    }),
  );
  await Deno.writeTextFile(
    `${dir}/model.json`,
    JSON.stringify({
      manifestVersion: 1,
      model: { source: "big.gguf" },
      backend: "auto",
      memory: { expertBudgetMb: 1 },
      plugins: [
        { use: "cache-lru", config: {} },
        { use: "prefetch-next-layer", config: {} },
        { use: "router-bias", config: { bias: { "*": [0.5, 0, 0, 0, 0, 0, 0, -0.5] } } },
      ],
    }),
  );
  return dir;
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(`${from}/${e.name}`, `${to}/${e.name}`);
    else if (e.isFile && !e.name.endsWith(".gguf")) {
      await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
    }
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Splits a shell line into words (single and double quotes, no expansion). */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) out.push(m[1] ?? m[2]?.replace(/\\(.)/g, "$1") ?? m[3]);
  return out;
}

/** Runs one README shell command (`deno task cli …`, `deno eval …`) from `dir`. */
function shell(line: string, dir: string): Promise<Run> {
  const cmd = line.replace(/\s+#.*$/, "").trim();
  const w = words(cmd);
  const at = w.indexOf("deno");
  assert.ok(at >= 0, `not a deno command: ${line}`);
  const rest = w.slice(at + 1);
  if (rest[0] === "task" && rest[1] === "cli") {
    return run(["run", "-A", `--config=${dir}/deno.json`, `${ROOT}/cli.ts`, ...rest.slice(2)], dir);
  }
  if (rest[0] === "eval") {
    return run(["eval", `--config=${dir}/deno.json`, ...rest.slice(1)], dir);
  }
  throw new Error(`README line runs an unknown command: ${line}`);
}

async function runModule(code: string, dir: string, name: string): Promise<Run> {
  const file = `${dir}/${name}.ts`;
  await Deno.writeTextFile(file, code);
  return run(["run", "-A", "--check", `--config=${dir}/deno.json`, file], dir);
}

function ok(r: Run, what: string): void {
  assert.equal(r.code, 0, `${what}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function withServer<T>(dir: string, fn: (port: number) => Promise<T>): Promise<T> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/main.ts`],
    cwd: ROOT,
    env: { MOE_EDGE_PORT: String(port), MOE_EDGE_HOST: "127.0.0.1", NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0;; i++) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/healthz`);
        await r.body?.cancel();
        if (r.ok) break;
      } catch { /* not listening yet */ }
      if (i > 300) throw new Error(`main.ts did not listen on ${port} (${dir})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return await fn(port);
  } finally {
    child.kill();
    await child.status;
  }
}

Deno.test("README: every code block says how it is tested", () => {
  const known = [
    "ts",
    "sh",
    "output",
    "stderr",
    "synopsis",
    "json",
    "json-cli",
    "as",
    "server",
    "http",
    "skip",
  ];
  for (const b of all) {
    assert.ok(
      known.includes(b.mode),
      `README.md:${b.line}: a ${b.lang || "plain"} block needs a
      <!-- readme-test: MODE --> line (one of ${known.join(", ")})`,
    );
    if (b.mode === "skip") {
      assert.ok(b.arg.length > 10, `README.md:${b.line}: say why it is skipped`);
    }
    if (b.mode === "as") assert.ok(b.arg, `README.md:${b.line}: "as" needs a path`);
  }
  assert.ok(all.length >= 15, `${all.length} blocks found`);
});

for (const b of all) {
  if (b.mode === "skip") continue;
  const title = b.code.split("\n").find((l) => l.trim() && !l.startsWith("//"))?.slice(0, 60);
  Deno.test(`README.md:${b.line} (${b.mode}): ${title}`, async () => {
    const dir = await scratch();
    try {
      await check(b, dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

async function check(b: Block, dir: string): Promise<void> {
  const where = `README.md:${b.line}`;
  switch (b.mode) {
    case "ts":
      ok(await runModule(b.code, dir, "block"), where);
      return;
    case "sh":
      for (const line of b.code.split("\n").filter((l) => l.trim())) {
        ok(await shell(line, dir), `${where}: ${line}`);
      }
      return;
    case "output": {
      const [cmd, ...expected] = b.code.split("\n");
      assert.ok(cmd.startsWith("$ "), `${where}: the first line is the command`);
      const r = await shell(cmd.slice(2), dir);
      ok(r, where);
      assert.equal(
        r.stdout,
        expected.join("\n"),
        `${where}: the output shown is not what it prints`,
      );
      return;
    }
    case "stderr": {
      const lines = b.code.split("\n");
      let stderr = "";
      for (const cmd of lines.filter((l) => l.startsWith("$ "))) {
        stderr = (await shell(cmd.slice(2), dir)).stderr;
      }
      const shown = lines.filter((l) => !l.startsWith("$ ")).join("\n").trim();
      assert.equal(stderr.trim().slice(0, shown.length), shown, where);
      return;
    }
    case "synopsis": {
      for (const line of b.code.split("\n").filter((l) => /deno task cli \w+/.test(l))) {
        const cmd = /deno task cli (\w+)/.exec(line)![1];
        const help = await shell(`deno task cli ${cmd} --help`, dir);
        ok(help, `${where}: ${cmd} --help`);
        for (const flag of line.match(/--[a-z][a-z-]*/g) ?? []) {
          assert.match(help.stdout, new RegExp(`${flag}\\b`), `${where}: ${cmd} has no ${flag}`);
        }
      }
      // continuation lines belong to the command above them
      let cmd = "";
      for (const line of b.code.split("\n")) {
        cmd = /deno task cli (\w+)/.exec(line)?.[1] ?? cmd;
        if (/deno task cli/.test(line) || !cmd) continue;
        const help = await shell(`deno task cli ${cmd} --help`, dir);
        for (const flag of line.match(/--[a-z][a-z-]*/g) ?? []) {
          assert.match(help.stdout, new RegExp(`${flag}\\b`), `${where}: ${cmd} has no ${flag}`);
        }
      }
      return;
    }
    case "json":
      JSON.parse(b.code);
      return;
    case "json-cli": {
      const shown = JSON.parse(b.code.replace(/\{…\}|\[…\]|"…"|…/g, "null"));
      const r = await shell("deno task cli generate --prompt-tokens 1,2,3 -n 4 --json", dir);
      ok(r, where);
      const real = JSON.parse(r.stdout);
      const keys = (o: Record<string, unknown>): string[] => Object.keys(o).sort();
      assert.deepEqual(keys(shown), keys(real), where);
      assert.deepEqual(keys(shown.timings), keys(real.timings), where);
      for (const [k, v] of Object.entries(shown)) {
        if (v !== null && typeof v !== "object") assert.equal(typeof real[k], typeof v, k);
      }
      return;
    }
    case "as": {
      await Deno.stat(`${ROOT}/${b.arg}`); // the example file exists in the repository
      await Deno.writeTextFile(`${dir}/${b.arg}`, b.code);
      if (b.lang === "ts") ok(await run(["check", `--config=${dir}/deno.json`, b.arg], dir), where);
      const folder = b.arg.slice(0, b.arg.lastIndexOf("/"));
      const r = await shell(
        `deno task cli generate --manifest ${folder}/model.json --prompt Hello -n 8`,
        dir,
      );
      ok(r, `${where}: generate with ${b.arg} as shown`);
      return;
    }
    case "server":
      await withServer(dir, async (port) => {
        const code = b.code.replaceAll("127.0.0.1:8000", `127.0.0.1:${port}`);
        ok(await runModule(code, dir, "block"), where);
      });
      return;
    case "http": {
      const server = startFaultServer(defaultModelBytes());
      try {
        const code = b.code.replace(/https:\/\/models\.example\.com\/[\w.-]+\.gguf/g, server.url);
        ok(await runModule(code, dir, "block"), where);
      } finally {
        await server.stop();
      }
      return;
    }
  }
  throw new Error(`${where}: unknown mode ${b.mode}`);
}
