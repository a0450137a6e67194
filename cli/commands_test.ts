/**
 * The CLI habits of llama.cpp / Ollama users, as a real process: help per command, negative
 * numbers as values, --stop / --ignore-eos / --ctx-size, tokens/s on stderr, `chat` with the
 * model's chat template and a system prompt, and the documented exit codes.
 */

import assert from "node:assert/strict";
import { defaultModelBytes } from "../core/model/default_model.ts";
import { loadModel } from "../core/model/model.ts";
import { generateText } from "../core/generate/generate.ts";
import { Session } from "../core/generate/session.ts";
import { chatTemplateFor } from "../serve/chat_template.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

async function cli(
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const model = await loadModel(defaultModelBytes(), { backend: "ref" });

Deno.test("cli: every command has generated help (exit 0); no command prints help and exits 2", async () => {
  const cases: [string[], RegExp[]][] = [
    [["generate", "--help"], [/--max-tokens/, /--ctx-size/, /--stop/, /--ignore-eos/, /--seed/]],
    [["chat", "--help"], [/--system/, /--ctx-size/, /\/bye/]],
    [["help", "inspect"], [/--model/, /--json/]],
    [["trace", "-h"], [/--out/]],
    [["--help"], [/generate/, /chat/, /inspect/, /Exit codes/]],
    [["--version"], [/^@moe-edge\/runtime \d+\.\d+\.\d+\n$/]],
  ];
  for (const [args, want] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    for (const w of want) assert.match(r.stdout, w, args.join(" "));
  }
  const none = await cli([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /Usage: moe-edge/);
  assert.match(none.stderr, /Exit codes/);
});

Deno.test("cli: negative numbers are values; ≤ 0 temperature is greedy as in llama.cpp", async () => {
  const base = ["generate", "--prompt", "The little fox", "-n", "8", "--json"];
  const greedy = JSON.parse((await cli(base)).stdout);
  const neg = await cli([...base, "--temperature", "-1", "--seed", "-1", "--top-k", "-5"]);
  assert.equal(neg.code, 0, neg.stderr);
  assert.deepEqual(JSON.parse(neg.stdout).tokens, greedy.tokens);
  const lib = await generateText(model, "The little fox", { maxTokens: 8 });
  assert.deepEqual(greedy.tokens, lib.tokens);
  assert.equal(greedy.text, lib.text);
  assert.ok(greedy.text.startsWith(" woke"), greedy.text); // the first token keeps its space
});

Deno.test("cli: --stop, --ignore-eos and --ctx-size reach generation", async () => {
  const base = ["generate", "--prompt", "The little fox", "--json"];
  const full = JSON.parse((await cli([...base, "-n", "24"])).stdout);
  const stop = full.text.slice(10, 14);
  const stopped = JSON.parse(
    (await cli([...base, "-n", "24", "--stop", "zzz", "--stop", stop]))
      .stdout,
  );
  assert.equal(stopped.finish_reason, "stop");
  assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stop)));
  // llama.cpp's names: --temp, --n-predict, -r/--reverse-prompt
  const llama = JSON.parse(
    (await cli([...base.slice(0, 3), "--json", "--temp", "-1", "--n-predict", "24", "-r", stop]))
      .stdout,
  );
  assert.deepEqual(llama.tokens, stopped.tokens);
  const both = await cli([...base, "--temp", "0", "--temperature", "0"]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /cannot be used with/);
  // a context of 8 positions: 4 prompt tokens, so at most 5 generated
  const short = await cli([...base, "-n", "50", "--ctx-size", "8"]);
  assert.equal(short.code, 0, short.stderr);
  const j = JSON.parse(short.stdout);
  assert.equal(j.prompt_tokens.length + j.tokens.length, 9);
  assert.equal(j.finish_reason, "length");
  // the default model ends its stories with EOS within 200 tokens; --ignore-eos goes on
  const eos = JSON.parse((await cli([...base, "-n", "200"])).stdout);
  assert.equal(eos.finish_reason, "stop");
  const on = JSON.parse((await cli([...base, "-n", "200", "--ignore-eos"])).stdout);
  assert.equal(on.finish_reason, "length");
  assert.equal(on.tokens.length, 200);
  assert.deepEqual(on.tokens.slice(0, eos.tokens.length), eos.tokens);
});

Deno.test("cli: plain generate streams the text to stdout and tokens/s to stderr", async () => {
  const r = await cli(["generate", "--prompt", "The little fox", "-n", "12"]);
  assert.equal(r.code, 0, r.stderr);
  const lib = await generateText(model, "The little fox", { maxTokens: 12 });
  assert.equal(r.stdout, lib.text + "\n");
  assert.match(r.stderr, /generated 12 tokens in [\d.]+ ms \([\d.]+ tokens\/s\)/);
  const quiet = await cli(["generate", "--prompt", "The little fox", "-n", "3", "--no-stats"]);
  assert.equal(quiet.stderr, "");
});

Deno.test("cli: chat renders the conversation with the chat template and the system prompt", async () => {
  const system = "You tell short stories.";
  const r = await cli(
    ["chat", "--system", system, "-n", "10", "--no-stats"],
    "Tell me about a fox.\n\nAnd a cat?\n/bye\nnever read\n",
  );
  assert.equal(r.code, 0, r.stderr);
  const replies = r.stdout.split("\n").slice(0, -1);
  assert.equal(replies.length, 2, r.stdout);
  // the same turns through the library, one session keeping the KV cache, as the CLI does
  const t = chatTemplateFor(model);
  const history = [{ role: "system", content: system }];
  const session = new Session(model);
  for (const [i, user] of ["Tell me about a fox.", "And a cat?"].entries()) {
    history.push({ role: "user", content: user });
    const p = t.render(history);
    const lib = await generateText(model, p.text, {
      maxTokens: 10,
      addBos: p.addBos,
      stop: [...t.stop],
      session,
    });
    assert.equal(replies[i], lib.text.trimStart());
    history.push({ role: "assistant", content: lib.text.trimStart() });
  }
  session.dispose();
  const eof = await cli(["chat", "-n", "4"], "hello");
  assert.equal(eof.code, 0);
  assert.match(eof.stderr, /tokens\/s/);
});

Deno.test("cli: chat reuses the KV cache between turns and survives a full context", async () => {
  const r = await cli(
    ["chat", "-n", "20", "--ctx-size", "100"],
    "Tell me a story.\nAnd then?\nMore!\n/clear\nHi\n",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /prompt \d+ tokens \(\+\d+ cached\)/); // the second turn
  assert.match(r.stderr, /the context is full: .*\/clear starts over/);
  assert.match(r.stderr, /conversation cleared/);
  assert.equal(r.stdout.split("\n").filter((l) => l.trim()).length, 3); // turns 1, 2 and "Hi"
});

Deno.test("cli: exit codes — usage 2 (unknown option, bad value, missing value), model error 1", async () => {
  const cases: [string[], number, RegExp][] = [
    [["generate", "--prompt", "x", "--frobnicate"], 2, /unknown option '--frobnicate'/],
    [["generate", "--prompt", "x", "--temperature", "warm"], 2, /--temperature.*'warm'/],
    [["generate", "--prompt", "x", "--top-p", "1.5"], 2, /topP/],
    [["generate", "--prompt"], 2, /argument missing/],
    [["generate", "--prompt", "x", "--backend", "cuda"], 2, /cuda/],
    [["generate", "--prompt", "x", "--ctx-size", "-3"], 2, /--ctx-size/],
    [["trace", "--prompt", "x"], 2, /--out/],
    [["frobnicate"], 2, /unknown command/],
    [["inspect", "--model", "/nonexistent/m.gguf"], 1, /StoreError/],
  ];
  for (const [args, code, msg] of cases) {
    const r = await cli(args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, msg, args.join(" "));
  }
});

Deno.test("cli: Ctrl-C stops a generation (partial text, timings, exit 130) and ends an idle chat", async () => {
  /** Starts the CLI, sends `input`, waits for its first output, then sends SIGINT. */
  async function interrupt(args: string[], input?: string) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, ...args],
      stdin: input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (input !== undefined) {
      await child.stdin.getWriter().write(new TextEncoder().encode(input)); // stdin stays open
    }
    const reader = child.stdout.getReader();
    const first = await reader.read(); // generating (or the first reply is done)
    if (input !== undefined) await new Promise((r) => setTimeout(r, 500)); // reply finished
    child.kill("SIGINT");
    let stdout = new TextDecoder().decode(first.value ?? new Uint8Array());
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      stdout += new TextDecoder().decode(r.value);
    }
    const stderr = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stderr).arrayBuffer()),
    );
    return { code: (await child.status).code, stdout, stderr };
  }
  const gen = await interrupt([
    "generate",
    "-p",
    "The",
    "-n",
    "1000000",
    "--ignore-eos",
    "--backend",
    "ref",
  ]);
  assert.equal(gen.code, 130, gen.stderr);
  assert.match(gen.stderr, /finish: abort/); // our handler ran: stats printed, then exit 130
  assert.ok(gen.stdout.length > 0);
  const chat = await interrupt(["chat", "-n", "3"], "Hi\n");
  assert.equal(chat.code, 130, chat.stderr);
  assert.match(chat.stderr, /tokens\/s/); // the reply finished before Ctrl-C
});

Deno.test("cli: a closed stdout (`| head`) ends generate quietly", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "generate", "-p", "The", "-n", "100000", "--ignore-eos", "--no-stats"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read();
  await reader.cancel(); // like `head` exiting
  const stderr = new TextDecoder().decode(
    new Uint8Array(await new Response(child.stderr).arrayBuffer()),
  );
  const { code } = await child.status;
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
});
