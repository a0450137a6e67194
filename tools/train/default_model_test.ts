/**
 * The embedded default model: its bytes, its shape, and that it writes corpus-like
 * English. The llama.cpp comparison is `tools/train/check.ts` (needs the oracle).
 */

import assert from "node:assert/strict";
import { readGguf } from "../../core/formats/mod.ts";
import { generateText } from "../../core/generate/generate.ts";
import { DEFAULT_MODEL_SPEC, defaultModelBytes } from "../../core/model/default_model.ts";
import { DEFAULT_MODEL_SHA256, DEFAULT_MODEL_SIZE } from "../../core/model/default_model_bytes.ts";
import { loadModel } from "../../core/model/model.ts";
import { synthesizeModel } from "../../core/model/synthetic.ts";
import { MemorySource } from "../../core/store/byte_source.ts";
import { buildStories } from "./corpus.ts";
import { PREP } from "./prepare.ts";

async function sha256Hex(b: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
  return [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
}

Deno.test("default model: embedded bytes are default_model.gguf, decoded once", async () => {
  const bytes = defaultModelBytes();
  assert.equal(bytes.length, DEFAULT_MODEL_SIZE);
  assert.equal(await sha256Hex(bytes), DEFAULT_MODEL_SHA256);
  assert.equal(defaultModelBytes(), bytes);
  const file = await Deno.readFile(new URL("../../core/model/default_model.gguf", import.meta.url));
  assert.equal(await sha256Hex(file), DEFAULT_MODEL_SHA256);
});

Deno.test("default model: DEFAULT_MODEL_SPEC describes it; metadata keys are synthesize's", async () => {
  const model = await loadModel(defaultModelBytes(), { backend: "ref" });
  try {
    const s = DEFAULT_MODEL_SPEC, hp = model.hp;
    assert.equal(model.arch, s.arch);
    assert.deepEqual(
      [hp.nEmbd, hp.nLayer, hp.nHead, hp.nHeadKv, hp.nExpert, hp.nExpertUsed, hp.nFfExp],
      [s.nEmbd, s.nLayer, s.nHead, s.nHeadKv, s.nExpert, s.nExpertUsed, s.nFf],
    );
    assert.equal(hp.nVocab, s.nVocab);
    assert.equal(hp.nCtxTrain, s.nCtx);
    assert.equal(model.tokenizer.model, "llama");
    const ours = await readGguf(new MemorySource(defaultModelBytes()));
    const synth = await readGguf(new MemorySource(synthesizeModel(DEFAULT_MODEL_SPEC)));
    assert.deepEqual([...ours.metadata.keys()], [...synth.metadata.keys()]);
    assert.deepEqual(
      ours.tensors.map((t) => [t.name, t.dims]),
      synth.tensors.map((t) => [t.name, t.dims]),
    );
  } finally {
    model.dispose();
  }
});

Deno.test("default model: greedy continuation is corpus English, on every backend", async () => {
  const corpusWords = new Set(
    buildStories(PREP.trainSeed, PREP.trainStories).join(" ").split(/\s+/),
  );
  const texts: string[] = [];
  for (const backend of ["ref", "auto"]) {
    const model = await loadModel(defaultModelBytes(), { backend });
    try {
      const r = await generateText(model, "The little fox", { maxTokens: 40, temperature: 0 });
      texts.push(r.text);
      const words = ("The little fox " + r.text).split(/\s+/).filter((w) => w !== "");
      assert.ok(words.length >= 8, `too short: ${JSON.stringify(r.text)}`);
      // every complete word is one the corpus uses (the last may be cut by maxTokens)
      const complete = r.finishReason === "stop" ? words : words.slice(0, -1);
      for (const w of complete) assert.ok(corpusWords.has(w), `${w} in ${JSON.stringify(r.text)}`);
      assert.match(r.text, /\./);
    } finally {
      model.dispose();
    }
  }
  assert.equal(texts[0], texts[1]);
});
