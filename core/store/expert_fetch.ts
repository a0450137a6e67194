/**
 * Fetching one expert for the streaming store: its three matrices from the
 * byte source in slot layout, the manifest's SHA-256 check, then the bytes
 * hook (weight plugins) — ready for one `writeSlot`.
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ExpertLocation } from "./expert_location.ts";
import type { ByteSource } from "./byte_source.ts";
import { type ExpertBytesHook, expertLayout } from "./expert_loader.ts";
import { readExpertBytes, sha256Hex } from "./expert_manifest.ts";
import { readRanges } from "./read_ranges.ts";

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

/** One fetched expert: its matrices' bytes (for `writeSlot` at `expertLayout`), checked and transformed. */
export interface FetchedExpert {
  /** Gate, up and down bytes (`gate` null for experts without one). Views: do not write into them. */
  readonly parts: {
    readonly gate: Uint8Array | null;
    readonly up: Uint8Array;
    readonly down: Uint8Array;
  };
  /** This expert's share of the batch's read time (wall, checks excluded), ms. */
  readonly readMs: number;
  /** This expert's share of the time spent checking bytes (hashes), ms. */
  readonly verifyMs: number;
}

const PARTS = ["gate", "up", "down"] as const;

/**
 * Fetch several experts with one coalesced batch of reads (`readRanges`:
 * adjacent matrix ranges merged, spans read in parallel, a verifying source
 * checking each range), then per expert the manifest's SHA-256 and the bytes
 * hook. Result `i` settles with expert `locs[i]` (all from the same reads,
 * so they settle together). Throws like `fetchExpert`.
 */
export function fetchExpertBatch(
  spec: FetchSpec & { readonly sha256s?: readonly (string | undefined)[] },
  locs: readonly ExpertLocation[],
  signal?: AbortSignal,
): Promise<FetchedExpert>[] {
  const ranges: { offset: number; length: number }[] = [];
  for (const loc of locs) {
    for (const p of PARTS) {
      const m = loc[p];
      if (m) ranges.push({ offset: m.fileOffset, length: m.nbytes });
    }
  }
  const timing = { verifyMs: 0 };
  const t0 = performance.now();
  const all = readRanges(spec.source, ranges, signal, timing).then((bufs) => ({
    bufs,
    wall: performance.now() - t0,
  }));
  let at = 0;
  return locs.map((loc, i) => {
    const first = at;
    at += loc.gate ? 3 : 2;
    return all.then(
      async ({ bufs, wall }) => {
        const n = locs.length;
        const got = bufs.slice(first, first + (loc.gate ? 3 : 2));
        const [gate, up, down] = loc.gate ? got : [null, ...got];
        spec.onBytes?.(got.reduce((a, b) => a + b.byteLength, 0));
        let verifyMs = timing.verifyMs / n;
        const sha = spec.sha256s?.[i];
        if (sha !== undefined) {
          const v0 = performance.now();
          const whole = new Uint8Array(loc.bytes);
          let o = 0;
          for (const b of got) {
            whole.set(b, o);
            o += b.byteLength;
          }
          const h = await sha256Hex(whole.subarray(0, o));
          verifyMs += performance.now() - v0;
          if (h !== sha) {
            throw new StoreError(
              "integrity",
              `Cannot load expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}: SHA-256 ${h} does not match the manifest's ${sha}`,
              { layer: loc.layer, index: loc.index, expected: sha, actual: h },
            );
          }
        }
        const parts = { gate, up: up!, down: down! };
        const hook = spec.expertBytes;
        if (hook) {
          for (const p of PARTS) {
            const m = loc[p];
            if (!m || !parts[p]) continue;
            // a hook may write into its bytes: never into the source's (a memory source's views)
            const b = parts[p]!.slice();
            parts[p] = b;
            const out = hook(loc, p, b);
            if (!out || out === b) continue;
            if (out.byteLength !== m.nbytes) {
              throw new StoreError(
                "bad_transform",
                `Cannot load expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}: the bytes hook returned ${out.byteLength} bytes for '${m.name}', expected ${m.nbytes}`,
                { layer: loc.layer, index: loc.index, part: p },
              );
            }
            parts[p] = out;
          }
        }
        return { parts, readMs: (wall - timing.verifyMs) / n, verifyMs };
      },
      (e) => {
        if (e instanceof StoreError) throw e;
        throw new StoreError(
          "load_failed",
          `Cannot load expert ${loc.index} of layer ${loc.layer} from ${spec.source.name}: ${
            (e as Error).message
          }`,
          { layer: loc.layer, index: loc.index },
        );
      },
    );
  });
}
