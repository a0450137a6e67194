/**
 * Micro-bench: WASM matmul throughput in GB/s of weight bytes, against a
 * memcpy of the same byte count in the same run (`copyWithin` on linear
 * memory, i.e. V8's native memmove) and a read-only WASM stream of the same
 * bytes (four v128 loads per 64 bytes XOR-ed into four accumulators: the
 * most a kernel that only reads its weights could pull). Columns: the
 * standard layout, the packed layout with the simd128 kernels, the packed
 * layout with the relaxed-SIMD kernels (when the engine supports them),
 * the read-only stream and memcpy; ratios are to memcpy and, for the
 * relaxed column, also to the read-only stream.
 *
 *   deno run wasm/bench/matvec.ts [--scalar] [--rounds N] [--types F32,Q8_0,...]
 *                                 [--tokens 1,16] [--shapes 2816x1024,1024x2816]
 *
 * Shapes larger than the last-level cache (e.g. `--shapes 16384x4096`,
 * 37 MB in Q4_0) measure the DRAM stream; the defaults stay in L2/L3.
 *
 * All variants of a row are timed interleaved (round-robin batches of 20 ms,
 * best batch kept), so machine noise hits them alike; a warm-up first lets
 * V8 tier every kernel up to optimized code.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { GgmlType, ggmlTypeName } from "../../core/tensor/ggml_type.ts";
import { KernelHarness, randomActivations, randomWeights, rng } from "../kernel_test_util.ts";
import { PACKED_FLAG, relaxedSimdSupported } from "../pkg/moe_edge_kernels.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    scalar: { type: "boolean", default: false },
    rounds: { type: "string", default: "15" },
    types: { type: "string", default: "F32,F16,Q8_0,Q4_0,Q4_K,Q6_K,Q2_K,Q3_K,IQ4_NL,IQ4_XS,MXFP4" },
    tokens: { type: "string", default: "1,16" },
    shapes: { type: "string", default: "2816x1024,1024x2816" },
  },
});
const ROUNDS = Number(values.rounds);
const TYPES = values.types!.split(",").map((n) => GgmlType[n as keyof typeof GgmlType]);
const TOKENS = values.tokens!.split(",").map(Number);
const SHAPES = values.shapes!.split(",").map((x) => x.split("x").map(Number));
const scalar = values.scalar;

// One harness (instance, memory) per column, so each keeps its own copy of the weights.
const stdH = await KernelHarness.create("simd128");
const packH = await KernelHarness.create("simd128");
const rxH = relaxedSimdSupported() ? await KernelHarness.create("relaxed") : null;
const memH = await KernelHarness.create("simd128");

/** `read(p, n)`: XOR of the 16-byte words of [p, p+n), n a multiple of 64 (clang-19 -O2 -msimd128). */
const STREAM_WASM =
  "AGFzbQEAAAABBwFgAn9/AX8CDwEDZW52Bm1lbW9yeQIAAgMCAQAEBQFwAQEBBggBfwFBgIgECwcIAQRyZWFkAAAKnQEBmgEBBHsCQCABQQFODQD9DAAAAAAAAAAAAAAAAAAAAAD9GwAPCyAAIAFqIQH9DAAAAAAAAAAAAAAAAAAAAAAiAiEDIAIhBCACIQUDQCAA/QAAMCAC/VEhAiAA/QAAICAD/VEhAyAA/QAAECAE/VEhBCAA/QAAACAF/VEhBSAAQcAAaiIAIAFJDQALIAQgBf1RIAP9USAC/VH9GwAL";
const stream = new WebAssembly.Instance(
  new WebAssembly.Module(Uint8Array.from(atob(STREAM_WASM), (c) => c.charCodeAt(0))),
  { env: { memory: memH.k.memory } },
).exports as { read(p: number, n: number): number };

/** Best ms per call of each function, timed round-robin. */
function timeMany(fns: (() => void)[], batchMs = 20): number[] {
  const best = fns.map(() => Infinity);
  for (let b = 0; b < ROUNDS; b++) {
    fns.forEach((fn, j) => {
      let n = 0;
      const t0 = performance.now();
      let t = t0;
      while (t - t0 < batchMs) {
        fn();
        n++;
        t = performance.now();
      }
      best[j] = Math.min(best[j], (t - t0) / n);
    });
  }
  return best;
}

interface Setup {
  readonly run: () => void;
}

/** Upload `w` into `H`, optionally packed; returns the call to time (or null if it cannot pack). */
function setup(
  H: KernelHarness,
  type: GgmlType,
  w: Uint8Array,
  rows: number,
  cols: number,
  x: Float32Array,
  nTok: number,
  pack: boolean,
): Setup | null {
  const k = H.k;
  H.reset();
  const wp = H.putU8(w);
  if (pack) {
    const tmp = H.alloc(k.pack_scratch_bytes(type, cols));
    if (
      k.pack_scratch_bytes(type, cols) === 0 || k.pack_weights(type, wp, rows, cols, tmp, 0) !== 0
    ) {
      return null;
    }
  }
  const ty = pack ? type | PACKED_FLAG : type;
  const xp = H.putF32(x);
  const op = H.alloc(4 * nTok * rows);
  const sp = H.alloc(k.matmul_scratch_bytes(ty, cols, nTok));
  const mm = scalar ? k.matmul_scalar : k.matmul;
  return { run: () => mm(ty, wp, rows, cols, xp, nTok, op, sp) };
}

const rowsOut: string[] = [];
for (const [rows, cols] of SHAPES) {
  for (const type of TYPES) {
    const w = randomWeights(rng(1), type, rows, cols);
    // Q8_0 quants of -128 never come out of ggml's quantizer; the relaxed build refuses them.
    if (type === GgmlType.Q8_0) {
      for (let i = 0; i < w.length; i++) if (i % 34 >= 2 && w[i] === 0x80) w[i] = 0x81;
    }
    for (const nTok of TOKENS) {
      const x = new Float32Array(nTok * cols);
      for (let t = 0; t < nTok; t++) x.set(randomActivations(rng(2 + t), cols), t * cols);
      const cells = [
        setup(stdH, type, w, rows, cols, x, nTok, false),
        setup(packH, type, w, rows, cols, x, nTok, true),
        rxH ? setup(rxH, type, w, rows, cols, x, nTok, true) : null,
      ];
      memH.reset();
      const src = memH.putU8(w);
      const dst = memH.alloc(w.length);
      const fns = cells.filter((c): c is Setup => c !== null).map((c) => c.run);
      const n64 = w.length & ~63;
      fns.push(() => stream.read(src, n64));
      fns.push(() => new Uint8Array(memH.k.memory.buffer).copyWithin(dst, src, src + w.length));
      // Warm-up: lets V8 tier every kernel up before the timed rounds.
      const warm = performance.now();
      while (performance.now() - warm < 300) for (const f of fns) f();
      const ms = timeMany(fns);
      const msCopy = ms[ms.length - 1];
      const msRead = ms[ms.length - 2] * w.length / n64;
      let j = 0;
      const cell = (c: Setup | null, vsRead = false): string => {
        if (c === null) return "—";
        const t = ms[j++];
        const r = vsRead ? `, ${(msRead / t).toFixed(2)}× read` : "";
        return `${(w.length / t / 1e6).toFixed(2)} (${(msCopy / t).toFixed(2)}×${r})`;
      };
      const shown = cells.map((c, i) => cell(c, i === 2));
      rowsOut.push(
        `| ${ggmlTypeName(type)} | ${rows}×${cols} | ${nTok} | ${(w.length / 1e6).toFixed(2)} | ${
          shown.join(" | ")
        } | ${(w.length / msRead / 1e6).toFixed(2)} | ${(w.length / msCopy / 1e6).toFixed(2)} |`,
      );
    }
  }
}
console.log(
  `WASM ${
    scalar ? "scalar twins" : "SIMD"
  } matmul, single thread (Deno ${Deno.version.deno}, V8 ${Deno.version.v8})`,
);
console.log(
  "GB/s of weight bytes (× memcpy of the same bytes in the same run); — = not packable / not supported",
);
console.log(
  `${
    Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?"
  }; load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`,
);
console.log(
  "| type | rows×cols | tokens | weight MB | standard | packed simd128 | packed relaxed | read-only GB/s | memcpy GB/s |",
);
console.log("|---|---|---|---|---|---|---|---|---|");
for (const r of rowsOut) console.log(r);
