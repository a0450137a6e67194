/**
 * Filters, tests, methods and globals of the template sandbox: the ones
 * chat templates use (Hugging Face's `tojson`, `raise_exception`,
 * `strftime_now`, string methods, `selectattr`…), nothing that reaches the
 * host.
 *
 * @module
 */

import { allocArray, allocString, allocValue, step } from "./budget.ts";
import { ChatTemplateError } from "./lexer.ts";
import {
  fail,
  Fn,
  getAttr,
  isDict,
  iterate,
  Namespace,
  pyEq,
  pyJson,
  repr,
  str,
  truthy,
} from "./values.ts";

type Args = unknown[];
type Kw = Record<string, unknown>;

const num = (v: unknown, what: string): number =>
  typeof v === "number" ? v : fail(`${what} needs a number`);
const text = (v: unknown, what: string): string =>
  typeof v === "string" ? v : fail(`${what} needs a string`);

function strip(s: string, chars: unknown, left: boolean, right: boolean): string {
  if (chars === undefined || chars === null) {
    if (left) s = s.replace(/^\s+/, "");
    if (right) s = s.replace(/\s+$/, "");
    return s;
  }
  const set = new Set(text(chars, "strip"));
  step(s.length + set.size);
  let a = 0, b = s.length;
  if (left) { while (a < b && set.has(s[a])) a++; }
  if (right) { while (b > a && set.has(s[b - 1])) b--; }
  return s.slice(a, b);
}

/** `s` with every `old` replaced by `by`; the result's size is charged before it is built. */
function replaceAll(s: string, old: string, by: string): string {
  const matches = old === "" ? s.length + 1 : Math.floor(s.length / old.length);
  step(s.length);
  allocString(s.length + matches * by.length);
  return s.split(old).join(by);
}

/** `s.split(sep)`, charging the most parts it can produce first. */
function splitCharged(s: string, sep: string | RegExp, minSep: number): string[] {
  step(s.length);
  allocArray(minSep === 0 ? s.length + 1 : Math.floor(s.length / minSep) + 1);
  allocString(s.length);
  return s.split(sep);
}

/** `parts.join(sep)`, charging the text's size first. */
function joinCharged(parts: string[], sep: string): string {
  let n = sep.length * Math.max(0, parts.length - 1);
  for (const p of parts) n += p.length;
  allocString(n);
  return parts.join(sep);
}

/** Charge a string result of up to `factor`× `s`'s length, then return `f(s)`. */
function mapped(s: string, factor: number, f: (s: string) => string): string {
  step(s.length);
  allocString(factor * s.length);
  return f(s);
}

/** Python's `fmt % args` for `%s`, `%r`, `%d`/`%i`, `%f` and `%%`. */
export function pyFormat(fmt: string, args: readonly unknown[]): string {
  let k = 0;
  step(fmt.length);
  const out = fmt.replace(/%([%srdif])/g, (_, c: string) => {
    if (c === "%") return "%";
    if (k >= args.length) fail("not enough arguments for format string");
    const v = args[k++];
    if (c === "s") return str(v);
    if (c === "r") return repr(v);
    const n = num(v, `%${c} format`);
    return c === "f" ? n.toFixed(6) : String(Math.trunc(n));
  });
  if (k < args.length) fail("not all arguments converted during string formatting");
  allocString(out.length);
  return out;
}

const title = (s: string): string =>
  s.toLowerCase().replace(/(^|[^A-Za-z0-9])([a-z])/g, (_, p, c) => p + c.toUpperCase());
const capitalize = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1).toLowerCase();

function attrTest(item: unknown, args: Args): boolean {
  const v = getAttr(item, text(args[0], "selectattr"));
  if (args.length < 2) return truthy(v);
  return runTest(text(args[1], "selectattr"), v, args.slice(2));
}

/** Apply filter `name`. */
export function runFilter(name: string, v: unknown, args: Args, kw: Kw): unknown {
  const r = filter(name, v, args, kw);
  if (r !== v) allocValue(r); // filters that pass their input through allocate nothing
  return r;
}

function filter(name: string, v: unknown, args: Args, kw: Kw): unknown {
  switch (name) {
    case "trim":
      return strip(str(v), args[0], true, true);
    case "length":
    case "count":
      return Array.isArray(v) || typeof v === "string"
        ? v.length
        : isDict(v)
        ? Object.keys(v).length
        : fail("length of a non-sequence");
    case "tojson": {
      const indent = kw.indent ?? args[0];
      return pyJson(v, typeof indent === "number" ? indent : null);
    }
    case "upper":
      return mapped(str(v), 3, (s) => s.toUpperCase());
    case "lower":
      return mapped(str(v), 2, (s) => s.toLowerCase());
    case "title":
      return mapped(str(v), 3, title);
    case "capitalize":
      return mapped(str(v), 3, capitalize);
    case "string":
      return str(v);
    case "safe":
      return v;
    case "e":
    case "escape":
      return mapped(
        str(v),
        5 * 5,
        (s) =>
          s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
            /"/g,
            "&#34;",
          ).replace(/'/g, "&#39;"),
      );
    case "int": {
      const n = typeof v === "number" ? v : parseInt(str(v), 10);
      return Number.isNaN(n) ? (args[0] ?? 0) : Math.trunc(n);
    }
    case "float": {
      const n = typeof v === "number" ? v : parseFloat(str(v));
      return Number.isNaN(n) ? (args[0] ?? 0) : n;
    }
    case "abs":
      return Math.abs(num(v, "abs"));
    case "first":
      return iterate(v)[0];
    case "last": {
      const it = iterate(v);
      return it[it.length - 1];
    }
    case "join": {
      const attr = kw.attribute;
      const items = iterate(v).map((x) => str(typeof attr === "string" ? getAttr(x, attr) : x));
      return joinCharged(items, args[0] === undefined ? "" : str(args[0]));
    }
    case "default":
    case "d":
      return (args[1] === true ? !truthy(v) : v === undefined) ? (args[0] ?? "") : v;
    case "list": {
      const it = iterate(v);
      allocArray(it.length);
      return [...it];
    }
    case "reverse": {
      const it = iterate(v);
      allocArray(it.length);
      return typeof v === "string" ? it.reverse().join("") : [...it].reverse();
    }
    case "items":
      return isDict(v) ? Object.entries(v) : fail("items of a non-mapping");
    case "dictsort": {
      if (!isDict(v)) return fail("dictsort of a non-mapping");
      const cased = args[0] === true || kw.case_sensitive === true;
      const byValue = args[1] === "value" || kw.by === "value";
      const es = Object.entries(v);
      step(es.length * Math.max(1, Math.ceil(Math.log2(es.length + 1))));
      allocArray(3 * es.length);
      const key = (e: [string, unknown]): string => {
        const k = str(byValue ? e[1] : e[0]);
        return cased ? k : k.toLowerCase();
      };
      es.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
      return args[2] === true || kw.reverse === true ? es.reverse() : es;
    }
    case "format":
      return pyFormat(str(v), args);
    case "batch": {
      const size = num(args[0], "batch");
      if (!Number.isInteger(size) || size < 1) fail("batch size must be a positive integer");
      const it = iterate(v);
      allocArray(it.length + Math.ceil(it.length / size));
      const out: unknown[][] = [];
      for (let i = 0; i < it.length; i += size) {
        const chunk = it.slice(i, i + size);
        while (chunk.length < size && args[1] !== undefined) chunk.push(args[1]);
        out.push(chunk);
      }
      return out;
    }
    case "replace":
      return replaceAll(str(v), text(args[0], "replace"), str(args[1]));
    case "selectattr":
      return iterate(v).filter((x) => attrTest(x, args));
    case "rejectattr":
      return iterate(v).filter((x) => !attrTest(x, args));
    case "map":
      if (typeof kw.attribute === "string") {
        return iterate(v).map((x) => getAttr(x, kw.attribute as string) ?? kw.default);
      }
      return iterate(v).map((x) => runFilter(text(args[0], "map"), x, args.slice(1), {}));
    case "unique": {
      const out: unknown[] = [];
      for (const x of iterate(v)) {
        step(out.length);
        if (!out.some((y) => pyEq(x, y))) out.push(x);
      }
      return out;
    }
    case "sum":
      return iterate(v).reduce((a: number, x) => a + num(x, "sum"), 0);
    case "min":
    case "max": {
      const it = iterate(v) as number[];
      return it.length
        ? (name === "min"
          ? it.reduce((a, b) => (b < a ? b : a))
          : it.reduce((a, b) => (b > a ? b : a)))
        : undefined;
    }
    case "indent": {
      const width = args[0];
      if (typeof width === "number" && !(Number.isInteger(width) && width >= 0)) {
        fail("indent width must be a non-negative integer");
      }
      if (typeof width === "number") allocString(width);
      const w = typeof width === "number" ? " ".repeat(width) : str(width ?? "    ");
      const s = str(v);
      const [head, ...rest] = splitCharged(s, "\n", 1);
      allocString(s.length + rest.length * w.length);
      return [head, ...rest.map((l) => (l ? w + l : l))].join("\n");
    }
    default:
      return fail(`filter '${name}' is not supported`);
  }
}

/** Apply test `name`. */
export function runTest(name: string, v: unknown, args: Args): boolean {
  switch (name) {
    case "defined":
      return v !== undefined;
    case "undefined":
      return v === undefined;
    case "none":
      return v === null;
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number";
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "float":
      return typeof v === "number" && !Number.isInteger(v);
    case "boolean":
      return typeof v === "boolean";
    case "true":
      return v === true;
    case "false":
      return v === false;
    case "mapping":
      return isDict(v) || v instanceof Namespace;
    case "iterable":
      return Array.isArray(v) || typeof v === "string" || isDict(v);
    case "sequence":
      return Array.isArray(v) || typeof v === "string" || isDict(v);
    case "callable":
      return v instanceof Fn;
    case "odd":
      return num(v, "odd") % 2 !== 0;
    case "even":
      return num(v, "even") % 2 === 0;
    case "divisibleby":
      return num(v, "divisibleby") % num(args[0], "divisibleby") === 0;
    case "eq":
    case "equalto":
    case "==":
    case "sameas":
      return pyEq(v, args[0]);
    case "ne":
    case "!=":
      return !pyEq(v, args[0]);
    case "lower":
      return typeof v === "string" && v === v.toLowerCase();
    case "upper":
      return typeof v === "string" && v === v.toUpperCase();
    case "in":
      return iterate(args[0]).some((x) => pyEq(x, v));
    case "gt":
      return num(v, "gt") > num(args[0], "gt");
    case "lt":
      return num(v, "lt") < num(args[0], "lt");
    case "ge":
      return num(v, "ge") >= num(args[0], "ge");
    case "le":
      return num(v, "le") <= num(args[0], "le");
    default:
      return fail(`test '${name}' is not supported`);
  }
}

/** Call method `name` of a string, dict or list value; `undefined` result means no such method. */
export function callMethod(obj: unknown, name: string, args: Args): { value: unknown } | null {
  if (typeof obj === "string") {
    switch (name) {
      case "strip":
        return { value: strip(obj, args[0], true, true) };
      case "lstrip":
        return { value: strip(obj, args[0], true, false) };
      case "rstrip":
        return { value: strip(obj, args[0], false, true) };
      case "upper":
        return { value: mapped(obj, 3, (s) => s.toUpperCase()) };
      case "lower":
        return { value: mapped(obj, 2, (s) => s.toLowerCase()) };
      case "title":
        return { value: mapped(obj, 3, title) };
      case "capitalize":
        return { value: mapped(obj, 3, capitalize) };
      case "startswith":
      case "endswith": {
        const pre = Array.isArray(args[0])
          ? args[0].map((x) => text(x, name))
          : [text(args[0], name)];
        return {
          value: pre.some((p) => (name === "startswith" ? obj.startsWith(p) : obj.endsWith(p))),
        };
      }
      case "split": {
        const sep = args[0] === undefined || args[0] === null ? null : text(args[0], "split");
        const max = typeof args[1] === "number" ? args[1] : -1;
        let parts = sep === null
          ? splitCharged(obj.trim(), /\s+/, 1).filter((x) => x)
          : splitCharged(obj, sep, sep.length);
        if (max >= 0 && parts.length > max + 1) {
          parts = [...parts.slice(0, max), parts.slice(max).join(sep ?? " ")];
        }
        return { value: parts };
      }
      case "splitlines":
        return { value: splitCharged(obj, /\r?\n/, 1) };
      case "replace":
        return { value: replaceAll(obj, text(args[0], "replace"), text(args[1], "replace")) };
      case "find":
        step(obj.length);
        return { value: obj.indexOf(text(args[0], "find")) };
      case "count": {
        const sub = text(args[0], "count");
        step(obj.length);
        if (sub === "") return { value: obj.length + 1 };
        let n = 0;
        for (let i = obj.indexOf(sub); i >= 0; i = obj.indexOf(sub, i + sub.length)) n++;
        return { value: n };
      }
      case "join":
        return { value: joinCharged(iterate(args[0]).map(str), obj) };
    }
    return null;
  }
  if (isDict(obj)) {
    switch (name) {
      case "items":
        allocArray(3 * Object.keys(obj).length);
        return { value: Object.entries(obj) };
      case "keys":
        allocArray(Object.keys(obj).length);
        return { value: Object.keys(obj) };
      case "values":
        allocArray(Object.keys(obj).length);
        return { value: Object.values(obj) };
      case "get": {
        const v = getAttr(obj, text(args[0], "get"));
        return { value: v === undefined ? (args[1] ?? null) : v };
      }
    }
  }
  return null;
}

function strftime(fmt: string, d: Date): string {
  const months = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
  ];
  const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
  const p2 = (n: number): string => String(n).padStart(2, "0");
  const map: Record<string, string> = {
    d: p2(d.getDate()),
    m: p2(d.getMonth() + 1),
    Y: String(d.getFullYear()),
    y: p2(d.getFullYear() % 100),
    b: months[d.getMonth()].slice(0, 3),
    B: months[d.getMonth()],
    a: days[d.getDay()].slice(0, 3),
    A: days[d.getDay()],
    H: p2(d.getHours()),
    M: p2(d.getMinutes()),
    S: p2(d.getSeconds()),
    "%": "%",
  };
  return fmt.replace(/%([a-zA-Z%])/g, (m, c) => map[c] ?? m);
}

/** Global functions; `now` is the clock `strftime_now` reads. */
export function globals(now: () => Date): Record<string, Fn> {
  return {
    raise_exception: new Fn((args) => {
      throw new ChatTemplateError(
        "template_raise",
        str(args[0] ?? "the chat template refused the conversation"),
      );
    }),
    namespace: new Fn((args, kw) => {
      const ns = new Namespace();
      if (isDict(args[0])) { for (const [k, v] of Object.entries(args[0])) ns.vals.set(k, v); }
      for (const [k, v] of Object.entries(kw)) ns.vals.set(k, v);
      return ns;
    }),
    dict: new Fn((_args, kw) => ({ ...kw })),
    range: new Fn((args) => {
      const [a, b, s] = args.length === 1 ? [0, num(args[0], "range"), 1] : [
        num(args[0], "range"),
        num(args[1], "range"),
        args[2] === undefined ? 1 : num(args[2], "range"),
      ];
      if (s === 0) fail("range step must not be zero");
      const n = Math.max(0, Math.ceil((b - a) / s));
      if (n > 100_000) fail("range is too long");
      allocArray(n);
      return Array.from({ length: n }, (_, i) => a + i * s);
    }),
    strftime_now: new Fn((args) => strftime(text(args[0], "strftime_now"), now())),
  };
}
