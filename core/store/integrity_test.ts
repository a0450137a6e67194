/**
 * Integrity by default: the fast change-detection hash, trust-on-first-read
 * ranges, file and HTTP validators, and the version 2 manifest that covers
 * non-expert tensors and the GGUF header (resident and streamed loads).
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  buildExpertManifest,
  buildIntegrityManifest,
  type ByteSource,
  type ExpertManifest,
  FileSource,
  generateText,
  hash64,
  HttpSource,
  IntegritySource,
  loadFromManifest,
  loadModel,
  MemorySource,
  parseExpertManifest,
  PinnedSource,
  readGguf,
  sha256Hex,
} from "../../mod.ts";
import { startFaultServer } from "./fault_server_test_util.ts";
import {
  ALL_EXPERT_BYTES,
  isStoreError,
  modelBytes,
  N_TOKENS,
  PROMPT,
  residentTokens,
  storeContext,
} from "./store_test_util.ts";

// ---------------------------------------------------------------- hash64

Deno.test("hash64: equal bytes hash equal at any alignment; any one-byte change changes the hash", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 300 }),
      fc.integer({ min: 0, max: 3 }),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      (bytes, shift, pos, x) => {
        const h = hash64(bytes);
        assert.match(h, /^[0-9a-f]{16}$/);
        const buf = new Uint8Array(bytes.byteLength + shift);
        buf.set(bytes, shift);
        assert.equal(hash64(buf.subarray(shift)), h, "alignment does not matter");
        if (bytes.byteLength === 0) return;
        const changed = bytes.slice();
        changed[pos % bytes.byteLength] ^= x;
        assert.notEqual(hash64(changed), h, `byte ${pos % bytes.byteLength} ^ ${x}`);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("hash64: length counts (trailing zeros, empty) and it is deterministic", () => {
  const seen = new Set<string>();
  for (let n = 0; n <= 64; n++) seen.add(hash64(new Uint8Array(n)));
  assert.equal(seen.size, 65, "all-zero buffers of 0..64 bytes all differ");
  const big = new Uint8Array(1 << 16).map((_, i) => (i * 13) & 255);
  assert.equal(hash64(big), hash64(big.slice()));
});

// ---------------------------------------------------------------- IntegritySource

/** A memory source whose bytes the test may change between reads. */
class MutableSource implements ByteSource {
  readonly name = "mutable";
  constructor(readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.byteLength;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    return Promise.resolve(this.bytes.slice(offset, offset + length));
  }
}

Deno.test("integrity source: a re-read fails with 'integrity' exactly when a byte of its range changed", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 999 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 0, max: 1199 }),
      fc.integer({ min: 1, max: 255 }),
      async (offset, length, at, x) => {
        const inner = new MutableSource(new Uint8Array(1200).map((_, i) => i * 7));
        const src = new IntegritySource(inner);
        const first = await src.read(offset, length);
        inner.bytes[at] ^= x;
        const inside = at >= offset && at < offset + length;
        if (inside) {
          await assert.rejects(src.read(offset, length), isStoreError("integrity"));
        } else {
          assert.deepEqual(await src.read(offset, length), first);
          assert.equal(src.stats().rereadsMatched, 1);
        }
        // a range never read before is trusted on its first read
        await src.read(offset + 1, length);
        assert.equal(src.stats().rangesRecorded, 2);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("integrity source: an expected SHA-256 is checked on every read and names the tensor", async () => {
  const bytes = new Uint8Array(4096).map((_, i) => i & 255);
  const inner = new MutableSource(bytes);
  const src = new IntegritySource(inner);
  src.expect(100, 50, await sha256Hex(bytes.subarray(100, 150)), "blk.0.attn_q.weight");
  assert.deepEqual(await src.read(100, 50), bytes.subarray(100, 150));
  inner.bytes[120] ^= 1;
  await assert.rejects(
    src.read(100, 50),
    (e) => isStoreError("integrity")(e) && /blk\.0\.attn_q\.weight/.test((e as Error).message),
  );
  assert.equal(src.stats().sha256Checked, 2);
});

// ---------------------------------------------------------------- FileSource

Deno.test("file source: a file written in place while open gives 'changed'; the opt-out reads on", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, new Uint8Array(10_000).fill(7));
    const src = await FileSource.open(path);
    const off = await FileSource.open(path, { checkChanges: false });
    assert.equal((await src.read(0, 100))[0], 7);
    const later = new Date(Date.now() + 5_000);
    const f = await Deno.open(path, { write: true });
    await f.write(new Uint8Array([9]));
    f.close();
    await Deno.utime(path, later, later);
    await assert.rejects(src.read(0, 100), isStoreError("changed"));
    assert.equal((await off.read(0, 100))[0], 9, "opted out: the new bytes, unchecked");
    src.close();
    off.close();
    // grown file: size differs
    const src2 = await FileSource.open(path);
    await Deno.writeFile(path, new Uint8Array(10), { append: true });
    await assert.rejects(src2.read(0, 10), isStoreError("changed"));
    src2.close();
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("file source: concurrent reads (one handle each) return the right bytes; a handle opened after the path was replaced gives 'changed'", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/m.bin`;
  try {
    const bytes = new Uint8Array(1 << 20).map((_, i) => (i * 7 + (i >>> 9)) & 255);
    await Deno.writeFile(path, bytes);
    const src = await FileSource.open(path);
    const ranges = Array.from({ length: 12 }, (_, i) => [i * 70_001, 50_000 + i * 3] as const);
    const got = await Promise.all(ranges.map(([o, n]) => src.read(o, n)));
    ranges.forEach(([o, n], i) => assert.deepEqual(got[i], bytes.subarray(o, o + n)));
    // in place, into views of one buffer, all at once
    const dest = new Uint8Array(12 * 60_000);
    await Promise.all(
      ranges.map(([o, n], i) => src.readInto(o, dest.subarray(i * 60_000, i * 60_000 + n))),
    );
    ranges.forEach(([o, n], i) =>
      assert.deepEqual(dest.subarray(i * 60_000, i * 60_000 + n), bytes.subarray(o, o + n))
    );
    // another file renamed over the path (same size): reads needing a new handle see another inode
    const other = `${dir}/other.bin`;
    await Deno.writeFile(other, new Uint8Array(bytes.byteLength).fill(1));
    await Deno.rename(other, path);
    const many = Array.from({ length: 40 }, (_, i) => src.read(i * 1000, 1000));
    const settled = await Promise.allSettled(many);
    for (const r of settled) {
      if (r.status === "fulfilled") assert.equal(r.value[0], bytes[settled.indexOf(r) * 1000]);
      else assert.ok(isStoreError("changed")(r.reason), String(r.reason));
    }
    src.close();
    await assert.rejects(src.read(0, 10), isStoreError("closed"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("file source + first-read hashes: a rewrite that restores the mtime is still caught on re-read", async () => {
  const path = await Deno.makeTempFile();
  try {
    const t = new Date(Date.UTC(2026, 0, 1));
    await Deno.writeFile(path, new Uint8Array(10_000).fill(1));
    await Deno.utime(path, t, t);
    const src = new IntegritySource(await FileSource.open(path));
    await src.read(5000, 1000);
    const f = await Deno.open(path, { write: true });
    await f.seek(5500, Deno.SeekMode.Start);
    await f.write(new Uint8Array([2]));
    f.close();
    await Deno.utime(path, t, t); // size and mtime as at open
    await assert.rejects(src.read(5000, 1000), isStoreError("integrity"));
    await src.close();
  } finally {
    await Deno.remove(path);
  }
});

// ---------------------------------------------------------------- HTTP validators

const FAST = { backoffMs: 1, maxBackoffMs: 4, timeoutMs: 2000 };

Deno.test("http source: a server without a strong validator is refused unless the caller opts out", async () => {
  for (const v of ["none", "weak-etag"] as const) {
    const srv = startFaultServer(modelBytes(), 600, v);
    try {
      await assert.rejects(HttpSource.open(srv.url, FAST), isStoreError("no_validator"));
      await assert.rejects(loadModel(srv.url, { backend: "ref" }), isStoreError("no_validator"));
      const src = await HttpSource.open(srv.url, { ...FAST, validators: "use" });
      assert.equal(src.size, modelBytes().byteLength);
      const m = await loadModel(srv.url, { backend: "ref", integrity: "off" });
      m.dispose();
    } finally {
      await srv.stop();
    }
  }
});

Deno.test("http source: Last-Modified alone is sent as If-Unmodified-Since; a replaced file is 'changed'", async () => {
  const srv = startFaultServer(modelBytes(), 600, "last-modified");
  try {
    const src = await HttpSource.open(srv.url, FAST);
    assert.equal(src.etag, null);
    assert.ok(src.lastModified);
    await src.read(0, 100);
    const other = modelBytes().slice();
    other[500] ^= 1;
    srv.replace(other, "change");
    await assert.rejects(src.read(0, 100), isStoreError("changed"));
  } finally {
    await srv.stop();
  }
});

// ---------------------------------------------------------------- manifest v2

let manifestCache: ExpertManifest | null = null;
async function manifestV2(): Promise<ExpertManifest> {
  if (!manifestCache) {
    const file = await readGguf(new MemorySource(modelBytes()));
    const ctx = await storeContext(new MemorySource(modelBytes()));
    manifestCache = parseExpertManifest(
      JSON.parse(JSON.stringify(await buildIntegrityManifest(file, ctx.locations))),
    );
  }
  return manifestCache;
}

Deno.test("manifest v2: covers every non-expert tensor and the header; round-trips through JSON", async () => {
  const m = await manifestV2();
  const file = await readGguf(new MemorySource(modelBytes()));
  assert.equal(m.version, 2);
  assert.equal(m.header!.bytes, file.dataOffset);
  const names = new Set(m.tensors!.map((t) => t.name));
  for (const t of file.tensors) {
    assert.equal(names.has(t.name), !/_exps\.weight$/.test(t.name), t.name);
  }
  for (const bad of [{ ...m, tensors: undefined }, { ...m, header: { bytes: 0, sha256: "x" } }]) {
    assert.throws(() => parseExpertManifest(bad), isStoreError("bad_manifest"));
  }
  assert.throws(
    () => parseExpertManifest({ ...m, version: 1 }),
    isStoreError("bad_manifest"),
    "tensors need version 2",
  );
});

/** Which tensor (or "header") holds byte `at`, in the good model. */
async function whereIs(at: number): Promise<string> {
  const file = await readGguf(new MemorySource(modelBytes()));
  if (at < file.dataOffset) return "header";
  const t = file.tensors.find((t) => at >= t.fileOffset && at < t.fileOffset + t.nbytes);
  return t ? t.name : "padding";
}

Deno.test("manifest v2: a changed byte anywhere in a tensor or the header fails the load with 'integrity' (resident and streamed)", async () => {
  const m = await manifestV2();
  const file = await readGguf(new MemorySource(modelBytes()));
  const covered = file.tensors.map((t) => [t.fileOffset, t.nbytes] as const);
  covered.push([0, file.dataOffset]);
  let streamedFailures = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: covered.length - 1 }),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      fc.boolean(),
      async (which, pos, x, streamed) => {
        const [off, n] = covered[which];
        const at = off + (pos % n);
        const bad = modelBytes().slice();
        bad[at] ^= x;
        const what = await whereIs(at);
        const opts = streamed
          ? { backend: "ref", expertBudgetBytes: ALL_EXPERT_BYTES / 4, manifest: m }
          : { backend: "ref", manifest: m };
        let err: unknown = null;
        try {
          const model = await loadModel(bad, opts);
          // a streamed expert is read (and checked) when it is used
          try {
            for (let l = 0; l < model.hp.nLayer; l++) {
              for (let e = 0; e < model.hp.nExpert; e++) await model.store.ensure(l, [e]);
            }
          } finally {
            model.dispose();
          }
        } catch (e) {
          err = e;
        }
        assert.ok(isStoreError("integrity")(err), `${what} byte ${at}: ${err}`);
        if (streamed) streamedFailures++;
      },
    ),
    { numRuns: 60, seed: 20261207 },
  );
  assert.ok(streamedFailures > 0, "both modes were exercised");
});

Deno.test("manifest v2: every non-expert tensor corrupted in turn is caught (10/10 runs of the issue, all tensors here)", async () => {
  const m = await manifestV2();
  for (const t of m.tensors!) {
    const bad = modelBytes().slice();
    bad[t.offset + (t.bytes >> 1)] ^= 0x01; // one bit: a NaN-free, plausible weight
    await assert.rejects(
      loadModel(bad, { backend: "ref", manifest: m, integrity: "off" }),
      (e) => isStoreError("integrity")(e) && (e as Error).message.includes(t.name),
      t.name,
    );
  }
});

Deno.test("manifest v2: a manifest that misses a tensor, or of another file, is 'manifest_mismatch'", async () => {
  const m = await manifestV2();
  const missing = { ...m, tensors: m.tensors!.filter((t) => t.name !== "output_norm.weight") };
  await assert.rejects(
    loadModel(modelBytes(), { backend: "ref", manifest: missing }),
    (e) => isStoreError("manifest_mismatch")(e) && /output_norm\.weight/.test((e as Error).message),
  );
  const moved = {
    ...m,
    tensors: m.tensors!.map((t, i) => i ? t : { ...t, offset: t.offset + 32 }),
  };
  await assert.rejects(
    loadModel(modelBytes(), { backend: "ref", manifest: moved }),
    isStoreError("manifest_mismatch"),
  );
  await assert.rejects(
    loadModel(modelBytes(), { backend: "ref", manifest: { ...m, fileBytes: m.fileBytes + 1 } }),
    isStoreError("manifest_mismatch"),
  );
});

Deno.test("manifest v2: the good file loads with it (resident and streamed) and gives the resident tokens", async () => {
  const want = await residentTokens();
  const m = await manifestV2();
  for (const budget of [undefined, ALL_EXPERT_BYTES / 4]) {
    const model = await loadModel(modelBytes(), {
      backend: "ref",
      manifest: m,
      expertBudgetBytes: budget,
    });
    const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    assert.deepEqual(r.tokens, want);
    model.dispose();
  }
});

Deno.test("manifest v1 (experts only) still loads, and now checks resident experts too", async () => {
  const ctx = await storeContext(new MemorySource(modelBytes()));
  const v1 = await buildExpertManifest(new MemorySource(modelBytes()), ctx.locations);
  assert.equal(v1.version, 1);
  (await loadModel(modelBytes(), { backend: "ref", manifest: v1 })).dispose();
  const bad = modelBytes().slice();
  bad[ctx.locations[2][5].down.fileOffset + 3] ^= 0x20;
  await assert.rejects(
    loadModel(bad, { backend: "ref", manifest: v1 }),
    isStoreError("integrity"),
  );
});

// ---------------------------------------------------------------- no manifest: first-read hashes

Deno.test("default: a streamed expert re-fetched after its bytes changed is 'integrity', never wrong tokens", async () => {
  const inner = new MutableSource(modelBytes().slice());
  const model = await loadModel(inner, { backend: "ref", expertBudgetBytes: ALL_EXPERT_BYTES / 4 });
  try {
    const want = await residentTokens();
    const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
    assert.deepEqual(r.tokens, want);
    // the file changes underneath (a source without validators): every expert differs now
    const ctx = await storeContext(new MemorySource(modelBytes()));
    for (const locs of ctx.locations) for (const l of locs) inner.bytes[l.up.fileOffset + 9] ^= 4;
    await assert.rejects(
      generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 }),
      isStoreError("integrity"),
    );
  } finally {
    model.dispose();
  }
});

Deno.test("default off: the explicit opt-out skips first-read hashes (and the bytes are used as read)", async () => {
  const inner = new MutableSource(modelBytes().slice());
  const model = await loadModel(inner, {
    backend: "ref",
    integrity: "off",
    expertBudgetBytes: ALL_EXPERT_BYTES / 4,
  });
  try {
    assert.ok(!(model.file.source instanceof IntegritySource));
    await generateText(model, PROMPT, { maxTokens: 2, temperature: 0 });
    const ctx = await storeContext(new MemorySource(modelBytes()));
    for (const locs of ctx.locations) for (const l of locs) inner.bytes[l.up.fileOffset + 9] ^= 4;
    await generateText(model, PROMPT, { maxTokens: 2, temperature: 0 }); // no error: opted out
  } finally {
    model.dispose();
  }
  await assert.rejects(
    loadModel(modelBytes(), { backend: "ref", integrity: "maybe" as never }),
    isStoreError("bad_option"),
  );
});

Deno.test("default: first-read hashes are recorded only for ranges a store may read again", async () => {
  const resident = await loadModel(modelBytes(), { backend: "ref" });
  const streamed = await loadModel(modelBytes(), {
    backend: "ref",
    expertBudgetBytes: ALL_EXPERT_BYTES / 4,
  });
  try {
    const r = resident.file.source, s = streamed.file.source;
    assert.ok(r instanceof IntegritySource && s instanceof IntegritySource);
    assert.equal(r.stats().rangesRecorded, 0, "a resident load reads every range once");
    assert.equal(s.stats().rangesRecorded, 0, "nothing streamed yet");
    await generateText(streamed, PROMPT, { maxTokens: 4, temperature: 0 });
    const st = s.stats();
    assert.equal(st.rangesRecorded % 3, 0, "gate, up and down of each expert fetched");
    assert.ok(st.rangesRecorded > 0 && st.rereadsMatched > 0, JSON.stringify(st));
  } finally {
    resident.dispose();
    streamed.dispose();
  }
});

// ---------------------------------------------------------------- pinned content

Deno.test("pinned source: reads return the pinned bytes; a changed byte fails exactly the reads over its block", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 40_000 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 9000 })), {
        minLength: 1,
        maxLength: 8,
      }),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      async (size, reads, at, x) => {
        const inner = new MutableSource(new Uint8Array(size).map((_, i) => (i * 31) ^ (i >> 7)));
        const { sha256, source } = await PinnedSource.pin(inner, {
          blockBytes: 4096,
          chunkBytes: 9000,
        });
        assert.equal(sha256, await sha256Hex(inner.bytes));
        const ranges = reads.map(([o, n]) => [o % size, Math.min(n, size - (o % size))] as const);
        for (const [o, n] of ranges) {
          assert.deepEqual(await source.read(o, n), inner.bytes.subarray(o, o + n));
        }
        const pos = at % size;
        inner.bytes[pos] ^= x;
        const block = Math.floor(pos / 4096);
        for (const [o, n] of ranges) {
          const touches = n > 0 && Math.floor(o / 4096) <= block &&
            block <= Math.floor((o + n - 1) / 4096);
          if (touches) await assert.rejects(source.read(o, n), isStoreError("integrity"));
          else assert.equal((await source.read(o, n)).byteLength, n);
        }
      },
    ),
    { numRuns: 150 },
  );
  await assert.rejects(
    PinnedSource.pin(new MutableSource(new Uint8Array(10)), { blockBytes: 1000 }),
    isStoreError("bad_option"),
  );
});

Deno.test("integrity 'pin': bytes changed before their first read are caught (the default cannot know them)", async () => {
  const ctx = await storeContext(new MemorySource(modelBytes()));
  const loc = ctx.locations[3][6];
  for (const mode of ["pin", "verify"] as const) {
    const inner = new MutableSource(modelBytes().slice());
    const model = await loadModel(inner, {
      backend: "ref",
      integrity: mode,
      expertBudgetBytes: ALL_EXPERT_BYTES / 4,
    });
    try {
      inner.bytes[loc.down.fileOffset + 100] ^= 0x08; // expert 6 of layer 3 was never read
      if (mode === "pin") {
        await assert.rejects(
          async () => await model.store.ensure(3, [6]),
          isStoreError("integrity"),
        );
      } else {
        await model.store.ensure(3, [6]); // first read: taken as the file's content
      }
    } finally {
      model.dispose();
    }
  }
});

Deno.test("model manifest: model.sha256 pins the content, so a file swapped later under the same ETag is 'integrity'", async () => {
  const srv = startFaultServer(modelBytes());
  try {
    const url = "https://models.example.com/m.gguf";
    const fetchVia: typeof fetch = (input, init) =>
      fetch(String(input) === url ? srv.url : input, init);
    const sha256 = await sha256Hex(modelBytes());
    const { model } = await loadFromManifest({
      manifestVersion: 1,
      model: { source: url, sha256 },
      backend: "ref",
      memory: { expertBudgetMb: ALL_EXPERT_BYTES / 4 / (1 << 20) },
      plugins: [],
    }, { fetch: fetchVia, backend: "ref" });
    try {
      const bad = modelBytes().slice();
      const ctx = await storeContext(new MemorySource(modelBytes()));
      for (const locs of ctx.locations) for (const l of locs) bad[l.gate!.fileOffset + 7] ^= 2;
      srv.replace(bad, "keep"); // a lying server: same ETag, If-Match still passes
      // no expert was read yet: only the pinned content can tell these bytes are not the file's
      await assert.rejects(async () => await model.store.ensure(2, [1]), isStoreError("integrity"));
      srv.replace(modelBytes(), "keep");
      const want = await residentTokens();
      const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
      assert.deepEqual(r.tokens, want, "the published bytes are back: generation goes on");
    } finally {
      model.dispose();
    }
  } finally {
    await srv.stop();
  }
});
