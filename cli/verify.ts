/**
 * `cli verify`: check every byte of a model file (or URL) against an
 * integrity manifest — the GGUF header, every non-expert tensor and every
 * expert — without keeping the experts in memory. Exit 0 when all match;
 * a mismatch is `StoreError` `"integrity"` (exit 1).
 *
 * @module
 */

import { loadModel } from "../core/model/model.ts";
import { type ExpertManifest, parseExpertManifest } from "../core/store/expert_manifest.ts";
import { fetchExpert } from "../core/store/expert_fetch.ts";
import { ResidentExpertStore } from "../core/store/expert_store.ts";
import { EXIT } from "./options.ts";

/** What `verify` checked. */
export interface VerifyReport {
  /** The model checked. */
  readonly model: string;
  /** Manifest version (1: experts only). */
  readonly manifestVersion: number;
  /** Non-expert tensors checked against their SHA-256. */
  readonly tensors: number;
  /** Experts checked against their SHA-256. */
  readonly experts: number;
  /** Bytes hashed. */
  readonly bytes: number;
  /** Whether the GGUF header was checked. */
  readonly header: boolean;
}

/**
 * Check `o.model` against the manifest file `o.expertManifest`; writes a
 * line (or JSON with `o.json`) through `write`. Throws `StoreError`
 * (`"integrity"`, `"manifest_mismatch"`, `"bad_manifest"`) on failure.
 */
export async function verifyModel(
  o: Record<string, unknown>,
  write: (s: string) => Promise<void>,
): Promise<number> {
  const v = o as { model: string; expertManifest: string; json?: boolean };
  const manifest: ExpertManifest = parseExpertManifest(
    JSON.parse(await Deno.readTextFile(v.expertManifest)),
  );
  let experts = 0, expertBytes = 0;
  const model = await loadModel(v.model, {
    backend: "ref",
    manifest,
    hooks: {
      // every expert is read once and checked, none is kept
      createStore: async (ctx) => {
        for (const locs of ctx.locations) {
          for (const loc of locs) {
            const sha256 = manifest.experts[loc.layer]?.[loc.index];
            await fetchExpert({ source: ctx.source, sha256 }, loc);
            experts++;
            expertBytes += loc.bytes;
          }
        }
        return new ResidentExpertStore([]);
      },
    },
  });
  let tensorBytes = 0;
  try {
    // the load read the tensors the architecture uses; read every listed one (each is checked)
    for (const t of manifest.tensors ?? []) {
      await model.file.source.read(t.offset, t.bytes);
      tensorBytes += t.bytes;
    }
  } finally {
    model.dispose();
  }
  const report: VerifyReport = {
    model: v.model,
    manifestVersion: manifest.version,
    tensors: manifest.tensors?.length ?? 0,
    experts,
    bytes: (manifest.header?.bytes ?? 0) + tensorBytes + expertBytes,
    header: manifest.header !== undefined,
  };
  await write(
    v.json ? JSON.stringify(report) + "\n" : `ok: ${report.model} matches the manifest ` +
      `(header ${report.header ? "checked" : "not in a v1 manifest"}, ${report.tensors} tensors, ` +
      `${report.experts} experts, ${report.bytes} bytes hashed)\n`,
  );
  return EXIT.ok;
}
