/**
 * The integrity manifest: a SHA-256 per expert (over its gate, up and down
 * bytes back to back, the slot layout of `expertLayout`) and — from version
 * 2 — per non-expert tensor and over the GGUF header, written by
 * `deno task cli manifest` and checked on every read of those bytes
 * (resident load, streamed fetches and re-fetches), so a corrupted or
 * swapped file fails with `StoreError` `"integrity"` instead of producing
 * wrong tokens. It may also pin experts resident. Version 1 files (experts
 * only) are still accepted.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ExpertLocation, MatrixRef } from "./expert_location.ts";
import type { ByteSource } from "./byte_source.ts";
import { expertLayout } from "./expert_loader.ts";

/** An expert named by layer and index. */
export interface ExpertRef {
  /** Layer. */
  readonly layer: number;
  /** Index within the layer. */
  readonly index: number;
}

/** Per-expert hashes of a model file (the JSON written by `cli manifest`). */
export interface ExpertManifest {
  /** Format tag. */
  readonly format: "moe-edge.expert-manifest";
  /** Format version: 2 adds `tensors` and `header`; 1 has experts only. */
  readonly version: 1 | 2;
  /** Hash algorithm. */
  readonly algorithm: "sha256";
  /** Size of the model file in bytes. */
  readonly fileBytes: number;
  /** `experts[l][e]` = lowercase hex SHA-256 of expert e of layer l (`[]` for dense layers). */
  readonly experts: readonly (readonly string[])[];
  /** Experts to keep resident always (they count toward the budget). */
  readonly pinned?: readonly ExpertRef[];
  /** Version 2: every tensor not covered by `experts`, each read whole. */
  readonly tensors?: readonly ManifestTensor[];
  /** Version 2: the GGUF header, bytes `[0, bytes)` (up to the tensor data). */
  readonly header?: { readonly bytes: number; readonly sha256: string };
}

/** A non-expert tensor's byte range and SHA-256 in a version 2 manifest. */
export interface ManifestTensor {
  /** GGUF tensor name. */
  readonly name: string;
  /** Absolute byte offset in the file. */
  readonly offset: number;
  /** Byte length. */
  readonly bytes: number;
  /** Lowercase hex SHA-256 of the bytes. */
  readonly sha256: string;
}

/**
 * Lowercase hex SHA-256 of `bytes` (WebCrypto, which copies its input when called). WebCrypto
 * refuses views of a `SharedArrayBuffer` (the threaded WASM backend's memory, read in place by the
 * streaming store): those are copied first.
 */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const input = bytes.buffer instanceof SharedArrayBuffer ? bytes.slice() : bytes;
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", input as Uint8Array<ArrayBuffer>));
  let s = "";
  for (const b of d) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Read an expert's three matrices from `source` into one buffer in slot layout. */
export async function readExpertBytes(
  source: ByteSource,
  loc: ExpertLocation,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const lay = expertLayout(loc);
  const parts: [MatrixRef | null, number][] = [[loc.gate, lay.gate], [loc.up, lay.up], [
    loc.down,
    lay.down,
  ]];
  const reads = await Promise.all(
    parts.map(([m]) => m ? source.read(m.fileOffset, m.nbytes, signal) : null),
  );
  const out = new Uint8Array(loc.bytes);
  for (let i = 0; i < parts.length; i++) {
    const [m, off] = parts[i];
    const b = reads[i];
    if (!m || !b) continue;
    if (b.byteLength !== m.nbytes) {
      throw new StoreError(
        "short_read",
        `Cannot load expert ${loc.index} of layer ${loc.layer}: '${m.name}' gave ${b.byteLength} of ${m.nbytes} bytes`,
        { layer: loc.layer, index: loc.index },
      );
    }
    out.set(b, off);
  }
  return out;
}

/** Hash every expert of a model: the manifest `cli manifest` writes. */
export async function buildExpertManifest(
  source: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
  pinned: readonly ExpertRef[] = [],
): Promise<ExpertManifest> {
  const experts: string[][] = [];
  for (const locs of locations) {
    const row: string[] = [];
    for (const loc of locs) row.push(await sha256Hex(await readExpertBytes(source, loc)));
    experts.push(row);
  }
  const m: ExpertManifest = {
    format: "moe-edge.expert-manifest",
    version: 1,
    algorithm: "sha256",
    fileBytes: source.size,
    experts,
  };
  return pinned.length ? { ...m, pinned: [...pinned] } : m;
}

function bad(msg: string): StoreError {
  return new StoreError("bad_manifest", `Cannot read expert manifest: ${msg}`);
}

/** Validate parsed JSON as an `ExpertManifest`. Throws `StoreError` `"bad_manifest"` naming the field. */
export function parseExpertManifest(json: unknown): ExpertManifest {
  const o = json as Record<string, unknown>;
  if (typeof o !== "object" || o === null) throw bad("not an object");
  if (o.format !== "moe-edge.expert-manifest") {
    throw bad(`format must be "moe-edge.expert-manifest": received ${JSON.stringify(o.format)}`);
  }
  if (o.version !== 1 && o.version !== 2) {
    throw bad(`version must be 1 or 2: received ${JSON.stringify(o.version)}`);
  }
  if (o.algorithm !== "sha256") {
    throw bad(`algorithm must be "sha256": received ${JSON.stringify(o.algorithm)}`);
  }
  if (!Number.isSafeInteger(o.fileBytes) || (o.fileBytes as number) < 0) {
    throw bad("fileBytes must be a byte count");
  }
  if (!Array.isArray(o.experts)) throw bad("experts must be an array of layers");
  o.experts.forEach((row: unknown, l: number) => {
    if (!Array.isArray(row)) throw bad(`experts[${l}] must be an array`);
    row.forEach((h: unknown, e: number) => {
      if (typeof h !== "string" || !/^[0-9a-f]{64}$/.test(h)) {
        throw bad(`experts[${l}][${e}] must be 64 lowercase hex digits`);
      }
    });
  });
  if (o.pinned !== undefined) {
    if (!Array.isArray(o.pinned)) throw bad("pinned must be an array");
    o.pinned.forEach((p: unknown, i: number) => {
      const r = p as Record<string, unknown>;
      if (
        typeof r !== "object" || r === null || !Number.isInteger(r.layer) ||
        !Number.isInteger(r.index)
      ) {
        throw bad(`pinned[${i}] must be {"layer": int, "index": int}`);
      }
    });
  }
  if (o.version === 2) parseV2(o);
  else if (o.tensors !== undefined || o.header !== undefined) {
    throw bad("tensors and header need version 2");
  }
  return o as unknown as ExpertManifest;
}

const HEX64 = /^[0-9a-f]{64}$/;
const isCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;

function parseV2(o: Record<string, unknown>): void {
  if (!Array.isArray(o.tensors)) throw bad("tensors must be an array (version 2)");
  o.tensors.forEach((t: unknown, i: number) => {
    const r = t as Record<string, unknown>;
    if (typeof r !== "object" || r === null) throw bad(`tensors[${i}] must be an object`);
    if (typeof r.name !== "string" || r.name === "") throw bad(`tensors[${i}].name must be a name`);
    if (!isCount(r.offset)) throw bad(`tensors[${i}].offset must be a byte offset`);
    if (!isCount(r.bytes)) throw bad(`tensors[${i}].bytes must be a byte count`);
    if (typeof r.sha256 !== "string" || !HEX64.test(r.sha256)) {
      throw bad(`tensors[${i}].sha256 must be 64 lowercase hex digits`);
    }
  });
  const h = o.header as Record<string, unknown>;
  if (typeof h !== "object" || h === null) throw bad("header must be an object (version 2)");
  if (!isCount(h.bytes) || (h.bytes as number) === 0) {
    throw bad("header.bytes must be a byte count");
  }
  if (typeof h.sha256 !== "string" || !HEX64.test(h.sha256)) {
    throw bad("header.sha256 must be 64 lowercase hex digits");
  }
}

/** Check a manifest describes the model of `locations` read from `source`. */
export function checkManifestFits(
  m: ExpertManifest,
  source: ByteSource,
  locations: readonly (readonly ExpertLocation[])[],
): void {
  const fail = (why: string): never => {
    throw new StoreError(
      "manifest_mismatch",
      `Cannot use expert manifest for ${source.name}: ${why}`,
    );
  };
  if (m.fileBytes !== source.size) {
    fail(`it is for a file of ${m.fileBytes} bytes, this one has ${source.size}`);
  }
  if (m.experts.length !== locations.length) {
    fail(`it has ${m.experts.length} layers, the model ${locations.length}`);
  }
  locations.forEach((locs, l) => {
    if (m.experts[l].length !== locs.length) {
      fail(`layer ${l} has ${m.experts[l].length} hashes, the model ${locs.length} experts`);
    }
  });
  for (const p of m.pinned ?? []) {
    if (!locations[p.layer]?.[p.index]) {
      fail(`pinned expert ${p.index} of layer ${p.layer} does not exist`);
    }
  }
}
