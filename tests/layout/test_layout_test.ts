/**
 * One test convention (tests/README.md): unit tests sit next to their module as `x_test.ts`;
 * a module that only tests import is a helper named `<topic>_test_util.ts` (or data under
 * `testdata/`); `tests/` holds only the cross-cutting suites that tests/README.md lists.
 */

import assert from "node:assert/strict";
import { importSpecifiers, resolvePath } from "../../tools/check_cycles.ts";

const ROOT = new URL("../../", import.meta.url);
const SKIP = new Set(["node_modules", ".git", "target", "pkg", ".cache", ".artifacts"]);

/** Every `.ts` file of the repository (path relative to the root → source). */
async function sources(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(new URL(dir, ROOT))) {
      const path = `${dir}${e.name}`;
      if (e.isDirectory) {
        if (!SKIP.has(e.name) && !e.name.startsWith(".")) await walk(`${path}/`);
      } else if (e.name.endsWith(".ts")) {
        out.set(path, await Deno.readTextFile(new URL(path, ROOT)));
      }
    }
  };
  await walk("");
  return out;
}

const isTest = (p: string) => /_test\.ts$/.test(p);
const isTestSide = (p: string) =>
  isTest(p) || /_test_util\.ts$/.test(p) || p.startsWith("tests/") || p.includes("/testdata/");

Deno.test("layout: a module only tests import is named <topic>_test_util.ts", async () => {
  const src = await sources();
  const importers = new Map<string, Set<string>>();
  for (const [file, text] of src) {
    for (const spec of importSpecifiers(text)) {
      const target = resolvePath(file, spec);
      if (!importers.has(target)) importers.set(target, new Set());
      importers.get(target)!.add(file);
    }
  }
  const misnamed: string[] = [];
  for (const [file, users] of importers) {
    // a test module imported by another one is a helper named as a test (deno test runs it)
    if (src.has(file) && isTest(file)) misnamed.push(`${file} (imported by ${[...users][0]})`);
    if (!src.has(file) || isTestSide(file)) continue;
    // scripts run on their own (tools, benchmarks) may also serve tests
    if (/^(tools|bench|examples)\//.test(file) || /(^|\/)mod\.ts$/.test(file)) continue;
    if ([...users].every(isTestSide)) misnamed.push(`${file} (imported by ${[...users][0]})`);
  }
  assert.deepEqual(misnamed, [], "test helpers outside tests/ are named <topic>_test_util.ts");
  const testsHelpers = [...src.keys()].filter((p) =>
    p.startsWith("tests/") && !isTest(p) && !p.startsWith("tests/oracle/") &&
    !p.startsWith("tests/conformance/") && !/_test_util\.ts$/.test(p)
  );
  assert.deepEqual(testsHelpers, [], "helpers in tests/ are named <topic>_test_util.ts too");
});

Deno.test("layout: tests/ holds exactly the cross-cutting suites tests/README.md lists", async () => {
  const readme = await Deno.readTextFile(new URL("tests/README.md", ROOT));
  const listed = [...readme.matchAll(/^\| `tests\/([a-z_-]+)`/gm)].map((m) => m[1]).sort();
  const present: string[] = [];
  for await (const e of Deno.readDir(new URL("tests/", ROOT))) {
    if (e.isDirectory) present.push(e.name);
  }
  assert.deepEqual(present.sort(), listed);
});
