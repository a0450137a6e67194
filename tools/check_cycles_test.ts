import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import {
  findCycles,
  type FolderEdge,
  folderEdges,
  folderOf,
  importSpecifiers,
  LAYERS,
  orderViolations,
  readModules,
  resolvePath,
} from "./check_cycles.ts";

const mods = (entries: Record<string, string>) => new Map(Object.entries(entries));
const edge = (from: string, to: string): FolderEdge => ({
  from,
  to,
  file: `${from}/f.ts`,
  target: `${to}/g.ts`,
});

Deno.test("importSpecifiers: every import form, relative only, comments ignored", () => {
  const src = `
import { a } from "./a.ts";
import type { B } from "../b/b.ts";
import * as c from '../c/c.ts';
import d, { e } from "./d.ts";
import {
  f,
  type G,
} from "../f/f.ts";
export { h } from "./h.ts";
export type * from "../i/i.ts";
import "./side.ts";
const j = await import("../j/j.ts");
import { k } from "npm:hono@4";
// import { no } from "../comment/line.ts";
/** @example
 * import { no } from "../comment/block.ts";
 */
const s = "import { no } from '../string/s.ts'";
const re = /["'](import "..\/regex\/r.ts")/g, half = 4 / 2;
import { after } from "./after.ts";
`;
  assert.deepEqual(importSpecifiers(src).sort(), [
    "../b/b.ts",
    "../c/c.ts",
    "../f/f.ts",
    "../i/i.ts",
    "../j/j.ts",
    "./a.ts",
    "./after.ts",
    "./d.ts",
    "./h.ts",
    "./side.ts",
  ]);
});

Deno.test("folderOf and resolvePath", () => {
  assert.equal(folderOf("core/store/x.ts"), "core/store");
  assert.equal(folderOf("core/model/arch/llama.ts"), "core/model");
  assert.equal(folderOf("core/errors.ts"), "core/errors");
  assert.equal(folderOf("serve/app.ts"), null);
  assert.equal(
    resolvePath("core/model/arch/llama.ts", "../../moe/expert.ts"),
    "core/moe/expert.ts",
  );
  assert.equal(resolvePath("core/io/a.ts", "./b.ts"), "core/io/b.ts");
});

Deno.test("folderEdges: cross-folder imports only, test modules left out", () => {
  const edges = folderEdges(mods({
    "core/a/x.ts": `import { y } from "./y.ts"; import { z } from "../b/z.ts";`,
    "core/a/x_test.ts": `import { c } from "../c/c.ts";`,
    "core/a/test_util.ts": `import { c } from "../c/c.ts";`,
    "core/b/z.ts": `import { e } from "../errors.ts"; import { s } from "../../serve/s.ts";`,
  }));
  assert.deepEqual(edges.map((e) => `${e.from}>${e.to}`).sort(), [
    "core/a>core/b",
    "core/b>core/errors",
  ]);
});

Deno.test("findCycles: two-folder, three-folder and separate cycles, each with its edges", () => {
  assert.deepEqual(findCycles([edge("core/a", "core/b"), edge("core/b", "core/c")]), []);
  const two = findCycles([edge("core/a", "core/b"), edge("core/b", "core/a")]);
  assert.deepEqual(two.map((c) => c.folders), [["core/a", "core/b"]]);
  assert.deepEqual(two[0].edges.map((e) => e.file), ["core/a/f.ts", "core/b/f.ts"]);
  const many = findCycles([
    edge("core/a", "core/b"),
    edge("core/b", "core/c"),
    edge("core/c", "core/a"),
    edge("core/c", "core/d"),
    edge("core/x", "core/y"),
    edge("core/y", "core/x"),
  ]);
  assert.deepEqual(many.map((c) => c.folders), [
    ["core/a", "core/b", "core/c"],
    ["core/x", "core/y"],
  ]);
});

Deno.test("findCycles: finds a cycle exactly when the graph has one (random graphs)", () => {
  const nodes = ["a", "b", "c", "d", "e"].map((n) => `core/${n}`);
  const pair = fc.tuple(fc.constantFrom(...nodes), fc.constantFrom(...nodes))
    .filter(([a, b]) => a !== b);
  fc.assert(fc.property(fc.array(pair, { maxLength: 12 }), (pairs) => {
    const edges = pairs.map(([a, b]) => edge(a, b));
    // reference: a graph is acyclic iff repeatedly removing sinks empties it
    const left = new Set(nodes);
    let removed = true;
    while (removed) {
      removed = false;
      for (const n of [...left]) {
        if (!edges.some((e) => e.from === n && left.has(e.to))) {
          left.delete(n);
          removed = true;
        }
      }
    }
    const cycles = findCycles(edges);
    assert.equal(cycles.length > 0, left.size > 0);
    for (const c of cycles) {
      // every reported cycle is a real closed walk over existing edges
      c.folders.forEach((f, i) => {
        const to = c.folders[(i + 1) % c.folders.length];
        assert.ok(edges.some((e) => e.from === f && e.to === to), `${f} → ${to}`);
      });
    }
  }));
});

Deno.test("orderViolations: imports up or sideways in LAYERS are reported, unknown folders skipped", () => {
  const wrong = orderViolations([
    edge("core/model", "core/store"),
    edge("core/store", "core/model"),
    edge("core/formats", "core/store"),
    edge("core/formats", "core/store"),
    edge("core/new", "core/model"),
  ]);
  assert.deepEqual(wrong.map((e) => `${e.from}>${e.to}`), [
    "core/store>core/model",
    "core/formats>core/store",
  ]);
  assert.ok(
    LAYERS["core/tensor"] < LAYERS["core/io"] && LAYERS["core/model"] < LAYERS["core/generate"],
  );
});

Deno.test("the repository's core/ has no cycle and keeps the order; a planted cycle is found", async () => {
  const modules = await readModules(new URL("../", import.meta.url));
  assert.ok(modules.size > 50, "core/ was read");
  const edges = folderEdges(modules);
  assert.deepEqual(findCycles(edges), []);
  assert.deepEqual(orderViolations(edges), []);
  // plant tensor → model (model already reaches tensor): a cycle and an order violation
  modules.set("core/tensor/planted.ts", `import type { Model } from "../model/model.ts";\n`);
  const planted = folderEdges(modules);
  const cycles = findCycles(planted);
  assert.ok(
    cycles.some((c) => c.folders.includes("core/tensor") && c.folders.includes("core/model")),
  );
  assert.ok(orderViolations(planted).some((e) => e.file === "core/tensor/planted.ts"));
});
