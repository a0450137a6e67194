/**
 * Fetching one expert for the streaming store: its three matrices from the
 * byte source in slot layout, the manifest's SHA-256 check, then the bytes
 * hook (weight plugins) — ready for one `writeSlot`.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ExpertLocation } from "../model/weights.ts";
import type { ByteSource } from "./byte_source.ts";
import { type ExpertBytesHook, expertLayout } from "./expert_loader.ts";
import { readExpertBytes, sha256Hex } from "./expert_manifest.ts";

/** Where and how to fetch. */
export interface FetchSpec {
  /** Source of the bytes. */
  readonly source: ByteSource;
  /** Transform/check hook, applied after the hash check. */
  readonly expertBytes?: ExpertBytesHook;
  /** Expected hex SHA-256 of the raw bytes, if known. */
  readonly sha256?: string;
  /** Told how many bytes came from the source (also when a check fails afterwards). */
  readonly onBytes?: (n: number) => void;
}

/**
 * Fetch, verify and transform one expert. Throws `StoreError`: the source's
 * own codes, `"load_failed"` for other read failures, `"integrity"`,
 * `"bad_transform"`.
 */
export async function fetchExpert(
  spec: FetchSpec,
  loc: ExpertLocation,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const where = `expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}`;
  let bytes: Uint8Array;
  try {
    bytes = await readExpertBytes(spec.source, loc, signal);
  } catch (e) {
    if (e instanceof StoreError) throw e;
    throw new StoreError("load_failed", `Cannot load ${where}: ${(e as Error).message}`, {
      layer: loc.layer,
      index: loc.index,
    });
  }
  spec.onBytes?.(bytes.byteLength);
  if (spec.sha256 !== undefined) {
    const got = await sha256Hex(bytes);
    if (got !== spec.sha256) {
      throw new StoreError(
        "integrity",
        `Cannot load ${where}: SHA-256 ${got} does not match the manifest's ${spec.sha256}`,
        { layer: loc.layer, index: loc.index, expected: spec.sha256, actual: got },
      );
    }
  }
  const hook = spec.expertBytes;
  if (hook) {
    const lay = expertLayout(loc);
    for (const part of ["gate", "up", "down"] as const) {
      const m = loc[part];
      if (!m) continue;
      const sub = bytes.subarray(lay[part], lay[part] + m.nbytes);
      const out = hook(loc, part, sub);
      if (!out || out === sub) continue;
      if (out.byteLength !== m.nbytes) {
        throw new StoreError(
          "bad_transform",
          `Cannot load ${where}: the bytes hook returned ${out.byteLength} bytes for '${m.name}', expected ${m.nbytes}`,
          { layer: loc.layer, index: loc.index, part },
        );
      }
      sub.set(out);
    }
  }
  return bytes;
}
