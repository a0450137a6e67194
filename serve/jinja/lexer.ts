/**
 * Tokenizer for the Jinja subset used by chat templates. Splits a template
 * into text and tags with Hugging Face's settings (`trim_blocks`,
 * `lstrip_blocks`, `-` whitespace control), then lexes each tag's inside.
 *
 * @module
 */

import { MoeEdgeError } from "../../core/errors.ts";

/** A chat template cannot be parsed or rendered. */
export class ChatTemplateError extends MoeEdgeError {}

/** A piece of the template: literal text, `{{ … }}` or `{% … %}`. */
export type Segment =
  | { kind: "text"; value: string }
  | { kind: "output"; tokens: Token[]; at: number }
  | { kind: "stmt"; tokens: Token[]; at: number };

/** A lexical token inside a tag. */
export interface Token {
  /** `name`, `string`, `number` or `op`. */
  type: "name" | "string" | "number" | "op";
  /** Text of names/ops, decoded value of strings. */
  value: string;
  /** Offset in the template. */
  at: number;
}

const OPS = [
  "**",
  "//",
  "==",
  "!=",
  "<=",
  ">=",
  "+",
  "-",
  "*",
  "/",
  "%",
  "~",
  "<",
  ">",
  "(",
  ")",
  "[",
  "]",
  "{",
  "}",
  ",",
  ".",
  ":",
  "|",
  "=",
];
const ESC: Record<string, string> = {
  n: "\n",
  t: "\t",
  r: "\r",
  "\\": "\\",
  "'": "'",
  '"': '"',
  "0": "\0",
};

/** Split `src` into segments, applying whitespace control. */
export function segment(src: string): Segment[] {
  const out: Segment[] = [];
  let i = 0;
  let trimNext = false; // `-}}` / `-%}` before, or trim_blocks after `%}`
  while (i < src.length) {
    const open = src.indexOf("{", i);
    let j = open;
    while (j >= 0 && !"{%#".includes(src[j + 1] ?? "")) j = src.indexOf("{", j + 1);
    const atLineStart = i === 0 || src[i - 1] === "\n";
    let text = j < 0 ? src.slice(i) : src.slice(i, j);
    if (trimNext === true) text = text.replace(/^\s+/, "");
    trimNext = false;
    if (j < 0) {
      if (text) out.push({ kind: "text", value: text });
      break;
    }
    const kind = src[j + 1];
    const close = kind === "{" ? "}}" : kind === "%" ? "%}" : "#}";
    const end = src.indexOf(close, j + 2);
    if (end < 0) {
      throw new ChatTemplateError(
        "template_syntax",
        `Cannot parse chat template: unclosed tag at offset ${j}`,
      );
    }
    let inner = src.slice(j + 2, end);
    const lstrip = inner.startsWith("-");
    const rstrip = inner.endsWith("-");
    if (lstrip) {
      text = text.replace(/\s+$/, "");
      inner = inner.slice(1);
    } else if (kind !== "{" && !inner.startsWith("+")) {
      // lstrip_blocks: spaces and tabs from the start of the line up to a block tag
      if (text.includes("\n")) text = text.replace(/\n[ \t]+$/, "\n");
      else if (atLineStart) text = text.replace(/^[ \t]+$/, "");
    }
    if (rstrip) inner = inner.slice(0, -1);
    if (inner.startsWith("+")) inner = inner.slice(1);
    if (text) out.push({ kind: "text", value: text });
    i = end + 2;
    if (rstrip) trimNext = true;
    else if (kind !== "{" && src[i] === "\n") i++; // trim_blocks
    else if (kind !== "{" && src.startsWith("\r\n", i)) i += 2;
    if (kind === "#") continue;
    const tokens = lex(inner, j + 2);
    out.push(kind === "{" ? { kind: "output", tokens, at: j } : { kind: "stmt", tokens, at: j });
  }
  return out;
}

function lex(s: string, base: number): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const at = base + i;
    if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(i))!;
      out.push({ type: "name", value: m[0], at });
      i += m[0].length;
    } else if (/[0-9]/.test(c)) {
      const m = /^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(s.slice(i))!;
      out.push({ type: "number", value: m[0], at });
      i += m[0].length;
    } else if (c === "'" || c === '"') {
      let v = "";
      let k = i + 1;
      for (; k < s.length && s[k] !== c; k++) {
        if (s[k] === "\\" && k + 1 < s.length) {
          const e = s[++k];
          if (e === "u" && /^[0-9a-fA-F]{4}$/.test(s.slice(k + 1, k + 5))) {
            v += String.fromCharCode(parseInt(s.slice(k + 1, k + 5), 16));
            k += 4;
          } else v += ESC[e] ?? "\\" + e;
        } else v += s[k];
      }
      if (k >= s.length) {
        throw new ChatTemplateError(
          "template_syntax",
          `Cannot parse chat template: unterminated string at offset ${at}`,
        );
      }
      out.push({ type: "string", value: v, at });
      i = k + 1;
    } else {
      const op = OPS.find((o) => s.startsWith(o, i));
      if (!op) {
        throw new ChatTemplateError(
          "template_syntax",
          `Cannot parse chat template: unexpected '${c}' at offset ${at}`,
        );
      }
      out.push({ type: "op", value: op, at });
      i += op.length;
    }
  }
  return out;
}
