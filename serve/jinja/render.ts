/**
 * Renders parsed chat templates in a sandbox with hard limits on output
 * size and loop iterations, so a hostile template (it comes from a model
 * file) or a huge conversation cannot hang or flood the server.
 *
 * @module
 */

import {
  allocArray,
  allocString,
  Budget,
  BudgetError,
  type BudgetLimits,
  step,
  withBudget,
} from "./budget.ts";
import { callMethod, globals, pyFormat, runFilter, runTest } from "./builtins.ts";
import { ChatTemplateError } from "./lexer.ts";
import { type Expr, type Node, parseTemplate } from "./parser.ts";
import {
  fail,
  Fn,
  getAttr,
  getItem,
  isDict,
  iterate,
  Namespace,
  pyEq,
  slice,
  str,
  truthy,
} from "./values.ts";

/** Limits of one render. */
export interface RenderLimits extends Partial<BudgetLimits> {
  /** Most characters of output (default 4 Mi). */
  maxOutput?: number;
  /** Most loop iterations in all (default 1 Mi). */
  maxIterations?: number;
}

/**
 * The default bounds of one render: 4 Mi characters of output, 1 Mi loop
 * iterations, 8 Mi evaluation steps, 128 Mi memory units (strings 2 per
 * character, arrays 8 per entry; ~128 MiB) allocated in all, 2 s.
 */
export const DEFAULT_RENDER_LIMITS: Readonly<Required<RenderLimits>> = {
  maxOutput: 4 << 20,
  maxIterations: 1 << 20,
  maxSteps: 8 << 20,
  maxAllocated: 128 << 20,
  maxMs: 2000,
};

class Scope {
  readonly vars = new Map<string, unknown>();
  constructor(readonly parent: Scope | null) {}
  get(name: string): unknown {
    if (this.vars.has(name)) return this.vars.get(name);
    return this.parent?.get(name);
  }
}

/** A compiled template: parse once, render per request. */
export class Template {
  readonly #nodes: Node[];

  /** @param source Jinja source; throws `ChatTemplateError` outside the supported subset */
  constructor(source: string) {
    this.#nodes = parseTemplate(source);
  }

  /**
   * Render with `vars` as globals. Throws `ChatTemplateError`: code
   * `"template_raise"` when the template calls `raise_exception`,
   * `"template_render"` for anything it cannot evaluate, `"template_limit"`
   * (a {@link BudgetError}) when a bound of `limits` is hit. Any other
   * failure of the engine (e.g. a stack overflow on deep nesting) is
   * reported as `"template_render"`, never as a raw error.
   */
  render(
    vars: Record<string, unknown>,
    limits: RenderLimits = {},
    now: () => Date = () => new Date(),
  ): string {
    const l = { ...DEFAULT_RENDER_LIMITS, ...limits };
    const budget = new Budget(l);
    const root = new Scope(null);
    for (const [k, v] of Object.entries(globals(now))) root.vars.set(k, v);
    for (const [k, v] of Object.entries(vars)) root.vars.set(k, v);
    const r = new Renderer(l.maxOutput, l.maxIterations);
    try {
      return withBudget(budget, () => {
        r.nodes(this.#nodes, new Scope(root));
        return r.out.join("");
      });
    } catch (e) {
      if (e instanceof ChatTemplateError) throw e;
      // RangeError (call stack, string length) or anything else the engine did not foresee
      throw new ChatTemplateError(
        "template_render",
        `Cannot render chat template: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }
}

/** Thrown by `{% break %}` / `{% continue %}`, caught by the innermost loop. */
class LoopSignal {
  constructor(readonly kind: "break" | "continue") {}
}

const MAX_MACRO_DEPTH = 32;

class Renderer {
  out: string[] = [];
  #size = 0;
  #iters = 0;
  #macroDepth = 0;
  constructor(readonly maxOutput: number, readonly maxIterations: number) {}

  emit(s: string): void {
    this.#size += s.length;
    if (this.#size > this.maxOutput) {
      throw new BudgetError(
        "output",
        `Cannot render chat template: output exceeds ${this.maxOutput} characters`,
      );
    }
    step(1 + (s.length >> 6));
    this.out.push(s);
  }

  nodes(list: Node[], scope: Scope): void {
    for (const n of list) this.node(n, scope);
  }

  node(n: Node, scope: Scope): void {
    step();
    switch (n.t) {
      case "text":
        return this.emit(n.value);
      case "output":
        return this.emit(str(this.expr(n.expr, scope)));
      case "if": {
        for (const [cond, body] of n.branches) {
          if (truthy(this.expr(cond, scope))) return this.nodes(body, scope);
        }
        return this.nodes(n.else, scope);
      }
      case "set": {
        const v = this.expr(n.value, scope);
        if (n.attr === null) {
          scope.vars.set(n.name, v);
          return;
        }
        const ns = scope.get(n.name);
        if (!(ns instanceof Namespace)) {
          fail(`cannot set attribute '${n.attr}' of '${n.name}': not a namespace`);
        }
        ns.vals.set(n.attr, v);
        return;
      }
      case "for":
        return this.loop(n, scope);
      case "break":
      case "continue":
        throw new LoopSignal(n.t);
      case "capture": {
        const text = this.capture(n.body, scope);
        scope.vars.set(n.name, this.applyFilters(text, n.filters, scope));
        return;
      }
      case "filterblock":
        return this.emit(str(this.applyFilters(this.capture(n.body, scope), n.filters, scope)));
      case "macro": {
        const def = scope;
        scope.vars.set(n.name, new Fn((args, kw) => this.callMacro(n, def, args, kw)));
        return;
      }
      case "callblock": {
        const caller = new Fn((args, kw) => {
          const s = new Scope(scope);
          this.bindParams(n.params, s, args, kw, "caller");
          return this.capture(n.body, s);
        });
        const fn = this.expr(n.call.fn, scope);
        if (!(fn instanceof Fn)) return fail("{% call %} needs a macro");
        const [args, kw] = this.args(n.call.args, n.call.kwargs, scope);
        kw.caller = caller;
        return this.emit(str(fn.call(args, kw)));
      }
    }
  }

  /** Render `body` into a string instead of the output (charged as memory, not output). */
  capture(body: Node[], scope: Scope): string {
    const saved = this.out;
    const size = this.#size;
    this.out = [];
    try {
      this.nodes(body, scope);
      const text = this.out.join("");
      allocString(text.length);
      return text;
    } finally {
      this.out = saved;
      this.#size = size;
    }
  }

  applyFilters(
    v: unknown,
    filters: [string, Expr[], [string, Expr][]][],
    scope: Scope,
  ): unknown {
    for (const [name, a, k] of filters) {
      const [args, kw] = this.args(a, k, scope);
      v = runFilter(name, v, args, kw);
    }
    return v;
  }

  bindParams(
    params: [string, Expr | null][],
    s: Scope,
    args: unknown[],
    kw: Record<string, unknown>,
    what: string,
  ): void {
    if (args.length > params.length) fail(`${what} takes ${params.length} arguments`);
    params.forEach(([name, def], i) => {
      const v = i < args.length ? args[i] : Object.hasOwn(kw, name) ? kw[name] : undefined;
      s.vars.set(name, v === undefined && def ? this.expr(def, s) : v);
    });
  }

  callMacro(
    n: Node & { t: "macro" },
    def: Scope,
    args: unknown[],
    kw: Record<string, unknown>,
  ): string {
    if (this.#macroDepth >= MAX_MACRO_DEPTH) {
      throw new BudgetError(
        "depth",
        `Cannot render chat template: macro calls nested deeper than ${MAX_MACRO_DEPTH}`,
      );
    }
    this.#macroDepth++;
    try {
      const s = new Scope(def);
      this.bindParams(n.params, s, args, kw, `macro '${n.name}'`);
      if (Object.hasOwn(kw, "caller")) s.vars.set("caller", kw.caller);
      return this.capture(n.body, s);
    } finally {
      this.#macroDepth--;
    }
  }

  loop(n: Node & { t: "for" }, scope: Scope): void {
    let items = iterate(this.expr(n.iter, scope));
    const bind = (s: Scope, item: unknown): void => {
      if (n.targets.length === 1) s.vars.set(n.targets[0], item);
      else {
        const parts = Array.isArray(item) ? item : iterate(item);
        if (parts.length !== n.targets.length) {
          fail(`cannot unpack ${parts.length} values into ${n.targets.length}`);
        }
        n.targets.forEach((t, i) => s.vars.set(t, parts[i]));
      }
    };
    if (n.filter) {
      const f = n.filter;
      items = items.filter((item) => {
        const s = new Scope(scope);
        bind(s, item);
        return truthy(this.expr(f, s));
      });
    }
    if (items.length === 0) return this.nodes(n.else, scope);
    const len = items.length;
    for (let i = 0; i < len; i++) {
      const item = items[i];
      if (++this.#iters > this.maxIterations) {
        throw new BudgetError(
          "iterations",
          `Cannot render chat template: more than ${this.maxIterations} loop iterations`,
        );
      }
      const s = new Scope(scope);
      allocArray(16);
      bind(s, item);
      s.vars.set("loop", {
        index: i + 1,
        index0: i,
        revindex: len - i,
        revindex0: len - i - 1,
        first: i === 0,
        last: i === len - 1,
        length: len,
        previtem: items[i - 1],
        nextitem: items[i + 1],
        cycle: new Fn((args) => args[i % Math.max(1, args.length)]),
      });
      try {
        this.nodes(n.body, s);
      } catch (e) {
        if (!(e instanceof LoopSignal)) throw e;
        if (e.kind === "break") break;
      }
    }
  }

  expr(e: Expr, scope: Scope): unknown {
    step();
    switch (e.t) {
      case "lit":
        return e.v;
      case "name":
        return scope.get(e.name);
      case "list":
        allocArray(e.items.length);
        return e.items.map((x) => this.expr(x, scope));
      case "dict": {
        allocArray(2 * e.entries.length);
        const o: Record<string, unknown> = {};
        for (const [k, v] of e.entries) {
          const key = this.expr(k, scope);
          if (typeof key !== "string" && typeof key !== "number") {
            fail("dict keys must be strings or numbers");
          }
          Object.defineProperty(o, String(key), {
            value: this.expr(v, scope),
            enumerable: true,
            writable: true,
            configurable: true,
          });
        }
        return o;
      }
      case "attr":
        return getAttr(this.expr(e.obj, scope), e.name);
      case "index":
        return getItem(this.expr(e.obj, scope), this.expr(e.index, scope));
      case "slice": {
        const v = (x: Expr | null): unknown => (x ? this.expr(x, scope) : null);
        return slice(this.expr(e.obj, scope), v(e.start), v(e.stop), v(e.step));
      }
      case "call":
        return this.call(e, scope);
      case "filter": {
        const [args, kw] = this.args(e.args, e.kwargs, scope);
        return runFilter(e.name, this.expr(e.value, scope), args, kw);
      }
      case "test": {
        const args = e.args.map((a) => this.expr(a, scope));
        const r = runTest(e.name, this.expr(e.value, scope), args);
        return e.negate ? !r : r;
      }
      case "unary": {
        const v = this.expr(e.value, scope);
        if (e.op === "not") return !truthy(v);
        return typeof v === "number" ? -v : fail("unary '-' needs a number");
      }
      case "binary":
        return this.binary(e.op, e.left, e.right, scope);
      case "cond":
        return truthy(this.expr(e.test, scope))
          ? this.expr(e.then, scope)
          : e.else
          ? this.expr(e.else, scope)
          : undefined;
    }
  }

  args(args: Expr[], kwargs: [string, Expr][], scope: Scope): [unknown[], Record<string, unknown>] {
    const kw: Record<string, unknown> = {};
    for (const [k, v] of kwargs) {
      Object.defineProperty(kw, k, {
        value: this.expr(v, scope),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return [args.map((a) => this.expr(a, scope)), kw];
  }

  call(e: Expr & { t: "call" }, scope: Scope): unknown {
    const [args, kw] = this.args(e.args, e.kwargs, scope);
    if (e.fn.t === "attr") {
      const obj = this.expr(e.fn.obj, scope);
      const own = getAttr(obj, e.fn.name);
      if (own instanceof Fn) return own.call(args, kw);
      const m = callMethod(obj, e.fn.name, args);
      if (m) return m.value;
      return fail(`'${e.fn.name}' is not a supported method`);
    }
    const fn = this.expr(e.fn, scope);
    if (!(fn instanceof Fn)) {
      return fail(`${e.fn.t === "name" ? `'${e.fn.name}'` : "value"} is not callable`);
    }
    return fn.call(args, kw);
  }

  binary(op: string, le: Expr, re: Expr, scope: Scope): unknown {
    const a = this.expr(le, scope);
    if (op === "and") return truthy(a) ? this.expr(re, scope) : a;
    if (op === "or") return truthy(a) ? a : this.expr(re, scope);
    const b = this.expr(re, scope);
    switch (op) {
      case "==":
        return pyEq(a, b);
      case "!=":
        return !pyEq(a, b);
      case "~": {
        const sa = str(a), sb = str(b);
        allocString(sa.length + sb.length);
        return sa + sb;
      }
      case "in":
        if (typeof b === "string") {
          step(b.length);
          return b.includes(str(a));
        }
        if (isDict(b)) return typeof a === "string" && Object.hasOwn(b, a);
        if (b === undefined || b === null) return false;
        return iterate(b).some((x) => pyEq(x, a));
      case "+":
        if (typeof a === "number" && typeof b === "number") return a + b;
        if (typeof a === "string" && typeof b === "string") {
          allocString(a.length + b.length);
          return a + b;
        }
        if (Array.isArray(a) && Array.isArray(b)) {
          allocArray(a.length + b.length);
          step(a.length + b.length);
          return [...a, ...b];
        }
        return fail(`cannot add ${kind(a)} and ${kind(b)}`);
      case "%":
        if (typeof a === "string") return pyFormat(a, Array.isArray(b) ? b : [b]);
        break;
      case "*":
        if (typeof a === "string" && typeof b === "number") {
          if (!(b > 0 && b * a.length <= 1 << 20)) return "";
          allocString(b * a.length);
          return a.repeat(b);
        }
        break;
    }
    if ((typeof a === "string" && typeof b === "string") && ["<", ">", "<=", ">="].includes(op)) {
      return op === "<" ? a < b : op === ">" ? a > b : op === "<=" ? a <= b : a >= b;
    }
    if (typeof a !== "number" || typeof b !== "number") {
      return fail(`operator '${op}' needs numbers, got ${kind(a)} and ${kind(b)}`);
    }
    switch (op) {
      case "-":
        return a - b;
      case "*":
        return a * b;
      case "/":
        return b === 0 ? fail("division by zero") : a / b;
      case "//":
        return b === 0 ? fail("division by zero") : Math.floor(a / b);
      case "%":
        return b === 0 ? fail("division by zero") : ((a % b) + b) % b;
      case "**":
        return a ** b;
      case "<":
        return a < b;
      case ">":
        return a > b;
      case "<=":
        return a <= b;
      case ">=":
        return a >= b;
    }
    return fail(`operator '${op}' is not supported`);
  }
}

function kind(v: unknown): string {
  if (v === undefined) return "undefined";
  if (v === null) return "none";
  if (Array.isArray(v)) return "list";
  if (isDict(v)) return "dict";
  return typeof v;
}
