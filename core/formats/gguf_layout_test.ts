/**
 * Tensor layout rules: tensors lie in index order without overlapping, so together they never
 * claim more bytes than the file holds (the memory-amplification class of bad input).
 */

import assert from "node:assert/strict";
import { GgufError } from "../errors.ts";
import { MemorySource } from "../io/byte_source.ts";
import { readGguf, writeGguf } from "./mod.ts";
import { pseudoBytes, RawBuilder } from "./formats_test_util.ts";

/** A file of F32 tensors `[n]` with the given data offsets (data section of `dataBytes`). */
function layout(tensors: [string, number, number][], dataBytes: number): Uint8Array {
  const b = new RawBuilder().bytes([0x47, 0x47, 0x55, 0x46]).u32(3).u64(tensors.length).u64(0);
  for (const [name, n, off] of tensors) b.str(name).u32(1).u64(n).i32(0).u64(off);
  return b.pad(32).bytes(pseudoBytes(dataBytes, 7)).build();
}

async function rejects(bytes: Uint8Array, code: string, re: RegExp): Promise<void> {
  await assert.rejects(readGguf(new MemorySource(bytes, "bad.gguf")), (e) => {
    assert.ok(e instanceof GgufError, `expected GgufError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("gguf layout: tensors sharing bytes → overlapping_tensors naming both", async () => {
  // every tensor names the same 64 bytes (the shape of amp_overlap_300L.gguf)
  const same = Array.from({ length: 50 }, (_, i) => [`t${i}`, 16, 0] as [string, number, number]);
  await rejects(layout(same, 64), "overlapping_tensors", /'t1'.*overlaps tensor 't0'/);
  // partial overlap
  await rejects(layout([["a", 16, 0], ["b", 16, 32]], 96), "overlapping_tensors", /'b'/);
  // a later tensor reaching back into an earlier one
  await rejects(
    layout([["a", 16, 64], ["b", 32, 32]], 128),
    "overlapping_tensors",
    /'b'.*overlaps tensor 'a'/,
  );
});

Deno.test("gguf layout: out-of-order tensors → unordered_tensors (llama.cpp rejects them too)", async () => {
  await rejects(
    layout([["a", 8, 32], ["b", 8, 0]], 64),
    "unordered_tensors",
    /'b'.*index order/,
  );
});

Deno.test("gguf layout: gaps and zero-size tensors are accepted; writer output is strict", async () => {
  const f = await readGguf(new MemorySource(layout([["a", 8, 0], ["z", 0, 32], ["b", 8, 32]], 64)));
  assert.deepEqual(f.tensors.map((t) => t.offset), [0, 32, 32]);
  const gap = await readGguf(new MemorySource(layout([["a", 8, 0], ["b", 8, 96]], 128)));
  assert.equal(gap.tensor("b").offset, 96);
  const total = gap.tensors.reduce((a, t) => a + t.nbytes, 0);
  assert.ok(total <= gap.source.size - gap.dataOffset);
  const w = writeGguf({
    metadata: [],
    tensors: [
      { name: "a", dims: [5], type: 0, data: pseudoBytes(20, 1) },
      { name: "b", dims: [3], type: 0, data: pseudoBytes(12, 2) },
    ],
  });
  await readGguf(new MemorySource(w), { strictOffsets: true });
});
