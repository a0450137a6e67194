/**
 * PEFT `rank_pattern` / `alpha_pattern` keys, matched without backtracking.
 *
 * PEFT (`peft.utils.other.get_pattern_key`) picks, in the config's key order,
 * the first key `k` for which Python's `re.match(rf"(.*\.)?({k})$", module)`
 * succeeds, where `module` is the base model's module path such as
 * `model.layers.0.self_attn.q_proj`. The key is a regular expression. Compiling
 * it with `new RegExp` lets a key such as `((.*)*)*X` backtrack exponentially;
 * here the same question (does the pattern match the whole module path?) is
 * answered by a Thompson NFA simulated in lock-step (a Pike VM without
 * captures): O(|module| × |states|) time, no recursion on the input.
 *
 * Supported syntax (Python `re` semantics for a yes/no match): literals, `.`,
 * `\d \D \w \W \s \S`, escaped punctuation, classes `[...]` / `[^...]` with
 * ranges and those escapes, groups `(...)`, `(?:...)`, `(?P<name>...)`,
 * alternation `|`, quantifiers `* + ? {n} {n,} {,m} {n,m}` (lazy `?` suffix
 * allowed: it does not change whether a match exists), anchors `^` `$`.
 * A repeat (other than `?`) of a sub-pattern that can match the empty string,
 * such as `(.*)*` or `((.*)*)*X`, is refused: it is the shape that makes
 * PEFT's own backtracking `re` hang, so no working config uses it.
 * Anything else — back-references, look-around, inline flags, `\b`,
 * possessive quantifiers — and keys over `PATTERN_MAX_LENGTH` characters or
 * compiling to more than `PATTERN_MAX_STATES` states are refused with
 * `ManifestError` `"bad_pattern"`.
 *
 * @module
 */

import { ManifestError } from "../errors.ts";

/** Longest pattern key accepted (characters). */
export const PATTERN_MAX_LENGTH = 512;
/** Most NFA states one key may compile to (counted repeats are expanded). */
export const PATTERN_MAX_STATES = 4096;
/** Most keys one `rank_pattern`/`alpha_pattern` object may hold. */
export const PATTERN_MAX_KEYS = 4096;

type CharTest = (c: string) => boolean;

type Node =
  | { t: "char"; test: CharTest }
  | { t: "cat"; items: Node[] }
  | { t: "alt"; items: Node[] }
  | { t: "rep"; node: Node; min: number; max: number } // max = Infinity for unbounded
  | { t: "bol" }
  | { t: "eol" };

/** Whether `n` can match the empty string. */
function nullable(n: Node): boolean {
  switch (n.t) {
    case "char":
      return false;
    case "bol":
    case "eol":
      return true;
    case "cat":
      return n.items.every(nullable);
    case "alt":
      return n.items.some(nullable);
    case "rep":
      return n.min === 0 || nullable(n.node);
  }
}

/** Why a pattern key cannot be used; thrown as `ManifestError` `"bad_pattern"` by callers. */
class PatternSyntax extends Error {}

const WORD_RE = /^[\p{L}\p{N}_]$/u;
const DIGIT_RE = /^\p{Nd}$/u;
const SPACE_RE = /^\s$/u;

/** Regex dialect: Python `re` (PEFT keys) or ECMAScript with the `u` flag (JSON Schema `pattern`). */
export type PatternFlavor = "python" | "ecma";

const ASCII_WORD_RE = /^[A-Za-z0-9_]$/;
const ASCII_DIGIT_RE = /^[0-9]$/;

function classEscape(c: string, flavor: PatternFlavor = "python"): CharTest | undefined {
  const word = flavor === "ecma" ? ASCII_WORD_RE : WORD_RE;
  const digit = flavor === "ecma" ? ASCII_DIGIT_RE : DIGIT_RE;
  switch (c) {
    case "d":
      return (x) => digit.test(x);
    case "D":
      return (x) => !digit.test(x);
    case "w":
      return (x) => word.test(x);
    case "W":
      return (x) => !word.test(x);
    case "s":
      return (x) => SPACE_RE.test(x);
    case "S":
      return (x) => !SPACE_RE.test(x);
  }
  return undefined;
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  n: "\n",
  t: "\t",
  r: "\r",
  f: "\f",
  v: "\v",
};

/** A literal character named by `\c`, or undefined when `\c` is not a plain literal escape. */
function literalEscape(c: string): string | undefined {
  if (Object.hasOwn(SIMPLE_ESCAPES, c)) return SIMPLE_ESCAPES[c];
  if (/^[\p{L}\p{N}]$/u.test(c)) return undefined; // \b, \1, \A, \Z, \x41, … are not supported
  return c; // escaped punctuation: \. \* \\ \- \/ …
}

class Parser {
  readonly s: string[];
  i = 0;
  constructor(pattern: string, readonly flavor: PatternFlavor = "python") {
    this.s = Array.from(pattern);
  }
  peek(): string | undefined {
    return this.s[this.i];
  }
  parse(): Node {
    const n = this.alt();
    if (this.i < this.s.length) throw new PatternSyntax(`unbalanced ')' at position ${this.i}`);
    return n;
  }
  alt(): Node {
    const items = [this.cat()];
    while (this.peek() === "|") {
      this.i++;
      items.push(this.cat());
    }
    return items.length === 1 ? items[0] : { t: "alt", items };
  }
  cat(): Node {
    const items: Node[] = [];
    for (let c = this.peek(); c !== undefined && c !== "|" && c !== ")"; c = this.peek()) {
      items.push(this.quantified());
    }
    return { t: "cat", items };
  }
  quantified(): Node {
    let node = this.atom();
    let quantified = false;
    for (;;) {
      const q = this.quantifier();
      if (!q) break;
      if (quantified) throw new PatternSyntax(`multiple repeat at position ${this.i}`);
      if (node.t === "bol" || node.t === "eol") {
        throw new PatternSyntax(`nothing to repeat at position ${this.i}`);
      }
      quantified = true;
      if (q.max > 1 && nullable(node)) {
        throw new PatternSyntax(
          "a repeated sub-pattern that can match the empty string (the shape of `((.*)*)*X`, " +
            "which makes PEFT's backtracking re hang) is refused",
        );
      }
      node = { t: "rep", node, min: q.min, max: q.max };
      if (this.peek() === "?") this.i++; // lazy: same set of matches
      else if (this.peek() === "+") {
        throw new PatternSyntax("possessive quantifiers are not supported");
      }
    }
    return node;
  }
  quantifier(): { min: number; max: number } | undefined {
    const c = this.peek();
    if (c === "*") return this.i++, { min: 0, max: Infinity };
    if (c === "+") return this.i++, { min: 1, max: Infinity };
    if (c === "?") return this.i++, { min: 0, max: 1 };
    if (c !== "{") return undefined;
    let j = this.i + 1;
    let a = "", b = "";
    while (j < this.s.length && /[0-9]/.test(this.s[j])) a += this.s[j++];
    let comma = false;
    if (this.s[j] === ",") {
      comma = true;
      j++;
      while (j < this.s.length && /[0-9]/.test(this.s[j])) b += this.s[j++];
    }
    if (this.s[j] !== "}" || (!a && !comma)) return undefined; // Python: a literal '{'
    const min = a ? Number(a) : 0;
    const max = comma ? (b ? Number(b) : Infinity) : min;
    if (min > 1000 || (max !== Infinity && max > 1000)) {
      throw new PatternSyntax(`repeat count over 1000 at position ${this.i}`);
    }
    if (max < min) throw new PatternSyntax(`min repeat greater than max repeat at ${this.i}`);
    this.i = j + 1;
    return { min, max };
  }
  atom(): Node {
    const c = this.s[this.i++];
    switch (c) {
      case "(": {
        if (this.peek() === "?") {
          const rest = this.s.slice(this.i, this.i + 3).join("");
          if (rest.startsWith("?:")) this.i += 2;
          else if (
            this.flavor === "python"
              ? rest === "?P<"
              : rest.startsWith("?<") && !/^\?<[=!]/.test(rest)
          ) {
            const skip = this.flavor === "python" ? 3 : 2;
            const close = this.s.indexOf(">", this.i);
            const name = close < 0 ? "" : this.s.slice(this.i + skip, close).join("");
            if (!/^[A-Za-z_]\w*$/.test(name)) throw new PatternSyntax("bad group name");
            this.i = close + 1;
          } else throw new PatternSyntax(`'(${rest}' (look-around, flags) is not supported`);
        }
        const inner = this.alt();
        if (this.s[this.i++] !== ")") throw new PatternSyntax("missing ')'");
        return inner;
      }
      case ")":
        throw new PatternSyntax(`unbalanced ')' at position ${this.i - 1}`);
      case "*":
      case "+":
      case "?":
        throw new PatternSyntax(`nothing to repeat at position ${this.i - 1}`);
      case ".":
        return { t: "char", test: this.flavor === "ecma" ? ecmaDot : (x) => x !== "\n" };
      case "^":
        return { t: "bol" };
      case "$":
        return { t: "eol" };
      case "[":
        return this.klass();
      case "\\": {
        const e = this.s[this.i++];
        if (e === undefined) throw new PatternSyntax("trailing backslash");
        const cls = classEscape(e, this.flavor);
        if (cls) return { t: "char", test: cls };
        const lit = literalEscape(e);
        if (lit === undefined) throw new PatternSyntax(`escape '\\${e}' is not supported`);
        return { t: "char", test: (x) => x === lit };
      }
      default:
        if (c === undefined) throw new PatternSyntax("unexpected end");
        return { t: "char", test: (x) => x === c };
    }
  }
  klass(): Node {
    let negate = false;
    if (this.peek() === "^") {
      negate = true;
      this.i++;
    }
    const tests: CharTest[] = [];
    let first = true;
    for (;;) {
      let c = this.s[this.i++];
      if (c === undefined) throw new PatternSyntax("unterminated character set");
      if (c === "]" && !first) break;
      first = false;
      let lo: string;
      if (c === "\\") {
        const e = this.s[this.i++];
        if (e === undefined) throw new PatternSyntax("trailing backslash");
        const cls = classEscape(e, this.flavor);
        if (cls) {
          tests.push(cls);
          continue;
        }
        const lit = literalEscape(e);
        if (lit === undefined) throw new PatternSyntax(`escape '\\${e}' is not supported`);
        lo = lit;
      } else lo = c;
      if (this.peek() === "-" && this.s[this.i + 1] !== undefined && this.s[this.i + 1] !== "]") {
        this.i++;
        c = this.s[this.i++];
        let hi = c;
        if (c === "\\") {
          const e = this.s[this.i++];
          const lit = e === undefined ? undefined : literalEscape(e);
          if (lit === undefined) throw new PatternSyntax("bad character range");
          hi = lit;
        }
        const a = lo.codePointAt(0)!, b = hi.codePointAt(0)!;
        if (b < a) throw new PatternSyntax(`bad character range ${lo}-${hi}`);
        tests.push((x) => {
          const p = x.codePointAt(0)!;
          return p >= a && p <= b;
        });
      } else tests.push((x) => x === lo);
    }
    return { t: "char", test: (x) => tests.some((f) => f(x)) !== negate };
  }
}

/** ECMAScript `.` without the `s` flag: anything but a line terminator. */
function ecmaDot(x: string): boolean {
  return x !== "\n" && x !== "\r" && x !== "\u2028" && x !== "\u2029";
}

/** NFA state: a character test, a fork, an anchor, or the accepting state. */
type State =
  | { k: "char"; test: CharTest; out: number }
  | { k: "split"; a: number; b: number }
  | { k: "bol"; out: number }
  | { k: "eol"; out: number }
  | { k: "jump"; out: number }
  | { k: "match" };

class Compiler {
  readonly states: State[] = [];
  add(s: State): number {
    if (this.states.length >= PATTERN_MAX_STATES) {
      throw new PatternSyntax(`compiles to more than ${PATTERN_MAX_STATES} states`);
    }
    this.states.push(s);
    return this.states.length - 1;
  }
  /** Compile `n` so that it continues at `next`; returns its start state. */
  emit(n: Node, next: number): number {
    switch (n.t) {
      case "char":
        return this.add({ k: "char", test: n.test, out: next });
      case "bol":
        return this.add({ k: "bol", out: next });
      case "eol":
        return this.add({ k: "eol", out: next });
      case "cat": {
        let start = next;
        for (let i = n.items.length - 1; i >= 0; i--) start = this.emit(n.items[i], start);
        return start;
      }
      case "alt": {
        const starts = n.items.map((x) => this.emit(x, next));
        let start = starts[starts.length - 1];
        for (let i = starts.length - 2; i >= 0; i--) {
          start = this.add({ k: "split", a: starts[i], b: start });
        }
        return start;
      }
      case "rep": {
        let start = next;
        if (n.max === Infinity) {
          // loop: split(body → back to split, next)
          const loop = this.add({ k: "jump", out: -1 });
          const body = this.emit(n.node, loop);
          const split = this.add({ k: "split", a: body, b: next });
          (this.states[loop] as { out: number }).out = split;
          start = split;
        } else {
          for (let i = 0; i < n.max - n.min; i++) {
            start = this.add({ k: "split", a: this.emit(n.node, start), b: next });
            next = start;
          }
        }
        for (let i = 0; i < n.min; i++) start = this.emit(n.node, start);
        return start;
      }
    }
  }
}

/** A compiled pattern key: `matches(module)` answers PEFT's `re.match(rf"(.*\.)?({key})$", module)`. */
export interface PeftPattern {
  /** The key as written. */
  readonly key: string;
  /** Whether the key matches a module path (linear in its length). */
  matches(module: string): boolean;
}

/**
 * Compile a `rank_pattern`/`alpha_pattern` key. Throws `ManifestError`
 * `"bad_pattern"` (details: `key`, `reason`) for a key that is not a valid
 * pattern, uses unsupported syntax, or is too large.
 */
export function compilePeftPattern(key: string, field = "rank_pattern"): PeftPattern {
  try {
    if (key.length > PATTERN_MAX_LENGTH) {
      throw new PatternSyntax(`longer than ${PATTERN_MAX_LENGTH} characters`);
    }
    const body = new Parser(key).parse();
    const anyDot: Node = {
      t: "rep",
      min: 0,
      max: 1,
      node: {
        t: "cat",
        items: [{ t: "rep", min: 0, max: Infinity, node: { t: "char", test: (x) => x !== "\n" } }, {
          t: "char",
          test: (x) => x === ".",
        }],
      },
    };
    const c = new Compiler();
    const match = c.add({ k: "match" });
    const start = c.emit({ t: "cat", items: [anyDot, body, { t: "eol" }] }, match);
    const states = c.states;
    return { key, matches: (module: string) => simulate(states, start, Array.from(module)) };
  } catch (e) {
    if (!(e instanceof PatternSyntax)) throw e;
    throw new ManifestError(
      "bad_pattern",
      `adapter_config.json: ${field} key ${
        JSON.stringify(key.slice(0, 80))
      } cannot be used: ${e.message}`,
      { field, key, reason: e.message },
    );
  }
}

/**
 * Lock-step NFA simulation: every state is visited at most once per input
 * position. With `search`, a thread also starts at every position and any
 * arrival at the accepting state matches (an unanchored `RegExp#test`).
 */
function simulate(states: State[], start: number, input: string[], search = false): boolean {
  const n = states.length;
  const mark = new Int32Array(n).fill(-1);
  let cur: number[] = [], nxt: number[] = [];
  const stack: number[] = [];
  const addClosure = (s0: number, pos: number, list: number[]): boolean => {
    stack.push(s0);
    while (stack.length) {
      const s = stack.pop()!;
      if (mark[s] === pos) continue;
      mark[s] = pos;
      const st = states[s];
      switch (st.k) {
        case "match":
          if (search || pos === input.length) {
            stack.length = 0;
            return true;
          }
          break;
        case "char":
          list.push(s);
          break;
        case "split":
          stack.push(st.b, st.a);
          break;
        case "jump":
          stack.push(st.out);
          break;
        case "bol":
          if (pos === 0) stack.push(st.out);
          break;
        case "eol":
          if (pos === input.length) stack.push(st.out);
          break;
      }
    }
    return false;
  };
  if (addClosure(start, 0, cur)) return true;
  for (let pos = 0; pos < input.length; pos++) {
    const ch = input[pos];
    nxt.length = 0;
    for (const s of cur) {
      const st = states[s] as { k: "char"; test: CharTest; out: number };
      if (st.test(ch) && addClosure(st.out, pos + 1, nxt)) return true;
    }
    [cur, nxt] = [nxt, cur];
    if (search) {
      if (addClosure(start, pos + 1, cur)) return true;
    } else if (cur.length === 0) return false;
  }
  return false;
}

/** A `RegExp`-like matcher (what Ajv's `code.regExp` engine must return). */
export interface SafeRegExp {
  /** Whether the pattern matches anywhere in `s` (linear time). */
  test(s: string): boolean;
  /** `/pattern/flags`, as Ajv keys its pattern cache. */
  toString(): string;
}

/**
 * Compile an ECMAScript pattern (JSON Schema `pattern`, `patternProperties`)
 * to a linear-time matcher with `RegExp#test` semantics (unanchored search;
 * `^`/`$` anchor the whole string, no `m`/`s`/`i` flags). Throws
 * `ManifestError` `"bad_pattern"` for syntax the matcher does not support
 * (look-around, back-references, `\b`, flags, a repeated sub-pattern that
 * can match the empty string) or a pattern over the size bounds.
 */
export function compileSafeRegExp(pattern: string, flags = "u"): SafeRegExp {
  try {
    if (pattern.length > PATTERN_MAX_LENGTH) {
      throw new PatternSyntax(`longer than ${PATTERN_MAX_LENGTH} characters`);
    }
    if (!/^u?$/.test(flags)) throw new PatternSyntax(`flags '${flags}' are not supported`);
    const body = new Parser(pattern, "ecma").parse();
    const c = new Compiler();
    const match = c.add({ k: "match" });
    const start = c.emit(body, match);
    const states = c.states;
    return {
      test: (s: string) => simulate(states, start, Array.from(s), true),
      toString: () => `/${pattern}/${flags}`,
    };
  } catch (e) {
    if (!(e instanceof PatternSyntax)) throw e;
    throw new ManifestError(
      "bad_pattern",
      `pattern ${JSON.stringify(pattern.slice(0, 80))} cannot be used: ${e.message}`,
      { pattern, reason: e.message },
    );
  }
}

/**
 * Compile every key of a `rank_pattern`/`alpha_pattern` object, in key order.
 * Throws `ManifestError` `"bad_pattern"` for a bad key or a non-object,
 * `"bad_adapter_config"` for a value that is not a positive number.
 */
export function compilePatternMap(
  value: unknown,
  field: string,
): readonly (readonly [PeftPattern, number])[] {
  if (value === undefined || value === null) return [];
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new ManifestError(
      "bad_adapter_config",
      `adapter_config.json: ${field} must be an object of pattern → number`,
      { field },
    );
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > PATTERN_MAX_KEYS) {
    throw new ManifestError(
      "bad_pattern",
      `adapter_config.json: ${field} has ${entries.length} keys (at most ${PATTERN_MAX_KEYS})`,
      { field },
    );
  }
  return entries.map(([k, v]) => {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new ManifestError(
        "bad_adapter_config",
        `adapter_config.json: ${field}[${
          JSON.stringify(k.slice(0, 80))
        }] must be a positive number: received ${JSON.stringify(v)}`,
        { field, key: k },
      );
    }
    return [compilePeftPattern(k, field), v] as const;
  });
}
