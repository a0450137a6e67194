import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- no import map entry yet; see the integrator note
import fc from "npm:fast-check@4";
import { SafetensorsError } from "../errors.ts";
import { MemorySource } from "../io/byte_source.ts";
import { readSafetensors, SAFETENSORS_DTYPE_BITS, writeSafetensors } from "./mod.ts";
import { pseudoBytes, RawBuilder } from "./formats_test_util.ts";

const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const u16 = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);

/** A file from a raw header string and `data` bytes. */
function st(header: string, data: number | Uint8Array = 0, declared?: number | bigint) {
  const h = new TextEncoder().encode(header);
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  return new RawBuilder().u64(declared ?? h.length).bytes(h).bytes(d).build();
}

async function rejects(bytes: Uint8Array, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(readSafetensors(new MemorySource(bytes, "bad.st")), (e) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, /offset \d+/);
    if (re) assert.match(e.message, re);
    return true;
  });
}

Deno.test("safetensors: round-trip with metadata; readF32 for F32, F16, BF16", async () => {
  const bytes = writeSafetensors([
    ["a", { dtype: "F32", shape: [2, 2], data: f32([1, -2, 0.5, 3]) }],
    ["h", { dtype: "F16", shape: [5], data: u16([0x3c00, 0xc000, 0x7c00, 0x0001, 0x3555]) }],
    ["b", { dtype: "BF16", shape: [2], data: u16([0x3f80, 0xc040]) }],
    ["s", { dtype: "I64", shape: [], data: pseudoBytes(8, 1) }],
    ["e", { dtype: "U8", shape: [0, 3], data: new Uint8Array(0) }],
    ["__proto__", { dtype: "I8", shape: [1], data: new Uint8Array([7]) }],
  ], { format: "pt" });
  const f = await readSafetensors(new MemorySource(bytes));
  assert.equal(f.dataOffset % 8, 0);
  assert.equal(f.metadata.format, "pt");
  assert.deepEqual([...f.tensors.keys()], ["a", "h", "b", "s", "e", "__proto__"]);
  assert.deepEqual(f.tensor("a").shape, [2, 2]);
  assert.deepEqual(await f.readF32("a"), new Float32Array([1, -2, 0.5, 3]));
  const h = await f.readF32("h");
  assert.deepEqual([...h.slice(0, 4)], [1, -2, Infinity, 2 ** -24]);
  assert.ok(Math.abs(h[4] - 1 / 3) < 1e-3);
  assert.deepEqual(await f.readF32("b"), new Float32Array([1, -3]));
  assert.deepEqual(await f.readBytes("s"), pseudoBytes(8, 1));
  assert.deepEqual(await f.readBytes("__proto__"), new Uint8Array([7]));
  await assert.rejects(
    f.readF32("s"),
    (e) => e instanceof SafetensorsError && e.code === "unsupported_dtype",
  );
  assert.throws(
    () => f.tensor("zz"),
    (e) => e instanceof SafetensorsError && e.code === "missing_tensor",
  );
});

Deno.test("safetensors: accepts space padding, 0-rank and empty tensors, unordered offsets", async () => {
  const h = '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},' +
    '"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F16","shape":[0],"data_offsets":[8,8]}}   ';
  const f = await readSafetensors(new MemorySource(st(h, f32([1, 2]))));
  assert.deepEqual(await f.readF32("a"), new Float32Array([1]));
  assert.deepEqual(await f.readF32("b"), new Float32Array([2]));
  assert.equal((await f.readF32("z")).length, 0);
  const empty = await readSafetensors(new MemorySource(st("{}")));
  assert.equal(empty.tensors.size, 0);
});

Deno.test("safetensors: each class of bad input gets its own error code", async () => {
  const ent = (name: string, dtype: string, shape: number[], b: number, e: number) =>
    `"${name}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${b},${e}]}`;
  await rejects(new Uint8Array(5), "truncated");
  await rejects(st("{}", 0, 100_000_001), "header_too_large");
  await rejects(st("{}", 0, 2n ** 63n), "header_too_large");
  await rejects(st("{}", 0, 50), "truncated");
  await rejects(st(" {}"), "bad_header");
  await rejects(st("", 0), "bad_header");
  await rejects(st("{,}"), "bad_json");
  await rejects(st('{"a":1}x'), "bad_json");
  await rejects(new RawBuilder().u64(3).bytes([0x7b, 0xff, 0x7d]).build(), "bad_json");
  await rejects(
    st(`{${ent("a", "F32", [1], 0, 4)},${ent("a", "F32", [1], 4, 8)}}`, 8),
    "duplicate_key",
    /'a'/,
  );
  await rejects(
    st(`{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4),
    "duplicate_key",
  );
  await rejects(st(`{"__metadata__":{"k":1}}`), "bad_metadata", /__metadata__.k/);
  await rejects(st(`{"__metadata__":["x"]}`), "bad_metadata");
  await rejects(st(`{"a":5}`), "bad_entry");
  await rejects(st(`{${ent("a", "F17", [1], 0, 4)}}`, 4), "bad_dtype", /F17/);
  await rejects(st(`{${ent("a", "toString", [1], 0, 4)}}`, 4), "bad_dtype");
  await rejects(st(`{${ent("a", "F32", [-1], 0, 4)}}`, 4), "bad_shape");
  await rejects(st(`{${ent("a", "F32", [1.5], 0, 4)}}`, 4), "bad_shape");
  await rejects(st(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`, 4), "bad_offsets");
  await rejects(st(`{${ent("a", "F32", [1], 4, 0)}}`, 4), "bad_offsets");
  await rejects(st(`{${ent("a", "F32", [2], 0, 4)}}`, 4), "size_mismatch", /needs 8/);
  await rejects(st(`{${ent("a", "F4", [3], 0, 1)}}`, 1), "misaligned_slice");
  await rejects(st(`{${ent("a", "F64", [2 ** 30, 2 ** 30], 0, 8)}}`, 8), "too_large");
  await rejects(
    st(`{${ent("a", "F32", [2], 0, 8)},${ent("b", "F32", [1], 4, 8)}}`, 8),
    "overlap",
    /'b'/,
  );
  await rejects(st(`{${ent("a", "F32", [1], 0, 4)},${ent("b", "F32", [1], 8, 12)}}`, 12), "hole");
  await rejects(st(`{${ent("a", "F32", [1], 4, 8)}}`, 8), "hole");
  await rejects(st(`{${ent("a", "F32", [1], 0, 4)}}`, 3), "out_of_file");
  await rejects(st(`{${ent("a", "F32", [1], 0, 4)}}`, 5), "trailing_bytes");
  assert.throws(
    () => writeSafetensors([["a", { dtype: "F32", shape: [2], data: new Uint8Array(4) }]]),
    (e) => e instanceof SafetensorsError && e.code === "size_mismatch",
  );
  assert.throws(
    () => writeSafetensors([["a", { dtype: "Q8", shape: [1], data: new Uint8Array(1) }]]),
    (e) => e instanceof SafetensorsError && e.code === "bad_dtype",
  );
});

const DTYPES = Object.keys(SAFETENSORS_DTYPE_BITS).filter((d) =>
  SAFETENSORS_DTYPE_BITS[d] % 8 === 0
);

Deno.test("safetensors property: random tables round-trip", async () => {
  const entry = fc.record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
    seed: fc.nat(),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(fc.tuple(fc.string({ unit: "grapheme", maxLength: 10 }), entry), {
        selector: (e) => e[0],
        maxLength: 6,
      }).map((es) => es.filter(([k]) => k !== "__metadata__")),
      fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }))),
      async (entries, meta) => {
        const tensors = entries.map(([k, e]) => {
          const n = (e.shape.reduce((a, d) => a * d, 1) * SAFETENSORS_DTYPE_BITS[e.dtype]) / 8;
          return [k, { dtype: e.dtype, shape: e.shape, data: pseudoBytes(n, e.seed) }] as const;
        });
        const f = await readSafetensors(
          new MemorySource(writeSafetensors(tensors, meta ?? undefined)),
        );
        assert.deepEqual({ ...f.metadata }, { ...(meta ?? {}) });
        assert.equal(f.tensors.size, tensors.length);
        for (const [k, t] of tensors) {
          assert.equal(f.tensor(k).dtype, t.dtype);
          assert.deepEqual(f.tensor(k).shape, t.shape);
          assert.deepEqual(await f.readBytes(k), t.data);
        }
      },
    ),
    { numRuns: 300 },
  );
});

const SAMPLE = writeSafetensors([
  ["w", { dtype: "F32", shape: [2, 2], data: f32([1, 2, 3, 4]) }],
  ["b", { dtype: "BF16", shape: [3], data: u16([1, 2, 3]) }],
  ["x", { dtype: "F4", shape: [2], data: new Uint8Array([0x12]) }],
], { format: "pt" });

async function parseOrSafetensorsError(bytes: Uint8Array): Promise<void> {
  try {
    const f = await readSafetensors(new MemorySource(bytes));
    for (const [k, t] of f.tensors) {
      await (["F32", "F16", "BF16"].includes(t.dtype) ? f.readF32(k) : f.readBytes(k));
    }
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw e;
  }
}

Deno.test("safetensors fuzz: truncations, flips and insertions never escape SafetensorsError", async () => {
  for (let n = 0; n < SAMPLE.length; n++) await parseOrSafetensorsError(SAMPLE.subarray(0, n));
  const mutation = fc.oneof(
    fc.record({ at: fc.nat(SAMPLE.length - 1), v: fc.integer({ min: 0, max: 255 }) }).map(
      (m) => (b: Uint8Array) => {
        const c = b.slice();
        c[Math.min(m.at, c.length - 1)] = m.v;
        return c;
      },
    ),
    fc.record({
      at: fc.nat(SAMPLE.length),
      v: fc.constantFrom(...'{}[],:"\\ 0123456789-eE.'.split("").map((c) => c.charCodeAt(0))),
    }).map((m) => (b: Uint8Array) => {
      const c = new Uint8Array(b.length + 1);
      c.set(b.subarray(0, m.at));
      c[m.at] = m.v;
      c.set(b.subarray(m.at), m.at + 1);
      return c;
    }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (ms) => {
      await parseOrSafetensorsError(ms.reduce((b, m) => m(b), SAMPLE));
    }),
    { numRuns: 3000 },
  );
});

Deno.test("safetensors: firstNonFinite finds NaN and ±Infinity from any dtype's values", async () => {
  const { firstNonFinite } = await import("./safetensors.ts");
  assert.equal(firstNonFinite(new Float32Array([0, -0, 3.4e38, 1e-45])), -1);
  assert.equal(firstNonFinite([1, 2, NaN, Infinity]), 2);
  assert.equal(firstNonFinite(new Float32Array([1, -Infinity])), 1);
  // F16 0x7c00 is +Inf, 0x7e00 NaN; BF16 0xff80 is -Inf: readF32 keeps them, the scan finds them
  const bytes = writeSafetensors([
    ["h", { dtype: "F16", shape: [3], data: u16([0x3c00, 0x7c00, 0x7e00]) }],
    ["b", { dtype: "BF16", shape: [2], data: u16([0x3f80, 0xff80]) }],
  ]);
  const f = await readSafetensors(new MemorySource(bytes, "x.st"));
  assert.equal(firstNonFinite(await f.readF32("h")), 1);
  assert.equal(firstNonFinite(await f.readF32("b")), 1);
});

Deno.test("safetensors: the reader and writer are exported from the package root", async () => {
  const root = await import("../../mod.ts") as Record<string, unknown>;
  const own = await import("./safetensors.ts") as Record<string, unknown>;
  for (const name of ["readSafetensors", "writeSafetensors", "firstNonFinite"]) {
    assert.equal(root[name], own[name], `mod.ts does not export ${name}`);
  }
});
