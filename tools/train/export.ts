/**
 * Step 3 of the default-model pipeline: write the trained weights as GGUF and embed it.
 *
 * Reads `tools/train/out/{weights.json,weights.bin,vocab.json}` (from train.py) and writes
 * - `core/model/default_model.gguf`: arch "llama", merged `ffn_*_exps` experts, the big
 *   matrices in `--type` (default Q8_0), norms and routers in F32, with exactly the
 *   metadata `synthesizeModel` writes for llama (same keys, same order: it is taken from a
 *   synthesized model of the same shape and vocabulary) — only `general.name` differs;
 * - `core/model/default_model_bytes.ts`: the same bytes, base64, for `defaultModelBytes()`.
 *
 * Deterministic: the same weights give the same bytes.
 *
 * ```sh
 * deno run --allow-read --allow-write tools/train/export.ts [--type Q8_0|F16|F32] [--out FILE]
 * ```
 * `--out` writes only that GGUF (no embedding), e.g. an F32 copy for checks.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readGguf, writeGguf } from "../../core/formats/mod.ts";
import { gguf, type GgufValue } from "../../core/formats/gguf_types.ts";
import type { GgufWriteTensor } from "../../core/formats/gguf_writer.ts";
import { synthesizeModel } from "../../core/model/synthetic.ts";
import { MemorySource } from "../../core/store/byte_source.ts";
import { GgmlType, parseGgmlType } from "../../core/tensor/ggml_type.ts";
import { rowBytes, traitsOf } from "../../core/tensor/traits.ts";
import type { VocabSpec } from "../../core/tokenizer/mod.ts";

/** What train.py writes to `weights.json`. */
export interface TrainedWeights {
  config: {
    n_embd: number;
    n_layer: number;
    n_head: number;
    n_head_kv: number;
    n_expert: number;
    n_expert_used: number;
    n_ff: number;
    rope_base: number;
    eps: number;
  };
  n_vocab: number;
  tensors: { name: string; dims: number[]; offset: number }[];
  [k: string]: unknown;
}

/** Context length written to the GGUF (the runtime's default context). */
export const EXPORT_CTX = 1024;
/** `general.name` of the exported model. */
export const EXPORT_NAME = "moe-edge default: tiny-stories MoE";

/** Vocabulary as written by prepare.ts, with typed arrays restored. */
export function parseVocab(json: string): VocabSpec {
  const v = JSON.parse(json);
  return { ...v, scores: Float32Array.from(v.scores), tokenTypes: Int32Array.from(v.tokenTypes) };
}

/** Build the GGUF bytes from trained f32 weights. */
export async function exportGguf(
  w: TrainedWeights,
  weights: Uint8Array,
  vocab: VocabSpec,
  type: GgmlType,
): Promise<Uint8Array> {
  const c = w.config;
  if (c.n_embd % c.n_head !== 0) throw new Error("n_embd must be a multiple of n_head");
  // the metadata synthesizeModel writes for this shape + vocabulary, in its order
  const shape = synthesizeModel({
    arch: "llama",
    nEmbd: c.n_embd,
    nLayer: c.n_layer,
    nHead: c.n_head,
    nHeadKv: c.n_head_kv,
    nExpert: c.n_expert,
    nExpertUsed: c.n_expert_used,
    nFf: c.n_ff,
    nCtx: EXPORT_CTX,
    ropeBase: c.rope_base,
    vocab,
    type,
  });
  const ref = await readGguf(new MemorySource(shape));
  const metadata: [string, GgufValue][] = [];
  for (const [k, v] of ref.metadata) {
    metadata.push([k, k === "general.name" ? gguf.str(EXPORT_NAME) : v]);
  }
  const eps = ref.metadata.get("llama.attention.layer_norm_rms_epsilon");
  if (eps === undefined || Math.abs(Number(eps.value) - c.eps) > 1e-9) {
    throw new Error("synthesizeModel's rms eps differs from the trained one");
  }

  const tensors: GgufWriteTensor[] = [];
  const dv = new DataView(weights.buffer, weights.byteOffset, weights.byteLength);
  for (const [i, t] of w.tensors.entries()) {
    const want = ref.tensors[i];
    if (want.name !== t.name || want.dims.join() !== t.dims.join()) {
      throw new Error(`tensor ${i}: trained ${t.name} [${t.dims}] vs GGUF ${want.name}`);
    }
    const n = t.dims.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let j = 0; j < n; j++) x[j] = dv.getFloat32(t.offset + 4 * j, true);
    // as synthesizeModel: norms and the router stay F32
    const tt = want.type === GgmlType.F32 ? GgmlType.F32 : type;
    const cols = t.dims[0], rows = n / cols, rb = rowBytes(tt, cols);
    const data = new Uint8Array(rb * rows);
    const tr = traitsOf(tt);
    for (let r = 0; r < rows; r++) tr.quantize(x, r * cols, cols, data, r * rb);
    tensors.push({ name: t.name, dims: t.dims, type: tt, data });
  }
  if (tensors.length !== ref.tensors.length) throw new Error("tensor count differs");
  return writeGguf({ metadata, tensors });
}

async function sha256Hex(b: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
  return [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** The generated `default_model_bytes.ts` module text. */
export async function bytesModule(bytes: Uint8Array, type: string): Promise<string> {
  return `// Generated by tools/train/export.ts (tools/train/README.md) — do not edit.
// deno-lint-ignore-file

/** SHA-256 (hex) of the embedded default model GGUF (\`core/model/default_model.gguf\`). */
export const DEFAULT_MODEL_SHA256: string =
  "${await sha256Hex(bytes)}";

/** Size of the embedded default model GGUF in bytes. */
export const DEFAULT_MODEL_SIZE: number = ${bytes.length};

/** Weight type of the big matrices of the embedded default model. */
export const DEFAULT_MODEL_TYPE: string = "${type}";

/** The default model GGUF, base64-encoded. */
export const DEFAULT_MODEL_BASE64: string =
  "${base64(bytes)}";
`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { type: { type: "string", default: "Q8_0" }, out: { type: "string" } },
  });
  const type = parseGgmlType(values.type!);
  if (
    type === undefined || !([GgmlType.F32, GgmlType.F16, GgmlType.Q8_0] as number[]).includes(type)
  ) {
    throw new Error(`--type must be F32, F16 or Q8_0: received '${values.type}'`);
  }
  const dir = new URL("./out/", import.meta.url);
  const w: TrainedWeights = JSON.parse(await Deno.readTextFile(new URL("weights.json", dir)));
  const weights = await Deno.readFile(new URL("weights.bin", dir));
  const vocab = parseVocab(await Deno.readTextFile(new URL("vocab.json", dir)));
  const bytes = await exportGguf(w, weights, vocab, type);
  if (values.out !== undefined) {
    await Deno.writeFile(values.out, bytes);
    console.log(`wrote ${values.out}: ${bytes.length} bytes`);
  } else {
    const model = new URL("../../core/model/", import.meta.url);
    await Deno.writeFile(new URL("default_model.gguf", model), bytes);
    const mod = await bytesModule(bytes, values.type!.toUpperCase());
    await Deno.writeTextFile(new URL("default_model_bytes.ts", model), mod);
    console.log(
      `wrote core/model/default_model.gguf (${bytes.length} bytes, ${values.type}) and ` +
        `core/model/default_model_bytes.ts (${mod.length} bytes)`,
    );
  }
}
