/**
 * Parser for the Jinja subset of chat templates: `if/elif/else`, `for`
 * (with `loop`, tuple targets, `if` filter, `else`, `break`, `continue`),
 * `set` (names, namespace attributes, and `{% set x %}…{% endset %}`
 * blocks), `macro` (with defaults) and `call` blocks (`caller()`),
 * `filter` blocks, `generation` blocks, and expressions with Jinja's
 * precedence, filters, tests, calls, subscripts and slices. Anything else
 * (includes, imports, template inheritance, recursive loops) is rejected so
 * callers can fall back.
 *
 * @module
 */

import { ChatTemplateError, type Segment, segment, type Token } from "./lexer.ts";

/** An expression node. */
export type Expr =
  | { t: "lit"; v: unknown }
  | { t: "name"; name: string }
  | { t: "list"; items: Expr[] }
  | { t: "dict"; entries: [Expr, Expr][] }
  | { t: "attr"; obj: Expr; name: string }
  | { t: "index"; obj: Expr; index: Expr }
  | { t: "slice"; obj: Expr; start: Expr | null; stop: Expr | null; step: Expr | null }
  | { t: "call"; fn: Expr; args: Expr[]; kwargs: [string, Expr][] }
  | { t: "filter"; name: string; value: Expr; args: Expr[]; kwargs: [string, Expr][] }
  | { t: "test"; name: string; value: Expr; args: Expr[]; negate: boolean }
  | { t: "unary"; op: string; value: Expr }
  | { t: "binary"; op: string; left: Expr; right: Expr }
  | { t: "cond"; test: Expr; then: Expr; else: Expr | null };

/** A statement node. */
export type Node =
  | { t: "text"; value: string }
  | { t: "output"; expr: Expr }
  | { t: "if"; branches: [Expr, Node[]][]; else: Node[] }
  | { t: "for"; targets: string[]; iter: Expr; filter: Expr | null; body: Node[]; else: Node[] }
  | { t: "set"; name: string; attr: string | null; value: Expr }
  | { t: "capture"; name: string; filters: [string, Expr[], [string, Expr][]][]; body: Node[] }
  | { t: "filterblock"; filters: [string, Expr[], [string, Expr][]][]; body: Node[] }
  | { t: "macro"; name: string; params: [string, Expr | null][]; body: Node[] }
  | { t: "callblock"; call: Expr & { t: "call" }; params: [string, Expr | null][]; body: Node[] }
  | { t: "break" }
  | { t: "continue" };

const MAX_DEPTH = 64;

/** Parse a template into statement nodes; throws `ChatTemplateError` when outside the subset. */
export function parseTemplate(src: string): Node[] {
  const segs = segment(src);
  let pos = 0;
  let loops = 0;
  const fail = (msg: string, at: number): never => {
    throw new ChatTemplateError(
      "template_unsupported",
      `Cannot parse chat template: ${msg} at offset ${at}`,
    );
  };

  function block(ends: string[], depth: number): [Node[], string, Segment | null] {
    if (depth > MAX_DEPTH) fail("blocks nested too deep", 0);
    const nodes: Node[] = [];
    while (pos < segs.length) {
      const s = segs[pos++];
      if (s.kind === "text") nodes.push({ t: "text", value: s.value });
      else if (s.kind === "output") {
        nodes.push({ t: "output", expr: new ExprParser(s.tokens, s.at, true).whole() });
      } else {
        const kw = s.tokens[0]?.value ?? "";
        if (ends.includes(kw)) return [nodes, kw, s];
        nodes.push(statement(s, kw, depth));
      }
    }
    if (ends.length) fail(`missing {% ${ends.join(" / ")} %}`, src.length);
    return [nodes, "", null];
  }

  function statement(s: Segment & { kind: "stmt" }, kw: string, depth: number): Node {
    const p = new ExprParser(s.tokens.slice(1), s.at, false);
    if (kw === "if") {
      const branches: [Expr, Node[]][] = [];
      let cond = p.whole();
      for (;;) {
        const [body, end, seg] = block(["elif", "else", "endif"], depth + 1);
        branches.push([cond, body]);
        if (end === "elif") {
          const st = seg as Segment & { kind: "stmt" };
          cond = new ExprParser(st.tokens.slice(1), st.at, false).whole();
          continue;
        }
        let elseBody: Node[] = [];
        if (end === "else") elseBody = block(["endif"], depth + 1)[0];
        return { t: "if", branches, else: elseBody };
      }
    }
    if (kw === "for") {
      const targets = [p.name()];
      while (p.eat(",")) targets.push(p.name());
      if (!p.eatName("in")) fail("expected 'in'", s.at);
      const iter = p.ternaryFree();
      const filter = p.eatName("if") ? p.expr() : null;
      if (p.eatName("recursive")) fail("recursive loops are not supported", s.at);
      p.end();
      loops++;
      const [body, end] = block(["else", "endfor"], depth + 1);
      loops--;
      const elseBody = end === "else" ? block(["endfor"], depth + 1)[0] : [];
      return { t: "for", targets, iter, filter, body, else: elseBody };
    }
    if (kw === "set") {
      const name = p.name();
      const attr = p.eat(".") ? p.name() : null;
      if (attr === null && !p.peek("=")) {
        // {% set x %}…{% endset %}, optionally {% set x | filter %}
        const filters = p.filterChain();
        p.end();
        const [body] = block(["endset"], depth + 1);
        return { t: "capture", name, filters, body };
      }
      if (!p.eat("=")) fail("expected '='", s.at);
      return { t: "set", name, attr, value: p.whole() };
    }
    if (kw === "filter") {
      const filters = p.filterChain(true);
      p.end();
      const [body] = block(["endfilter"], depth + 1);
      return { t: "filterblock", filters, body };
    }
    if (kw === "macro") {
      const name = p.name();
      const params = p.params();
      p.end();
      const [body] = block(["endmacro"], depth + 1);
      return { t: "macro", name, params, body };
    }
    if (kw === "call") {
      const params = p.peek("(") ? p.params() : [];
      const call = p.whole();
      if (call.t !== "call") fail("{% call %} needs a macro call", s.at);
      const [body] = block(["endcall"], depth + 1);
      return { t: "callblock", call: call as Expr & { t: "call" }, params, body };
    }
    if (kw === "break" || kw === "continue") {
      p.end();
      if (loops === 0) fail(`'${kw}' outside a loop`, s.at);
      return { t: kw };
    }
    if (kw === "generation") {
      // Hugging Face's assistant-mask marker: render the body as is
      const [body] = block(["endgeneration"], depth + 1);
      return { t: "if", branches: [[{ t: "lit", v: true }, body]], else: [] };
    }
    return fail(`statement '${kw}' is not supported`, s.at);
  }

  const [nodes] = block([], 0);
  return nodes;
}

const COMPARE = new Set(["==", "!=", "<", ">", "<=", ">="]);

class ExprParser {
  #i = 0;
  #depth = 0;
  constructor(readonly toks: Token[], readonly at: number, readonly isOutput: boolean) {}

  fail(msg: string): never {
    const at = this.toks[this.#i]?.at ?? this.at;
    throw new ChatTemplateError(
      "template_unsupported",
      `Cannot parse chat template: ${msg} at offset ${at}`,
    );
  }
  peek(v: string): boolean {
    const t = this.toks[this.#i];
    return t !== undefined && (t.type === "op" || t.type === "name") && t.value === v;
  }
  eat(op: string): boolean {
    const t = this.toks[this.#i];
    if (t?.type === "op" && t.value === op) return ++this.#i > 0;
    return false;
  }
  eatName(n: string): boolean {
    const t = this.toks[this.#i];
    if (t?.type === "name" && t.value === n) return ++this.#i > 0;
    return false;
  }
  expect(op: string): void {
    if (!this.eat(op)) this.fail(`expected '${op}'`);
  }
  name(): string {
    const t = this.toks[this.#i];
    if (t?.type !== "name") this.fail("expected a name");
    this.#i++;
    return t!.value;
  }
  end(): void {
    if (this.#i < this.toks.length) this.fail(`unexpected '${this.toks[this.#i].value}'`);
  }
  whole(): Expr {
    const e = this.expr();
    this.end();
    return e;
  }

  expr(): Expr {
    if (++this.#depth > MAX_DEPTH) this.fail("expression nested too deep");
    const e = this.ternary();
    this.#depth--;
    return e;
  }
  ternary(): Expr {
    const e = this.or();
    if (!this.eatName("if")) return e;
    const test = this.or();
    const alt = this.eatName("else") ? this.ternary() : null;
    return { t: "cond", test, then: e, else: alt };
  }
  /** A `for` iterable: no bare ternary, so a trailing `if` is the loop filter. */
  ternaryFree(): Expr {
    return this.or();
  }
  or(): Expr {
    let e = this.and();
    while (this.eatName("or")) e = { t: "binary", op: "or", left: e, right: this.and() };
    return e;
  }
  and(): Expr {
    let e = this.not();
    while (this.eatName("and")) e = { t: "binary", op: "and", left: e, right: this.not() };
    return e;
  }
  not(): Expr {
    if (this.eatName("not")) return { t: "unary", op: "not", value: this.not() };
    return this.compare();
  }
  compare(): Expr {
    let e = this.math1();
    for (;;) {
      const t = this.toks[this.#i];
      if (t?.type === "op" && COMPARE.has(t.value)) {
        this.#i++;
        e = { t: "binary", op: t.value, left: e, right: this.math1() };
      } else if (this.eatName("in")) {
        e = { t: "binary", op: "in", left: e, right: this.math1() };
      } else if (this.peek("not") && this.toks[this.#i + 1]?.value === "in") {
        this.#i += 2;
        e = {
          t: "unary",
          op: "not",
          value: { t: "binary", op: "in", left: e, right: this.math1() },
        };
      } else return e;
    }
  }
  math1(): Expr {
    let e = this.concat();
    for (;;) {
      if (this.eat("+")) e = { t: "binary", op: "+", left: e, right: this.concat() };
      else if (this.eat("-")) e = { t: "binary", op: "-", left: e, right: this.concat() };
      else return e;
    }
  }
  concat(): Expr {
    let e = this.math2();
    while (this.eat("~")) e = { t: "binary", op: "~", left: e, right: this.math2() };
    return e;
  }
  math2(): Expr {
    let e = this.pow();
    for (;;) {
      const op = ["*", "/", "//", "%"].find((o) => this.eat(o));
      if (!op) return e;
      e = { t: "binary", op, left: e, right: this.pow() };
    }
  }
  pow(): Expr {
    let e = this.unary();
    while (this.eat("**")) e = { t: "binary", op: "**", left: e, right: this.unary() };
    return e;
  }
  unary(): Expr {
    if (this.eat("-")) return { t: "unary", op: "-", value: this.unary() };
    if (this.eat("+")) return this.unary();
    return this.filtered(this.postfix(this.primary()));
  }
  /** `| name(args) | …` after `{% set x` or the names of `{% filter a | b(1) %}`. */
  filterChain(leadingBar = false): [string, Expr[], [string, Expr][]][] {
    const out: [string, Expr[], [string, Expr][]][] = [];
    let first = leadingBar;
    while (first || this.eat("|")) {
      first = false;
      const name = this.name();
      const [args, kwargs] = this.peek("(") ? (this.#i++, this.args()) : [[], []];
      out.push([name, args, kwargs]);
    }
    return out;
  }
  /** A macro's parameter list `(a, b=default, …)`. */
  params(): [string, Expr | null][] {
    this.expect("(");
    const out: [string, Expr | null][] = [];
    while (!this.eat(")")) {
      if (out.length) this.expect(",");
      if (this.eat(")")) break;
      const name = this.name();
      out.push([name, this.eat("=") ? this.expr() : null]);
    }
    return out;
  }
  filtered(e: Expr): Expr {
    for (;;) {
      if (this.eat("|")) {
        const name = this.name();
        const [args, kwargs] = this.peek("(") ? (this.#i++, this.args()) : [[], []];
        e = this.postfix({ t: "filter", name, value: e, args, kwargs });
      } else if (this.eatName("is")) {
        const negate = this.eatName("not");
        const name = this.name();
        let args: Expr[] = [];
        if (this.eat("(")) args = this.args()[0];
        else if (this.isArgStart()) args = [this.primary()];
        e = { t: "test", name, value: e, args, negate };
      } else return e;
    }
  }
  /** Whether a test argument without parentheses starts here (`x is divisibleby 3`). */
  isArgStart(): boolean {
    const t = this.toks[this.#i];
    if (!t) return false;
    if (t.type === "string" || t.type === "number") return true;
    return t.type === "name" && !["and", "or", "else", "if", "in", "not", "is"].includes(t.value);
  }
  postfix(e: Expr): Expr {
    for (;;) {
      if (this.eat(".")) {
        const t = this.toks[this.#i++];
        if (t?.type !== "name" && t?.type !== "number") this.fail("expected an attribute name");
        e = t.type === "number"
          ? { t: "index", obj: e, index: { t: "lit", v: Number(t.value) } }
          : { t: "attr", obj: e, name: t.value };
      } else if (this.eat("[")) {
        e = this.subscript(e);
      } else if (this.eat("(")) {
        const [args, kwargs] = this.args();
        e = { t: "call", fn: e, args, kwargs };
      } else return e;
    }
  }
  subscript(obj: Expr): Expr {
    const part = (): Expr | null => (this.peek(":") || this.peek("]") ? null : this.expr());
    const start = part();
    if (!this.eat(":")) {
      this.expect("]");
      if (!start) this.fail("empty subscript");
      return { t: "index", obj, index: start! };
    }
    const stop = part();
    const step = this.eat(":") ? part() : null;
    this.expect("]");
    return { t: "slice", obj, start, stop, step };
  }
  args(): [Expr[], [string, Expr][]] {
    const args: Expr[] = [];
    const kwargs: [string, Expr][] = [];
    while (!this.eat(")")) {
      if (args.length + kwargs.length > 0) this.expect(",");
      if (this.eat(")")) break;
      const t = this.toks[this.#i];
      if (
        t?.type === "name" && this.toks[this.#i + 1]?.value === "=" &&
        this.toks[this.#i + 1].type === "op"
      ) {
        this.#i += 2;
        kwargs.push([t.value, this.expr()]);
      } else args.push(this.expr());
    }
    return [args, kwargs];
  }
  primary(): Expr {
    const t = this.toks[this.#i++];
    if (!t) return this.fail("unexpected end of expression");
    if (t.type === "string") {
      let v = t.value;
      while (this.toks[this.#i]?.type === "string") v += this.toks[this.#i++].value; // implicit concatenation
      return { t: "lit", v };
    }
    if (t.type === "number") return { t: "lit", v: Number(t.value) };
    if (t.type === "name") {
      const lits: Record<string, unknown> = {
        true: true,
        True: true,
        false: false,
        False: false,
        none: null,
        None: null,
      };
      return t.value in lits ? { t: "lit", v: lits[t.value] } : { t: "name", name: t.value };
    }
    if (t.value === "(") {
      if (this.eat(")")) return { t: "list", items: [] };
      const e = this.expr();
      if (this.eat(")")) return e;
      const items = [e];
      while (this.eat(",")) if (!this.peek(")")) items.push(this.expr());
      this.expect(")");
      return { t: "list", items };
    }
    if (t.value === "[") {
      const items: Expr[] = [];
      while (!this.eat("]")) {
        if (items.length) this.expect(",");
        if (this.eat("]")) break;
        items.push(this.expr());
      }
      return { t: "list", items };
    }
    if (t.value === "{") {
      const entries: [Expr, Expr][] = [];
      while (!this.eat("}")) {
        if (entries.length) this.expect(",");
        if (this.eat("}")) break;
        const k = this.expr();
        this.expect(":");
        entries.push([k, this.expr()]);
      }
      return { t: "dict", entries };
    }
    return this.fail(`unexpected '${t.value}'`);
  }
}
