/**
 * The streaming synthesizer: writes a synthetic model (any `SyntheticModelSpec`,
 * real-size presets included) straight to disk, a few MiB at a time, so an
 * 18 GB file needs little RAM and little time.
 *
 * Random weights are drawn cheaply: for each (type, row length, scale) a pool
 * of {@linkcode POOL_ROWS} rows is drawn from a Gaussian and quantized once
 * (llama.cpp's reference quantizers, core/tensor), and every row of every
 * matrix of that kind is a pool row picked by a seeded xorshift — a
 * permutation of valid quantized rows. Each row is a genuine quantization of
 * Gaussian values of the right scale, so activations keep realistic ranges;
 * experts differ (rows are picked independently), and the same seed gives the
 * same bytes. Tensors whose repeated rows would make ties are drawn row by row
 * instead: F32 tensors (routers: identical router rows would tie experts) and
 * `token_embd` / `output` (identical vocabulary rows would tie logits).
 *
 * The GGUF layout is `synthesizeLayout`'s (the same tensors, order, types and
 * metadata as `synthesizeModel`); values differ from `synthesizeModel`'s draws.
 *
 * @module
 */

import { GgufError, ModelError } from "../errors.ts";
import { ggmlTensorBytes } from "../formats/ggml_blocks.ts";
import { GgmlType } from "../tensor/ggml_type.ts";
import { rowBytes, traitsOf } from "../tensor/traits.ts";
import {
  synthesizeLayout,
  type SyntheticModelSpec,
  type SyntheticTensorLayout,
} from "./synthetic.ts";

/** Quantized rows drawn per (type, row length, scale, mean). */
export const POOL_ROWS = 256;
/** Bytes written per chunk. */
const CHUNK = 8 << 20;
const ALIGN = 32;
const enc = new TextEncoder();

/** Progress of a write: bytes written out of the file's size. */
export type SynthProgress = (written: number, total: number) => void;

/** What was written. */
export interface SynthResult {
  /** File size in bytes. */
  readonly bytes: number;
  /** Number of tensors. */
  readonly tensors: number;
  /** Byte offset of the data section. */
  readonly dataOffset: number;
}

/** Where bytes go: a file, or anything with `write` (tests). */
export interface SynthSink {
  /** Write all of `p` (may write partially: callers loop). */
  write(p: Uint8Array): Promise<number>;
}

class XorShift {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** Standard normal (Box–Muller). */
  gauss(): number {
    const u = Math.max(this.next() / 4294967296, 1e-12), v = this.next() / 4294967296;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

function padTo(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** The tensor-info section of a GGUF (names, dims, types, offsets) and the data size. */
function tensorInfos(tensors: readonly SyntheticTensorLayout[]): {
  infos: Uint8Array;
  sizes: number[];
  offsets: number[];
} {
  const parts: Uint8Array[] = [];
  const sizes: number[] = [];
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    const name = enc.encode(t.name);
    const b = new Uint8Array(8 + name.length + 4 + 8 * t.dims.length + 4 + 8);
    const dv = new DataView(b.buffer);
    let p = 0;
    dv.setBigUint64(p, BigInt(name.length), true);
    p += 8;
    b.set(name, p);
    p += name.length;
    dv.setUint32(p, t.dims.length, true);
    p += 4;
    for (const d of t.dims) {
      dv.setBigUint64(p, BigInt(d), true);
      p += 8;
    }
    dv.setInt32(p, t.type, true);
    p += 4;
    dv.setBigUint64(p, BigInt(off), true);
    parts.push(b);
    const size = ggmlTensorBytes(t.type, [...t.dims], `synth: tensor '${t.name}'`);
    sizes.push(size);
    offsets.push(off);
    off += padTo(size, ALIGN);
  }
  const n = parts.reduce((a, x) => a + x.length, 0);
  const infos = new Uint8Array(n);
  let p = 0;
  for (const x of parts) {
    infos.set(x, p);
    p += x.length;
  }
  return { infos, sizes, offsets };
}

/** The GGUF header (metadata + tensor infos), padded to the data section. */
export function streamHeader(
  spec: SyntheticModelSpec,
): { header: Uint8Array; tensors: SyntheticTensorLayout[]; sizes: number[]; dataBytes: number } {
  const { metadataOnly, tensors } = synthesizeLayout(spec);
  // metadataOnly: "GGUF", version, n_tensors = 0, n_kv, key/values; no alignment key (32)
  if (new TextDecoder().decode(metadataOnly.subarray(0, 4)) !== "GGUF") {
    throw new GgufError("bad_magic", "synth: the metadata writer did not produce a GGUF");
  }
  const { infos, sizes, offsets } = tensorInfos(tensors);
  const headerLen = padTo(metadataOnly.length + infos.length, ALIGN);
  const header = new Uint8Array(headerLen);
  header.set(metadataOnly);
  new DataView(header.buffer).setBigUint64(8, BigInt(tensors.length), true);
  header.set(infos, metadataOnly.length);
  const last = tensors.length - 1;
  const dataBytes = last < 0 ? 0 : offsets[last] + padTo(sizes[last], ALIGN);
  return { header, tensors, sizes, dataBytes };
}

/** Pools of quantized rows, by kind. */
class RowPools {
  readonly #pools = new Map<string, Uint8Array>();
  readonly #seed: number;
  constructor(seed: number) {
    this.#seed = seed;
  }
  /** `POOL_ROWS` quantized rows of `cols` values ~ N(mean, scale²) of `type`, back to back. */
  get(type: GgmlType, cols: number, scale: number, mean: number): Uint8Array {
    const key = `${type}:${cols}:${scale}:${mean}`;
    let pool = this.#pools.get(key);
    if (pool) return pool;
    const rb = rowBytes(type, cols);
    const rng = new XorShift(this.#seed * 7919 + this.#pools.size * 104729 + cols);
    const x = new Float32Array(cols);
    pool = new Uint8Array(rb * POOL_ROWS);
    const tr = traitsOf(type);
    for (let r = 0; r < POOL_ROWS; r++) {
      for (let i = 0; i < cols; i++) x[i] = mean + rng.gauss() * scale;
      tr.quantize(x, 0, cols, pool, r * rb);
    }
    this.#pools.set(key, pool);
    return pool;
  }
}

/**
 * Write the synthetic model of `spec` to `sink`, streaming: the header, then
 * each tensor in chunks of at most 8 MiB. Returns what was written. Peak
 * memory: the pools (a few MiB) and one chunk.
 */
export async function writeSyntheticStream(
  spec: SyntheticModelSpec,
  sink: SynthSink,
  onProgress?: SynthProgress,
): Promise<SynthResult> {
  const { header, tensors, sizes, dataBytes } = streamHeader(spec);
  const total = header.length + dataBytes;
  let written = 0;
  const put = async (p: Uint8Array) => {
    let o = 0;
    while (o < p.length) o += await sink.write(p.subarray(o));
    written += p.length;
    onProgress?.(written, total);
  };
  await put(header);
  const pools = new RowPools(spec.seed ?? 1);
  const chunk = new Uint8Array(CHUNK);
  tensors.forEach((t) => {
    if (!traitsOf(t.type)) {
      throw new ModelError("bad_spec", `synth: no quantizer for type ${t.type} of '${t.name}'`);
    }
  });
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i];
    const cols = t.dims[0];
    const rows = sizes[i] / rowBytes(t.type, cols);
    const exact = t.type === GgmlType.F32 || t.name === "output.weight" ||
      t.name === "token_embd.weight";
    const pool = exact ? null : pools.get(t.type, cols, t.scale, t.mean);
    const rb = rowBytes(t.type, cols);
    const tr = traitsOf(t.type);
    const x = exact ? new Float32Array(cols) : null;
    const rng = new XorShift((spec.seed ?? 1) * 31 + i * 65537);
    const perChunk = Math.max(1, Math.floor(CHUNK / rb));
    for (let r = 0; r < rows;) {
      const n = Math.min(perChunk, rows - r);
      const out = n * rb <= CHUNK ? chunk.subarray(0, n * rb) : new Uint8Array(n * rb);
      for (let j = 0; j < n; j++) {
        if (pool) {
          const k = rows === 1 ? 0 : rng.next() % POOL_ROWS;
          out.set(pool.subarray(k * rb, (k + 1) * rb), j * rb);
        } else {
          for (let c = 0; c < cols; c++) x![c] = t.mean + rng.gauss() * t.scale;
          tr.quantize(x!, 0, cols, out, j * rb);
        }
      }
      await put(out);
      r += n;
    }
    const pad = padTo(sizes[i], ALIGN) - sizes[i];
    if (pad > 0) await put(new Uint8Array(pad));
  }
  return { bytes: written, tensors: tensors.length, dataOffset: header.length };
}

/** Write the synthetic model of `spec` to the file `path` (created or truncated). */
export async function writeSyntheticFile(
  path: string,
  spec: SyntheticModelSpec,
  onProgress?: SynthProgress,
): Promise<SynthResult> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    return await writeSyntheticStream(spec, f, onProgress);
  } finally {
    f.close();
  }
}

/** The bytes of `spec` through the streaming writer, in memory (tests, small models). */
export async function synthesizeStreamed(spec: SyntheticModelSpec): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await writeSyntheticStream(spec, {
    write(p) {
      parts.push(p.slice());
      return Promise.resolve(p.length);
    },
  });
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
