/**
 * The bench MoE: its spec, its GGUF file cached under `.cache/bench/` (keyed
 * by a hash of the spec), the prompt token ids every engine evaluates, the
 * banned token ids, and the bytes of weights one decoded token touches.
 *
 * @module
 */

import {
  FileSource,
  GgmlType,
  ggmlTypeName,
  parseGgmlType,
  readGguf,
  synthesizeModel,
  type SyntheticModelSpec,
} from "../mod.ts";
import type { QuantMix } from "../core/model/synthetic.ts";
import { createTokenizer } from "../core/tokenizer/tokenizer.ts";
import { buildTestVocab } from "../core/tokenizer/test_vocab.ts";
import { buildCorpus } from "../core/tokenizer/bpe_train.ts";

/** Shape of the bench MoE (the weight type is added per run). */
export const BENCH_SHAPE: Readonly<SyntheticModelSpec> = Object.freeze({
  arch: "llama",
  nEmbd: 1024,
  nLayer: 8,
  nExpert: 8,
  nExpertUsed: 2,
  nFf: 2816,
  nHead: 16,
  nHeadKv: 4,
  nVocab: 512,
  nCtx: 512,
  seed: 1,
});

/** Types the bench runs by default, by their CLI names. */
export const BENCH_TYPES: readonly string[] = ["f32", "q8_0", "q4_0", "q4_K"];

/**
 * More types `--types` accepts, not run by default: synthesizing the bench MoE (553 M weights)
 * with the TS reference quantizers takes ~1.5 min (Q3_K, IQ4_NL) to ~17 min (Q2_K, llama.cpp's
 * scale search; IQ4_XS ~12 min) on one core, once (cached under `.cache/bench/`).
 */
export const BENCH_EXTRA_TYPES: readonly string[] = [
  "q5_K",
  "q6_K",
  "q2_K",
  "q3_K",
  "iq4_nl",
  "iq4_xs",
  "mxfp4",
  "f16",
  "bf16",
  "q4_1",
  "q5_0",
  "q5_1",
];

/**
 * llama.cpp ftype mixes `--mixes` accepts (`quantMixType` in core/model/synthetic.ts, after
 * llama.cpp's `llama_tensor_get_type`): the bench MoE with each matrix in the type llama-quantize
 * gives it. Run keys are `mix:NAME`.
 */
export const BENCH_MIXES: readonly QuantMix[] = ["Q4_K_M", "Q3_K_M", "Q2_K", "MXFP4_MOE"];

/** The mix of a run key `mix:NAME`, or undefined for a plain type name. */
export function benchMix(key: string): QuantMix | undefined {
  if (!key.startsWith("mix:")) return undefined;
  const m = key.slice(4) as QuantMix;
  if (!BENCH_MIXES.includes(m)) {
    throw new Error(`Unknown mix "${m}" (${BENCH_MIXES.join(",")})`);
  }
  return m;
}

/** Table label of a run key: the type name, or "NAME mix". */
export function benchLabel(key: string): string {
  const m = benchMix(key);
  return m === undefined ? key : `${m} mix`;
}

const CACHE_DIR = new URL("../.cache/bench/", import.meta.url).pathname;

async function sha256Short(text: string): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(h).subarray(0, 8), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** Parse a CLI type name ("q4_K", "Q8_0", "f32"). */
export function benchType(name: string): GgmlType {
  const t = parseGgmlType(name);
  if (t === undefined) throw new Error(`Unknown ggml type "${name}"`);
  return t;
}

/**
 * Path of the cached GGUF of the bench MoE in `type` (or mix `mix:NAME`); synthesizes and writes
 * it (atomically, via a temp file) when absent. Returns the path and whether
 * it was built now, with the time that took.
 */
export async function ensureBenchModel(
  typeName: string,
): Promise<{ path: string; built: boolean; buildMs: number; bytes: number }> {
  const mix = benchMix(typeName);
  let spec: SyntheticModelSpec, stem: string;
  if (mix !== undefined) {
    spec = { ...BENCH_SHAPE, mix };
    stem = `mix-${mix.toLowerCase()}`;
  } else {
    const type = benchType(typeName);
    spec = { ...BENCH_SHAPE, type };
    stem = ggmlTypeName(type).toLowerCase();
  }
  const key = await sha256Short(JSON.stringify(spec));
  const path = `${CACHE_DIR}moe-${stem}-${key}.gguf`;
  try {
    const st = await Deno.stat(path);
    return { path, built: false, buildMs: 0, bytes: st.size };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  const t0 = performance.now();
  const bytes = synthesizeModel(spec);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, path);
  return { path, built: true, buildMs: performance.now() - t0, bytes: bytes.length };
}

/** Per-token weight traffic of decode, from the GGUF tensor index. */
export interface WeightTraffic {
  /** Bytes read per decoded token: attention + norms + router + active experts + output + 1 embedding row. */
  readonly perToken: number;
  /** Parts of `perToken`. */
  readonly attention: number;
  readonly router: number;
  readonly experts: number;
  readonly output: number;
  /** Bytes of all weights in the file. */
  readonly total: number;
}

/**
 * Bytes of weights one decoded token touches. Expert tensors
 * (`ffn_{gate,up,down}_exps`, 3-D `[.., .., nExpert]`) count `nExpertUsed / nExpert`
 * of their bytes; the embedding counts one row; every other tensor counts whole.
 */
export async function weightTraffic(path: string): Promise<WeightTraffic> {
  const src = await FileSource.open(path);
  try {
    const f = await readGguf(src);
    const meta = (k: string): number => Number(f.metadata.get(k)?.value);
    const nExpert = meta("llama.expert_count"), nUsed = meta("llama.expert_used_count");
    let attention = 0, router = 0, experts = 0, output = 0, total = 0;
    for (const t of f.tensors) {
      total += t.nbytes;
      if (t.name === "token_embd.weight") {
        output += t.nbytes / t.dims[1];
      } else if (t.name.startsWith("output")) {
        output += t.nbytes;
      } else if (/_exps\.weight$/.test(t.name)) {
        experts += t.nbytes * nUsed / nExpert;
      } else if (t.name.endsWith("ffn_gate_inp.weight")) {
        router += t.nbytes;
      } else {
        attention += t.nbytes; // attn_{q,k,v,output}, attn_norm, ffn_norm
      }
    }
    return {
      perToken: attention + router + experts + output,
      attention,
      router,
      experts,
      output,
      total,
    };
  } finally {
    await src.close?.();
  }
}

/** Token ids every engine may never produce (banned on all sides). */
export interface BannedTokens {
  /** `<unk>`, `<s>`, `</s>`: keeps every run at exactly the requested length. */
  readonly special: readonly number[];
  /** Byte tokens `<0x80>`..`<0xFF>`: wllama aborts on invalid UTF-8 output. */
  readonly highBytes: readonly number[];
  /** Both. */
  readonly all: readonly number[];
}

const vocab = buildTestVocab("llama", { size: BENCH_SHAPE.nVocab });
const tokenizer = createTokenizer(vocab);

/** The banned ids of the bench vocabulary (looked up by token text). */
export function bannedTokens(): BannedTokens {
  const special = [vocab.unkId!, vocab.bosId!, vocab.eosId!];
  const highBytes: number[] = [];
  for (let b = 0x80; b <= 0xff; b++) {
    const id = vocab.tokens.indexOf(`<0x${b.toString(16).toUpperCase()}>`);
    if (id < 0) throw new Error(`bench vocab has no byte token 0x${b.toString(16)}`);
    highBytes.push(id);
  }
  return { special, highBytes, all: [...special, ...highBytes] };
}

/**
 * A prompt of exactly `n` tokens (BOS included) and its text: the longest
 * run of words of the tokenizer's corpus (skipping a word that would overshoot) whose encoding (with BOS, as llama.cpp's
 * `llama_tokenize(add_special=true)` does it) has `n` ids. wllama takes the text;
 * moe-edge and llama.cpp take the ids.
 */
export function benchPrompt(n: number): { text: string; ids: number[] } {
  const words = buildCorpus().split(" ").filter((w) => w !== "");
  let text = "";
  let ids: number[] = tokenizer.encode(text, { addSpecial: true });
  for (const w of words) {
    const next = text === "" ? w : `${text} ${w}`;
    const nextIds = tokenizer.encode(next, { addSpecial: true });
    if (nextIds.length > n) continue; // too long: try a shorter word next
    text = next;
    ids = nextIds;
    if (ids.length === n) return { text, ids };
  }
  throw new Error(`Cannot build a prompt of exactly ${n} tokens (got ${ids.length})`);
}

/** Decode ids to text with the bench tokenizer (for comparing wllama's text output). */
export function detokenize(ids: readonly number[]): string {
  return tokenizer.decode(ids);
}

export { GgmlType };
