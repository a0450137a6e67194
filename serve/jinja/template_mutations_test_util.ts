/**
 * Mutants of real chat templates for the template-bounds campaigns (the
 * CI-sized one in `template_fuzz_test.ts`, the larger one in
 * `tools/fuzz/templates.ts`): hostile fragments (loops around existing
 * code, size blow-ups of one operation, filters inside loops, deep
 * nesting) inserted at tag boundaries, plus span deletions, duplications
 * and stray tokens that mostly break parsing. Deterministic per seed.
 *
 * @module
 */

import { LLAMA2, MIXTRAL, OLMOE, QWEN2, QWEN3 } from "../templates_test_util.ts";

/** Seeded PRNG (mulberry32). */
export class Prng {
  #s: number;
  /** @param seed any integer */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** One of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** A size, log-uniform in [1, max]. */
  size(max: number): number {
    return Math.max(1, Math.round(Math.exp(this.next() * Math.log(max))));
  }
}

/** The real templates the mutants start from. */
export const BASE_TEMPLATES: Readonly<Record<string, string>> = {
  mixtral: MIXTRAL,
  qwen2: QWEN2,
  olmoe: OLMOE,
  llama2: LLAMA2,
  qwen3: QWEN3,
  plain: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ",
};

/** Hostile fragments; `n` is a random size. */
const FRAGMENTS: ((r: Prng) => string)[] = [
  (r) => `{% set __s = 'x' * ${r.size(1 << 21)} %}{{ __s|upper|length }}`,
  (r) =>
    `{% set __s = 'ab' * ${r.size(1 << 19)} %}{{ __s|replace('a', '${
      "z".repeat(r.size(4096))
    }')|length }}`,
  (r) => `{{ ('q' * ${r.size(1 << 20)}).replace('', '${"w".repeat(r.size(64))}')|length }}`,
  (r) => `{{ messages|tojson(indent=${r.size(1 << 28)})|length }}`,
  (r) => `{{ messages|string|indent(${r.size(1 << 30)})|length }}`,
  (r) => `{{ messages|map(attribute='content')|join('${"-".repeat(r.size(1 << 12))}')|length }}`,
  (r) =>
    `{% set __ns = namespace(l=[]) %}{% for __i in range(${
      r.size(100000)
    }) %}{% set __ns.l = __ns.l + [messages|tojson] %}{% endfor %}{{ __ns.l|length }}`,
  (r) =>
    `{% set __ns = namespace(s='y') %}{% for __i in range(${
      r.size(80)
    }) %}{% set __ns.s = __ns.s ~ __ns.s %}{% endfor %}{{ __ns.s|length }}`,
  (r) =>
    `{% for __i in range(${
      r.size(100000)
    }) %}{% set __u = messages|selectattr('role', 'equalto', 'user')|list %}{% endfor %}`,
  (r) =>
    `{% set __ns = namespace(l=[]) %}{% for __i in range(${
      r.size(30000)
    }) %}{% set __ns.l = __ns.l + [__i] %}{% endfor %}{{ __ns.l|unique|length }}`,
  (r) => `{{ range(${r.size(100000)})|list|string|length }}`,
  (r) => `{{ (messages|tojson * ${r.size(100000)})|length }}`,
  (r) =>
    `{% for __i in range(${r.size(100000)}) %}{% for __j in range(${
      r.size(100000)
    }) %}{% endfor %}{% endfor %}`,
  (r) => `{{ ${"[".repeat(r.size(3000))}1${"]".repeat(r.size(3000))} }}`,
  (r) => `{{ ${"(".repeat(r.size(3000))}1${")".repeat(r.size(3000))} }}`,
  (r) =>
    `{% for __i in range(${r.size(100000)}) %}{{ ('p' * ${
      r.size(1 << 16)
    }).split('p')|length }}{% endfor %}`,
  (r) =>
    `{{ ('a b c ' * ${r.size(1 << 18)}).split()|length }}{{ ('x' * ${
      r.size(1 << 20)
    }).count('') }}`,
  (r) => `{{ ('k' * ${r.size(1 << 20)}).strip('${"k".repeat(r.size(1 << 16))}')|length }}`,
  (r) => `{{ ('%' * ${r.size(1 << 20)}) in ('%' * ${r.size(1 << 20)}) }}`,
  (r) => `{% if messages|length > 1 %}{{ raise_exception('no ' ~ ${r.size(100)}) }}{% endif %}`,
  (r) =>
    `{% macro __m(n) %}{% if n < ${r.size(40)} %}{% for __i in range(${
      r.size(50)
    }) %}{{ __m(n + 1) }}{% endfor %}{% endif %}{% endmacro %}{{ __m(0) }}`,
  (r) => `{% macro __m() %}{{ __m() }}${"x".repeat(r.size(100))}{% endmacro %}{{ __m() }}`,
  (r) =>
    `{% macro __w() %}{% for __i in range(${
      r.size(100000)
    }) %}{{ caller() }}{% endfor %}{% endmacro %}{% call __w() %}{{ messages|tojson }}{% endcall %}`,
  (r) =>
    `{% set __c %}{% for __i in range(${
      r.size(100000)
    }) %}{{ messages|tojson }}{% endfor %}{% endset %}{{ __c|length }}`,
  (r) =>
    `{% filter upper %}{% for m in messages %}{{ m.content * ${
      r.size(1000)
    } }}{% endfor %}{% endfilter %}`,
  (r) =>
    `{% for __i in range(${r.size(100000)}) %}{% if __i > ${
      r.size(100000)
    } %}{% break %}{% endif %}{{ '%s' % __i }}{% endfor %}`,
  (r) => `{{ strftime_now('${"%Y".repeat(r.size(1 << 16))}')|length }}`,
  (r) => `{{ messages[${r.size(1000)}:${r.size(1 << 30)}:${r.size(5)}]|length }}`,
];

const TOKENS = [
  "{%",
  "%}",
  "{{",
  "}}",
  "(",
  ")",
  "[",
  "]",
  "|",
  "~",
  "*",
  "+",
  "'",
  '"',
  "endfor",
  "for",
  "if",
  "endif",
  "not",
  "in",
  "-",
  "{%-",
  "-%}",
  "loop",
  "namespace(",
  "range(",
  " * 99999",
];

/** Offsets just before a tag, plus the end. */
function boundaries(src: string): number[] {
  const out: number[] = [];
  for (let i = src.indexOf("{"); i >= 0; i = src.indexOf("{", i + 1)) {
    if (src[i + 1] === "%" || src[i + 1] === "{") out.push(i);
  }
  out.push(src.length);
  return out;
}

/** One mutation of `src`. */
export function mutateOnce(src: string, r: Prng): string {
  const b = boundaries(src);
  switch (r.int(6)) {
    case 0:
    case 1: {
      // a hostile fragment at a tag boundary
      const at = r.pick(b);
      return src.slice(0, at) + r.pick(FRAGMENTS)(r) + src.slice(at);
    }
    case 2: {
      // a loop around the code between two tag boundaries (e.g. the message loop)
      let i = r.pick(b), j = r.pick(b);
      if (i > j) [i, j] = [j, i];
      return src.slice(0, i) + `{% for __k in range(${r.size(100000)}) %}` + src.slice(i, j) +
        "{% endfor %}" + src.slice(j);
    }
    case 3: {
      // delete a span
      const i = r.int(src.length + 1), n = r.size(Math.max(1, src.length >> 2));
      return src.slice(0, i) + src.slice(i + n);
    }
    case 4: {
      // duplicate a span
      const i = r.int(src.length + 1), n = r.size(Math.max(1, src.length >> 1));
      return src.slice(0, i + n) + src.slice(i, i + n) + src.slice(i + n);
    }
    default: {
      // a stray token
      const at = r.int(src.length + 1);
      return src.slice(0, at) + r.pick(TOKENS) + src.slice(at);
    }
  }
}

/** A mutant: a base template with 1–4 mutations, and a conversation to render it with. */
export interface Mutant {
  /** Which base template. */
  base: string;
  /** The mutated source. */
  source: string;
  /** Template globals (messages, BOS/EOS, generation prompt). */
  vars: Record<string, unknown>;
}

/** The mutant of `seed`. */
export function mutant(seed: number): Mutant {
  const r = new Prng(seed);
  const names = Object.keys(BASE_TEMPLATES);
  const base = r.pick(names);
  let source = BASE_TEMPLATES[base];
  const n = 1 + r.int(4);
  for (let i = 0; i < n; i++) source = mutateOnce(source, r);
  const roles = ["system", "user", "assistant", "user", "assistant", "tool"];
  const messages = Array.from({ length: 1 + r.int(8) }, (_, i) => ({
    role: i === 0 ? r.pick(["system", "user"]) : roles[1 + ((i + 1) % 2)],
    content: r.pick(["hi", "<think>x</think>ok", "a\nb\n", "q".repeat(r.size(1 << 16))]),
  }));
  if (r.int(5) === 0) messages.push({ role: r.pick(roles), content: "" });
  return {
    base,
    source,
    vars: {
      messages,
      add_generation_prompt: r.int(4) !== 0,
      bos_token: "<s>",
      eos_token: "</s>",
      enable_thinking: r.int(2) === 0,
    },
  };
}
