/**
 * Folder-level import cycles in `core/`: `deno run --allow-read tools/check_cycles.ts`
 * (part of `deno task check`) reads every module under `core/`, builds the graph whose
 * nodes are the folders `core/<folder>` (a file directly in `core/`, such as
 * `core/errors.ts`, is a node of its own) and whose edges are the relative imports between
 * them, and exits 1 listing each cycle with the files that make its edges.
 *
 * Counted: static `import`/`export … from`, `import type`, side-effect `import "…"`
 * and dynamic `import("…")` of a string literal. Not counted: test modules (`*_test.ts`,
 * `test_util.ts`, `*_test_util.ts`), which may reach across layers, and imports inside
 * comments (JSDoc examples).
 *
 * It also checks the intended order (docs/layering.md): errors and util ← tensor ← io ←
 * formats ← tokenizer, backend ← moe ← store ← model ← generate ← plugin. An import from
 * a folder to one that is not below it in {@link LAYERS} is reported even before it
 * closes a cycle; a folder missing from the table is held to the cycle rule only.
 *
 * @module
 */

/** Rank of each `core/` folder: a folder may import only folders of a lower rank. */
export const LAYERS: Readonly<Record<string, number>> = {
  "core/errors": 0,
  "core/util": 0,
  "core/tensor": 1,
  "core/io": 2,
  "core/formats": 3,
  "core/tokenizer": 4,
  "core/backend": 4,
  "core/moe": 5,
  "core/store": 6,
  "core/model": 7,
  "core/generate": 8,
  "core/plugin": 9,
};

/** One import between two folders, with the file that makes it. */
export interface FolderEdge {
  /** The importing folder, e.g. `core/store`. */
  from: string;
  /** The imported folder. */
  to: string;
  /** The importing file, relative to the repository root. */
  file: string;
  /** The imported file, relative to the repository root. */
  target: string;
}

/** A cycle of folders (first folder not repeated at the end) and an edge for each step. */
export interface FolderCycle {
  folders: string[];
  edges: FolderEdge[];
}

/** Whether a path under `core/` is a test module, left out of the graph. */
export function isTestModule(path: string): boolean {
  return /(_test|_test_util|(^|\/)test_util)\.ts$/.test(path) || path.includes("/testdata/");
}

/**
 * The source with comments blanked out, and the contents of string, template and regular
 * expression literals blanked too, except a string that is a module specifier (after
 * `from`, `import` or `import(`); so import-like text in a comment or a string is not
 * taken for an import.
 */
export function stripComments(src: string): string {
  let out = "";
  let i = 0;
  const n = src.length;
  const blank = (text: string) => text.replace(/[^\n]/g, " ");
  while (i < n) {
    const c = src[i];
    const d = src[i + 1];
    if (c === "/" && d === "/") {
      while (i < n && src[i] !== "\n") i++;
    } else if (c === "/" && d === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? n : end + 2;
      out += blank(src.slice(i, stop));
      i = stop;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < n && src[j] !== c && (c === "`" || src[j] !== "\n")) j += src[j] === "\\" ? 2 : 1;
      const body = src.slice(i + 1, j);
      const specifier = c !== "`" && /(\bfrom|\bimport|\bimport\s*\()\s*$/.test(out.slice(-32));
      out += c + (specifier ? body : blank(body)) + (j < n ? c : "");
      i = j + 1;
    } else if (
      c === "/" && /(^|[(,=:[!&|?{};+\-*%<>~^]|\breturn|\btypeof)\s*$/.test(out.slice(-32))
    ) {
      // a regular-expression literal (a `/` where an operand starts)
      let j = i + 1;
      let inClass = false;
      while (j < n && src[j] !== "\n" && (inClass || src[j] !== "/")) {
        if (src[j] === "\\") j++;
        else if (src[j] === "[") inClass = true;
        else if (src[j] === "]") inClass = false;
        j++;
      }
      out += "/" + blank(src.slice(i + 1, j)) + "/";
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT_RES = [
  /\b(?:import|export)\s+(?:type\s+)?[\w*${},\s]*?\bfrom\s*["']([^"']+)["']/g,
  /\bimport\s*["']([^"']+)["']/g,
  /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
];

/** The relative module specifiers a module imports (static, type-only and literal dynamic). */
export function importSpecifiers(src: string): string[] {
  const code = stripComments(src);
  const out = new Set<string>();
  for (const re of IMPORT_RES) {
    for (const m of code.matchAll(re)) if (m[1].startsWith(".")) out.add(m[1]);
  }
  return [...out];
}

/** The folder node of a path under `core/` (`core/store/x.ts` → `core/store`), else null. */
export function folderOf(path: string): string | null {
  const parts = path.split("/");
  if (parts[0] !== "core" || parts.length < 2) return null;
  return parts.length === 2 ? `core/${parts[1].replace(/\.ts$/, "")}` : `core/${parts[1]}`;
}

/** Joins a relative specifier onto the importing file's folder (POSIX, no `..` past the root). */
export function resolvePath(file: string, spec: string): string {
  const parts = file.split("/").slice(0, -1);
  for (const seg of spec.split("/")) {
    if (seg === "." || seg === "") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return parts.join("/");
}

/** Folder-level edges of a set of modules (`path` relative to the root → source text). */
export function folderEdges(modules: ReadonlyMap<string, string>): FolderEdge[] {
  const edges: FolderEdge[] = [];
  for (const [file, src] of modules) {
    const from = folderOf(file);
    if (from === null || isTestModule(file)) continue;
    for (const spec of importSpecifiers(src)) {
      const target = resolvePath(file, spec);
      const to = folderOf(target);
      if (to !== null && to !== from) edges.push({ from, to, file, target });
    }
  }
  return edges;
}

/** Tarjan's strongly connected components of two or more folders, each sorted. */
function components(adj: Map<string, Map<string, FolderEdge>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const comps: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of [...adj.get(v)!.keys()].sort()) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) comps.push(comp.sort());
    }
  };
  for (const v of [...adj.keys()].sort()) if (!index.has(v)) visit(v);
  return comps.sort((a, b) => a[0].localeCompare(b[0]));
}

/** A shortest cycle through `start` that stays inside `comp` (breadth-first). */
function shortestCycle(
  adj: Map<string, Map<string, FolderEdge>>,
  comp: ReadonlySet<string>,
  start: string,
): string[] {
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of [...adj.get(v)!.keys()].sort()) {
      if (!comp.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(prev.get(path[0])!);
        return path;
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  throw new Error(`no cycle through ${start}`); // unreachable: start is in a component
}

/**
 * The cycles of the folder graph: for each strongly connected component of two or more
 * folders (Tarjan), a shortest cycle through each of its folders (duplicates dropped),
 * with one file-level edge for each step. Empty when the folders depend one way.
 */
export function findCycles(edges: readonly FolderEdge[]): FolderCycle[] {
  const adj = new Map<string, Map<string, FolderEdge>>();
  for (const e of edges) {
    if (!adj.has(e.from)) adj.set(e.from, new Map());
    if (!adj.has(e.to)) adj.set(e.to, new Map());
    const out = adj.get(e.from)!;
    if (!out.has(e.to)) out.set(e.to, e);
  }
  const out: FolderCycle[] = [];
  const seen = new Set<string>();
  for (const comp of components(adj)) {
    const inComp = new Set(comp);
    for (const start of comp) {
      const folders = shortestCycle(adj, inComp, start);
      const min = folders.indexOf([...folders].sort()[0]);
      const key = [...folders.slice(min), ...folders.slice(0, min)].join(" ");
      if (seen.has(key)) continue;
      seen.add(key);
      const cycleEdges = folders.map((f, i) => adj.get(f)!.get(folders[(i + 1) % folders.length])!);
      out.push({ folders, edges: cycleEdges });
    }
  }
  return out;
}

/**
 * The edges that go against `layers` (to a folder of the same or a higher rank), one per
 * folder pair; folders missing from `layers` are skipped.
 */
export function orderViolations(
  edges: readonly FolderEdge[],
  layers: Readonly<Record<string, number>> = LAYERS,
): FolderEdge[] {
  const seen = new Set<string>();
  const out: FolderEdge[] = [];
  for (const e of edges) {
    const from = layers[e.from], to = layers[e.to];
    if (from === undefined || to === undefined || to < from) continue;
    const key = `${e.from} ${e.to}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(e);
  }
  return out;
}

/** Human-readable report of cycles, one block per cycle. */
export function formatCycles(cycles: readonly FolderCycle[]): string {
  return cycles.map((c) =>
    `cycle: ${[...c.folders, c.folders[0]].join(" → ")}\n` +
    c.edges.map((e) => `  ${e.from} → ${e.to}: ${e.file} imports ${e.target}`).join("\n")
  ).join("\n");
}

/** Reads every `.ts` module under `dir` (relative paths from `root`). */
export async function readModules(root: URL, dir = "core"): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for await (const e of Deno.readDir(new URL(rel, root))) {
      const path = `${rel}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.isFile && e.name.endsWith(".ts")) {
        out.set(path, await Deno.readTextFile(new URL(path, root)));
      }
    }
  };
  await walk(dir);
  return out;
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url);
  const edges = folderEdges(await readModules(root));
  const cycles = findCycles(edges);
  const wrong = orderViolations(edges);
  if (cycles.length > 0) {
    console.error(`core/ has ${cycles.length} folder-level import cycle(s):`);
    console.error(formatCycles(cycles));
  }
  if (wrong.length > 0) {
    console.error(`core/ has ${wrong.length} import(s) against the layer order (LAYERS):`);
    for (const e of wrong) console.error(`  ${e.from} → ${e.to}: ${e.file} imports ${e.target}`);
  }
  if (cycles.length > 0 || wrong.length > 0) Deno.exit(1);
  console.log("core/: no folder-level import cycle, every import goes down the layer order");
}
