import { ok as assert } from "node:assert/strict";
import fc from "npm:fast-check@4";
import { expfAvx2, softmaxRow, swigluRow } from "./ggml_math.ts";

Deno.test("ggml_v_expf emulation is within 2 ulp of exp over its range", () => {
  fc.assert(
    fc.property(fc.float({ min: -87, max: 88, noNaN: true }), (x) => {
      const xf = Math.fround(x);
      const want = Math.exp(xf);
      const got = expfAvx2(xf);
      const ulp = Math.max(2 ** (Math.floor(Math.log2(want)) - 23), 2 ** -149);
      assert(Math.abs(got - want) <= 2 * ulp, `${xf}: ${got} vs ${want}`);
    }),
    { numRuns: 5000 },
  );
});

Deno.test("ggml_v_expf: flushes large inputs to inf, small to 0, exp(0) = 1", () => {
  assert(expfAvx2(0) === 1);
  assert(expfAvx2(100) === Infinity);
  assert(expfAvx2(-110) === 0);
});

Deno.test("softmax rows sum to 1 for every length (vector body and tail)", () => {
  for (let n = 1; n < 40; n++) {
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 4);
    const y = new Float32Array(n);
    softmaxRow(x, y);
    const s = y.reduce((a, b) => a + b, 0);
    assert(Math.abs(s - 1) < 1e-5, `n=${n} sum ${s}`);
  }
});

Deno.test("swiglu: vector body and scalar tail agree within 2 ulp", () => {
  const n = 21;
  const x = Float32Array.from({ length: n }, (_, i) => (i - 10) * 0.37);
  const g = new Float32Array(n).fill(1);
  const y = new Float32Array(n);
  swigluRow(n, y, x, g);
  for (let i = 0; i < n; i++) {
    const want = x[i] / (1 + Math.exp(-x[i]));
    assert(Math.abs(y[i] - want) <= 4e-7 * Math.max(1, Math.abs(want)), `${i}: ${y[i]} vs ${want}`);
  }
});
