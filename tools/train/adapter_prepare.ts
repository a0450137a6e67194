/**
 * Step 1 of adapter training: everything `train_adapter.py` needs, from the
 * embedded default model and a seeded domain generator (`adapter_corpus.ts`).
 *
 * Writes to `tools/train/out/adapters/`:
 * - `base.bin` + `base.json`: every tensor of `core/model/default_model.gguf`
 *   dequantized to f32 (the exact values the runtime multiplies by), in GGUF
 *   order with GGUF dims, the format `train.py` writes;
 * - `<domain>/train.bin`, `<domain>/valid.bin`: u16 LE token ids, each document
 *   `<s> text </s>`, tokenized with moe-edge's own tokenizer;
 * - `<domain>/prompts.json`: the fixed prompts whose logits the trainer exports
 *   (`reference.json`) for the runtime equivalence test.
 *
 * ```sh
 * deno run --allow-read --allow-write tools/train/adapter_prepare.ts
 * ```
 *
 * @module
 */

import { readGguf } from "../../core/formats/gguf_reader.ts";
import { tokenizerFromGguf } from "../../core/model/vocab.ts";
import { MemorySource } from "../../core/store/byte_source.ts";
import { traitsOf } from "../../core/tensor/traits.ts";
import type { Tokenizer } from "../../core/tokenizer/mod.ts";
import { type AdapterDomain, buildDomain } from "./adapter_corpus.ts";
import { buildStories } from "./corpus.ts";

/** Per-domain settings (changing any changes the adapters). */
export const ADAPTER_DATA: Readonly<
  Record<AdapterDomain, { trainSeed: number; train: number; validSeed: number; valid: number }>
> = {
  sea: { trainSeed: 11, train: 1200, validSeed: 12, valid: 100 },
  qa: { trainSeed: 21, train: 1500, validSeed: 22, valid: 120 },
};

/** Fixed prompts per domain whose adapted logits are exported for the equivalence test. */
export const ADAPTER_PROMPTS: Readonly<Record<AdapterDomain, readonly string[]>> = {
  sea: ["The little fox", "Tom sailed a small boat to", "Once upon a time"],
  qa: [
    "Tom found a blue ball in the park. Q: What did Tom find? A:",
    "The big bear found a red kite in the forest. Q: Where was it? A:",
    "The little fox",
  ],
};

/** Dequantize every tensor of a GGUF to f32: `{ name, dims, data }` in file order. */
export async function dequantizedTensors(
  bytes: Uint8Array,
): Promise<{ name: string; dims: number[]; data: Float32Array }[]> {
  const src = new MemorySource(bytes, "default_model.gguf");
  const g = await readGguf(src);
  const out = [];
  for (const t of g.tensors) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const raw = await src.read(t.fileOffset, t.nbytes);
    const rows = n / t.dims[0];
    const tr = traitsOf(t.type);
    const rb = t.nbytes / rows;
    for (let r = 0; r < rows; r++) {
      tr.dequantize(raw, r * rb, t.dims[0], data, r * t.dims[0]);
    }
    out.push({ name: t.name, dims: [...t.dims], data });
  }
  return out;
}

/** u16 LE token ids of `docs`, each `<s> doc </s>`, as bytes. */
function tokenize(tok: Tokenizer, docs: readonly string[], eos: number): Uint8Array {
  const out: number[] = [];
  for (const d of docs) out.push(...tok.encode(d), eos);
  return new Uint8Array(Uint16Array.from(out).buffer);
}

if (import.meta.main) {
  const out = new URL("./out/adapters/", import.meta.url);
  await Deno.mkdir(out, { recursive: true });
  const bytes = await Deno.readFile(
    new URL("../../core/model/default_model.gguf", import.meta.url),
  );
  const g = await readGguf(new MemorySource(bytes, "default_model.gguf"));
  const tok = tokenizerFromGguf(g.metadata);
  const eos = 2; // </s> (README: bos 1, eos 2)
  const tensors = await dequantizedTensors(bytes);
  const meta = [];
  let off = 0;
  const f = await Deno.open(new URL("base.bin", out), {
    write: true,
    create: true,
    truncate: true,
  });
  for (const t of tensors) {
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    for (let w = 0; w < b.length;) w += await f.write(b.subarray(w));
    meta.push({ name: t.name, dims: t.dims, offset: off });
    off += b.length;
  }
  f.close();
  await Deno.writeTextFile(
    new URL("base.json", out),
    JSON.stringify({ n_vocab: tok.vocabSize, bos: 1, eos, tensors: meta }, null, 1),
  );
  // the default model's own stories: mixed into adapter training (train) and the
  // "no regression" check (valid), same seeds as prepare.ts
  await Deno.writeFile(
    new URL("stories_train.bin", out),
    tokenize(tok, buildStories(1, 1300), eos),
  );
  await Deno.writeFile(new URL("stories_valid.bin", out), tokenize(tok, buildStories(2, 100), eos));
  for (const d of Object.keys(ADAPTER_DATA) as AdapterDomain[]) {
    const c = ADAPTER_DATA[d];
    const dir = new URL(`${d}/`, out);
    await Deno.mkdir(dir, { recursive: true });
    const train = tokenize(tok, buildDomain(d, c.trainSeed, c.train), eos);
    const valid = tokenize(tok, buildDomain(d, c.validSeed, c.valid), eos);
    await Deno.writeFile(new URL("train.bin", dir), train);
    await Deno.writeFile(new URL("valid.bin", dir), valid);
    const prompts = ADAPTER_PROMPTS[d].map((text) => ({ text, tokens: tok.encode(text) }));
    await Deno.writeTextFile(new URL("prompts.json", dir), JSON.stringify(prompts));
    console.log(`${d}: ${train.length / 2} train tokens, ${valid.length / 2} valid tokens`);
    console.log(`  e.g. ${buildDomain(d, c.validSeed, 1)[0]}`);
  }
}
