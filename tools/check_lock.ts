/**
 * The two lockfiles: `deno run --allow-read tools/check_lock.ts` (part of `deno task check`).
 *
 * `deno task` (and `deno run`) installs every npm package of the root `deno.lock` before it runs
 * anything (denoland/deno#28999), so a test-only package pinned there is downloaded by a new
 * user's first `deno task start`. The root `deno.lock` therefore pins only the packages the
 * published modules import (and the `deno.json` import map names); `tests/deno.lock` pins those
 * at the same versions plus the test-only ones (`fast-check`, the official `openai` client,
 * `playwright-core`, `@huggingface/jinja`), and the test tasks run with
 * `--lock=tests/deno.lock`.
 *
 * A plain `deno test -A some_test.ts` (or an editor's type check of a test) uses the root lock
 * and adds the test's packages to it. This check then fails and names them;
 * `deno run --allow-read --allow-write tools/check_lock.ts --fix` rewrites `deno.lock` from
 * `tests/deno.lock` (the published modules' packages and their dependencies, same versions and
 * integrity hashes).
 *
 * Published modules: every `.ts`/`.js`/`.mjs` outside `tests/`, `bench/`, `tools/`,
 * `examples/`, `node_modules/`, `testdata/` and `wasm/pkg/`, other than `*_test.ts` and
 * `*_test_util.ts` (the `publish.exclude` of `deno.json`).
 *
 * @module
 */

import { stripComments } from "./check_cycles.ts";

/** The parts of a Deno lockfile (version 5) this check reads and writes. */
export interface Lockfile {
  version: string;
  /** Package requirement (`npm:hono@4`) → resolved version (`4.13.19`). */
  specifiers?: Record<string, string>;
  /** `name@version` → integrity and dependencies (`name` or `name@version`). */
  npm?: Record<string, { dependencies?: string[]; [k: string]: unknown }>;
  workspace?: { dependencies?: string[]; [k: string]: unknown };
  [k: string]: unknown;
}

const SKIP_DIRS = new Set(["tests", "bench", "tools", "examples", "node_modules", "testdata"]);
const NPM_RES = [
  /\b(?:import|export)\s+(?:type\s+)?[\w*${},\s]*?\bfrom\s*["'](npm:[^"']+)["']/g,
  /\bimport\s*["'](npm:[^"']+)["']/g,
  /\bimport\s*\(\s*["'](npm:[^"']+)["']\s*\)/g,
];

/**
 * The package requirement of an `npm:` specifier, without its subpath:
 * `npm:hono@4/route` → `npm:hono@4`, `npm:@scope/p@1/x` → `npm:@scope/p@1`.
 */
export function packageReq(specifier: string): string {
  const rest = specifier.slice("npm:".length);
  const parts = rest.split("/");
  const head = rest.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
  return `npm:${head}`;
}

/** The `npm:` package requirements a module's source imports (comments and strings ignored). */
export function npmImports(src: string): string[] {
  const code = stripComments(src);
  const out = new Set<string>();
  for (const re of NPM_RES) for (const m of code.matchAll(re)) out.add(packageReq(m[1]));
  return [...out];
}

/** Whether a repository path is a published module (see the module comment). */
export function isPublished(path: string): boolean {
  const parts = path.split("/");
  if (parts.slice(0, -1).some((p) => SKIP_DIRS.has(p) || p.startsWith("."))) return false;
  if (path.startsWith("wasm/pkg/")) return false;
  const name = parts[parts.length - 1];
  return /\.(ts|js|mjs)$/.test(name) && !/(_test|test_util)\.ts$/.test(name);
}

/** `name@version` of an npm package key or a dependency entry (`name` → the one version locked). */
function packageKey(lock: Lockfile, dep: string): string | undefined {
  const npm = lock.npm ?? {};
  if (dep in npm) return dep;
  const found = Object.keys(npm).filter((k) => k.slice(0, k.lastIndexOf("@")) === dep);
  return found.length === 1 ? found[0] : undefined;
}

/** The npm packages (`name@version`) a set of requirements resolves to, dependencies included. */
export function closure(lock: Lockfile, reqs: Iterable<string>): Set<string> {
  const keep = new Set<string>();
  const todo: string[] = [];
  for (const req of reqs) {
    const version = lock.specifiers?.[req];
    if (version === undefined) continue;
    todo.push(`${req.slice("npm:".length, req.lastIndexOf("@"))}@${version}`);
  }
  while (todo.length) {
    const key = todo.pop()!;
    if (keep.has(key)) continue;
    keep.add(key);
    for (const dep of lock.npm?.[key]?.dependencies ?? []) {
      const k = packageKey(lock, dep);
      if (k !== undefined) todo.push(k);
    }
  }
  return keep;
}

/**
 * The root lockfile for a set of runtime requirements: `full` (the tests' lock) cut to those
 * requirements and the packages they need; other fields (version, workspace) are kept.
 */
export function runtimeLock(full: Lockfile, reqs: Iterable<string>): Lockfile {
  const wanted = new Set(reqs);
  const keep = closure(full, wanted);
  const specifiers = Object.fromEntries(
    Object.entries(full.specifiers ?? {}).filter(([k]) => wanted.has(k)),
  );
  const npm = Object.fromEntries(Object.entries(full.npm ?? {}).filter(([k]) => keep.has(k)));
  return { ...full, specifiers, npm };
}

/**
 * What is wrong with the pair of lockfiles for the runtime requirements `reqs` (empty when
 * nothing): a root entry the published modules do not import, a requirement neither lock has,
 * and any root entry the tests' lock resolves differently.
 */
export function lockProblems(root: Lockfile, tests: Lockfile, reqs: Iterable<string>): string[] {
  const wanted = new Set(reqs);
  const problems: string[] = [];
  for (const k of Object.keys(root.specifiers ?? {})) {
    if (!wanted.has(k)) {
      problems.push(
        `deno.lock pins ${k}, which no published module imports (a test-only package: it belongs ` +
          `in tests/deno.lock, or a plain 'deno test' added it)`,
      );
    }
  }
  const keep = closure(root, wanted);
  for (const k of Object.keys(root.npm ?? {})) {
    if (!keep.has(k)) problems.push(`deno.lock holds npm package ${k}, which nothing needs`);
  }
  for (const k of wanted) {
    if (!(k in (tests.specifiers ?? {}))) {
      problems.push(`tests/deno.lock lacks ${k} (run 'deno task test:unit' once to add it)`);
    } else if (k in (root.specifiers ?? {}) && root.specifiers![k] !== tests.specifiers![k]) {
      problems.push(
        `${k} is ${root.specifiers![k]} in deno.lock but ${tests.specifiers![k]} in ` +
          `tests/deno.lock: the tests must run the versions users get`,
      );
    }
  }
  for (const k of keep) {
    const a = root.npm?.[k];
    const b = tests.npm?.[k];
    if (a && JSON.stringify(a) !== JSON.stringify(b)) {
      problems.push(`npm package ${k} differs between deno.lock and tests/deno.lock`);
    }
  }
  return problems;
}

/** The runtime requirements of the repository at `root`: published modules and the import map. */
export async function runtimeReqs(root: URL): Promise<Set<string>> {
  const reqs = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(new URL(dir, root))) {
      const path = `${dir}${e.name}`;
      if (e.isDirectory) {
        if (!SKIP_DIRS.has(e.name) && !e.name.startsWith(".") && path !== "wasm/pkg") {
          await walk(`${path}/`);
        }
      } else if (isPublished(path)) {
        for (const r of npmImports(await Deno.readTextFile(new URL(path, root)))) reqs.add(r);
      }
    }
  };
  await walk("");
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  for (const target of Object.values(config.imports ?? {}) as string[]) {
    if (target.startsWith("npm:")) reqs.add(packageReq(target));
  }
  return reqs;
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url);
  const read = async (p: string): Promise<Lockfile> =>
    JSON.parse(await Deno.readTextFile(new URL(p, root)));
  const reqs = await runtimeReqs(root);
  const tests = await read("tests/deno.lock");
  if (Deno.args.includes("--fix")) {
    const fixed = runtimeLock(tests, reqs);
    await Deno.writeTextFile(new URL("deno.lock", root), JSON.stringify(fixed, null, 2) + "\n");
    console.log(`check_lock: wrote deno.lock from tests/deno.lock (${[...reqs].join(", ")})`);
  }
  const problems = lockProblems(await read("deno.lock"), tests, reqs);
  if (problems.length) {
    console.error(`check_lock: ${problems.length} problem(s):`);
    for (const p of problems) console.error(`  ${p}`);
    console.error(
      "Fix: deno run --allow-read --allow-write tools/check_lock.ts --fix (or git checkout deno.lock)",
    );
    Deno.exit(1);
  }
  console.log(`check_lock: deno.lock pins the ${reqs.size} runtime packages only`);
}
