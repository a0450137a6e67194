/**
 * A mutation campaign over GGUF model files: each case takes one of a few small synthetic
 * models, applies 1–3 mutations (metadata values, tensor table, tensor data, raw bytes), loads
 * the result with a caller-supplied metered backend and, when it loads, generates a few tokens.
 *
 * A case passes when it either works or fails with a typed `MoeEdgeError`, and:
 * - no untyped error escapes (TypeError, RangeError, …);
 * - backend slots never exceed the file's size, and the loader's allocation never exceeds
 *   `LOAD_BUDGET` (2 × file + 1 MiB) — the bound stated in docs/hardening.md;
 * - the JS heap plus external memory grows by at most `HEAP_BOUND` during the case;
 * - no NaN or ±Infinity reaches a caller silently (non-finite logits, hyper-parameters);
 * - a failed load leaves the caller's backend holding nothing (no leaked slots);
 * - it finishes (the runner in `gguf.ts` adds a watchdog for hangs).
 *
 * Case `i` of seed `s` is deterministic: `deno run -A tools/fuzz/gguf.ts --seed s --case i`.
 *
 * @module
 */

import { RefBackend } from "../../core/backend/ref_backend.ts";
import type { Slot } from "../../core/backend/backend.ts";
import { MoeEdgeError } from "../../core/errors.ts";
import { readGguf } from "../../core/formats/gguf_reader.ts";
import { type GgufWriteTensor, writeGguf } from "../../core/formats/gguf_writer.ts";
import { gguf, type GgufValue, GgufValueType as T } from "../../core/formats/gguf_types.ts";
import { ggmlTensorBytes } from "../../core/formats/ggml_blocks.ts";
import { generateText } from "../../core/generate/generate.ts";
import { Session } from "../../core/generate/session.ts";
import { LOAD_BUDGET, loadModel, type Model } from "../../core/model/model.ts";
import { synthesizeModel, type SyntheticModelSpec } from "../../core/model/synthetic.ts";
import { MemorySource } from "../../core/store/byte_source.ts";
import { GgmlType } from "../../core/tensor/ggml_type.ts";
import { mulberry32 } from "../../core/util/rng.ts";

/** Process-level bound per case: heap + external growth ≤ factor × file + bytes. */
export const HEAP_BOUND = { perFileByte: 16, overheadBytes: 64 << 20 } as const;

/** What went wrong in a case, or `"ok"` / `"typed"`. */
export type Outcome =
  | "ok"
  | "typed"
  | "untyped"
  | "silent_nan"
  | "over_bound"
  | "leak"
  | "hang";

/** Result of one case. */
export interface CaseResult {
  readonly index: number;
  readonly outcome: Outcome;
  /** Mutations applied, e.g. `["meta:llama.rope.scaling.factor=NaN", "flip@123"]`. */
  readonly ops: readonly string[];
  /** `Class:code` of a typed error. */
  readonly code?: string;
  /** Message of an untyped error or of a failed check. */
  readonly detail?: string;
  readonly fileBytes: number;
  /** Peak backend slot bytes while loading. */
  readonly slotPeak: number;
  /** The loader's own count (slots + f32 vectors), when the model loaded. */
  readonly loadBytes: number;
  /** Growth of heap + external memory during the case (sampled at every allocation). */
  readonly heapGrowth: number;
  readonly ms: number;
  /** How far it got: "load" failed, "gen" failed, or "done". */
  readonly stage: "load" | "gen" | "done";
}

/** Deterministic PRNG (mulberry32, `core/util/rng.ts`). */
export class Prng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  next(): number {
    return this.#next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<X>(xs: readonly X[]): X {
    return xs[this.int(xs.length)];
  }
}

const SMALL: SyntheticModelSpec = { nEmbd: 32, nHead: 2, nLayer: 2, nFf: 32, nVocab: 260 };
const BASE_SPECS: SyntheticModelSpec[] = [
  { ...SMALL, arch: "llama", seed: 1 },
  { ...SMALL, arch: "llama", legacyExperts: true, tiedOutput: true, seed: 2 },
  { ...SMALL, arch: "qwen2moe", qkvBias: true, type: GgmlType.Q8_0, seed: 3 },
  { ...SMALL, arch: "qwen3moe", type: GgmlType.F16, headDim: 16, seed: 4 },
  { ...SMALL, arch: "olmoe", type: GgmlType.Q4_0, embdType: GgmlType.F32, seed: 5 },
];

interface Base {
  bytes: Uint8Array;
  arch: string;
  meta: [string, GgufValue][];
  tensors: GgufWriteTensor[];
  alignment: number;
}

let bases: Base[] | null = null;

async function getBases(): Promise<Base[]> {
  if (bases) return bases;
  const out: Base[] = [];
  for (const spec of BASE_SPECS) {
    const bytes = synthesizeModel(spec);
    const f = await readGguf(new MemorySource(bytes));
    const tensors: GgufWriteTensor[] = [];
    for (const t of f.tensors) {
      tensors.push({
        name: t.name,
        dims: [...t.dims],
        type: t.type,
        data: await f.readTensorBytes(t),
      });
    }
    out.push({ bytes, arch: spec.arch!, meta: [...f.metadata], tensors, alignment: f.alignment });
  }
  return (bases = out);
}

const SPECIAL_FLOATS = [
  NaN,
  Infinity,
  -Infinity,
  1.401298464324817e-45,
  -0,
  0,
  1e-30,
  1e30,
  -1,
  3.4e38,
  0.5,
  2,
];
const SPECIAL_INTS = [0, 1, 2, 3, 7, 31, 33, 64, 255, 4096, 65536, 2 ** 31 - 1, 2 ** 32 - 1];
const FLOAT_KEYS = [
  "rope.scaling.factor",
  "expert_weights_scale",
  "rope.freq_base",
  "attention.layer_norm_rms_epsilon",
];
const INT_KEYS = [
  "context_length",
  "embedding_length",
  "block_count",
  "feed_forward_length",
  "attention.head_count",
  "attention.head_count_kv",
  "attention.key_length",
  "attention.value_length",
  "rope.dimension_count",
  "expert_count",
  "expert_used_count",
  "expert_feed_forward_length",
  "expert_shared_feed_forward_length",
];
const TOKENIZER_KEYS = [
  "tokenizer.ggml.tokens",
  "tokenizer.ggml.scores",
  "tokenizer.ggml.token_type",
  "tokenizer.ggml.merges",
  "tokenizer.ggml.bos_token_id",
  "tokenizer.ggml.eos_token_id",
  "tokenizer.ggml.model",
];
const TYPES = [0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 20, 23, 24, 28, 30, 39];

function fmt(v: unknown): string {
  return typeof v === "bigint" ? `${v}n` : String(v);
}

function specialFloat(r: Prng): GgufValue {
  const v = r.pick(SPECIAL_FLOATS);
  return r.int(3) === 0 ? gguf.f64(v) : gguf.f32(v);
}

function intValue(r: Prng): GgufValue {
  switch (r.int(6)) {
    case 0:
      return gguf.u64(BigInt(r.pick([0, 1, 2 ** 53, 2 ** 62])) * (r.int(2) ? 1n : 3n));
    case 1:
      return gguf.i32(r.pick([-1, -(2 ** 31), 5]));
    case 2:
      return specialFloat(r);
    case 3:
      return gguf.str(String(r.pick(SPECIAL_INTS)));
    case 4:
      return gguf.arr(T.UINT32, Array.from({ length: r.int(4) }, () => r.pick(SPECIAL_INTS)));
    default:
      return gguf.u32(r.pick(SPECIAL_INTS));
  }
}

type Spec = { meta: Map<string, GgufValue>; tensors: GgufWriteTensor[]; alignment: number };

/** Random bytes with NaN-prone patterns for a tensor of `n` bytes. */
function noise(r: Prng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  const mode = r.int(3);
  for (let i = 0; i < n; i++) b[i] = mode === 0 ? r.int(256) : mode === 1 ? 0xff : (i * 37) & 0xff;
  return b;
}

/** Set element positions of a float tensor to a non-finite or huge value. */
function poisonData(r: Prng, t: GgufWriteTensor): string {
  const data = t.data.slice();
  const dv = new DataView(data.buffer);
  const v = r.pick([NaN, Infinity, -Infinity, 3e38, -3e38]);
  const count = 1 + r.int(r.int(2) ? 1 : 64);
  if (t.type === GgmlType.F32) {
    for (let k = 0; k < count && data.length >= 4; k++) {
      dv.setFloat32(4 * r.int(data.length / 4), v, true);
    }
  } else if (t.type === GgmlType.F16 || t.type === GgmlType.BF16) {
    const h = t.type === GgmlType.F16
      ? (Number.isNaN(v) ? 0x7e00 : v > 0 ? 0x7c00 : 0xfc00)
      : (Number.isNaN(v) ? 0x7fc0 : v > 0 ? 0x7f80 : 0xff80);
    for (let k = 0; k < count && data.length >= 2; k++) {
      dv.setUint16(2 * r.int(data.length / 2), h, true);
    }
  } else {
    // quantized blocks: the leading f16 scale(s) of a block are where NaN/Inf can hide
    const block = t.type === GgmlType.Q8_0 ? 34 : t.type === GgmlType.Q4_0 ? 18 : 2;
    for (let k = 0; k < count && data.length >= 2; k++) {
      const at = block * r.int(Math.floor(data.length / block));
      dv.setUint16(at, Number.isNaN(v) ? 0x7e00 : 0x7c00, true);
    }
  }
  t.data = data;
  return `poison:${t.name}=${v}x${count}`;
}

function structural(r: Prng, s: Spec, arch: string): string {
  const keys = [...s.meta.keys()];
  switch (r.int(11)) {
    case 0:
    case 1: {
      const key = `${arch}.${r.pick(FLOAT_KEYS)}`;
      const v = specialFloat(r);
      s.meta.set(key, v);
      return `meta:${key}=${fmt(v.value)}`;
    }
    case 2: {
      const key = `${arch}.${r.pick(INT_KEYS)}`;
      const v = intValue(r);
      s.meta.set(key, v);
      return `meta:${key}=${v.type === T.ARRAY ? "[..]" : fmt(v.value)}`;
    }
    case 3: {
      const key = r.pick(keys);
      s.meta.delete(key);
      return `del:${key}`;
    }
    case 4: {
      const key = r.pick(TOKENIZER_KEYS);
      const old = s.meta.get(key);
      if (old && old.type === T.ARRAY) {
        const items = [...(old.value as unknown[])];
        const how = r.int(3);
        if (how === 0) items.length = r.int(items.length + 1);
        else if (how === 1 && old.elemType === T.FLOAT32) {
          for (let k = 0; k < 4; k++) items[r.int(items.length)] = r.pick([NaN, Infinity, -1e38]);
        } else if (items.length) items[r.int(items.length)] = items[r.int(items.length)];
        s.meta.set(key, { ...old, value: items } as GgufValue);
        return `tok:${key}#${how}`;
      }
      const v = r.int(2) ? gguf.u32(r.pick(SPECIAL_INTS)) : specialFloat(r);
      s.meta.set(key, v);
      return `tok:${key}=${fmt(v.value)}`;
    }
    case 5: {
      const i = r.int(s.tensors.length);
      const [t] = s.tensors.splice(i, 1);
      return `drop:${t.name}`;
    }
    case 6: {
      const t = r.pick(s.tensors);
      const d = [...t.dims];
      const k = r.int(Math.max(1, d.length));
      d[k] = r.pick([0, 1, 2 * (d[k] ?? 1), 256, (d[k] ?? 1) + 32, 4096]);
      if (r.int(4) === 0) d.push(r.pick([1, 2, 8]));
      let n: number;
      try {
        n = ggmlTensorBytes(t.type, d);
      } catch {
        return `dims-invalid:${t.name}`;
      }
      if (n > 4 << 20) return `dims-too-big:${t.name}`;
      t.dims = d;
      t.data = noise(r, n);
      return `dims:${t.name}=[${d}]`;
    }
    case 7: {
      const t = r.pick(s.tensors);
      const type = r.pick(TYPES);
      let n: number;
      try {
        n = ggmlTensorBytes(type, t.dims);
      } catch {
        return `type-invalid:${t.name}`;
      }
      t.type = type;
      t.data = noise(r, n);
      return `type:${t.name}=${type}`;
    }
    case 8:
    case 9:
      return poisonData(r, r.pick(s.tensors));
    default: {
      const a = r.pick([1, 8, 16, 64, 256]);
      s.alignment = a;
      s.meta.delete("general.alignment");
      return `align:${a}`;
    }
  }
}

/** Byte positions of the tensor-info offset fields, walking the index. */
function offsetFields(b: Uint8Array): { at: number }[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 8;
  const nT = Number(dv.getBigUint64(p, true)), nKv = Number(dv.getBigUint64(p + 8, true));
  p += 16;
  const SZ: Record<number, number> = {
    0: 1,
    1: 1,
    2: 2,
    3: 2,
    4: 4,
    5: 4,
    6: 4,
    7: 1,
    10: 8,
    11: 8,
    12: 8,
  };
  const skip = (t: number): void => {
    if (t === T.STRING) p += 8 + Number(dv.getBigUint64(p, true));
    else if (t === T.ARRAY) {
      const et = dv.getInt32(p, true);
      const n = Number(dv.getBigUint64(p + 4, true));
      p += 12;
      if (et === T.STRING || et === T.ARRAY) { for (let i = 0; i < n; i++) skip(et); }
      else p += n * SZ[et];
    } else p += SZ[t];
  };
  for (let i = 0; i < nKv; i++) {
    p += 8 + Number(dv.getBigUint64(p, true));
    const t = dv.getInt32(p, true);
    p += 4;
    skip(t);
  }
  const out: { at: number }[] = [];
  for (let i = 0; i < nT; i++) {
    p += 8 + Number(dv.getBigUint64(p, true));
    const nd = dv.getUint32(p, true);
    p += 4 + 8 * nd + 4;
    out.push({ at: p });
    p += 8;
  }
  return out;
}

function byteLevel(r: Prng, b: Uint8Array): [Uint8Array, string] {
  switch (r.int(8)) {
    case 0:
    case 1: {
      // tensor table offsets: the memory-amplification class
      let fields: { at: number }[];
      try {
        fields = offsetFields(b);
      } catch {
        return [b, "offsets-unparsable"];
      }
      if (fields.length === 0) return [b, "offsets-none"];
      const c = b.slice();
      const dv = new DataView(c.buffer);
      const how = r.int(5);
      if (how === 0) { for (const f of fields) dv.setBigUint64(f.at, 0n, true); }
      else if (how === 1) {
        const x = r.pick(fields), y = r.pick(fields);
        dv.setBigUint64(x.at, dv.getBigUint64(y.at, true), true);
      } else if (how === 2) {
        const x = r.pick(fields), y = r.pick(fields);
        const vx = dv.getBigUint64(x.at, true);
        dv.setBigUint64(x.at, dv.getBigUint64(y.at, true), true);
        dv.setBigUint64(y.at, vx, true);
      } else if (how === 3) {
        const x = r.pick(fields);
        const v = dv.getBigUint64(x.at, true) + BigInt(r.pick([-64, -32, 32, 64, 1]));
        dv.setBigUint64(x.at, BigInt.asUintN(64, v), true);
      } else {
        dv.setBigUint64(r.pick(fields).at, BigInt(r.pick([2 ** 40, 2 ** 63, b.length])), true);
      }
      return [c, `offsets#${how}`];
    }
    case 2: {
      const c = b.slice();
      const at = r.int(c.length);
      c[at] ^= 1 << r.int(8);
      return [c, `flip@${at}`];
    }
    case 3: {
      const c = b.slice();
      const at = r.int(c.length);
      for (let k = 0; k < 1 + r.int(8) && at + k < c.length; k++) c[at + k] = r.int(256);
      return [c, `overwrite@${at}`];
    }
    case 4: {
      const n = r.int(b.length);
      return [b.slice(0, n), `truncate@${n}`];
    }
    case 5: {
      const at = r.int(b.length), n = 1 + r.int(16);
      const c = new Uint8Array(b.length + n);
      c.set(b.subarray(0, at));
      for (let k = 0; k < n; k++) c[at + k] = r.int(256);
      c.set(b.subarray(at), at + n);
      return [c, `insert@${at}+${n}`];
    }
    case 6: {
      const c = b.slice();
      const dv = new DataView(c.buffer);
      const at = r.pick([8, 16]);
      dv.setBigUint64(at, BigInt(r.pick([0, 1, 2, 100, 2 ** 20, 2 ** 40])), true);
      return [c, `count@${at}`];
    }
    default: {
      // header-region flip: the index is where structure lives
      const c = b.slice();
      const at = r.int(Math.min(c.length, 8192));
      c[at] ^= 1 << r.int(8);
      return [c, `iflip@${at}`];
    }
  }
}

/** Build the bytes of case `index` under `seed`. */
export async function makeCase(
  seed: number,
  index: number,
): Promise<{ bytes: Uint8Array; ops: string[] }> {
  const bs = await getBases();
  const r = new Prng((seed * 0x9e3779b1 + index * 0x85ebca6b) >>> 0);
  const base = r.pick(bs);
  const ops: string[] = [`base:${base.arch}#${bs.indexOf(base)}`];
  const nStruct = r.int(3), nByte = r.int(3) === 0 ? 1 + r.int(2) : r.int(2);
  let bytes = base.bytes;
  if (nStruct > 0 || nByte === 0) {
    const s: Spec = {
      meta: new Map(base.meta),
      tensors: base.tensors.map((t) => ({ ...t })),
      alignment: base.alignment,
    };
    for (let k = 0; k < Math.max(1, nStruct); k++) ops.push(structural(r, s, base.arch));
    try {
      bytes = writeGguf({ metadata: s.meta, tensors: s.tensors, alignment: s.alignment });
    } catch (e) {
      ops.push(`unwritable:${(e as Error).message.slice(0, 40)}`);
    }
  }
  for (let k = 0; k < nByte; k++) {
    const [b, op] = byteLevel(r, bytes);
    bytes = b;
    ops.push(op);
  }
  return { bytes, ops };
}

/** A reference backend that records its peak slot bytes and the process's peak memory. */
export class MeteredBackend extends RefBackend {
  liveSlotBytes = 0;
  slotPeak = 0;
  heapPeak = 0;
  sampleHeap(): void {
    const m = Deno.memoryUsage();
    this.heapPeak = Math.max(this.heapPeak, m.heapUsed + m.external);
  }
  override allocSlot(bytes: number): Slot {
    const s = super.allocSlot(bytes);
    this.liveSlotBytes += s.bytes;
    this.slotPeak = Math.max(this.slotPeak, this.liveSlotBytes);
    this.sampleHeap();
    return s;
  }
  override freeSlot(slot: Slot): void {
    if (this.liveSlotBytes > 0) this.liveSlotBytes -= slot.bytes;
    super.freeSlot(slot);
  }
  reset(): void {
    this.slotPeak = this.liveSlotBytes;
    this.heapPeak = 0;
  }
}

let backend: MeteredBackend | null = null;

function typedCode(e: unknown): string | null {
  return e instanceof MoeEdgeError ? `${e.name}:${e.code}` : null;
}

function hpFinite(m: Model): string | null {
  for (const [k, v] of Object.entries(m.hp)) {
    if (typeof v === "number" && !Number.isFinite(v)) return `hp.${k}=${v}`;
  }
  return null;
}

/** Run case `index` of `seed` in this thread. */
export async function runCase(seed: number, index: number): Promise<CaseResult> {
  const t0 = performance.now();
  const { bytes, ops } = await makeCase(seed, index);
  const be = (backend ??= new MeteredBackend());
  be.reset();
  const m0 = Deno.memoryUsage();
  const heap0 = m0.heapUsed + m0.external;
  const fileBytes = bytes.length;
  let outcome: Outcome = "ok";
  let code: string | undefined;
  let detail: string | undefined;
  let stage: CaseResult["stage"] = "load";
  let loadBytes = 0;
  let slotPeak = 0;
  const fail = (o: Outcome, d: string) => {
    if (outcome === "ok" || outcome === "typed") {
      outcome = o;
      detail = d;
    }
  };
  let model: Model | null = null;
  try {
    model = await loadModel(bytes, { backend: be });
    slotPeak = be.slotPeak;
    loadBytes = model.loadAllocatedBytes;
    stage = "gen";
    const bad = hpFinite(model);
    if (bad) fail("silent_nan", bad);
    const nV = model.hp.nVocab;
    const s = new Session(model, { nCtx: 8 });
    try {
      const logits = await s.eval([1 % nV, 2 % nV, 3 % nV]);
      for (let i = 0; i < logits.length; i++) {
        if (!Number.isFinite(logits[i])) {
          fail("silent_nan", `logit ${i} = ${logits[i]} returned without an error`);
          break;
        }
      }
    } finally {
      s.dispose();
    }
    const g = await generateText(model, [1 % nV, 2 % nV], { maxTokens: 3, nCtx: 8 });
    if (g.tokens.some((t) => !Number.isInteger(t) || t < 0 || t >= nV)) {
      fail("silent_nan", `generated ids out of range: ${g.tokens}`);
    }
    stage = "done";
  } catch (e) {
    const c = typedCode(e);
    if (c) {
      if (outcome === "ok") outcome = "typed";
      code = c;
    } else {fail(
        "untyped",
        `${(e as Error)?.name}: ${(e as Error)?.message}\n${(e as Error)?.stack}`,
      );}
  } finally {
    if (stage === "load") slotPeak = be.slotPeak;
    model?.dispose();
  }
  be.sampleHeap();
  const heapGrowth = Math.max(0, be.heapPeak - heap0);
  if (be.memoryBytes() !== 0) {
    fail("leak", `backend holds ${be.memoryBytes()} bytes after the case`);
    backend = null; // start clean
  }
  if (slotPeak > fileBytes) fail("over_bound", `slots ${slotPeak} > file ${fileBytes}`);
  if (loadBytes > LOAD_BUDGET.perFileByte * fileBytes + LOAD_BUDGET.overheadBytes) {
    fail("over_bound", `loader allocated ${loadBytes} for a ${fileBytes}-byte file`);
  }
  if (heapGrowth > HEAP_BOUND.perFileByte * fileBytes + HEAP_BOUND.overheadBytes) {
    fail("over_bound", `heap+external grew ${heapGrowth} for a ${fileBytes}-byte file`);
  }
  return {
    index,
    outcome,
    ops,
    code,
    detail,
    fileBytes,
    slotPeak,
    loadBytes,
    heapGrowth,
    ms: performance.now() - t0,
    stage,
  };
}

/** Totals over a campaign. */
export interface CampaignSummary {
  seed: number;
  cases: number;
  outcomes: Record<Outcome, number>;
  /** Typed error counts by `Class:code`. */
  codes: Record<string, number>;
  /** Cases that loaded and generated. */
  generated: number;
  maxSlotRatio: number;
  maxLoadRatio: number;
  maxHeapGrowth: number;
  maxHeapRatio: number;
  maxFileBytes: number;
  msP50: number;
  msP99: number;
  msMax: number;
  /** Up to 20 failing cases (everything but ok/typed). */
  failures: CaseResult[];
}

/** Fold case results into a summary. */
export function summarize(seed: number, results: readonly CaseResult[]): CampaignSummary {
  const outcomes: Record<Outcome, number> = {
    ok: 0,
    typed: 0,
    untyped: 0,
    silent_nan: 0,
    over_bound: 0,
    leak: 0,
    hang: 0,
  };
  const codes: Record<string, number> = {};
  let generated = 0, maxSlotRatio = 0, maxLoadRatio = 0, maxHeapGrowth = 0, maxHeapRatio = 0;
  let maxFileBytes = 0;
  const failures: CaseResult[] = [];
  for (const r of results) {
    outcomes[r.outcome]++;
    if (r.code) codes[r.code] = (codes[r.code] ?? 0) + 1;
    if (r.stage === "done") generated++;
    if (r.fileBytes > 0) {
      maxSlotRatio = Math.max(maxSlotRatio, r.slotPeak / r.fileBytes);
      maxLoadRatio = Math.max(maxLoadRatio, r.loadBytes / r.fileBytes);
      maxHeapRatio = Math.max(maxHeapRatio, r.heapGrowth / r.fileBytes);
    }
    maxHeapGrowth = Math.max(maxHeapGrowth, r.heapGrowth);
    maxFileBytes = Math.max(maxFileBytes, r.fileBytes);
    if (r.outcome !== "ok" && r.outcome !== "typed" && failures.length < 20) failures.push(r);
  }
  const ms = results.map((r) => r.ms).sort((a, b) => a - b);
  const q = (p: number) => ms.length ? ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] : 0;
  return {
    seed,
    cases: results.length,
    outcomes,
    codes,
    generated,
    maxSlotRatio,
    maxLoadRatio,
    maxHeapGrowth,
    maxHeapRatio,
    maxFileBytes,
    msP50: q(0.5),
    msP99: q(0.99),
    msMax: ms.length ? ms[ms.length - 1] : 0,
    failures,
  };
}

/** Number of failing cases in a summary (untyped, silent NaN, over bound, leak, hang). */
export function failureCount(s: CampaignSummary): number {
  const o = s.outcomes;
  return o.untyped + o.silent_nan + o.over_bound + o.leak + o.hang;
}
