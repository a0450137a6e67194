/**
 * The expert manifest: a SHA-256 per expert (over its gate, up and down
 * bytes back to back, the slot layout of `expertLayout`), written by
 * `deno task cli manifest` and checked by the streaming store on every load,
 * so a corrupted or swapped file fails with `StoreError` `"integrity"`
 * instead of producing wrong tokens. It may also pin experts resident.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ExpertLocation, MatrixRef } from "../model/weights.ts";
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
  /** Format version. */
  readonly version: 1;
  /** Hash algorithm. */
  readonly algorithm: "sha256";
  /** Size of the model file in bytes. */
  readonly fileBytes: number;
  /** `experts[l][e]` = lowercase hex SHA-256 of expert e of layer l (`[]` for dense layers). */
  readonly experts: readonly (readonly string[])[];
  /** Experts to keep resident always (they count toward the budget). */
  readonly pinned?: readonly ExpertRef[];
}

/** Lowercase hex SHA-256 of `bytes` (WebCrypto). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
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
  if (o.version !== 1) throw bad(`version must be 1: received ${JSON.stringify(o.version)}`);
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
  return o as unknown as ExpertManifest;
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
