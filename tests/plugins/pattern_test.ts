/**
 * PEFT rank/alpha pattern keys: the linear-time matcher agrees with a
 * backtracking regex on `(.*\.)?(key)$` wherever both answer, finishes fast on
 * keys that make backtracking explode, and refuses what it cannot match.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { compilePatternMap, compilePeftPattern, patternValue } from "../../core/plugin/mod.ts";

const MODULES = [
  "model.layers.0.self_attn.q_proj",
  "model.layers.12.self_attn.v_proj",
  "model.layers.3.mlp.down_proj",
  "lm_head",
  "model.layers.1.self_attn.o_proj",
];

Deno.test("pattern: PEFT examples (suffix after a dot, full path, regex keys, first key wins)", () => {
  const m = "model.layers.12.self_attn.v_proj";
  const yes = [
    "v_proj",
    "self_attn.v_proj",
    "model.layers.12.self_attn.v_proj",
    "layers.12.self_attn.v_proj",
    "layers\\.\\d+\\.self_attn\\.v_proj",
    "layers.1[0-9].*v_proj",
    "(q|v)_proj",
    "(?:q|v)_proj",
    "(?P<p>v)_proj",
    "[^.]+",
    ".*",
    "v_pro.",
    "v_proj$",
    "^model.layers.12.self_attn.v_proj",
    "layers.[0-9]{1,2}.self_attn.v_proj",
    "v_proj|nothing",
  ];
  for (const k of yes) assert.ok(compilePeftPattern(k).matches(m), k);
  const no = ["proj", "q_proj", "_proj", "layers.1.self_attn.v_proj", "^v_proj", "V_PROJ", "v_pro"];
  for (const k of no) assert.ok(!compilePeftPattern(k).matches(m), k);
  assert.equal(patternValue({ q_proj: 2, "v_.*": 4, v_proj: 8 }, m, 1), 4);
  assert.equal(patternValue({ q_proj: 2 }, m, 16), 16);
});

Deno.test("pattern: backtracking bombs finish in linear time", () => {
  const long = `${"model.layers.0.".repeat(20)}self_attn.q_proj`;
  // accepted and matched in linear time
  for (const k of ["(a|a)*b", "(.a*.*)*=", "(x+x+)+y", "(\\w+\\.)*z", "(.+)+Q"]) {
    const t0 = performance.now();
    assert.equal(compilePeftPattern(k).matches(long + "a".repeat(40)), false, k);
    assert.ok(performance.now() - t0 < 200, `${k} took ${performance.now() - t0} ms`);
  }
  assert.ok(compilePeftPattern("(x+x+)+y").matches("a.xxxy"));
  // a repeated sub-pattern that can match nothing: refused (PEFT's own re hangs on it)
  for (const k of ["((.*)*)*X", "(a*)*b", "(.*.*)*=", "((((.*)*)*)*)*Z", "(a?){2,}", "(|a)+"]) {
    assert.throws(
      () => compilePeftPattern(k),
      (e: Error & { code?: string }) => e.code === "bad_pattern" && /empty string/.test(e.message),
      k,
    );
  }
});

Deno.test("pattern: unsupported or invalid keys are typed errors, before any module is read", () => {
  for (
    const k of [
      "(",
      ")",
      "*a",
      "a**",
      "(?=x)",
      "(?!x)",
      "(?<=x)y",
      "(?i)q_proj",
      "(a)\\1",
      "\\bq",
      "a*+",
      "[z-a]",
      "[abc",
      "x{2000}",
      "x".repeat(600),
      "((((x{30}){30}){30}))",
    ]
  ) {
    assert.throws(
      () => compilePeftPattern(k),
      (e: Error & { code?: string }) => e.name === "ManifestError" && e.code === "bad_pattern",
      k,
    );
  }
  assert.throws(
    () => compilePatternMap({ q_proj: -1 }, "rank_pattern"),
    (e: Error & { code?: string }) => e.code === "bad_adapter_config",
  );
  assert.throws(
    () => compilePatternMap(["q_proj"], "rank_pattern"),
    (e: Error & { code?: string }) => e.code === "bad_adapter_config",
  );
});

/** Pattern pieces that keep a backtracking engine fast on short inputs. */
const atom = fc.constantFrom(
  "a",
  "b",
  ".",
  "\\.",
  "_",
  "[ab]",
  "[^a]",
  "[a-c_.]",
  "\\d",
  "\\w",
  "0",
  "q",
);
const piece: fc.Arbitrary<string> = fc.letrec<{ p: string }>((tie) => ({
  p: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    atom,
    fc.tuple(tie("p"), fc.constantFrom("*", "+", "?", "{1,2}", "{2}", "*?")).map(([a, q]) =>
      `(${a})${q}`
    ),
    fc.tuple(tie("p"), tie("p")).map(([a, b]) => `${a}${b}`),
    fc.tuple(tie("p"), tie("p")).map(([a, b]) => `(?:${a}|${b})`),
  ),
})).p;

Deno.test("pattern: agrees with a backtracking RegExp on random keys and module paths", () => {
  let refused = 0, compared = 0;
  fc.assert(
    fc.property(
      piece.filter((p) => p.length <= 24),
      fc.stringMatching(/^[ab0q_.]{0,10}$/),
      (key, module) => {
        let p;
        try {
          p = compilePeftPattern(key);
        } catch (e) {
          // only the nullable-repeat shape is refused among these keys
          assert.equal((e as { code?: string }).code, "bad_pattern");
          assert.match((e as Error).message, /empty string/);
          refused++;
          return;
        }
        const want = new RegExp(`^(.*\\.)?(${key})$`, "u").test(module);
        assert.equal(p.matches(module), want, `${key} on ${module}`);
        compared++;
      },
    ),
    { numRuns: 400, seed: 20261207 },
  );
  assert.ok(compared > 300 && refused > 0, `compared ${compared}, refused ${refused}`);
  for (const m of MODULES) {
    for (const k of ["q_proj", "layers\\.0\\..*", "(self_attn|mlp)\\.\\w+_proj", "lm_head"]) {
      assert.equal(compilePeftPattern(k).matches(m), new RegExp(`^(.*\\.)?(${k})$`).test(m));
    }
  }
});
