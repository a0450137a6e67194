/**
 * The chat-template sandbox: real models' templates render as
 * transformers renders them, whitespace control works, the sandbox keeps
 * templates away from the host, and unsupported templates fall back.
 */

import assert from "node:assert/strict";
import { ChatTemplate, ChatTemplateError } from "./chat_template.ts";
import { ServeError } from "./errors.ts";
import { BudgetError } from "./jinja/budget.ts";
import { Template } from "./jinja/render.ts";
import { LLAMA2, MIXTRAL, OLMOE, QWEN2, QWEN3 } from "./templates_test_util.ts";

const CONVO = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "<think>hmm</think>Hello!" },
  { role: "user", content: "Bye" },
];

function render(src: string, vars: Record<string, unknown>): string {
  return new Template(src).render({
    bos_token: "<s>",
    eos_token: "</s>",
    add_generation_prompt: true,
    ...vars,
  });
}

Deno.test("real templates render like transformers' apply_chat_template", () => {
  assert.equal(
    render(MIXTRAL, { messages: CONVO.slice(1) }),
    "<s>[INST] Hi [/INST]<think>hmm</think>Hello!</s>[INST] Bye [/INST]",
  );
  assert.equal(
    render(QWEN2, { messages: CONVO.slice(1) }),
    "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
      "<|im_start|>assistant\n<think>hmm</think>Hello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(
    render(OLMOE, { messages: CONVO }),
    "<s><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n<think>hmm</think>Hello!</s>\n<|user|>\nBye\n<|assistant|>\n",
  );
  assert.equal(
    render(LLAMA2, { messages: CONVO }),
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] <think>hmm</think>Hello! </s><s>[INST] Bye [/INST]",
  );
  // Qwen3 drops the reasoning of earlier turns and knows enable_thinking
  assert.equal(
    render(QWEN3, { messages: CONVO }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
      "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.match(
    render(QWEN3, { messages: CONVO.slice(1, 2), enable_thinking: false }),
    /assistant\n<think>\n\n<\/think>\n\n$/,
  );
  assert.throws(
    () => render(MIXTRAL, { messages: CONVO }),
    (e) => e instanceof ChatTemplateError && e.code === "template_raise",
  );
});

Deno.test("jinja subset: whitespace control, trim/lstrip blocks, loops, filters, tests, slices", () => {
  assert.equal(render("a  {{- 'b' -}}  c", {}), "abc");
  assert.equal(render("{% if true %}\n  x\n{% endif %}\ny", {}), "  x\ny");
  assert.equal(render("  {% if true %}x{% endif %}", {}), "x");
  assert.equal(
    render(
      "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{{ ',' if not loop.last }}{% endfor %}",
      {},
    ),
    "3,7",
  );
  assert.equal(
    render("{% for x in xs if x > 1 %}{{ loop.index }}:{{ x }} {% else %}none{% endfor %}", {
      xs: [1, 2, 3],
    }),
    "1:2 2:3 ",
  );
  assert.equal(render("{% for x in [] %}x{% else %}none{% endfor %}", {}), "none");
  assert.equal(
    render("{{ xs[::-1] | join('-') }} {{ xs[1:] | length }} {{ xs[-1] }}", { xs: [1, 2, 3] }),
    "3-2-1 2 3",
  );
  assert.equal(render("{{ ' a b '.strip().split(' ') | tojson }}", {}), '["a", "b"]');
  assert.equal(render("{{ {'k': [1, true, none]} | tojson }}", {}), '{"k": [1, true, null]}');
  assert.equal(
    render(
      "{{ x is defined }} {{ y is not defined }} {{ 'ab' is string }} {{ 4 is divisibleby 2 }}",
      { x: 1 },
    ),
    "True True True True",
  );
  assert.equal(
    render(
      "{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
      {},
    ),
    "6",
  );
  assert.equal(
    render("{% for i in range(2) %}{% set inner = i %}{% endfor %}{{ inner is defined }}", {}),
    "False",
  );
  assert.equal(
    render("{{ 'x' ~ 1 ~ none }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 'ab' * 2 }}", {}),
    "x1None 3 2 abab",
  );
  assert.equal(
    render(
      "{{ m.get('a', 'd') }}{{ m.get('zz', 'd') }}{% for k, v in m.items() %}{{ k }}={{ v }}{% endfor %}",
      { m: { a: 1 } },
    ),
    "1da=1",
  );
  assert.equal(
    render("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join }}", {
      ms: CONVO,
    }),
    "HiBye",
  );
  assert.equal(render("{# comment #}{% generation %}g{% endgeneration %}", {}), "g");
  assert.equal(render("{{ strftime_now('%d %b %Y') }}", {}).length, 11);
});

Deno.test("sandbox: no prototype or host access, hard limits, unsupported syntax is an error", () => {
  assert.equal(
    render("{{ m.constructor }}{{ m['__proto__'] }}{{ ''.__class__ }}", { m: { a: 1 } }),
    "",
  );
  assert.throws(() => render("{{ m.constructor() }}", { m: {} }), ChatTemplateError);
  assert.throws(() => render("{{ 'x'.constructor('alert(1)') }}", {}), ChatTemplateError);
  assert.throws(() => render("{{ ''.toString() }}", {}), ChatTemplateError);
  assert.throws(
    () =>
      new Template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
      ).render({}, { maxIterations: 10_000 }),
    (e) => e instanceof ChatTemplateError && e.code === "template_limit",
  );
  assert.throws(
    () =>
      new Template("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}").render({}, {
        maxOutput: 100_000,
      }),
    (e) => e instanceof ChatTemplateError && e.code === "template_limit",
  );
  for (
    const src of [
      "{% extends 'base' %}",
      "{% include 'x' %}",
      "{{ x ",
      "{% if x %}",
      "{{ 'a' | nope }}",
    ]
  ) {
    assert.throws(() => render(src, { x: 1 }), ChatTemplateError, src);
  }
});

Deno.test("ChatTemplate uses the GGUF template, or the architecture's fallback", () => {
  const special = { bos: "<s>", eos: "</s>", addBos: true };
  const mix = new ChatTemplate("llama", MIXTRAL, special);
  assert.equal(mix.kind, "gguf");
  const r = mix.render([{ role: "user", content: "Hi" }]);
  assert.deepEqual(
    r,
    { text: "<s>[INST] Hi [/INST]", addBos: false },
    "BOS is in the text, not added twice",
  );
  assert.throws(
    () => mix.render([{ role: "user", content: "a" }, { role: "user", content: "b" }]),
    (e) => e instanceof ServeError && e.code === "invalid_request" && e.param === "messages",
  );

  const inst = new ChatTemplate("llama", null, special);
  assert.equal(inst.kind, "inst");
  assert.equal(inst.fallbackReason, "the model has no tokenizer.chat_template");
  assert.equal(
    inst.render(CONVO).text,
    "<s>[INST] Be brief.\n\nHi [/INST]<think>hmm</think>Hello!</s>[INST] Bye [/INST]",
  );

  for (const arch of ["qwen2moe", "qwen3moe", "olmoe"]) {
    const t = new ChatTemplate(arch, "{% include 'unsupported' %}", {
      bos: "",
      eos: "",
      addBos: false,
    });
    assert.equal(t.kind, "chatml", arch);
    assert.match(t.fallbackReason!, /include/);
    assert.deepEqual(t.stop, ["<|im_end|>"]);
    assert.equal(
      t.render(CONVO.slice(1, 2)).text,
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
  }
  // bailingmoe2 (Ling 2.0) falls back to llama.cpp's "bailing2" roles
  const ling = new ChatTemplate("bailingmoe2", null, {
    bos: "",
    eos: "<|endoftext|>",
    addBos: false,
  });
  assert.equal(ling.kind, "bailing2");
  assert.deepEqual(ling.stop, ["<|role_end|>"]);
  assert.equal(
    ling.render(CONVO.slice(1, 2)).text,
    "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi<|role_end|><role>ASSISTANT</role>",
  );
  assert.equal(
    ling.render([{ role: "system", content: "S" }, { role: "user", content: "U" }, {
      role: "assistant",
      content: "A",
    }]).text,
    "<role>SYSTEM</role>S<|role_end|><role>HUMAN</role>U<|role_end|><role>ASSISTANT</role>A<|role_end|>" +
      "<role>ASSISTANT</role>",
  );
  const q = new ChatTemplate("qwen2moe", QWEN2, { bos: "", eos: "<|endoftext|>", addBos: false });
  assert.equal(q.kind, "gguf");
  assert.deepEqual(q.stop, ["<|im_end|>"]);
});

Deno.test("macros, call blocks, break/continue, set and filter blocks, dictsort, format and %", () => {
  assert.equal(
    render(
      "{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('bob') }}|{{ greet('amy', p='Yo') }}|{{ greet(name='cy') }}",
      {},
    ),
    "Hi bob|Yo amy|Hi cy",
  );
  assert.equal(
    render(
      "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}x{{ 1 + 1 }}{% endcall %}",
      {},
    ),
    "<b>x2</b>",
  );
  assert.equal(
    render(
      "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}[{{ x }}]{% endcall %}",
      {},
    ),
    "[1][2]",
  );
  assert.equal(
    render(
      "{% for i in range(9) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
      {},
    ),
    "023",
  );
  assert.equal(render("{% set x %}a{{ 1 }}b{% endset %}[{{ x }}]", {}), "[a1b]");
  assert.equal(render("{% set x | upper %}ab{% endset %}{{ x }}", {}), "AB");
  assert.equal(render("{% filter upper | replace('B', '-') %}abc{% endfilter %}", {}), "A-C");
  assert.equal(
    render("{% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %}", { d: { b: 1, A: 2 } }),
    "A2b1",
  );
  assert.equal(
    render("{{ '%s=%d%%'|format('x', 3.7) }} {{ '%s-%s' % ('a', 'b') }}", {}),
    "x=3% a-b",
  );
  assert.equal(render("{{ [1, 2, 3]|batch(2)|list|tojson }}", {}), "[[1, 2], [3]]");
  // misuse is a typed error, never a crash
  for (
    const src of [
      "{% break %}",
      "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
      "{% macro f() %}{% endmacro %}{{ f(1, 2) }}",
      "{% call nothing() %}x{% endcall %}",
      "{{ '%s %s' % 'a' }}",
      "{% set x %}unclosed",
    ]
  ) {
    assert.throws(() => render(src, {}), ChatTemplateError, src);
  }
});

Deno.test("a recursive macro fan-out is bounded by the render budget", () => {
  for (
    const [src, bound] of [
      // 10^20 calls, never deeper than 20: the step budget stops it
      [
        "{% macro b(n) %}{% if n < 20 %}{% for i in range(10) %}{{ b(n + 1) }}{% endfor %}{% endif %}{% endmacro %}{{ b(0) }}",
        "steps",
      ],
      // unbounded recursion: the depth bound stops it
      ["{% macro b(n) %}{{ b(n) }}{% endmacro %}{{ b(1) }}", "depth"],
    ]
  ) {
    const t0 = performance.now();
    assert.throws(
      () => new Template(src).render({}),
      (e) => e instanceof BudgetError && e.code === "template_limit" && e.kind === bound,
      src,
    );
    assert.ok(performance.now() - t0 < 3000);
  }
});
