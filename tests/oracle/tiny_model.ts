/**
 * A tiny random-weight MoE GGUF (F32) that llama.cpp v0.5.0 loads, for testing the oracle
 * itself. It writes exactly the metadata and tensors that llama.cpp requires per architecture,
 * as found empirically (see README.md, "What llama.cpp requires"). Same options + seed give
 * the same bytes.
 *
 * @module
 */

import { gguf, GgufValueType, writeGguf } from "../../core/formats/mod.ts";
import type { GgufValue, GgufWriteTensor } from "../../core/formats/mod.ts";

/** Options of {@link tinyMoeGguf}. */
export interface TinyMoeOptions {
  /** Architecture (default "llama"). */
  arch?: "llama" | "qwen2moe" | "qwen3moe" | "olmoe";
  /** PRNG seed (default 1). */
  seed?: number;
  /** Hidden size (default 64). */
  nEmbd?: number;
  /** Blocks (default 2). */
  nLayer?: number;
  /** Query heads (default 4). */
  nHead?: number;
  /** KV heads (default 2; olmoe forces nHead: llama.cpp wants attn_k_norm of n_embd). */
  nHeadKv?: number;
  /** Experts (default 4). */
  nExpert?: number;
  /** Experts per token (default 2). */
  nExpertUsed?: number;
  /** Expert FFN width (default 96). */
  nFf?: number;
  /** Leave these metadata keys or tensor names out (to test llama.cpp's refusals). */
  omit?: readonly string[];
}

/** SPM vocabulary: `<unk>`, `<s>`, `</s>` and the 256 `<0xXX>` byte tokens (259 ids). */
export const TINY_VOCAB_SIZE = 259;

function gaussian(seed: number): () => number {
  let s = (seed >>> 0) || 1;
  const u = () => {
    // xorshift32 → (0, 1)
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** Build the GGUF bytes. */
export function tinyMoeGguf(options: TinyMoeOptions = {}): Uint8Array {
  const arch = options.arch ?? "llama";
  const nEmbd = options.nEmbd ?? 64,
    nLayer = options.nLayer ?? 2,
    nHead = options.nHead ?? 4;
  const nHeadKv = arch === "olmoe" ? nHead : options.nHeadKv ?? 2;
  const nExpert = options.nExpert ?? 4,
    nUsed = options.nExpertUsed ?? 2,
    nFf = options.nFf ?? 96;
  const hd = nEmbd / nHead, qDim = nHead * hd, kvDim = nHeadKv * hd;
  const omit = new Set(options.omit ?? []);
  const g = gaussian(options.seed ?? 1);

  const tensors: GgufWriteTensor[] = [];
  const add = (name: string, dims: number[], scale: number, mean = 0) => {
    if (omit.has(name)) return;
    const n = dims.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = mean + g() * scale;
    tensors.push({
      name,
      dims,
      type: 0, /* F32 */
      data: new Uint8Array(x.buffer),
    });
  };
  const mat = (name: string, dims: number[]) => add(name, dims, 0.5 / Math.sqrt(dims[0]));
  const norm = (name: string, n: number) => add(name, [n], 0.1, 1);

  add("token_embd.weight", [nEmbd, TINY_VOCAB_SIZE], 1);
  norm("output_norm.weight", nEmbd);
  mat("output.weight", [nEmbd, TINY_VOCAB_SIZE]);
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    norm(p + "attn_norm.weight", nEmbd);
    mat(p + "attn_q.weight", [nEmbd, qDim]);
    mat(p + "attn_k.weight", [nEmbd, kvDim]);
    mat(p + "attn_v.weight", [nEmbd, kvDim]);
    mat(p + "attn_output.weight", [qDim, nEmbd]);
    if (arch === "qwen3moe") {
      norm(p + "attn_q_norm.weight", hd); // per head, before RoPE
      norm(p + "attn_k_norm.weight", hd);
    } else if (arch === "olmoe") {
      norm(p + "attn_q_norm.weight", nEmbd); // over the whole projection
      norm(p + "attn_k_norm.weight", nEmbd);
    }
    norm(p + "ffn_norm.weight", nEmbd);
    mat(p + "ffn_gate_inp.weight", [nEmbd, nExpert]);
    mat(p + "ffn_gate_exps.weight", [nEmbd, nFf, nExpert]);
    mat(p + "ffn_up_exps.weight", [nEmbd, nFf, nExpert]);
    mat(p + "ffn_down_exps.weight", [nFf, nEmbd, nExpert]);
    if (arch === "qwen2moe") {
      mat(p + "ffn_gate_inp_shexp.weight", [nEmbd]);
      mat(p + "ffn_gate_shexp.weight", [nEmbd, nFf]);
      mat(p + "ffn_up_shexp.weight", [nEmbd, nFf]);
      mat(p + "ffn_down_shexp.weight", [nFf, nEmbd]);
    }
  }

  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3]; // UNKNOWN, CONTROL, CONTROL
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6); // BYTE
  }
  const a = (k: string) => `${arch}.${k}`;
  const meta: [string, GgufValue][] = [
    ["general.architecture", gguf.str(arch)],
    ["general.name", gguf.str(`moe-edge oracle test ${arch}`)],
    [a("context_length"), gguf.u32(2048)],
    [a("embedding_length"), gguf.u32(nEmbd)],
    [a("block_count"), gguf.u32(nLayer)],
    [a("feed_forward_length"), gguf.u32(nFf)],
    [a("attention.head_count"), gguf.u32(nHead)],
    [a("attention.head_count_kv"), gguf.u32(nHeadKv)],
    [a("attention.layer_norm_rms_epsilon"), gguf.f32(1e-5)],
    [a("rope.freq_base"), gguf.f32(10000)],
    [a("expert_count"), gguf.u32(nExpert)],
    [a("expert_used_count"), gguf.u32(nUsed)],
  ];
  if (arch === "qwen2moe" || arch === "qwen3moe") {
    meta.push([a("expert_feed_forward_length"), gguf.u32(nFf)]);
  }
  if (arch === "qwen2moe") {
    meta.push([a("expert_shared_feed_forward_length"), gguf.u32(nFf)]);
  }
  meta.push(
    ["tokenizer.ggml.model", gguf.str("llama")],
    ["tokenizer.ggml.tokens", gguf.arr(GgufValueType.STRING, tokens)],
    [
      "tokenizer.ggml.scores",
      gguf.arr(GgufValueType.FLOAT32, tokens.map(() => 0)),
    ],
    ["tokenizer.ggml.token_type", gguf.arr(GgufValueType.INT32, types)],
    ["tokenizer.ggml.bos_token_id", gguf.u32(1)],
    ["tokenizer.ggml.eos_token_id", gguf.u32(2)],
    ["tokenizer.ggml.unknown_token_id", gguf.u32(0)],
    ["tokenizer.ggml.add_bos_token", gguf.bool(false)],
  );
  return writeGguf({ metadata: meta.filter(([k]) => !omit.has(k)), tensors });
}
