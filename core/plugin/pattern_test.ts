/**
 * PEFT rank/alpha pattern keys: the linear-time matcher agrees with a
 * backtracking regex on `(.*\.)?(key)$` wherever both answer, finishes fast on
 * keys that make backtracking explode, and refuses what it cannot match.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  compilePatternMap,
  compilePeftPattern,
  compileSafeRegExp,
  patternValue,
  validatePluginConfig,
  validatePluginManifest,
} from "./mod.ts";

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

Deno.test("safe RegExp: agrees with RegExp#test (u flag) on random patterns and strings", () => {
  let compared = 0;
  fc.assert(
    fc.property(
      fc.tuple(fc.constantFrom("", "^"), piece, fc.constantFrom("", "$"))
        .map(([a, p, b]) => a + p + b)
        .filter((p) => p.length <= 26),
      fc.stringMatching(/^[ab0q_.\n]{0,10}$/),
      (pattern, s) => {
        let rx;
        try {
          rx = compileSafeRegExp(pattern);
        } catch (e) {
          assert.equal((e as { code?: string }).code, "bad_pattern");
          return;
        }
        assert.equal(rx.test(s), new RegExp(pattern, "u").test(s), `/${pattern}/u on ${s}`);
        compared++;
      },
    ),
    { numRuns: 400, seed: 11 },
  );
  assert.ok(compared > 300, `compared ${compared}`);
  for (const p of ["^(\\*|0|[1-9][0-9]*)$", "^[1-9]+$|^[0-9]+([-,][0-9]+)+$", "(?<n>a)b", "a.c"]) {
    for (const s of ["*", "0", "12", "012", "2468", "8-6-4-2", "ab", "a\nc", "abc", "x"]) {
      assert.equal(compileSafeRegExp(p).test(s), new RegExp(p, "u").test(s), `/${p}/ on ${s}`);
    }
  }
});

Deno.test("safe RegExp: a plugin config schema with a backtracking pattern neither hangs nor compiles unsafely", () => {
  const where = "p manifest";
  const base = { name: "p", version: "1.0.0", apiVersion: 1, hooks: ["router"], entry: "mod.js" };
  const bad = validatePluginManifest({
    ...base,
    config: { type: "object", properties: { s: { type: "string", pattern: "((.*)*)*X" } } },
  }, where);
  assert.ok(bad.some((p) => p.code === "bad_config_schema" && /empty string/.test(p.message)));
  const schema = {
    type: "object",
    properties: { s: { type: "string", pattern: "^(a|a)*b$" } },
    patternProperties: { "^(x+x+)+y$": { type: "number" } },
  };
  assert.deepEqual(validatePluginManifest({ ...base, config: schema }, where), []);
  const t0 = performance.now();
  const { problems } = validatePluginConfig(schema, {
    s: "a".repeat(64),
    ["x".repeat(64)]: "not checked: the key does not match",
  }, where);
  assert.ok(performance.now() - t0 < 500, `took ${performance.now() - t0} ms`);
  assert.deepEqual(problems.map((p) => p.code), ["bad_format"]);
  assert.deepEqual(validatePluginConfig(schema, { s: "aab", xxy: 1 }, where).problems, []);
  assert.equal(validatePluginConfig(schema, { xxy: "one" }, where).problems[0]?.code, "bad_type");
  // Ajv's strict check of property names against patterns would use new RegExp: it is off
  const t1 = performance.now();
  const names = {
    type: "object",
    properties: { [`${"a".repeat(40)}!`]: { type: "string" } },
    patternProperties: { "^(a+)+$": { type: "number" } },
  };
  assert.deepEqual(validatePluginManifest({ ...base, config: names }, where), []);
  assert.ok(performance.now() - t1 < 500, `took ${performance.now() - t1} ms`);
});
