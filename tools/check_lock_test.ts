import assert from "node:assert/strict";
import {
  closure,
  isPublished,
  type Lockfile,
  lockProblems,
  npmImports,
  packageReq,
  runtimeLock,
  runtimeReqs,
} from "./check_lock.ts";

const FULL: Lockfile = {
  version: "5",
  specifiers: {
    "npm:ajv@8": "8.20.0",
    "npm:fast-check@4": "4.10.2",
    "npm:hono@4": "4.13.19",
  },
  npm: {
    "ajv@8.20.0": { integrity: "sha512-a", dependencies: ["fast-uri", "json-schema-traverse"] },
    "fast-check@4.10.2": { integrity: "sha512-f", dependencies: ["pure-rand"] },
    "fast-uri@3.1.9": { integrity: "sha512-u" },
    "hono@4.13.19": { integrity: "sha512-h" },
    "json-schema-traverse@1.0.0": { integrity: "sha512-j" },
    "pure-rand@8.4.2": { integrity: "sha512-p" },
  },
  workspace: { dependencies: ["npm:ajv@8", "npm:hono@4"] },
};

Deno.test("packageReq: the subpath goes, scoped names keep their scope", () => {
  assert.equal(packageReq("npm:hono@4/route"), "npm:hono@4");
  assert.equal(packageReq("npm:hono@4"), "npm:hono@4");
  assert.equal(packageReq("npm:@huggingface/jinja@0.5"), "npm:@huggingface/jinja@0.5");
  assert.equal(packageReq("npm:@scope/p@1/sub/x.js"), "npm:@scope/p@1");
  assert.equal(packageReq("npm:commander@^14.0.3"), "npm:commander@^14.0.3");
});

Deno.test("npmImports: every import form; comments and plain strings are not imports", () => {
  const src = `
import { Hono } from "npm:hono@4";
import type { X } from 'npm:hono@4/http-exception';
export { a } from "npm:ajv@8";
import "npm:side@1";
const m = await import("npm:@s/p@2/sub");
// import fc from "npm:fast-check@4";
/** import x from "npm:openai@6" */
const s = "npm:left-pad";
const t = { use: "npm:x@1.0.0" };
`;
  assert.deepEqual(npmImports(src).sort(), [
    "npm:@s/p@2",
    "npm:ajv@8",
    "npm:hono@4",
    "npm:side@1",
  ]);
});

Deno.test("isPublished: tests, test helpers and tool folders are not published", () => {
  for (const p of ["mod.ts", "serve/app.ts", "core/store/http_source.ts", "plugins/lora/mod.ts"]) {
    assert.ok(isPublished(p), p);
  }
  for (
    const p of [
      "serve/app_test.ts",
      "serve/serve_test_util.ts",
      "tests/serve/main_test.ts",
      "bench/run.ts",
      "tools/check_lock.ts",
      "examples/expert-kind/mod.ts",
      "core/plugin/testdata/probe/manifest/entry_escape/evil.ts",
      "wasm/pkg/kernels.js",
      "README.md",
    ]
  ) {
    assert.ok(!isPublished(p), p);
  }
});

Deno.test("closure: a requirement brings its dependencies, named with or without a version", () => {
  assert.deepEqual(
    [...closure(FULL, ["npm:ajv@8"])].sort(),
    ["ajv@8.20.0", "fast-uri@3.1.9", "json-schema-traverse@1.0.0"],
  );
  assert.deepEqual([...closure(FULL, ["npm:missing@1"])], []);
});

Deno.test("runtimeLock: cut to the runtime packages, versions and hashes unchanged, no problems", () => {
  const root = runtimeLock(FULL, ["npm:ajv@8", "npm:hono@4"]);
  assert.deepEqual(Object.keys(root.specifiers!), ["npm:ajv@8", "npm:hono@4"]);
  assert.deepEqual(Object.keys(root.npm!), [
    "ajv@8.20.0",
    "fast-uri@3.1.9",
    "hono@4.13.19",
    "json-schema-traverse@1.0.0",
  ]);
  assert.deepEqual(root.npm!["ajv@8.20.0"], FULL.npm!["ajv@8.20.0"]);
  assert.deepEqual(root.workspace, FULL.workspace);
  assert.deepEqual(lockProblems(root, FULL, ["npm:ajv@8", "npm:hono@4"]), []);
});

Deno.test("lockProblems: a test package in the root lock, a missing pin, a version skew", () => {
  const reqs = ["npm:ajv@8", "npm:hono@4"];
  // the whole tests lock used as the root lock: fast-check and pure-rand are extra
  const polluted = lockProblems(FULL, FULL, reqs);
  assert.equal(polluted.length, 3, polluted.join("\n"));
  assert.ok(polluted.some((p) => p.includes("npm:fast-check@4") && p.includes("tests/deno.lock")));
  assert.ok(polluted.some((p) => p.includes("pure-rand@8.4.2")));
  // the tests' lock misses a runtime package
  const root = runtimeLock(FULL, reqs);
  const noHono = { ...FULL, specifiers: { "npm:ajv@8": "8.20.0" } };
  assert.deepEqual(lockProblems(root, noHono, reqs).length, 1);
  // the two locks resolve a package differently
  const skew = { ...FULL, specifiers: { ...FULL.specifiers, "npm:hono@4": "4.0.0" } };
  assert.ok(lockProblems(root, skew, reqs).some((p) => p.includes("4.0.0")));
  const hash = { ...FULL, npm: { ...FULL.npm, "hono@4.13.19": { integrity: "sha512-other" } } };
  assert.ok(lockProblems(root, hash, reqs).some((p) => p.includes("differs")));
});

Deno.test("repository: tests/deno.lock pins every runtime package; the runtime lock it gives is clean", async () => {
  const root = new URL("../", import.meta.url);
  const reqs = await runtimeReqs(root);
  for (const r of ["npm:hono@4", "npm:ajv@8", "npm:commander@^14.0.3"]) assert.ok(reqs.has(r), r);
  for (const r of ["npm:fast-check@4", "npm:openai@6", "npm:playwright-core@1"]) {
    assert.ok(!reqs.has(r), `${r} is test-only`);
  }
  const tests: Lockfile = JSON.parse(
    await Deno.readTextFile(new URL("tests/deno.lock", root)),
  );
  assert.deepEqual(lockProblems(runtimeLock(tests, reqs), tests, reqs), []);
});
