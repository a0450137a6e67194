/**
 * Packed weight layouts (`kernels/src/packed.rs`) and their kernels, in both
 * modules (simd128 and relaxed SIMD): packing then matmul / matmul_prepared /
 * get_rows gives bit-for-bit the results of the standard layout (SIMD and
 * scalar twins), unpacking restores the original bytes, and packing is
 * refused — bytes untouched — when a fast path's precondition fails.
 */
import { equal as assertEquals } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { KernelHarness, randomActivations, randomWeights, rng, toF16 } from "./kernel_test_util.ts";
import { PACKED_FLAG, relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";

const VARIANTS = relaxedSimdSupported() ? ["simd128", "relaxed"] as const : ["simd128"] as const;
const HARNESS = {
  simd128: await KernelHarness.create("simd128"),
  relaxed: relaxedSimdSupported() ? await KernelHarness.create("relaxed") : null,
};

/** Packable formats: [type, block size, byte offsets of f16 scales in a block, block bytes]. */
const PACKABLE = [
  { type: GgmlType.F16, name: "F16", blk: 1 },
  { type: GgmlType.BF16, name: "BF16", blk: 8 }, // whole 8-element chunks only
  { type: GgmlType.Q8_0, name: "Q8_0", blk: 32 },
  { type: GgmlType.Q4_0, name: "Q4_0", blk: 32 },
  { type: GgmlType.Q4_K, name: "Q4_K", blk: 256 },
  { type: GgmlType.Q6_K, name: "Q6_K", blk: 256 },
  { type: GgmlType.Q2_K, name: "Q2_K", blk: 256 },
  { type: GgmlType.Q3_K, name: "Q3_K", blk: 256 },
  { type: GgmlType.MXFP4, name: "MXFP4", blk: 32 },
  { type: GgmlType.Q5_K, name: "Q5_K", blk: 256 },
  { type: GgmlType.IQ4_NL, name: "IQ4_NL", blk: 32 },
  { type: GgmlType.Q4_1, name: "Q4_1", blk: 32 },
  { type: GgmlType.Q5_0, name: "Q5_0", blk: 32 },
  { type: GgmlType.Q5_1, name: "Q5_1", blk: 32 },
  { type: GgmlType.IQ4_XS, name: "IQ4_XS", blk: 256 },
] as const;

/** Packed only in the relaxed-SIMD module (`packed_q6k.rs`). */
const RELAXED_ONLY: readonly GgmlType[] = [
  GgmlType.Q6_K,
  GgmlType.Q2_K,
  GgmlType.Q3_K,
  GgmlType.MXFP4,
  GgmlType.Q5_K,
  GgmlType.IQ4_NL,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.IQ4_XS,
];
const packableIn = (variant: string, t: GgmlType): boolean =>
  variant === "relaxed" || !RELAXED_ONLY.includes(t);

/** Q8_0 quants of -128 are legal but refused by the relaxed build; clear them where a case wants a packable matrix. */
function clearQ8Min(w: Uint8Array): void {
  for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
}

function bytesOf(H: KernelHarness, p: number, n: number): string {
  return H.getU8(p, n).join();
}

function checkCase(
  H: KernelHarness,
  type: GgmlType,
  rows: number,
  cols: number,
  nTok: number,
  seed: number,
  mutate?: (w: Uint8Array) => void,
  acts?: (t: number) => Float32Array,
): void {
  const k = H.k;
  const r = rng(seed);
  const w = randomWeights(r, type, rows, cols);
  if (type === GgmlType.Q8_0) clearQ8Min(w);
  mutate?.(w);
  const x = new Float32Array(nTok * cols);
  for (let t = 0; t < nTok; t++) x.set(acts ? acts(t) : randomActivations(r, cols), t * cols);
  H.reset();
  const std = H.putU8(w);
  const pk = H.putU8(w);
  const tmp = H.alloc(k.pack_scratch_bytes(type, cols));
  assertEquals(k.pack_weights(type, pk, rows, cols, tmp, 0), 0, "pack");
  const xp = H.putF32(x);
  const P = type | PACKED_FLAG;
  const sc = H.alloc(
    Math.max(k.matmul_scratch_bytes(type, cols, nTok), k.matmul_scratch_bytes(P, cols, nTok)),
  );
  const arb = k.act_row_bytes(type, cols);
  const act = H.alloc(nTok * arb);
  assertEquals(k.prepare_act(type, xp, cols, nTok, act), 0);
  const n = 4 * nTok * rows;
  const run = (f: typeof k.matmul, ty: number, wp: number, input: number): string => {
    const o = H.alloc(n);
    assertEquals(f(ty, wp, rows, cols, input, nTok, o, sc), 0);
    return bytesOf(H, o, n);
  };
  const want = run(k.matmul, type, std, xp);
  const what = `${ggmlTypeName(type)} ${rows}x${cols} nTok ${nTok}`;
  assertEquals(run(k.matmul, P, pk, xp), want, `matmul packed vs standard, ${what}`);
  assertEquals(run(k.matmul_prepared, P, pk, act), want, `matmul_prepared, ${what}`);
  const wantScalar = run(k.matmul_scalar, type, std, xp);
  assertEquals(run(k.matmul_scalar, P, pk, xp), wantScalar, `scalar twin, ${what}`);
  if (type === GgmlType.IQ4_NL) {
    // IQ4_NL's SIMD kernels (packed rows-in-lanes and standard tiles) sum in ggml's generic order.
    assertEquals(want, wantScalar, `IQ4_NL SIMD == scalar twin (ggml order), ${what}`);
  }
  // get_rows, rows in a scrambled order with repeats.
  const ids = Int32Array.from(
    { length: rows + 2 },
    (_, i) => (((i * 5 + seed) % rows) + rows) % rows,
  );
  const ip = H.putI32(ids);
  const g1 = H.alloc(4 * ids.length * cols), g2 = H.alloc(4 * ids.length * cols);
  assertEquals(k.get_rows(type, std, cols, ip, ids.length, g1), 0);
  assertEquals(k.get_rows(P, pk, cols, ip, ids.length, g2), 0);
  assertEquals(
    bytesOf(H, g2, 4 * ids.length * cols),
    bytesOf(H, g1, 4 * ids.length * cols),
    `get_rows, ${what}`,
  );
  // Unpack restores the bytes.
  assertEquals(k.pack_weights(type, pk, rows, cols, tmp, 1), 0, "unpack");
  assertEquals(bytesOf(H, pk, w.length), w.join(), `unpack restores bytes, ${what}`);
}

for (const variant of VARIANTS) {
  for (const f of PACKABLE.filter((f) => packableIn(variant, f.type))) {
    Deno.test(`packed ${f.name} (${variant}): matmul/get_rows bit-identical to the standard layout, unpack restores`, () => {
      const H = HARNESS[variant]!;
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 5 }).map((g) => 4 * g),
          fc.integer({ min: 1, max: f.blk === 1 ? 90 : f.blk === 8 ? 40 : f.blk === 32 ? 9 : 3 }),
          fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 15, max: 35 })),
          fc.integer(),
          (rows, blocks, nTok, seed) => checkCase(H, f.type, rows, blocks * f.blk, nTok, seed),
        ),
        { numRuns: 25 },
      );
    });
  }
}

Deno.test("packed kernels: the bench shapes (4 rows of 2816 / 1024 columns) in every variant", () => {
  for (const variant of VARIANTS) {
    for (const f of PACKABLE.filter((f) => packableIn(variant, f.type))) {
      for (const cols of [1024, 2816]) {
        if (cols % Math.max(f.blk, 1) !== 0) continue;
        checkCase(HARNESS[variant]!, f.type, 8, cols, 1, cols + f.type);
        checkCase(HARNESS[variant]!, f.type, 4, cols, 5, cols + f.type + 1);
      }
    }
  }
});

Deno.test("packed MXFP4: every E8M0 exponent 0..255 (subnormal, normal, 2^127 scales) bit-identical to the standard layout", () => {
  for (const variant of VARIANTS.filter((v) => packableIn(v, GgmlType.MXFP4))) {
    // 8 rows × 32 blocks: block b carries exponent b % 256.
    const allExponents = (w: Uint8Array) => {
      for (let b = 0; b < w.length / 17; b++) w[17 * b] = b % 256;
    };
    for (const nTok of [1, 3]) {
      checkCase(HARNESS[variant]!, GgmlType.MXFP4, 8, 1024, nTok, 11 + nTok, allExponents);
    }
  }
});

Deno.test("packed IQ4_NL: extreme weights × full-scale activations of one sign or mixed (the x = w ^ m, + c8 sign transfer) bit-identical to the standard layout", () => {
  for (const variant of VARIANTS.filter((v) => packableIn(v, GgmlType.IQ4_NL))) {
    // Quant bytes 0x00 (both nibbles −127), 0xff (113), 0x0f / 0xf0 (mixed), by block.
    const extremes = (w: Uint8Array) => {
      for (let b = 0; b < w.length / 18; b++) {
        w.fill([0x00, 0xff, 0x0f, 0xf0][b % 4], 18 * b + 2, 18 * b + 18);
      }
    };
    const cols = 1024;
    const signs: ((i: number) => number)[] = [
      () => -1,
      () => 1,
      (i) => (i % 3 === 0 ? -1 : 1),
      (i) => (i & 1 ? -1 : 1),
    ];
    for (const [n, sign] of signs.entries()) {
      const acts = (t: number) =>
        Float32Array.from({ length: cols }, (_, i) => sign(i + t) * (1 + ((i * 7 + t) % 5) / 9));
      for (const nTok of [1, 3]) {
        checkCase(HARNESS[variant]!, GgmlType.IQ4_NL, 8, cols, nTok, 40 + n, extremes, acts);
      }
    }
  }
});

Deno.test("pack_weights refuses (1, bytes untouched) when a precondition fails; -1 for unsupported", () => {
  for (const variant of VARIANTS) {
    const H = HARNESS[variant]!;
    const k = H.k;
    const refuse = (type: GgmlType, rows: number, cols: number, w: Uint8Array, want = 1) => {
      H.reset();
      const p = H.putU8(w);
      const tmp = H.alloc(Math.max(k.pack_scratch_bytes(type, cols), 1));
      assertEquals(
        k.pack_weights(type, p, rows, cols, tmp, 0),
        want,
        `${ggmlTypeName(type)} ${variant}`,
      );
      assertEquals(bytesOf(H, p, w.length), w.join());
    };
    const r = rng(7);
    // rows not a multiple of 4 (grouped formats).
    for (const t of [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K]) {
      const cols = t === GgmlType.Q4_K ? 256 : 64;
      refuse(t, 6, cols, randomWeights(r, t, 6, cols));
    }
    // Non-finite f16 scales / values.
    const q4 = randomWeights(r, GgmlType.Q4_0, 4, 64);
    q4.set([0x00, 0x7c], 18 * 3); // +inf scale in block 3
    refuse(GgmlType.Q4_0, 4, 64, q4);
    const qk = randomWeights(r, GgmlType.Q4_K, 4, 256);
    qk.set([0x01, 0x7e], 144 * 2 + 2); // NaN dmin in block 2
    refuse(GgmlType.Q4_K, 4, 256, qk);
    if (packableIn(variant, GgmlType.Q6_K)) {
      const q6 = randomWeights(r, GgmlType.Q6_K, 4, 512);
      q6.set([0x00, 0xfc], 210 * 3 + 208); // -inf d in block 3
      refuse(GgmlType.Q6_K, 4, 512, q6);
      refuse(GgmlType.Q6_K, 6, 256, randomWeights(r, GgmlType.Q6_K, 6, 256));
      const q2 = randomWeights(r, GgmlType.Q2_K, 4, 512);
      q2.set([0x00, 0x7c], 84 * 5 + 82); // +inf dmin in block 5
      refuse(GgmlType.Q2_K, 4, 512, q2);
      refuse(GgmlType.Q2_K, 10, 256, randomWeights(r, GgmlType.Q2_K, 10, 256));
      const q3 = randomWeights(r, GgmlType.Q3_K, 8, 256);
      q3.set([0x01, 0xfe], 110 * 6 + 108); // NaN d in block 6
      refuse(GgmlType.Q3_K, 8, 256, q3);
    }
    if (packableIn(variant, GgmlType.Q4_1)) {
      // Non-finite d or m (Q4_1/Q5_1), d (Q5_0, IQ4_XS); rows not a multiple of 4.
      const cases: [GgmlType, number, number, number][] = [
        [GgmlType.Q4_1, 64, 20 * 3 + 2, 0x7c00], // +inf m
        [GgmlType.Q4_1, 64, 20 * 1, 0xfe01], // NaN d
        [GgmlType.Q5_0, 64, 22 * 2, 0xfc00], // -inf d
        [GgmlType.Q5_1, 64, 24 * 4 + 2, 0x7e01], // NaN m
        [GgmlType.Q5_1, 64, 24 * 5, 0x7c00], // +inf d
        [GgmlType.IQ4_XS, 512, 136 * 5, 0x7c00], // +inf d
      ];
      for (const [t, cols, off, h] of cases) {
        const w = randomWeights(r, t, 4, cols);
        w.set([h & 0xff, h >> 8], off);
        refuse(t, 4, cols, w);
        refuse(t, 6, cols, randomWeights(r, t, 6, cols));
      }
    }
    const f16 = randomWeights(r, GgmlType.F16, 4, 19);
    f16.set([0x00, 0xfc], 2 * 40); // -inf value
    refuse(GgmlType.F16, 4, 19, f16);
    // Q8_0 quant -128: the relaxed sign transfer cannot take it; simd128 packs it.
    const q8 = randomWeights(r, GgmlType.Q8_0, 4, 64);
    clearQ8Min(q8);
    q8[34 * 5 + 7] = 0x80;
    if (variant === "relaxed") refuse(GgmlType.Q8_0, 4, 64, q8);
    else {
      H.reset();
      const p = H.putU8(q8);
      assertEquals(k.pack_weights(GgmlType.Q8_0, p, 4, 64, H.alloc(4 * 68), 0), 0);
    }
    // BF16 rows that are not whole 8-element chunks.
    refuse(GgmlType.BF16, 4, 60, randomWeights(r, GgmlType.BF16, 4, 60));
    refuse(GgmlType.BF16, 6, 64, randomWeights(r, GgmlType.BF16, 6, 64));
    // Formats without a packed layout.
    const unpackable = [GgmlType.F32, GgmlType.BF16, GgmlType.Q5_0, GgmlType.Q6_K];
    for (const t of unpackable.filter((t) => !packableIn(variant, t))) {
      assertEquals(k.pack_scratch_bytes(t, 256), 0);
      refuse(t, 4, 256, randomWeights(r, t, 4, 256), -1);
    }
  }
});

Deno.test("packed layouts: every finite scale, including subnormal and negative zero, is exact", () => {
  for (const variant of VARIANTS) {
    const H = HARNESS[variant]!;
    const k = H.k;
    const r = rng(11);
    const specials = [0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, toF16(1e-6)];
    const types = [
      GgmlType.Q8_0,
      GgmlType.Q4_0,
      GgmlType.Q4_K,
      GgmlType.Q6_K,
      GgmlType.Q2_K,
      GgmlType.Q3_K,
      GgmlType.MXFP4, // E8M0 bytes 0x00, 0x01, 0xff among the low bytes below
      GgmlType.Q5_K,
      GgmlType.IQ4_NL,
      GgmlType.Q4_1, // m (the min) specials too, below
      GgmlType.Q5_0,
      GgmlType.Q5_1,
      GgmlType.IQ4_XS,
    ];
    for (const type of types.filter((t) => packableIn(variant, t))) {
      const cols = type === GgmlType.Q6_K ? 2048 : 256;
      const w = randomWeights(r, type, 4, cols);
      if (type === GgmlType.Q8_0) clearQ8Min(w);
      const BB: Partial<Record<GgmlType, number>> = {
        [GgmlType.Q8_0]: 34,
        [GgmlType.Q4_0]: 18,
        [GgmlType.Q4_K]: 144,
        [GgmlType.Q6_K]: 210,
        [GgmlType.Q2_K]: 84,
        [GgmlType.Q3_K]: 110,
        [GgmlType.MXFP4]: 17,
        [GgmlType.Q5_K]: 176,
        [GgmlType.IQ4_NL]: 18,
        [GgmlType.Q4_1]: 20,
        [GgmlType.Q5_0]: 22,
        [GgmlType.Q5_1]: 24,
        [GgmlType.IQ4_XS]: 136,
      };
      const bb = BB[type]!;
      // the f16 d of a block (Q2_K: dmin too)
      const D_OFF: Partial<Record<GgmlType, number>> = {
        [GgmlType.Q6_K]: 208,
        [GgmlType.Q2_K]: 80,
        [GgmlType.Q3_K]: 108,
      };
      const dOff = D_OFF[type] ?? 0;
      for (let b = 0; b < w.length / bb; b++) {
        const h = specials[b % specials.length];
        w[b * bb + dOff] = h & 0xff;
        w[b * bb + dOff + 1] = h >> 8;
        if (type === GgmlType.Q2_K) w.set([h & 0xff, h >> 8], b * bb + 82);
        if (type === GgmlType.Q4_1 || type === GgmlType.Q5_1) {
          const hm = specials[(b + 3) % specials.length]; // m
          w.set([hm & 0xff, hm >> 8], b * bb + 2);
        }
      }
      H.reset();
      const std = H.putU8(w), pk = H.putU8(w);
      assertEquals(
        k.pack_weights(type, pk, 4, cols, H.alloc(k.pack_scratch_bytes(type, cols)), 0),
        0,
      );
      const x = randomActivations(r, cols);
      const xp = H.putF32(x);
      const sc = H.alloc(k.matmul_scratch_bytes(type | PACKED_FLAG, cols, 1) + 4096);
      const o1 = H.alloc(16), o2 = H.alloc(16);
      k.matmul(type, std, 4, cols, xp, 1, o1, sc);
      k.matmul(type | PACKED_FLAG, pk, 4, cols, xp, 1, o2, sc);
      assertEquals(bytesOf(H, o2, 16), bytesOf(H, o1, 16), `${ggmlTypeName(type)} ${variant}`);
    }
  }
});

Deno.test("packed F16 decode and token tiles (2^112 on the activation): subnormal, zero, extreme weights and activations up to ±65504 and ±inf bit-identical to the standard layout", () => {
  // f16 weight bits: ±0, subnormals (smallest, largest), smallest normal, ±65504, 1, and random.
  const specials = [
    0x0000,
    0x8000,
    0x0001,
    0x8001,
    0x03ff,
    0x83ff,
    0x0400,
    0x7bff,
    0xfbff,
    0x3c00,
    0x0200,
  ];
  // activations: f16 extremes, values that round to f16 subnormals, and to ±inf
  const acts = [65504, -65504, 6.1e-5, -3e-8, 1e-7, 70000, -1e6, 0, -0, 1.5];
  for (const variant of VARIANTS) {
    const H = HARNESS[variant]!;
    const k = H.k;
    const r = rng(77 + variant.length);
    for (const [rows, cols] of [[8, 91], [4, 32], [12, 16 * 9 + 7]]) {
      for (let trial = 0; trial < 6; trial++) {
        // 1 token (two-row decode kernel), 2, 3 (tiles), 5 (a tile of 4 + one token),
        // 19 (two token blocks: the scaled activations are per block)
        const nt = [1, 2, 3, 5, 1, 19][trial];
        const w = randomWeights(r, GgmlType.F16, rows, cols);
        const x = randomActivations(r, cols * nt);
        for (let i = 0; i < rows * cols; i++) {
          if (r() < 0.4) {
            const h = specials[Math.floor(r() * specials.length)];
            w[2 * i] = h & 0xff;
            w[2 * i + 1] = h >> 8;
          }
        }
        // trial 0: no infinite activations (finite sums); later trials mix everything in
        for (let i = 0; i < cols * nt; i++) {
          if (r() < 0.3) {
            const v = acts[Math.floor(r() * acts.length)];
            x[i] = trial === 0 && Math.abs(v) > 65504 ? 1 : v;
          }
        }
        H.reset();
        const std = H.putU8(w), pk = H.putU8(w);
        assertEquals(
          k.pack_weights(
            GgmlType.F16,
            pk,
            rows,
            cols,
            H.alloc(k.pack_scratch_bytes(GgmlType.F16, cols)),
            0,
          ),
          0,
        );
        const xp = H.putF32(x);
        const sc = H.alloc(
          Math.max(
            k.matmul_scratch_bytes(GgmlType.F16 | PACKED_FLAG, cols, nt),
            k.matmul_scratch_bytes(GgmlType.F16, cols, nt),
          ),
        );
        const o1 = H.alloc(4 * rows * nt), o2 = H.alloc(4 * rows * nt);
        assertEquals(k.matmul(GgmlType.F16, std, rows, cols, xp, nt, o1, sc), 0);
        assertEquals(k.matmul(GgmlType.F16 | PACKED_FLAG, pk, rows, cols, xp, nt, o2, sc), 0);
        assertEquals(
          bytesOf(H, o2, 4 * rows * nt),
          bytesOf(H, o1, 4 * rows * nt),
          `${rows}x${cols} ${nt} tokens trial ${trial} ${variant}`,
        );
      }
    }
  }
});

Deno.test("decode matvecs that stream several rows per call (F32 ×4 rows, F16 ×2 rows; groups in pairs) == one row at a time", () => {
  for (const variant of VARIANTS) {
    const H = HARNESS[variant]!;
    const k = H.k;
    for (const type of [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_K]) {
      const blk = type === GgmlType.Q4_K ? 256 : type === GgmlType.Q8_0 ? 32 : 1;
      for (const [rows, blocks] of [[4, 3], [13, 2], [36, 1], [44, 2]]) {
        const cols = blk === 1 ? 67 * blocks : blk * blocks;
        const r = rng(rows * 131 + cols + variant.length);
        const w = randomWeights(r, type, rows, cols);
        if (type === GgmlType.Q8_0) clearQ8Min(w);
        const x = randomActivations(r, cols);
        H.reset();
        const wp = H.putU8(w);
        let ty: number = type;
        if (type !== GgmlType.F32 && rows % 4 === 0) {
          const tmp = H.alloc(k.pack_scratch_bytes(type, cols));
          assertEquals(k.pack_weights(type, wp, rows, cols, tmp, 0), 0);
          ty |= PACKED_FLAG;
        }
        const single = H.putU8(w); // standard bytes, one row per call
        const xp = H.putF32(x);
        const sc = H.alloc(
          k.matmul_scratch_bytes(ty, cols, 1) + k.matmul_scratch_bytes(type, cols, 1),
        );
        const all = H.alloc(4 * rows), one = H.alloc(4 * rows);
        assertEquals(k.matmul(ty, wp, rows, cols, xp, 1, all, sc), 0);
        const rb = k.weight_row_bytes(type, cols);
        for (let i = 0; i < rows; i++) {
          assertEquals(k.matmul(type, single + i * rb, 1, cols, xp, 1, one + 4 * i, sc), 0);
        }
        assertEquals(
          bytesOf(H, all, 4 * rows),
          bytesOf(H, one, 4 * rows),
          `${ggmlTypeName(type)} ${rows}x${cols} ${variant}`,
        );
      }
    }
  }
});
