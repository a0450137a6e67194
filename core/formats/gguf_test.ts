import assert from "node:assert/strict";
import { GgufError } from "../errors.ts";
import { MemorySource } from "../io/byte_source.ts";
import {
  getArray,
  getBool,
  getF32,
  getNumber,
  getNumberArray,
  getNumberOrArray,
  getPerLayer,
  getString,
  getStringArray,
  getU32,
  gguf,
  type GgufValue,
  GgufValueType as T,
  readGguf,
  writeGguf,
} from "./mod.ts";
import { CountingSource, pseudoBytes, RawBuilder } from "./formats_test_util.ts";

const ALL_VALUES: [string, GgufValue][] = [
  ["u8", gguf.u8(255)],
  ["i8", gguf.i8(-128)],
  ["u16", gguf.u16(65535)],
  ["i16", gguf.i16(-32768)],
  ["u32", gguf.u32(0xffffffff)],
  ["i32", gguf.i32(-0x80000000)],
  ["f32", gguf.f32(1e-5)],
  ["bool", gguf.bool(true)],
  ["bool.false", gguf.bool(false)],
  ["str", gguf.str("llama ✓ 日本")],
  ["str.empty", gguf.str("")],
  ["u64", gguf.u64(0xffffffffffffffffn)],
  ["i64", gguf.i64(-0x8000000000000000n)],
  ["f64", gguf.f64(Math.PI)],
  ["arr.u8", gguf.arr(T.UINT8, [0, 1, 255])],
  ["arr.i8", gguf.arr(T.INT8, [-1, 127])],
  ["arr.u16", gguf.arr(T.UINT16, [7])],
  ["arr.i16", gguf.arr(T.INT16, [-7])],
  ["arr.u32", gguf.arr(T.UINT32, [1, 2, 3])],
  ["arr.i32", gguf.arr(T.INT32, [-1, 2])],
  ["arr.f32", gguf.arr(T.FLOAT32, [0.5, -2, Math.fround(0.1)])],
  ["arr.bool", gguf.arr(T.BOOL, [true, false])],
  ["arr.str", gguf.arr(T.STRING, ["a", "", "<0x0A>"])],
  ["arr.u64", gguf.arr(T.UINT64, [1n, 2n ** 63n])],
  ["arr.i64", gguf.arr(T.INT64, [-1n])],
  ["arr.f64", gguf.arr(T.FLOAT64, [1e300])],
  ["arr.empty", gguf.arr(T.UINT32, [])],
  ["arr.typed", gguf.arr(T.INT32, new Int32Array([3, -4]))],
  ["arr.nested", gguf.arr(T.ARRAY, [gguf.arr(T.STRING, ["x"]), gguf.arr(T.INT32, [5])])],
];

function tensorData(type: number, dims: number[], nbytes: number, seed: number) {
  return { name: `t${seed}.weight`, dims, type, data: pseudoBytes(nbytes, seed) };
}

Deno.test("gguf: round-trips every value type and several tensor types", async () => {
  const tensors = [
    tensorData(0, [3, 2], 24, 1), // F32
    tensorData(1, [5], 10, 2), // F16
    tensorData(8, [64, 3], 2 * 34 * 3, 3), // Q8_0
    tensorData(2, [32, 1, 2], 18 * 2, 4), // Q4_0
    tensorData(12, [256, 2], 144 * 2, 5), // Q4_K
    tensorData(30, [7, 1, 1, 2], 28, 6), // BF16
    tensorData(0, [], 4, 7), // 0-dim scalar
    tensorData(0, [0, 4], 0, 8), // empty
  ];
  for (const version of [2, 3] as const) {
    const bytes = writeGguf({ metadata: ALL_VALUES, tensors, version });
    const f = await readGguf(new MemorySource(bytes), { strictOffsets: true });
    assert.equal(f.version, version);
    assert.deepEqual([...f.metadata], ALL_VALUES);
    assert.equal(f.alignment, 32);
    assert.equal(f.dataOffset % 32, 0);
    assert.equal(f.tensors.length, tensors.length);
    for (const t of tensors) {
      const info = f.tensor(t.name);
      assert.deepEqual(info.dims, t.dims);
      assert.equal(info.type, t.type);
      assert.equal(info.nbytes, t.data.length);
      assert.equal(info.fileOffset % 32, 0);
      assert.deepEqual(await f.readTensorBytes(info), t.data);
    }
    // Exact re-serialization.
    const again = writeGguf({
      metadata: f.metadata,
      tensors: await Promise.all(
        f.tensors.map(async (i) => ({ ...i, data: await f.readTensorBytes(i) })),
      ),
      version,
    });
    assert.deepEqual(again, bytes);
  }
});

Deno.test("gguf: general.alignment 64 is honoured and written when asked", async () => {
  const tensors = [tensorData(0, [3], 12, 1), tensorData(0, [5], 20, 2)];
  const bytes = writeGguf({ metadata: [["a", gguf.u32(1)]], tensors, alignment: 64 });
  const f = await readGguf(new MemorySource(bytes));
  assert.equal(f.alignment, 64);
  assert.deepEqual(f.metadata.get("general.alignment"), gguf.u32(64));
  assert.equal(f.dataOffset % 64, 0);
  assert.equal(f.tensors[1].offset, 64);
  assert.equal(bytes.length, f.dataOffset + 128);
  const viaMeta = writeGguf({ metadata: [["general.alignment", gguf.u32(64)]], tensors });
  assert.equal((await readGguf(new MemorySource(viaMeta))).tensors[1].offset, 64);
  assert.throws(
    () => writeGguf({ metadata: [["general.alignment", gguf.u32(64)]], tensors, alignment: 32 }),
    (e) => e instanceof GgufError && e.code === "bad_alignment",
  );
});

Deno.test("gguf: reads the index in a growing window, not the whole file", async () => {
  const big = tensorData(0, [1 << 18], 1 << 20, 1);
  const vocab = Array.from({ length: 3000 }, (_, i) => `token_${i}`);
  const bytes = writeGguf({ metadata: [["tok", gguf.arr(T.STRING, vocab)]], tensors: [big] });
  const src = new CountingSource(bytes);
  const f = await readGguf(src, { initialWindow: 64 });
  assert.deepEqual(getStringArray(f.metadata, "tok"), vocab);
  assert.ok(src.bytesRead < 2 * f.dataOffset + 64, `read ${src.bytesRead} bytes`);
  assert.ok(src.bytesRead < bytes.length / 4);
  assert.ok(src.reads.length > 3);
  await assert.rejects(
    readGguf(new MemorySource(bytes), { initialWindow: 64, maxIndexBytes: 4096 }),
    (e) => e instanceof GgufError && e.code === "index_too_large",
  );
});

Deno.test("gguf: metadata getters are strict, lenient ones accept any number", () => {
  const m = new Map<string, GgufValue>([
    ["n", gguf.u32(4)],
    ["eps", gguf.f32(1e-5)],
    ["name", gguf.str("x")],
    ["flag", gguf.bool(true)],
    ["i", gguf.i32(-3)],
    ["big", gguf.u64(7)],
    ["huge", gguf.u64(2n ** 60n)],
    ["heads", gguf.arr(T.INT32, [4, 8])],
    ["toks", gguf.arr(T.STRING, ["a"])],
  ]);
  assert.equal(getU32(m, "n"), 4);
  assert.equal(getF32(m, "eps"), Math.fround(1e-5));
  assert.equal(getString(m, "name"), "x");
  assert.equal(getBool(m, "flag"), true);
  assert.equal(getU32(m, "absent", 9), 9);
  assert.equal(getNumber(m, "i"), -3);
  assert.equal(getNumber(m, "big"), 7);
  assert.equal(getNumber(m, "absent", 1.5), 1.5);
  assert.deepEqual(getNumberOrArray(m, "heads"), [4, 8]);
  assert.equal(getNumberOrArray(m, "n"), 4);
  assert.deepEqual(getPerLayer(m, "n", 3), [4, 4, 4]);
  assert.deepEqual(getPerLayer(m, "heads", 2), [4, 8]);
  assert.deepEqual(getNumberArray(m, "heads"), [4, 8]);
  assert.equal(getArray(m, "toks", T.STRING).value.length, 1);
  const code = (c: string) => (e: unknown) => e instanceof GgufError && e.code === c;
  assert.throws(() => getU32(m, "i"), code("wrong_type"));
  assert.throws(() => getU32(m, "missing"), code("missing_key"));
  assert.throws(() => getU32(m, "missing"), /missing/);
  assert.throws(() => getNumber(m, "name"), code("wrong_type"));
  assert.throws(() => getNumber(m, "huge"), code("wrong_type"));
  assert.throws(() => getArray(m, "toks", T.INT32), code("wrong_type"));
  assert.throws(() => getPerLayer(m, "heads", 3), code("wrong_length"));
  assert.throws(() => getStringArray(m, "heads"), code("wrong_type"));
});

Deno.test("gguf: value builders and writer validate ranges and sizes", () => {
  const code = (c: string) => (e: unknown) => e instanceof GgufError && e.code === c;
  assert.throws(() => gguf.u8(256), code("bad_value"));
  assert.throws(() => gguf.u32(-1), code("bad_value"));
  assert.throws(() => gguf.i32(1.5), code("bad_value"));
  assert.throws(() => gguf.u64(-1), code("bad_value"));
  assert.throws(() => gguf.arr(T.UINT8, [1, 300]), code("bad_value"));
  assert.throws(() => gguf.arr(T.ARRAY, [1] as never), code("bad_value"));
  const t = (o: object) => ({ name: "w", dims: [4], type: 0, data: new Uint8Array(16), ...o });
  const w = (tensors: object[], metadata: [string, GgufValue][] = []) => () =>
    writeGguf({ metadata, tensors: tensors as never });
  assert.throws(w([t({ data: new Uint8Array(15) })]), code("size_mismatch"));
  assert.throws(w([t({}), t({})]), code("duplicate_tensor"));
  assert.throws(w([t({ name: "x".repeat(64) })]), code("name_too_long"));
  assert.throws(w([t({ dims: [1, 1, 1, 1, 4] })]), code("bad_dims"));
  assert.throws(w([t({ type: 4 })]), code("unknown_type"));
  assert.throws(w([t({ type: 8, dims: [33] })]), code("bad_dims"));
  assert.throws(w([], [["a", gguf.u8(1)], ["a", gguf.u8(1)]]), code("duplicate_key"));
  assert.throws(w([], [["", gguf.u8(1)]]), code("empty_key"));
  assert.throws(w([], [["general.alignment", gguf.u32(48)]]), code("bad_alignment"));
  assert.throws(w([], [["general.alignment", gguf.i32(64)]]), code("bad_alignment"));
});

/** A hand-built header: magic, version, counts; `body` appends KVs and infos. */
function raw(nTensors: number, nKv: number, body: (b: RawBuilder) => void, version = 3) {
  const b = new RawBuilder().bytes([0x47, 0x47, 0x55, 0x46]).u32(version).u64(nTensors).u64(nKv);
  body(b);
  return b;
}

async function rejects(bytes: Uint8Array, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(readGguf(new MemorySource(bytes, "bad.gguf")), (e) => {
    assert.ok(e instanceof GgufError, `expected GgufError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, /offset \d+/);
    if (re) assert.match(e.message, re);
    return true;
  });
}

Deno.test("gguf: each class of bad input gets its own error code", async () => {
  const valid = writeGguf({ metadata: ALL_VALUES, tensors: [tensorData(0, [4], 16, 1)] });
  await rejects(valid.slice(0, 3), "truncated", /magic/);
  const t1 = (await readGguf(new MemorySource(valid))).tensor("t1.weight");
  await rejects(valid.slice(0, t1.fileOffset + 15), "out_of_file", /t1.weight/);
  await rejects(valid.slice(0, t1.fileOffset - 40), "truncated");
  await rejects(valid.slice(0, 100), "bad_count", /cannot fit/);
  const m = valid.slice();
  m[0] = 0x46;
  await rejects(m, "bad_magic");
  await rejects(raw(0, 0, () => {}, 1).build(), "unsupported_version", /version 1/);
  await rejects(raw(0, 0, () => {}, 4).build(), "unsupported_version");
  await rejects(raw(0, 0, () => {}, 0x03000000).build(), "wrong_endianness");
  const info = (b: RawBuilder, name: string, dims: number[], type: number, off: number) =>
    b.str(name).u32(dims.length).bytes([]).bytes(
      dims.flatMap((d) => [...new RawBuilder().u64(d).build()]),
    ).i32(type).u64(off);
  await rejects(
    raw(1, 0, (b) => info(b, "w", [4], 99, 0).pad(32).bytes(new Uint8Array(16))).build(),
    "unknown_type",
    /'w'/,
  );
  await rejects(
    raw(1, 0, (b) => info(b, "w", [4], 0, 32).pad(32).bytes(new Uint8Array(32))).build(),
    "out_of_file",
  );
  await rejects(raw(1, 0, (b) => info(b, "w", [4], 0, 2n ** 62n as never)).build(), "out_of_file");
  await rejects(
    raw(1, 0, (b) => info(b, "w", [4], 0, 8).pad(32).bytes(new Uint8Array(64))).build(),
    "misaligned",
  );
  await rejects(raw(1, 0, (b) => info(b, "w", [1, 1, 1, 1, 4], 0, 0)).build(), "bad_dims");
  await rejects(
    raw(1, 0, (b) => info(b, "w", [-4], 0, 0).pad(32).bytes(new Uint8Array(64))).build(),
    "bad_dims",
  );
  await rejects(
    raw(1, 0, (b) => info(b, "w", [33], 8, 0).pad(32).bytes(new Uint8Array(64))).build(),
    "bad_dims",
  );
  await rejects(
    raw(1, 0, (b) => info(b, "x".repeat(64), [4], 0, 0).pad(32).bytes(new Uint8Array(64))).build(),
    "name_too_long",
  );
  await rejects(
    raw(2, 0, (b) => {
      info(b, "w", [4], 0, 0);
      info(b, "w", [4], 0, 32).pad(32).bytes(new Uint8Array(64));
    }).build(),
    "duplicate_tensor",
  );
  const kvU32 = (b: RawBuilder, k: string, t: number, v: number) => b.str(k).i32(t).u32(v);
  await rejects(
    raw(0, 2, (b) => {
      kvU32(b, "a", T.UINT32, 1);
      kvU32(b, "a", T.UINT32, 2);
    }).build(),
    "duplicate_key",
    /'a'/,
  );
  await rejects(raw(0, 1, (b) => kvU32(b, "", T.UINT32, 1)).build(), "empty_key");
  await rejects(raw(0, 1, (b) => kvU32(b, "a", 13, 1)).build(), "unknown_value_type");
  await rejects(
    raw(0, 1, (b) => kvU32(b, "general.alignment", T.UINT32, 48)).build(),
    "bad_alignment",
  );
  await rejects(
    raw(0, 1, (b) => kvU32(b, "general.alignment", T.UINT32, 0)).build(),
    "bad_alignment",
  );
  await rejects(
    raw(0, 1, (b) => kvU32(b, "general.alignment", T.INT32, 64)).build(),
    "bad_alignment",
  );
  // Absurd sizes are rejected before allocating.
  await rejects(
    raw(0, 1, (b) => b.str("a").i32(T.ARRAY).i32(T.UINT8).u64(2n ** 40n)).build(),
    "bad_count",
  );
  await rejects(
    raw(0, 1, (b) => b.str("a").i32(T.ARRAY).i32(T.STRING).u64(2n ** 52n)).build(),
    "bad_count",
  );
  await rejects(
    raw(0, 1, (b) => b.str("a").i32(T.STRING).u64(2n ** 31n)).build(),
    "string_too_long",
  );
  await rejects(
    raw(0, 1, (b) => b.str("a").i32(T.STRING).u64(100).bytes([1, 2])).build(),
    "truncated",
  );
  await rejects(raw(0, 1, (b) => b.u64(2n ** 63n).bytes(new Uint8Array(20))).build(), "too_large");
  await rejects(raw(2n ** 40n as never, 0, () => {}).build(), "bad_count");
  await rejects(raw(0, 1e9, () => {}).build(), "bad_count");
  // Nested arrays are accepted up to the depth bound.
  const nest = (depth: number) =>
    raw(0, 1, (b) => {
      b.str("a").i32(T.ARRAY);
      for (let i = 0; i < depth; i++) b.i32(T.ARRAY).u64(1);
      b.i32(T.UINT8).u64(0);
    }).build();
  await readGguf(new MemorySource(nest(4)));
  await rejects(nest(5), "too_deep");
});

Deno.test("gguf: strictOffsets demands llama.cpp's contiguous layout; missing_tensor", async () => {
  // in index order with a gap: accepted by default, not by llama.cpp's rule
  const b = raw(2, 0, (b) => {
    b.str("a").u32(1).u64(4).i32(0).u64(32);
    b.str("b").u32(1).u64(4).i32(0).u64(64);
    b.pad(32).bytes(new Uint8Array(96));
  }).build();
  const f = await readGguf(new MemorySource(b));
  assert.equal(f.tensor("a").offset, 32);
  assert.ok(f.hasTensor("b") && !f.hasTensor("c"));
  assert.throws(() => f.tensor("c"), (e) => e instanceof GgufError && e.code === "missing_tensor");
  await assert.rejects(
    readGguf(new MemorySource(b), { strictOffsets: true }),
    (e) => e instanceof GgufError && e.code === "bad_offset",
  );
});
