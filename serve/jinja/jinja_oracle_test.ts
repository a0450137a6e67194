/**
 * Differential test of the template engine against @huggingface/jinja (the
 * Jinja implementation transformers.js uses, with transformers' settings):
 * the real models' templates, the features real templates use (macros,
 * call blocks, break/continue, set and filter blocks…), and every mutant of
 * the campaign that both engines render, must give identical text. The
 * oracle is a test-only dependency: it has no resource bounds, so the
 * server keeps its own budgeted engine (docs/serving-security.md).
 */

import assert from "node:assert/strict";
import { Template as Oracle } from "npm:@huggingface/jinja@0.5";
import { Template } from "./render.ts";
import { BASE_TEMPLATES, mutant } from "./template_mutations_test_util.ts";

const BASE = { bos_token: "<s>", eos_token: "</s>", add_generation_prompt: true };
const CONVOS = [
  [{ role: "user", content: "Hi" }],
  [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "<think>hmm</think>Hello!" },
    { role: "user", content: "Bye" },
  ],
  [
    { role: "user", content: "a" },
    { role: "assistant", content: "b" },
    { role: "user", content: "  spaced \n" },
  ],
];

const FEATURES = [
  "{% macro g(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{% for m in messages %}{{ g(m.role) }}|{{ g(m.content, p='Yo') }}{% endfor %}",
  "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% for m in messages %}{% call wrap(m.role) %}{{ m.content }}{% endcall %}{% endfor %}",
  "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{% if loop.index > 3 %}{% break %}{% endif %}{{ m.content }};{% endfor %}",
  "{% set sys %}{% for m in messages if m.role == 'system' %}{{ m.content }}{% endfor %}{% endset %}[{{ sys }}]",
  "{% filter upper %}{% for m in messages %}{{ m.content }}{% endfor %}{% endfilter %}",
  "{%- for m in messages -%}\n  {{- m.role | title }}: {{ m.content | trim }}\n{% endfor -%}\n{%- if add_generation_prompt %}Assistant:{% endif %}",
  "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content|length %}{% endfor %}{{ ns.n }}",
  "{{ messages|map(attribute='role')|join(', ') }} {{ messages|selectattr('role', 'equalto', 'user')|list|length }}",
  "{{ messages|tojson }}",
  "{{ messages[-1].content.strip().split(' ')|tojson }} {{ 'x' if messages|length is even else 'y' }}",
];

function both(src: string, vars: Record<string, unknown>): [string, string] | null {
  let ours: string;
  try {
    ours = new Template(src).render(vars);
  } catch {
    return null;
  }
  let theirs: string;
  try {
    theirs = new Oracle(src).render(vars);
  } catch {
    return null; // outside the oracle's subset (e.g. 'x' * 3), or a refusal both make
  }
  return [ours, theirs];
}

Deno.test("real templates and the features they use render exactly as @huggingface/jinja renders them", () => {
  let compared = 0;
  for (
    const [name, src] of [
      ...Object.entries(BASE_TEMPLATES),
      ...FEATURES.map((f, i) => [`feature ${i}`, f]),
    ]
  ) {
    for (const messages of CONVOS) {
      const r = both(src, { ...BASE, messages });
      // Mixtral and Llama 2 refuse system turns / non-alternating roles (both engines raise)
      if (name !== "mixtral" && name !== "llama2") assert.ok(r, `${name} did not render`);
      if (!r) continue;
      assert.equal(r[0], r[1], `${name} with ${messages.length} messages`);
      compared++;
    }
  }
  assert.ok(compared >= 40, `compared ${compared}`);
});

Deno.test("every campaign mutant both engines render gives the same text", () => {
  let compared = 0;
  for (let seed = 1; seed <= 400; seed++) {
    const m = mutant(seed);
    let ours: string;
    try {
      ours = new Template(m.source).render(m.vars);
    } catch {
      continue;
    }
    if (ours.length > 200_000) continue; // the oracle has no bounds: keep its work small
    const r = both(m.source, m.vars);
    if (!r) continue;
    assert.equal(r[0], r[1], `seed ${seed} (${m.base})`);
    compared++;
  }
  assert.ok(compared >= 40, `compared ${compared}`);
});
