/**
 * Detokenization against llama.cpp itself (`llama_detokenize` through node-llama-cpp 3.22.1, the
 * oracle's engine): whole sequences, streams that continue a prompt (generated tokens), and real
 * generation with the default model. Skipped when the oracle is not installed.
 */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- test-only dependency, kept out of the package's import map
import fc from "npm:fast-check@4";
import { oracleAvailable } from "../oracle/oracle.ts";
import { defaultModelBytes } from "../../core/model/default_model.ts";
import { synthesizeModel } from "../../core/model/synthetic.ts";
import { loadModel } from "../../core/model/model.ts";
import { generateText } from "../../core/generate/generate.ts";
import { buildTestVocab, StreamDecoder, type Tokenizer } from "../../core/tokenizer/mod.ts";

const available = await oracleAvailable();
const SCRIPT = new URL("./detokenize.mjs", import.meta.url).pathname;

interface Case {
  ids: number[];
  special: boolean;
}

/** llama.cpp's `llama_detokenize(ids, remove_special = false, unparse_special = special)`. */
async function llamaDetokenize(model: string, cases: Case[]): Promise<string[]> {
  const child = new Deno.Command("node", {
    args: [SCRIPT],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify({ model, cases })));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout)).texts;
}

function stream(dec: StreamDecoder, ids: readonly number[]): string {
  return ids.map((id) => dec.push(id)).join("") + dec.flush();
}

async function writeTemp(bytes: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  await Deno.writeFile(path, bytes);
  return path;
}

const models: [string, () => Uint8Array][] = [
  ["default model (SPM, trained)", () => defaultModelBytes()],
  ["SPM test vocab", () => synthesizeModel({ nVocab: 300, seed: 2 })],
  [
    "GPT-2 BPE (clean_spaces)",
    () => synthesizeModel({ seed: 3, vocab: buildTestVocab("gpt2", { pre: "gpt-2" }) }),
  ],
  [
    "qwen2 BPE",
    () => synthesizeModel({ seed: 4, vocab: buildTestVocab("gpt2", { pre: "qwen2" }) }),
  ],
];

for (const [name, bytes] of models) {
  Deno.test({
    name: `detokenize: whole sequences and continued streams equal llama.cpp (${name})`,
    ignore: !available,
    fn: async () => {
      const file = await writeTemp(bytes());
      try {
        const model = await loadModel(file, { backend: "ref" });
        const tok: Tokenizer = model.tokenizer;
        const id = fc.integer({ min: 0, max: tok.vocabSize - 1 });
        // mostly ordinary ids, sometimes the first 4 (specials / unknown) and the vocab's end
        const ids = fc.array(fc.oneof(id, fc.constantFrom(0, 1, 2, 3)), { maxLength: 12 });
        const samples = fc.sample(fc.tuple(ids, ids, fc.boolean()), { numRuns: 150, seed: 7 });
        const cases: Case[] = [];
        for (const [p, g, special] of samples) {
          cases.push({ ids: [...p, ...g], special }, { ids: p, special });
        }
        const texts = await llamaDetokenize(file, cases);
        let continued = 0;
        samples.forEach(([p, g, special], i) => {
          const [whole, prefix] = [texts[2 * i], texts[2 * i + 1]];
          const all = [...p, ...g];
          assert.equal(tok.decode(all, { special }), whole, `decode ${JSON.stringify(all)}`);
          assert.equal(stream(new StreamDecoder(tok, { special }), all), whole);
          // a stream continuing `p` gives llama.cpp's whole text minus the prefix's text
          // (with clean_spaces a clean-up may reach back into the prefix, and a UTF-8 sequence
          // the prefix leaves incomplete may end in the continuation: not a suffix then)
          const splitUtf8 = prefix.endsWith("\uFFFD");
          if (p.length > 0 && whole.startsWith(prefix) && !tok.cleanSpaces && !splitUtf8) {
            const dec = StreamDecoder.forContinuation(tok, p, { special });
            assert.equal(stream(dec, g), whole.slice(prefix.length), `continue ${p} with ${g}`);
            continued++;
          }
        });
        if (!tok.cleanSpaces) assert.ok(continued > 100, `${continued} continuation cases`);
        model.dispose();
      } finally {
        await Deno.remove(file);
      }
    },
  });
}

Deno.test({
  name: "detokenize: generated text keeps the first token's space, as llama.cpp (default model)",
  ignore: !available,
  fn: async () => {
    const file = await writeTemp(defaultModelBytes());
    try {
      const model = await loadModel(file, { backend: "ref" });
      const prompts = ["The little fox", "Once upon a time", "A cat", "The"];
      const results = [];
      for (const p of prompts) {
        results.push(await generateText(model, p, { maxTokens: 12, temperature: 0 }));
      }
      const cases = results.flatMap((r) => [
        { ids: [...r.promptTokens, ...r.tokens], special: false },
        { ids: r.promptTokens, special: false },
      ]);
      const texts = await llamaDetokenize(file, cases);
      results.forEach((r, i) => {
        const [whole, prefix] = [texts[2 * i], texts[2 * i + 1]];
        assert.ok(whole.startsWith(prefix));
        assert.equal(r.text, whole.slice(prefix.length), prompts[i]);
      });
      assert.ok(results[0].text.startsWith(" woke"), JSON.stringify(results[0].text));
      model.dispose();
    } finally {
      await Deno.remove(file);
    }
  },
});
