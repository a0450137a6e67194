/** The CLI's value parsers: every number a user can type parses, everything else is refused. */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- test-only dependency, kept out of the package's import map
import fc from "npm:fast-check@4";
// deno-lint-ignore no-import-prefix -- the CLI's own parser library
import { InvalidArgumentError } from "npm:commander@^14.0.3";
import {
  parseCount,
  parseInteger,
  parseNumber,
  parsePositive,
  parseTokenList,
} from "../cli/options.ts";

const refused = (f: () => unknown) =>
  assert.throws(f, (e: unknown) => e instanceof InvalidArgumentError);

Deno.test("options: integers and numbers round-trip, negatives included", () => {
  fc.assert(
    fc.property(fc.maxSafeInteger(), (n) => {
      assert.equal(parseInteger(String(n)), n);
      assert.equal(parseNumber(String(n)), n);
      if (n >= 0) assert.equal(parseCount(String(n)), n);
      else refused(() => parseCount(String(n)));
    }),
  );
  fc.assert(
    fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
      assert.equal(parseNumber(String(x)), x === 0 ? 0 : x); // "-0" reads as -0; both are 0
      if (x > 0) assert.equal(parsePositive(String(x)), x);
      else refused(() => parsePositive(String(x)));
      if (!Number.isInteger(x)) refused(() => parseInteger(String(x)));
    }),
  );
});

Deno.test("options: non-numbers, NaN, infinities and unsafe integers are refused", () => {
  for (const v of ["", " ", "abc", "1x", "NaN", "Infinity", "-Infinity", "1e400", "--1"]) {
    refused(() => parseNumber(v));
    refused(() => parseInteger(v));
  }
  refused(() => parseInteger("9007199254740993"));
  refused(() => parseInteger("1.5"));
  fc.assert(
    fc.property(fc.string(), (s) => {
      const n = Number(s);
      if (s.trim() !== "" && Number.isFinite(n)) assert.equal(parseNumber(s), n);
      else refused(() => parseNumber(s));
    }),
  );
});

Deno.test("options: token lists", () => {
  assert.deepEqual(parseTokenList("1, 2,3"), [1, 2, 3]);
  fc.assert(
    fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 20 }), (ids) => {
      assert.deepEqual(parseTokenList(ids.join(",")), ids);
    }),
  );
  for (const v of ["", "1,,2", "1,-2", "a", "1.5", "1;2", "99999999999999999999"]) {
    refused(() => parseTokenList(v));
  }
});
