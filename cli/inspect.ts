/**
 * `cli inspect`: what a GGUF model holds, from its index alone. Only the header,
 * metadata and tensor infos are read (one growing window from the head of the
 * file), never a weight, so an 18 GB model is inspected in milliseconds with a
 * few hundred KiB read.
 *
 * @module
 */

import { readGguf } from "../core/formats/gguf_reader.ts";
import type { GgufFile, GgufTensorInfo } from "../core/formats/gguf_reader.ts";
import { ModelError } from "../core/errors.ts";
import { readHParams } from "../core/model/hparams.ts";
import type { ByteSource } from "../core/store/byte_source.ts";
import { ggmlTypeName } from "../core/tensor/ggml_type.ts";

/** One routed-expert matrix (gate, up or down) of one layer. */
export interface ExpertPartInfo {
  /** ggml type name(s); several joined by `|` when legacy per-expert tensors differ. */
  readonly type: string;
  /** Bytes of this matrix for one expert (the largest when legacy experts differ). */
  readonly bytes: number;
}

/** The routed experts of one layer. */
export interface LayerExpertInfo {
  /** Block index. */
  readonly layer: number;
  /** Experts in this layer. */
  readonly experts: number;
  /** Bytes of one expert (gate + up + down; the largest when legacy experts differ). */
  readonly bytes_per_expert: number;
  /** The three matrices; `gate` is null when the layer has none. */
  readonly gate: ExpertPartInfo | null;
  /** Up projection. */
  readonly up: ExpertPartInfo;
  /** Down projection. */
  readonly down: ExpertPartInfo;
}

/** Everything `inspect` reports (`--json` prints it as is). */
export interface InspectReport {
  /** `general.architecture`. */
  readonly architecture: string;
  /** `general.name`, or null. */
  readonly name: string | null;
  /** `general.file_type` as llama.cpp names it (`Q4_K_M`, …), or null when absent. */
  readonly file_type: string | null;
  /** Weights in the model (the elements of every tensor). */
  readonly parameters: number;
  /** `tokenizer.ggml.model` and the vocabulary size; whether a chat template is stored. */
  readonly tokenizer: { model: string | null; tokens: number; chat_template: boolean };
  /** Hyper-parameters, floats at the precision they were stored with (f32 → shortest). */
  readonly hparams: Record<string, number>;
  /** Every tensor in file order. */
  readonly tensors: { name: string; type: string; dims: number[]; bytes: number }[];
  /** Routed experts per MoE layer. */
  readonly expert_count: number;
  /** Experts used per token. */
  readonly expert_used_count: number;
  /** Routed experts in the whole model. */
  readonly experts_total: number;
  /** Bytes of one expert when every layer agrees, else the largest (see `experts_by_layer`). */
  readonly bytes_per_expert: number;
  /** Smallest bytes of one expert over the layers (= `bytes_per_expert` when uniform). */
  readonly bytes_per_expert_min: number;
  /** Per layer: bytes of one expert and the type of each matrix. */
  readonly experts_by_layer: LayerExpertInfo[];
  /** Routed-expert bytes of the model by ggml type. */
  readonly expert_bytes_by_type: Record<string, number>;
  /** Routed-expert bytes of the model. */
  readonly expert_bytes_total: number;
  /** Size of the file. */
  readonly file_bytes: number;
  /** Bytes of the index (header, metadata, tensor infos, padding): where the data starts. */
  readonly index_bytes: number;
}

/**
 * A float at the precision it was stored with: `1e-5` stored as f32 reads back as
 * 0.000009999999747378752; this returns the shortest decimal that rounds to the same
 * f32 (or the number itself when it is not an f32 value, or an integer).
 */
export function shortestFloat(v: number): number {
  if (!Number.isFinite(v) || Number.isInteger(v) || Math.fround(v) !== v) return v;
  for (let p = 1; p <= 9; p++) {
    const s = Number(v.toPrecision(p));
    if (Math.fround(s) === v) return s;
  }
  return v;
}

/** Bytes as a short human string: `512 B`, `12.5 KiB`, `3.21 MiB`, `18.6 GiB`. */
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) v /= 1024, i++;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/** llama.cpp's `enum llama_ftype` (include/llama.h): `general.file_type` → name. */
const FILE_TYPES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
  1024: "guessed",
};

function metaValue(file: GgufFile, key: string): unknown {
  return file.metadata.get(key)?.value;
}

/** A parameter count as llama.cpp prints it: `1.9 M`, `46.7 B`. */
export function humanCount(n: number): string {
  if (n < 1e3) return String(n);
  const [d, u] = n >= 1e9 ? [1e9, "B"] : n >= 1e6 ? [1e6, "M"] : [1e3, "K"];
  const v = n / d;
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${u}`;
}

const PARTS = ["gate", "up", "down"] as const;

function layerExperts(file: GgufFile, l: number, nExpert: number): LayerExpertInfo | null {
  const pre = `blk.${l}`;
  const per: Record<(typeof PARTS)[number], { types: Set<string>; bytes: number[] } | null> = {
    gate: null,
    up: null,
    down: null,
  };
  let experts = 0;
  for (const part of PARTS) {
    const merged = file.hasTensor(`${pre}.ffn_${part}_exps.weight`)
      ? file.tensor(`${pre}.ffn_${part}_exps.weight`)
      : null;
    if (merged) {
      const n = merged.dims[2] ?? 1;
      if (!Number.isInteger(n) || n <= 0 || merged.nbytes % n !== 0) {
        throw new ModelError(
          "shape_mismatch",
          `Cannot inspect tensor '${merged.name}': [${
            merged.dims.join(", ")
          }] is not a stack of experts`,
          { tensor: merged.name, dims: merged.dims },
        );
      }
      experts = Math.max(experts, n);
      per[part] = {
        types: new Set([ggmlTypeName(merged.type)]),
        bytes: Array.from({ length: n }, () => merged.nbytes / n),
      };
      continue;
    }
    const legacy: GgufTensorInfo[] = [];
    for (let e = 0; e < nExpert; e++) {
      const name = `${pre}.ffn_${part}.${e}.weight`;
      if (file.hasTensor(name)) legacy.push(file.tensor(name));
    }
    if (legacy.length > 0) {
      experts = Math.max(experts, legacy.length);
      per[part] = {
        types: new Set(legacy.map((t) => ggmlTypeName(t.type))),
        bytes: legacy.map((t) => t.nbytes),
      };
    }
  }
  const { gate, up, down } = per;
  if (!up || !down) return null; // a dense layer (or no experts)
  const info = (p: { types: Set<string>; bytes: number[] }): ExpertPartInfo => ({
    type: [...p.types].join("|"),
    bytes: Math.max(...p.bytes),
  });
  const each = Array.from(
    { length: experts },
    (_, e) => (gate?.bytes[e] ?? 0) + (up.bytes[e] ?? 0) + (down.bytes[e] ?? 0),
  );
  return {
    layer: l,
    experts,
    bytes_per_expert: Math.max(...each),
    gate: gate ? info(gate) : null,
    up: info(up),
    down: info(down),
  };
}

/**
 * Reads `source`'s GGUF index (never its tensor data) and describes the model.
 * @throws GgufError for a malformed file, ModelError for missing or bad hyper-parameters.
 */
export async function inspectModel(source: ByteSource): Promise<InspectReport> {
  const file = await readGguf(source);
  const embd = file.tensor("token_embd.weight");
  if (embd.dims.length < 2) {
    throw new ModelError(
      "shape_mismatch",
      `Cannot inspect tensor 'token_embd.weight': expected 2 dims, got ${embd.dims.length}`,
    );
  }
  const hp = readHParams(file.metadata, embd.dims[1]);
  const hparams: Record<string, number> = {};
  for (const [k, v] of Object.entries(hp)) {
    if (typeof v === "number") hparams[k] = shortestFloat(v);
  }
  const layers: LayerExpertInfo[] = [];
  const byType: Record<string, number> = {};
  for (let l = 0; l < hp.nLayer; l++) {
    const info = layerExperts(file, l, hp.nExpert);
    if (info) layers.push(info);
  }
  let total = 0;
  for (const t of file.tensors) {
    if (!/^blk\.\d+\.ffn_(gate|up|down)(_exps|\.\d+)\.weight$/.test(t.name)) continue;
    const name = ggmlTypeName(t.type);
    byType[name] = (byType[name] ?? 0) + t.nbytes;
    total += t.nbytes;
  }
  const sizes = layers.map((l) => l.bytes_per_expert);
  const name = metaValue(file, "general.name");
  const ftype = metaValue(file, "general.file_type");
  const tokens = metaValue(file, "tokenizer.ggml.tokens");
  const tokModel = metaValue(file, "tokenizer.ggml.model");
  return {
    architecture: hp.arch.name,
    name: typeof name === "string" ? name : null,
    file_type: typeof ftype === "number"
      ? FILE_TYPES[ftype] ?? `unknown (${ftype})`
      : typeof ftype === "bigint"
      ? FILE_TYPES[Number(ftype)] ?? `unknown (${ftype})`
      : null,
    parameters: file.tensors.reduce((a, t) => a + t.dims.reduce((p, d) => p * d, 1), 0),
    tokenizer: {
      model: typeof tokModel === "string" ? tokModel : null,
      tokens: Array.isArray(tokens) ? tokens.length : 0,
      chat_template: file.metadata.has("tokenizer.chat_template"),
    },
    hparams,
    tensors: file.tensors.map((t) => ({
      name: t.name,
      type: ggmlTypeName(t.type),
      dims: [...t.dims],
      bytes: t.nbytes,
    })),
    expert_count: hp.nExpert,
    expert_used_count: hp.nExpertUsed,
    experts_total: layers.reduce((a, l) => a + l.experts, 0),
    bytes_per_expert: sizes.length ? Math.max(...sizes) : 0,
    bytes_per_expert_min: sizes.length ? Math.min(...sizes) : 0,
    experts_by_layer: layers,
    expert_bytes_by_type: byType,
    expert_bytes_total: total,
    file_bytes: source.size,
    index_bytes: file.dataOffset,
  };
}

/** The report as aligned text lines (what `inspect` prints without `--json`). */
export function formatInspect(r: InspectReport): string {
  const out: string[] = [];
  const rows: [string, string][] = [["architecture", r.architecture]];
  if (r.name !== null) rows.push(["name", r.name]);
  rows.push(["parameters", `${humanCount(r.parameters)} (${r.parameters})`]);
  if (r.file_type !== null) rows.push(["file type", r.file_type]);
  const t = r.tokenizer;
  rows.push([
    "tokenizer",
    `${t.model ?? "?"}, ${t.tokens} tokens, ${
      t.chat_template ? "chat template" : "no chat template"
    }`,
  ]);
  for (const [k, v] of Object.entries(r.hparams)) rows.push([k, String(v)]);
  const uniform = r.bytes_per_expert === r.bytes_per_expert_min;
  const each = uniform
    ? `${r.bytes_per_expert} bytes each`
    : `${r.bytes_per_expert_min}–${r.bytes_per_expert} bytes each (differs by layer)`;
  rows.push([
    "experts",
    `${r.expert_count} per layer, ${r.expert_used_count} used, ${each} (${
      humanBytes(r.bytes_per_expert)
    })`,
  ]);
  const pct = r.file_bytes ? ` (${(100 * r.expert_bytes_total / r.file_bytes).toFixed(1)}%)` : "";
  rows.push([
    "expert bytes",
    `${r.expert_bytes_total} of ${r.file_bytes} in the file${pct}`,
  ]);
  const types = Object.entries(r.expert_bytes_by_type);
  if (types.length) {
    rows.push(["expert types", types.map(([t, b]) => `${t} ${humanBytes(b)}`).join(", ")]);
  }
  rows.push(["index bytes", `${r.index_bytes} (inspect reads only the head of the file)`]);
  const w = Math.max(...rows.map(([k]) => k.length)) + 2;
  for (const [k, v] of rows) out.push(`${k.padEnd(w)}${v}`);
  if (r.experts_by_layer.length) {
    out.push("", "experts by layer:");
    out.push(
      `  ${"layer".padEnd(6)}${"gate".padEnd(8)}${"up".padEnd(8)}${"down".padEnd(8)}bytes/expert`,
    );
    for (const l of r.experts_by_layer) {
      out.push(
        `  ${String(l.layer).padEnd(6)}${(l.gate?.type ?? "-").padEnd(8)}${l.up.type.padEnd(8)}${
          l.down.type.padEnd(8)
        }${l.bytes_per_expert} (${humanBytes(l.bytes_per_expert)})`,
      );
    }
  }
  out.push("", "tensors:");
  const nw = Math.max(34, ...r.tensors.map((t) => t.name.length + 1));
  for (const t of r.tensors) {
    out.push(`  ${t.name.padEnd(nw)} ${t.type.padEnd(6)} [${t.dims.join(", ")}]  ${t.bytes} B`);
  }
  return out.join("\n");
}
