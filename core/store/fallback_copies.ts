/**
 * Low-bit copies of experts, resident beside the streaming store (mixed
 * precision: HOBBIT's fallback, EdgeMoE/MC-MoE per-expert bit widths).
 * A copy is made from the expert's own bytes (dequantized, re-quantized to
 * the copy's type with the traits table's quantizers) at load, or read
 * ahead-of-time from a side GGUF (`writeCopiesGguf`, `cli quantize-experts`)
 * whose tensors are named like the expert slices they copy
 * (`blk.0.ffn_up_exps.weight[3]`), one expert's three matrices back to back
 * (one read per expert). The side file's own integrity manifest (an expert
 * manifest over its copies) is checked on every read when given.
 *
 * @module
 */

import type { Backend, Slot } from "../backend/backend.ts";
import { StoreError } from "../errors.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { ExpertLocation, MatrixRef } from "./expert_location.ts";
import { readGguf } from "../formats/gguf_reader.ts";
import { writeGguf } from "../formats/gguf_writer.ts";
import { GgufValueType } from "../formats/gguf_types.ts";
import { rowBytes, traitsOf } from "../tensor/traits.ts";
import { ggmlTypeName } from "../tensor/ggml_type.ts";
import type { ByteSource } from "./byte_source.ts";
import { expertLayout, expertViews, prepareExpert } from "./expert_loader.ts";
import { fetchExpert } from "./expert_fetch.ts";
import type { ExpertManifest } from "./expert_manifest.ts";
import type { BackgroundLoadPolicy, ExpertFallback } from "./streaming_options.ts";

/** Type of the copy of expert `index` of `layer`: a ggml type, or null for none. */
export type CopyPlan = (layer: number, index: number) => number | null;

/** Where the copies come from and how the store uses them. */
export interface FallbackCopiesOptions {
  /** One type for every expert (`--expert-fallback q2_k`); or give `plan`. */
  readonly type?: number;
  /** Per-expert types (EdgeMoE/MC-MoE plans); wins over `type`. */
  readonly plan?: CopyPlan;
  /** Side GGUF holding the copies (else they are made at load from the model's bytes). */
  readonly source?: ByteSource;
  /** Expert manifest of the side file (SHA-256 per copy, checked on every read). */
  readonly manifest?: ExpertManifest;
  /** See `ExpertFallback.criticalWeight` (`Infinity`: never wait, copies replace the experts). */
  readonly criticalWeight?: number;
  /** See `ExpertFallback.loadOnFallback`. */
  readonly loadOnFallback?: boolean;
  /** See `ExpertFallback.backgroundLoads`. */
  readonly backgroundLoads?: BackgroundLoadPolicy;
}

/** The copies, resident in backend slots. */
export interface ResidentCopies extends ExpertFallback {
  /** Bytes of all copies' slots. */
  readonly bytes: number;
  /** Release the slots. */
  dispose(): void;
}

const PARTS = ["gate", "up", "down"] as const;

/** `loc` with each matrix re-typed to `type` (offsets relative to the expert's first byte). */
export function copyLocation(loc: ExpertLocation, type: number): ExpertLocation {
  let at = 0, bytes = 0;
  const mat = (m: MatrixRef | null): MatrixRef | null => {
    if (!m) return null;
    const t = traitsOf(type);
    if (m.cols % t.blockSize !== 0) {
      throw new StoreError(
        "bad_option",
        `Cannot copy '${m.name}' as ${
          ggmlTypeName(type)
        }: ${m.cols} columns are not a multiple of its block of ${t.blockSize}`,
        { name: m.name, type, cols: m.cols },
      );
    }
    const nbytes = rowBytes(type, m.cols) * m.rows;
    const r = { ...m, type, fileOffset: at, nbytes };
    at += nbytes;
    bytes += nbytes;
    return r;
  };
  const gate = mat(loc.gate), up = mat(loc.up)!, down = mat(loc.down)!;
  return { layer: loc.layer, index: loc.index, gate, up, down, bytes };
}

/**
 * Re-quantize one expert's matrices (`parts` in its own types) to `type`,
 * in slot layout (gate, up, down back to back). Same bytes as llama.cpp's
 * reference quantizer of `type` applied to the dequantized weights.
 */
export function quantizeExpert(
  loc: ExpertLocation,
  parts: Record<"gate" | "up" | "down", Uint8Array | null>,
  type: number,
): Uint8Array {
  const cl = copyLocation(loc, type);
  const out = new Uint8Array(cl.bytes);
  const lay = expertLayout(cl);
  const dst = traitsOf(type);
  for (const p of PARTS) {
    const m = loc[p], b = parts[p];
    if (!m || !b) continue;
    if (m.type === type) {
      out.set(b, lay[p]);
      continue;
    }
    const src = traitsOf(m.type);
    const srb = rowBytes(m.type, m.cols), drb = rowBytes(type, m.cols);
    const row = new Float32Array(m.cols);
    for (let r = 0; r < m.rows; r++) {
      src.dequantize(b, r * srb, m.cols, row, 0);
      dst.quantize(row, 0, m.cols, out, lay[p] + r * drb);
    }
  }
  return out;
}

/** Split an expert's slot-layout bytes into its matrices. */
function splitParts(
  loc: ExpertLocation,
  bytes: Uint8Array,
): Record<"gate" | "up" | "down", Uint8Array | null> {
  const lay = expertLayout(loc);
  const part = (m: MatrixRef | null, at: number) => m ? bytes.subarray(at, at + m.nbytes) : null;
  return {
    gate: part(loc.gate, lay.gate),
    up: part(loc.up, lay.up)!,
    down: part(loc.down, lay.down)!,
  };
}

/**
 * Write the copies of `plan` as a side GGUF: for each planned expert its
 * gate, up and down copies, named like the expert slices
 * (`blk.L.ffn_up_exps.weight[e]`), 2-D, back to back; metadata records the
 * mode and the source's size. Reads every expert once from `source`.
 */
export async function writeCopiesGguf(
  source: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
  plan: CopyPlan,
  meta: { mode: string } = { mode: "fallback" },
  onExpert?: (loc: ExpertLocation) => void,
): Promise<Uint8Array> {
  const tensors: { name: string; dims: number[]; type: number; data: Uint8Array }[] = [];
  for (const row of locations) {
    for (const loc of row) {
      const type = plan(loc.layer, loc.index);
      if (type === null) continue;
      const bytes = await fetchExpert({ source }, loc);
      const q = quantizeExpert(loc, splitParts(loc, bytes), type);
      const cl = copyLocation(loc, type);
      const lay = expertLayout(cl);
      for (const p of PARTS) {
        const m = cl[p];
        if (!m) continue;
        tensors.push({
          name: m.name,
          dims: [m.cols, m.rows],
          type,
          data: q.subarray(lay[p], lay[p] + m.nbytes),
        });
      }
      onExpert?.(loc);
    }
  }
  return writeGguf({
    metadata: [
      ["general.type", { type: GgufValueType.STRING, value: "moe-edge.expert-copies" }],
      ["moe_edge.expert_copies.mode", { type: GgufValueType.STRING, value: meta.mode }],
      ["moe_edge.expert_copies.source_bytes", {
        type: GgufValueType.UINT64,
        value: BigInt(source.size),
      }],
    ],
    tensors,
  });
}

/**
 * Locations of the copies inside a side GGUF read from `source` (null for
 * experts it has no copy of). Throws `StoreError` `"manifest_mismatch"` when
 * a copy's shape differs from the expert's or its matrices are not back to
 * back (one read per expert).
 */
export async function sideLocations(
  source: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
): Promise<(ExpertLocation | null)[][]> {
  const f = await readGguf(source);
  const byName = new Map(f.tensors.map((t) => [t.name, t]));
  return locations.map((row) =>
    row.map((loc) => {
      const m = (r: MatrixRef | null): MatrixRef | null | undefined => {
        if (!r) return null;
        const t = byName.get(r.name);
        if (!t) return undefined;
        if (t.dims[0] !== r.cols || (t.dims[1] ?? 1) !== r.rows) {
          throw new StoreError(
            "manifest_mismatch",
            `Cannot use expert copies from ${source.name}: '${r.name}' is ${
              t.dims.join("×")
            }, the model's is ${r.cols}×${r.rows}`,
            { name: r.name },
          );
        }
        return { ...r, type: t.type, fileOffset: t.fileOffset, nbytes: t.nbytes };
      };
      const gate = m(loc.gate), up = m(loc.up), down = m(loc.down);
      if (gate === undefined || !up || !down) return null;
      const ok = (gate ? gate.fileOffset + gate.nbytes === up.fileOffset : true) &&
        up.fileOffset + up.nbytes === down.fileOffset;
      if (!ok) {
        throw new StoreError(
          "manifest_mismatch",
          `Cannot use expert copies from ${source.name}: the matrices of expert ${loc.index} of layer ${loc.layer} are not back to back`,
          { layer: loc.layer, index: loc.index },
        );
      }
      return {
        layer: loc.layer,
        index: loc.index,
        gate,
        up,
        down,
        bytes: (gate?.nbytes ?? 0) + up.nbytes + down.nbytes,
      };
    })
  );
}

/**
 * Load the copies into backend slots (repacked: they are used often).
 * From `opts.source` when given (checked against `opts.manifest`), else
 * made now from `modelSource` (one read per expert, quantized on this
 * thread: fast for Q4_0/Q8_0/Q3_K, slow for Q2_K — make those ahead of time).
 * Throws `StoreError` (`"bad_option"` without a type or plan).
 */
export async function loadFallbackCopies(
  backend: Backend,
  modelSource: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
  opts: FallbackCopiesOptions,
): Promise<ResidentCopies> {
  const plan: CopyPlan | null = opts.plan ?? (opts.type !== undefined ? () => opts.type! : null);
  if (!plan && !opts.source) {
    throw new StoreError(
      "bad_option",
      "Cannot load expert copies: give a type, a plan or a side file",
    );
  }
  const side = opts.source ? await sideLocations(opts.source, locations) : null;
  const slots: Slot[] = [];
  const weights: (ExpertWeights | null)[][] = [];
  let total = 0;
  try {
    for (const row of locations) {
      const ws: (ExpertWeights | null)[] = [];
      for (const loc of row) {
        let cl: ExpertLocation | null = null;
        let bytes: Uint8Array | null = null;
        if (side) {
          cl = side[loc.layer][loc.index];
          if (cl) {
            const sha256 = opts.manifest?.experts[loc.layer]?.[loc.index];
            bytes = await fetchExpert({ source: opts.source!, sha256 }, cl);
          }
        } else {
          const type = plan!(loc.layer, loc.index);
          if (type !== null) {
            cl = copyLocation(loc, type);
            bytes = quantizeExpert(
              loc,
              splitParts(loc, await fetchExpert({ source: modelSource }, loc)),
              type,
            );
          }
        }
        if (!cl || !bytes) {
          ws.push(null);
          continue;
        }
        const slot = backend.allocSlot(cl.bytes);
        slots.push(slot);
        total += cl.bytes;
        backend.writeSlot(slot, 0, bytes);
        ws.push(prepareExpert(backend, expertViews({ ...cl }, slot)));
      }
      weights.push(ws);
    }
  } catch (e) {
    for (const s of slots) backend.freeSlot(s);
    throw e;
  }
  let disposed = false;
  return {
    bytes: total,
    criticalWeight: opts.criticalWeight,
    loadOnFallback: opts.loadOnFallback,
    backgroundLoads: opts.backgroundLoads,
    weights: (layer, index) => disposed ? null : weights[layer]?.[index] ?? null,
    dispose(): void {
      if (disposed) return;
      disposed = true;
      for (const s of slots) backend.freeSlot(s);
    },
  };
}
