/** The CLI as a real process: JSON contract, inspect, and usage errors. */

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { synthesizeModel } from "../core/model/synthetic.ts";
import { loadModel } from "../core/model/model.ts";
import { generateText } from "../core/generate/generate.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "moe-edge-cli-" });
const modelPath = `${dir}/m.gguf`;
const bytes = synthesizeModel({
  nEmbd: 64,
  nLayer: 2,
  nExpert: 4,
  nExpertUsed: 2,
  nFf: 64,
  nVocab: 300,
  seed: 5,
});
await Deno.writeFile(modelPath, bytes);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("generate --json prints exactly one object with the documented fields", async () => {
  const r = await cli(
    "generate",
    "--model",
    modelPath,
    "--prompt-tokens",
    "1,2,3",
    "--max-tokens",
    "6",
    "--json",
  );
  assertEquals(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assertEquals(lines.length, 1);
  const j = JSON.parse(lines[0]);
  assertEquals(j.prompt_tokens, [1, 2, 3]); // as given, no BOS
  assertEquals(j.tokens.length, 6);
  assert(typeof j.text === "string");
  for (const k of ["load_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"]) {
    assert(typeof j.timings[k] === "number" && j.timings[k] >= 0, k);
  }
  // same tokens as the library's greedy generation
  const m = await loadModel(bytes, { backend: "ref" });
  const lib = await generateText(m, [1, 2, 3], { maxTokens: 6, ignoreEos: false });
  assertEquals(j.tokens, lib.tokens.slice(0, j.tokens.length));
});

Deno.test("generate with a text prompt streams text; seed makes sampling reproducible", async () => {
  const a = await cli(
    "generate",
    "--model",
    modelPath,
    "--prompt",
    "hello",
    "--max-tokens",
    "5",
    "--temperature",
    "0.8",
    "--seed",
    "3",
    "--json",
  );
  const b = await cli(
    "generate",
    "--model",
    modelPath,
    "--prompt",
    "hello",
    "--max-tokens",
    "5",
    "--temperature",
    "0.8",
    "--seed",
    "3",
    "--json",
  );
  assertEquals(a.code, 0, a.stderr);
  assertEquals(JSON.parse(a.stdout).tokens, JSON.parse(b.stdout).tokens);
  const plain = await cli(
    "generate",
    "--model",
    modelPath,
    "--prompt",
    "hello",
    "--max-tokens",
    "4",
  );
  assertEquals(plain.code, 0, plain.stderr);
});

Deno.test("inspect prints architecture, hyper-parameters, tensors and expert bytes", async () => {
  const r = await cli("inspect", "--model", modelPath);
  assertEquals(r.code, 0, r.stderr);
  assert(/^architecture\s+llama$/m.test(r.stdout), r.stdout);
  assert(r.stdout.includes("blk.1.ffn_up_exps.weight"));
  assert(/experts\s+4 per layer, 2 used, \d+ bytes each/.test(r.stdout), r.stdout);
  const j = JSON.parse((await cli("inspect", "--model", modelPath, "--json")).stdout);
  assertEquals(j.expert_count, 4);
  assertEquals(j.experts_total, 8);
  assert(j.bytes_per_expert > 0);
});

Deno.test("usage errors exit 2 with a message; bad model files exit 1 with a typed error", async () => {
  const r1 = await cli("generate", "--model", modelPath, "--max-tokens", "3");
  assertEquals(r1.code, 2);
  assert(r1.stderr.includes("--prompt"));
  const r2 = await cli("generate", "--model", modelPath, "--prompt", "x", "--max-tokens", "abc");
  assertEquals(r2.code, 2);
  assert(r2.stderr.includes("--max-tokens"));
  const r3 = await cli("frobnicate");
  assertEquals(r3.code, 2);
  await Deno.writeFile(`${dir}/bad.gguf`, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  const r4 = await cli("inspect", "--model", `${dir}/bad.gguf`);
  assertEquals(r4.code, 1);
  assert(r4.stderr.includes("GgufError"), r4.stderr);
  const r5 = await cli("generate", "--model", `${dir}/missing.gguf`, "--prompt", "x");
  assertEquals(r5.code, 1);
  assert(r5.stderr.includes("StoreError"), r5.stderr);
  const r6 = await cli("generate", "--model", modelPath, "--prompt-tokens", "1,99999");
  assertEquals(r6.code, 2);
  assert(r6.stderr.includes("99999"), r6.stderr);
});
