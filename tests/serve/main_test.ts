/**
 * `main.ts` as a program: under `deno run` it listens on MOE_EDGE_HOST and
 * MOE_EDGE_PORT; under `deno serve` it only hands over its default export.
 */

import assert from "node:assert/strict";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function boot(
  args: string[],
  env: Record<string, string>,
): Promise<{ url: string; stop: () => Promise<string> }> {
  const child = new Deno.Command(Deno.execPath(), { args, env, stdout: "piped", stderr: "piped" })
    .spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const found = (): RegExpExecArray | null => /http:\/\/([\d.]+|localhost):(\d+)\//.exec(out);
  while (!found()) {
    const { done, value } = await reader.read();
    if (done) break;
    out += value;
  }
  const m = found();
  if (!m) {
    const err = await new Response(child.stderr).text();
    throw new Error(`main.ts did not start: ${out} ${err}`);
  }
  return {
    url: `http://127.0.0.1:${m[2]}`,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      while (!(await reader.read()).done) { /* drain */ }
      return out;
    },
  };
}

Deno.test("deno run main.ts serves the default model on MOE_EDGE_PORT with MOE_EDGE_API_KEY", async () => {
  const s = await boot(["run", "--allow-read", "--allow-env", "--allow-net", MAIN], {
    MOE_EDGE_PORT: "0",
    MOE_EDGE_API_KEY: "k",
  });
  try {
    assert.equal((await (await fetch(`${s.url}/healthz`)).json()).model, "moe-edge-default");
    const denied = await fetch(`${s.url}/v1/models`);
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    const res = await fetch(`${s.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer k" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 4, ignore_eos: true }),
    });
    assert.equal((await res.json()).usage.completion_tokens, 4);
  } finally {
    const out = await s.stop();
    assert.match(out, /serving 'moe-edge-default' \(llama, 8 experts, top-2, (wasm|ref)\)/);
  }
});

Deno.test("deno serve main.ts uses the default export and does not listen twice", async () => {
  const s = await boot(
    ["serve", "--allow-read", "--allow-env", "--allow-net", "--port", "0", MAIN],
    {},
  );
  try {
    const h = await fetch(`${s.url}/healthz`);
    assert.equal(h.status, 200);
    await h.body?.cancel();
  } finally {
    const out = await s.stop();
    assert.equal(out.match(/serving/g)?.length, 1, out);
  }
});

const START = new URL("../../serve/start.ts", import.meta.url).pathname;
const PERMS = ["--allow-read", "--allow-env", "--allow-net"];

/** Run a server entry to completion (it is expected to exit); returns code and output. */
async function runToExit(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("start --help lists every setting the server reads", async () => {
  const { SETTINGS } = await import("../../serve/config.ts");
  const r = await runToExit(["run", ...PERMS, START, "--help"], {});
  assert.equal(r.code, 0, r.stderr);
  for (const s of SETTINGS) assert.match(r.stdout, new RegExp(`\\b${s.env}\\b`), s.env);
  // and every MOE_EDGE_* variable the server code reads is in the table
  const read = new Set<string>();
  for (const f of ["config.ts", "program.ts"]) {
    const src = await Deno.readTextFile(new URL(`../../serve/${f}`, import.meta.url));
    for (const m of src.matchAll(/"(MOE_EDGE_[A-Z_]+|PORT)"/g)) read.add(m[1]);
  }
  for (const k of read) assert.ok(SETTINGS.some((s) => s.env === k), `${k} is not in SETTINGS`);
});

Deno.test("start-up failures are one line and a non-zero exit, never a stack trace", async () => {
  const cases: [Record<string, string>, number, RegExp][] = [
    [{ MOE_EDGE_MODEL: "/nonexistent/model.gguf" }, 1, /cannot load the model '\/nonexistent/],
    [{ MOE_EDGE_PORT: "eighty" }, 2, /MOE_EDGE_PORT must be an integer/],
    [{ MOE_EDGE_MAX_QUEUE: "-1" }, 2, /MOE_EDGE_MAX_QUEUE/],
    [{ MOE_EDGE_PUBLIC: "maybe" }, 2, /MOE_EDGE_PUBLIC must be 1 or 0/],
    [{ MOE_EDGE_CORS_ORIGINS: "https://a.example/path" }, 2, /MOE_EDGE_CORS_ORIGINS/],
    [{ MOE_EDGE_HOST: "0.0.0.0", MOE_EDGE_PORT: "0" }, 2, /not a loopback address/],
    [{ MOE_EDGE_BACKEND: "quantum" }, 1, /cannot load the embedded model/],
    [{ MOE_EDGE_API_KEY: "two words" }, 2, /MOE_EDGE_API_KEY must be letters, digits/],
  ];
  for (const [env, code, msg] of cases) {
    const r = await runToExit(["run", ...PERMS, START], env);
    assert.equal(r.code, code, `${JSON.stringify(env)}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^moe-edge: cannot start: /);
    assert.match(lines[0], msg);
    assert.doesNotMatch(r.stderr, /\bat .*:\d+:\d+/, "no stack trace");
  }
  // the same for main.ts under deno run
  const bad = await runToExit(["run", ...PERMS, MAIN], { MOE_EDGE_MODEL: "/nonexistent.gguf" });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr.trim(), /^moe-edge: cannot start: cannot load the model/);
});

Deno.test("a port in use is one line; deno task start's entry prints no 'deno serve' warning", async () => {
  const s = await boot(["run", ...PERMS, START], { MOE_EDGE_PORT: "0" });
  try {
    const port = new URL(s.url).port;
    const r = await runToExit(["run", ...PERMS, START], { MOE_EDGE_PORT: port });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `moe-edge: cannot start: 127.0.0.1:${port} is already in use: stop the other server or set MOE_EDGE_PORT`,
    );
  } finally {
    const out = await s.stop();
    assert.match(out, /auth: no API key: only loopback clients are served/);
  }
  const help = await runToExit(["run", ...PERMS, START, "--help"], {});
  assert.doesNotMatch(help.stderr, /did you mean/);
});

Deno.test("deno serve: MOE_EDGE_HOST/PORT are reported as ignored; the exposure line is printed", async () => {
  const s = await boot(
    ["serve", ...PERMS, "--host", "127.0.0.1", "--port", "0", MAIN],
    { MOE_EDGE_PORT: "1234", MOE_EDGE_API_KEY: "k" },
  );
  const out = await s.stop();
  assert.match(out, /MOE_EDGE_PORT is ignored under deno serve: pass --host\/--port/);
  assert.match(out, /auth: API key required on \/v1\/\* and \/metrics/);
});

Deno.test("the README's settings table agrees with SETTINGS", async () => {
  const { SETTINGS } = await import("../../serve/config.ts");
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const norm = (s: string): string => s.replace(/\s+/g, " ").trim();
  const rows = readme.split("\n").filter((l) => /^\|\s*`(MOE_EDGE_[A-Z_]+|PORT)`/.test(l)).map(
    norm,
  );
  assert.equal(rows.length, SETTINGS.length);
  for (const s of SETTINGS) {
    assert.ok(rows.includes(norm(`| \`${s.env}\` | ${s.default} | ${s.help} |`)), s.env);
  }
});
