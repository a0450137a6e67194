/**
 * Integrity of every byte a model load reads, by default:
 *
 * - `"verify"` (the default): reads go through an `IntegritySource`
 *   (trust-on-first-read hashes of every range); `HttpSource` requires a
 *   strong validator and sends it on every range request; `FileSource`
 *   checks size and mtime after every read. With a manifest, every tensor
 *   and the GGUF header are also checked against their SHA-256.
 * - `"pin"`: reads the whole file once at open and records a hash per 64 KiB
 *   block (`PinnedSource`, a manifest generated on first load): every later
 *   read, first reads included, must match the content seen at open.
 * - `"off"`: the explicit opt-out — no checks but a manifest's, when one is
 *   given (asking for a manifest is asking for its checks).
 *
 * See docs/integrity.md for what each check catches and what it costs.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { GgufFile } from "../formats/gguf_reader.ts";
import type { ExpertLocation } from "./expert_location.ts";
import type { ByteSource } from "./byte_source.ts";
import {
  buildExpertManifest,
  checkManifestFits,
  type ExpertManifest,
  type ExpertRef,
  type ManifestTensor,
  sha256Hex,
} from "./expert_manifest.ts";
import { IntegritySource } from "./integrity_source.ts";
import { PinnedSource } from "./pinned_source.ts";

/**
 * `"verify"` (default): first-read hashes and source validators; `"pin"`:
 * hash the whole file at open and check every read against it; `"off"`:
 * the explicit opt-out.
 */
export type IntegrityMode = "verify" | "pin" | "off";

/** Names of the GGUF tensors that hold experts (merged `…_exps` or legacy per-expert). */
export function expertTensorNames(
  locations: readonly (readonly ExpertLocation[])[],
): Set<string> {
  const names = new Set<string>();
  for (const locs of locations) {
    for (const loc of locs) {
      for (const m of [loc.gate, loc.up, loc.down]) {
        if (m) names.add(m.name.replace(/\[\d+\]$/, ""));
      }
    }
  }
  return names;
}

/**
 * Hash a model for integrity: every expert (as `buildExpertManifest`), every
 * other tensor read whole, and the GGUF header — a version 2 manifest.
 *
 * @example
 * ```ts ignore
 * const m = await buildIntegrityManifest(model.file, locations);
 * await Deno.writeTextFile("model.manifest.json", JSON.stringify(m));
 * ```
 */
export async function buildIntegrityManifest(
  file: GgufFile,
  locations: readonly (readonly ExpertLocation[])[],
  pinned: readonly ExpertRef[] = [],
): Promise<ExpertManifest> {
  const src = file.source;
  const base = await buildExpertManifest(src, locations, pinned);
  const skip = expertTensorNames(locations);
  const tensors: ManifestTensor[] = [];
  for (const t of file.tensors) {
    if (skip.has(t.name)) continue;
    const sha256 = await sha256Hex(await src.read(t.fileOffset, t.nbytes));
    tensors.push({ name: t.name, offset: t.fileOffset, bytes: t.nbytes, sha256 });
  }
  const hb = Math.max(1, Math.min(file.dataOffset, src.size));
  const header = { bytes: hb, sha256: await sha256Hex(await src.read(0, hb)) };
  return { ...base, version: 2, tensors, header };
}

function mismatch(source: ByteSource, why: string): never {
  throw new StoreError(
    "manifest_mismatch",
    `Cannot use the integrity manifest for ${source.name}: ${why}`,
  );
}

/**
 * Check a version 2 manifest's tensors against the parsed index: each entry
 * names a tensor at the same offset and size, the header ends where the
 * tensor data starts, and — once `locations` are known — every tensor is
 * covered by `tensors` or `experts`. Throws `StoreError` `"manifest_mismatch"`.
 */
export function checkManifestTensors(
  m: ExpertManifest,
  file: GgufFile,
  locations?: readonly (readonly ExpertLocation[])[],
): void {
  if (m.version !== 2 || !m.tensors || !m.header) return;
  const src = file.source;
  const hb = Math.max(1, Math.min(file.dataOffset, src.size));
  if (m.header.bytes !== hb) {
    mismatch(src, `its header covers ${m.header.bytes} bytes, the file's is ${hb}`);
  }
  const listed = new Set<string>();
  for (const t of m.tensors) {
    if (!file.hasTensor(t.name)) mismatch(src, `the file has no tensor '${t.name}'`);
    const info = file.tensor(t.name);
    if (info.fileOffset !== t.offset || info.nbytes !== t.bytes) {
      mismatch(
        src,
        `tensor '${t.name}' is [${t.offset}, +${t.bytes}) in the manifest, [${info.fileOffset}, +${info.nbytes}) in the file`,
      );
    }
    listed.add(t.name);
  }
  if (!locations) return;
  const experts = expertTensorNames(locations);
  for (const t of file.tensors) {
    if (!listed.has(t.name) && !experts.has(t.name)) {
      mismatch(src, `tensor '${t.name}' has no hash in the manifest`);
    }
  }
}

/** What a model load needs to verify its reads (see `beginVerifiedLoad`). */
export interface VerifiedLoad {
  /** The source to read everything through. */
  readonly source: ByteSource;
  /** Call once the GGUF index is parsed (drops the verified header, checks the manifest's tensors). */
  indexed(file: GgufFile): void;
  /**
   * Call once expert locations are known, before the expert store reads
   * (manifest coverage and expert shapes; first-read hashes start here).
   */
  located(file: GgufFile, locations: readonly (readonly ExpertLocation[])[]): void;
}

/**
 * Set up the checks of one model load over `raw`: wraps it in an
 * `IntegritySource` unless `mode` is `"off"` and there is no manifest, and,
 * with a version 2 manifest, verifies the header before it is parsed and
 * registers every non-expert tensor's SHA-256. `rereads`: whether the
 * expert store may read a range again (a streaming or custom store): only
 * then are first-read hashes recorded, from `located` on — the index and
 * the non-expert tensors are read once, and so is every expert of a
 * resident store, so a record of them could never be compared (their reads
 * still carry the source's validators and the manifest's checks). Throws
 * `StoreError` `"manifest_mismatch"` or `"integrity"`.
 */
export async function beginVerifiedLoad(
  raw: ByteSource,
  mode: IntegrityMode = "verify",
  manifest?: ExpertManifest,
  rereads = true,
): Promise<VerifiedLoad> {
  if (mode !== "verify" && mode !== "pin" && mode !== "off") {
    throw new StoreError(
      "bad_option",
      `Cannot load model: integrity must be "verify", "pin" or "off": received ${
        JSON.stringify(mode)
      }`,
    );
  }
  if (mode === "off" && !manifest) {
    return { source: raw, indexed() {}, located() {} };
  }
  // pinned: every read is checked against the blocks hashed now, first-read hashes add nothing
  const src = new IntegritySource(mode === "pin" ? (await PinnedSource.pin(raw)).source : raw);
  src.recordFirstReads = false;
  if (manifest) {
    if (manifest.fileBytes !== raw.size) {
      mismatch(raw, `it is for a file of ${manifest.fileBytes} bytes, this one has ${raw.size}`);
    }
    if (manifest.header) {
      if (manifest.header.bytes > raw.size) {
        mismatch(raw, `its header of ${manifest.header.bytes} bytes is past the file's end`);
      }
      await src.verifyPrefix(manifest.header.bytes, manifest.header.sha256);
    }
  }
  return {
    source: src,
    indexed(file: GgufFile): void {
      src.releasePrefix();
      if (!manifest) return;
      checkManifestTensors(manifest, file);
      for (const t of manifest.tensors ?? []) src.expect(t.offset, t.bytes, t.sha256, t.name);
    },
    located(file: GgufFile, locations: readonly (readonly ExpertLocation[])[]): void {
      src.recordFirstReads = rereads && mode === "verify";
      if (!manifest) return;
      checkManifestFits(manifest, raw, locations);
      checkManifestTensors(manifest, file, locations);
    },
  };
}
