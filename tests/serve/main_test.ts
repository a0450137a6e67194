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
