/**
 * Loads one expert's matrices from a byte source into a backend slot:
 * gate, up and down back to back. Used by the resident store at load time
 * and by streaming stores on a miss.
 *
 * @module
 */

import type { Backend, Slot } from "../backend/backend.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { ExpertLocation, MatrixRef } from "./expert_location.ts";
import type { ByteSource } from "./byte_source.ts";

/** Hook to check or transform an expert's bytes before upload (integrity, weight transforms). */
export type ExpertBytesHook = (
  loc: ExpertLocation,
  part: "gate" | "up" | "down",
  bytes: Uint8Array,
) =>
  | Uint8Array
  | void;

/** Byte layout of an expert inside its slot. */
export function expertLayout(loc: ExpertLocation): { gate: number; up: number; down: number } {
  const g = loc.gate ? loc.gate.nbytes : 0;
  return { gate: 0, up: g, down: g + loc.up.nbytes };
}

/** Weight views of an expert stored in `slot` with `expertLayout`. */
export function expertViews(loc: ExpertLocation, slot: Slot): ExpertWeights {
  const lay = expertLayout(loc);
  const view = (m: MatrixRef, offset: number) => ({
    slot,
    offset,
    type: m.type as never,
    rows: m.rows,
    cols: m.cols,
  });
  return {
    gate: loc.gate ? view(loc.gate, lay.gate) : null,
    up: view(loc.up, lay.up),
    down: view(loc.down, lay.down),
  };
}

/** Read an expert's three matrices from `source` into `slot`; returns its views. */
export async function loadExpertInto(
  source: ByteSource,
  backend: Backend,
  slot: Slot,
  loc: ExpertLocation,
  signal?: AbortSignal,
  hook?: ExpertBytesHook,
): Promise<ExpertWeights> {
  const lay = expertLayout(loc);
  const parts: ["gate" | "up" | "down", MatrixRef | null, number][] = [
    ["gate", loc.gate, lay.gate],
    ["up", loc.up, lay.up],
    ["down", loc.down, lay.down],
  ];
  const reads = await Promise.all(
    parts.map(([, m]) => m ? source.read(m.fileOffset, m.nbytes, signal) : null),
  );
  for (let i = 0; i < parts.length; i++) {
    const [part, m, off] = parts[i];
    if (!m) continue;
    let bytes = reads[i]!;
    if (hook) bytes = hook(loc, part, bytes) ?? bytes;
    backend.writeSlot(slot, off, bytes);
  }
  return prepareExpert(backend, expertViews(loc, slot));
}

/** Let the backend prepare (e.g. repack) an expert's matrices once their bytes are in its slot. */
export function prepareExpert(backend: Backend, w: ExpertWeights): ExpertWeights {
  if (backend.prepareWeights) {
    for (const v of [w.gate, w.up, w.down]) if (v) backend.prepareWeights(v);
  }
  return w;
}
