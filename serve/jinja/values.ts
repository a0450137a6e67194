/**
 * The value model of the template sandbox. Templates see plain JSON data
 * (the request's messages), namespaces, loop objects and built-in
 * functions; attribute and index access reach only own data properties, so
 * a template can never touch prototypes or host objects.
 *
 * @module
 */

import { allocArray, allocString, step as spend } from "./budget.ts";
import { ChatTemplateError } from "./lexer.ts";

/** A built-in callable. */
export class Fn {
  /** @param call the implementation, given positional and keyword arguments */
  constructor(readonly call: (args: unknown[], kwargs: Record<string, unknown>) => unknown) {}
}

/** Jinja's `namespace(...)`: the one mutable object a template may change. */
export class Namespace {
  /** Attributes. */
  readonly vals: Map<string, unknown> = new Map();
}

/** A template-level failure (bad operand, unknown filter…). */
export function fail(msg: string): never {
  throw new ChatTemplateError("template_render", `Cannot render chat template: ${msg}`);
}

/** A plain object from JSON or a dict literal (not an array, not one of ours). */
export function isDict(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

/** Python truthiness. */
export function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isDict(v)) return Object.keys(v).length > 0;
  return true;
}

/** Python `repr` of a value (strings quoted). */
export function repr(v: unknown): string {
  if (typeof v === "string") {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    const body = v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
    return q + (q === "'" ? body.replace(/'/g, "\\'") : body) + q;
  }
  return str(v);
}

/** Python `str` of a value, as `{{ }}` prints it. */
export function str(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === undefined) return "";
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") {
    return Number.isFinite(v) ? String(v) : v > 0 ? "inf" : v < 0 ? "-inf" : "nan";
  }
  if (Array.isArray(v)) {
    allocString(textSize(v, 0, 0));
    return "[" + v.map(repr).join(", ") + "]";
  }
  if (isDict(v)) {
    allocString(textSize(v, 0, 0));
    return "{" + Object.entries(v).map(([k, x]) => `${repr(k)}: ${repr(x)}`).join(", ") + "}";
  }
  if (v instanceof Namespace) return "<Namespace>";
  return "<function>";
}

/**
 * An upper bound on the characters of `str`/`repr`/`tojson` text of `v`
 * (escapes counted as doubling, `indent` spaces per nesting level and
 * node), computed before the text is built so the budget is charged first.
 * Each node visited costs a step.
 */
export function textSize(v: unknown, indent: number, depth: number): number {
  spend();
  if (typeof v === "string") return 2 * v.length + 2;
  if (depth > 64) fail("value nested too deep");
  const nl = indent > 0 ? 1 + indent * (depth + 1) : 0;
  if (Array.isArray(v)) {
    let n = 2;
    for (const x of v) n += nl + 2 + textSize(x, indent, depth + 1);
    return n + nl;
  }
  if (isDict(v)) {
    let n = 2;
    for (const k in v) n += nl + 4 + 2 * k.length + 2 + textSize(v[k], indent, depth + 1);
    return n + nl;
  }
  if (v instanceof Namespace) {
    let n = 2;
    for (const [k, x] of v.vals) n += nl + 4 + 2 * k.length + 2 + textSize(x, indent, depth + 1);
    return n + nl;
  }
  return 24;
}

/** Python `==`. */
export function pyEq(a: unknown, b: unknown): boolean {
  spend();
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => pyEq(x, b[i]));
  }
  if (isDict(a) && isDict(b)) {
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && pyEq(a[k], b[k]));
  }
  return a === b;
}

/** Python `json.dumps` with `ensure_ascii=False` (Hugging Face's `tojson`). */
export function pyJson(v: unknown, indent: number | null = null, depth = 0): string {
  const nl = indent === null ? "" : "\n" + " ".repeat(indent * (depth + 1));
  const close = indent === null ? "" : "\n" + " ".repeat(indent * depth);
  const sep = indent === null ? ", " : ",";
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") {
    return Number.isFinite(v) ? String(v) : v > 0 ? "Infinity" : v < 0 ? "-Infinity" : "NaN";
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (depth > 64) fail("tojson: value nested too deep");
  // charge the whole text (indentation included) before building it
  if (depth === 0) allocString(textSize(v, indent ?? 0, 0));
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    return "[" + v.map((x) => nl + pyJson(x, indent, depth + 1)).join(sep) + close + "]";
  }
  if (isDict(v)) {
    const es = Object.entries(v);
    if (es.length === 0) return "{}";
    return "{" + es.map(([k, x]) =>
      nl + JSON.stringify(k) + ": " + pyJson(x, indent, depth + 1)
    ).join(sep) + close + "}";
  }
  if (v instanceof Namespace) return pyJson(Object.fromEntries(v.vals), indent, depth);
  return fail("tojson: value is not serializable");
}

/** Own attribute `name` of `obj`, or undefined (Jinja's getattr falls back to getitem). */
export function getAttr(obj: unknown, name: string): unknown {
  if (obj instanceof Namespace) return obj.vals.get(name);
  if (isDict(obj)) return Object.hasOwn(obj, name) ? obj[name] : undefined;
  return undefined;
}

/** `obj[key]` with Python's negative indices; undefined when absent. */
export function getItem(obj: unknown, key: unknown): unknown {
  if (typeof key === "number" && (Array.isArray(obj) || typeof obj === "string")) {
    if (!Number.isInteger(key)) fail("list index must be an integer");
    const i = key < 0 ? obj.length + key : key;
    return obj[i];
  }
  if (typeof key === "string") return getAttr(obj, key);
  return undefined;
}

/** Python slicing `obj[start:stop:step]` of a list or string. */
export function slice(obj: unknown, start: unknown, stop: unknown, step: unknown): unknown {
  if (!Array.isArray(obj) && typeof obj !== "string") {
    return fail("only lists and strings can be sliced");
  }
  const n = obj.length;
  const st = step === null || step === undefined ? 1 : Number(step);
  if (!Number.isInteger(st) || st === 0) fail("slice step must be a non-zero integer");
  const norm = (v: unknown, def: number): number => {
    if (v === null || v === undefined) return def;
    let x = Number(v);
    if (!Number.isInteger(x)) fail("slice indices must be integers");
    if (x < 0) x += n;
    return st > 0 ? Math.min(Math.max(x, 0), n) : Math.min(Math.max(x, -1), n - 1);
  };
  const a = norm(start, st > 0 ? 0 : n - 1), b = norm(stop, st > 0 ? n : -1);
  const count = Math.max(0, Math.ceil((b - a) / st));
  spend(count);
  allocArray(count);
  const items: unknown[] = [];
  for (let i = a; st > 0 ? i < b : i > b; i += st) items.push(obj[i]);
  return typeof obj === "string" ? items.join("") : items;
}

/** Items a `for` loop visits: lists, string characters, dict keys; nothing for undefined. */
export function iterate(v: unknown): unknown[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) {
    spend(v.length);
    return v;
  }
  if (typeof v === "string") {
    spend(v.length);
    allocArray(v.length);
    return [...v];
  }
  if (isDict(v)) {
    const keys = Object.keys(v);
    spend(keys.length);
    allocArray(keys.length);
    return keys;
  }
  if (v instanceof Namespace) return [...v.vals.keys()];
  return fail(`${repr(v)} is not iterable`);
}
