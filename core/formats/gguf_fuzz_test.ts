import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- no import map entry yet; see the integrator note
import fc from "npm:fast-check@4";
import { GgufError } from "../errors.ts";
import { MemorySource } from "../io/byte_source.ts";
import {
  ggmlTensorBytes,
  gguf,
  type GgufArray,
  type GgufValue,
  GgufValueType as T,
  type GgufWriteTensor,
  readGguf,
  writeGguf,
} from "./mod.ts";
import { pseudoBytes } from "./formats_test_util.ts";
import { failureCount } from "../../tools/fuzz/gguf_campaign.ts";
import { runCampaign } from "../../tools/fuzz/gguf_runner.ts";

const ITEM: Record<number, fc.Arbitrary<unknown>> = {
  [T.UINT8]: fc.integer({ min: 0, max: 255 }),
  [T.INT8]: fc.integer({ min: -128, max: 127 }),
  [T.UINT16]: fc.integer({ min: 0, max: 0xffff }),
  [T.INT16]: fc.integer({ min: -0x8000, max: 0x7fff }),
  [T.UINT32]: fc.integer({ min: 0, max: 0xffffffff }),
  [T.INT32]: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  [T.FLOAT32]: fc.float(),
  [T.BOOL]: fc.boolean(),
  [T.STRING]: fc.string({ unit: "grapheme", maxLength: 12 }),
  [T.UINT64]: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  [T.INT64]: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  [T.FLOAT64]: fc.double(),
};
const SCALAR_TYPES = Object.keys(ITEM).map(Number);

const arrayArb = (depth: number): fc.Arbitrary<GgufArray> =>
  fc.constantFrom(...SCALAR_TYPES, ...(depth > 0 ? [T.ARRAY] : [])).chain((et) =>
    fc.array(et === T.ARRAY ? arrayArb(depth - 1) : ITEM[et], { maxLength: 5 }).map((
      items,
    ) => ({ type: T.ARRAY, elemType: et, value: items }) as GgufArray)
  );

const valueArb: fc.Arbitrary<GgufValue> = fc.oneof(
  fc.constantFrom(...SCALAR_TYPES).chain((t) =>
    ITEM[t].map((v) => ({ type: t, value: v }) as GgufValue)
  ),
  arrayArb(2),
);

const TENSOR_TYPES = [0, 1, 2, 3, 8, 10, 12, 14, 16, 20, 24, 27, 28, 30, 39, 40, 41];
const BLOCK: Record<number, number> = {};
for (const t of TENSOR_TYPES) {
  for (const b of [1, 32, 64, 128, 256]) {
    try {
      ggmlTensorBytes(t, [b]);
      BLOCK[t] = b;
      break;
    } catch { /* try next */ }
  }
}

const tensorArb: fc.Arbitrary<GgufWriteTensor> = fc.record({
  name: fc.string({ maxLength: 20 }),
  type: fc.constantFrom(...TENSOR_TYPES),
  blocks: fc.integer({ min: 0, max: 3 }),
  rest: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
  scalar: fc.boolean(),
  seed: fc.nat(),
}).map(({ name, type, blocks, rest, scalar, seed }) => {
  const dims = scalar && BLOCK[type] === 1 ? [] : [blocks * BLOCK[type], ...rest];
  return { name, dims, type, data: pseudoBytes(ggmlTensorBytes(type, dims), seed) };
});

Deno.test("gguf property: random metadata and tensor tables round-trip exactly", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), valueArb), {
        selector: (kv) => kv[0],
        maxLength: 8,
      }).map((kvs) => kvs.filter(([k]) => k !== "general.alignment")),
      fc.uniqueArray(tensorArb, { selector: (t) => t.name, maxLength: 5 }),
      fc.constantFrom(1, 2, 8, 32, 64, 256),
      fc.constantFrom(2, 3) as fc.Arbitrary<2 | 3>,
      async (metadata, tensors, alignment, version) => {
        const bytes = writeGguf({ metadata, tensors, alignment, version });
        const f = await readGguf(new MemorySource(bytes), {
          strictOffsets: true,
          initialWindow: 64,
        });
        const expected = alignment === 32
          ? metadata
          : [...metadata, ["general.alignment", gguf.u32(alignment)]];
        assert.deepEqual([...f.metadata], expected);
        assert.equal(f.alignment, alignment);
        assert.equal(f.version, version);
        assert.equal(f.tensors.length, tensors.length);
        for (let i = 0; i < tensors.length; i++) {
          const info = f.tensors[i];
          assert.equal(info.name, tensors[i].name);
          assert.deepEqual(info.dims, tensors[i].dims);
          assert.equal(info.type, tensors[i].type);
          assert.deepEqual(await f.readTensorBytes(info), tensors[i].data);
        }
        const again = writeGguf({
          metadata: f.metadata,
          tensors: await Promise.all(
            f.tensors.map(async (t) => ({ ...t, data: await f.readTensorBytes(t) })),
          ),
          version,
        });
        assert.deepEqual(again, bytes);
      },
    ),
    { numRuns: 300 },
  );
});

const SAMPLE = writeGguf({
  metadata: [
    ["general.architecture", gguf.str("llama")],
    ["llama.block_count", gguf.u32(2)],
    ["eps", gguf.f32(1e-5)],
    ["flag", gguf.bool(true)],
    ["big", gguf.i64(-5n)],
    ["toks", gguf.arr(T.STRING, ["<s>", "a", "b"])],
    ["scores", gguf.arr(T.FLOAT32, [0, -1, -2])],
    ["nest", gguf.arr(T.ARRAY, [gguf.arr(T.UINT16, [1, 2])])],
  ],
  tensors: [
    { name: "a", dims: [4, 2], type: 0, data: pseudoBytes(32, 1) },
    { name: "b", dims: [32], type: 8, data: pseudoBytes(34, 2) },
  ],
});

async function parseOrGgufError(bytes: Uint8Array): Promise<void> {
  try {
    const f = await readGguf(new MemorySource(bytes), { initialWindow: 64 });
    for (const t of f.tensors) await f.readTensorBytes(t);
  } catch (e) {
    if (!(e instanceof GgufError)) throw e;
  }
}

Deno.test("gguf fuzz: every truncation of a valid file parses or throws GgufError", async () => {
  for (let n = 0; n < SAMPLE.length; n++) await parseOrGgufError(SAMPLE.subarray(0, n));
});

Deno.test("gguf fuzz: byte flips, overwrites and insertions never escape GgufError", async () => {
  const mutation = fc.oneof(
    fc.record({ at: fc.nat(SAMPLE.length - 1), bit: fc.integer({ min: 0, max: 7 }) }).map(
      (m) => (b: Uint8Array) => {
        const c = b.slice();
        c[m.at] ^= 1 << m.bit;
        return c;
      },
    ),
    fc.record({ at: fc.nat(SAMPLE.length - 1), v: fc.uint8Array({ minLength: 1, maxLength: 8 }) })
      .map((m) => (b: Uint8Array) => {
        const c = b.slice();
        c.set(m.v.subarray(0, c.length - m.at), m.at);
        return c;
      }),
    fc.record({ at: fc.nat(SAMPLE.length), v: fc.uint8Array({ minLength: 1, maxLength: 16 }) })
      .map((m) => (b: Uint8Array) => {
        const c = new Uint8Array(b.length + m.v.length);
        c.set(b.subarray(0, m.at));
        c.set(m.v, m.at);
        c.set(b.subarray(m.at), m.at + m.v.length);
        return c;
      }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (ms) => {
      await parseOrGgufError(ms.reduce((b, m) => m(b), SAMPLE));
    }),
    { numRuns: 3000 },
  );
});

Deno.test("gguf model campaign (CI size): mutated models load, or fail typed, within bounds", async () => {
  // The same campaign as `deno run -A tools/fuzz/gguf.ts --cases 30000`, in a worker with a
  // per-case watchdog: 0 untyped errors, hangs, allocations over the bound, silent NaN, leaks.
  const s = await runCampaign({ cases: 1500, seed: 7, workers: 1, hangMs: 30_000 });
  const bad = failureCount(s);
  assert.equal(
    bad,
    0,
    s.failures.map((f) => `case ${f.index} ${f.outcome}: ${f.ops.join(" ")}: ${f.detail}`).join(
      "\n",
    ),
  );
  assert.equal(s.cases, 1500);
  // the campaign exercised every class it is meant to: loads that work, overlaps, NaN paths
  assert.ok(s.generated > 100, `only ${s.generated} cases loaded and generated`);
  for (
    const code of [
      "GgufError:overlapping_tensors",
      "GgufError:unordered_tensors",
      "ModelError:bad_hparam",
      "ModelError:non_finite_weight",
      "GenerationError:non_finite_logits",
    ]
  ) assert.ok((s.codes[code] ?? 0) > 0, `no case ended in ${code}`);
  assert.ok(s.maxSlotRatio <= 1 && s.maxLoadRatio <= 2, JSON.stringify(s));
});
