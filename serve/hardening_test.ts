/**
 * Denial-of-service hardening of the server: chat templates from the model
 * file that misbehave only on multi-message chats (CPU, memory, filters
 * inside loops) are bounded per request and answered with 422 while
 * `/healthz` keeps answering; a render stuck past its deadline has its
 * worker terminated; huge prompts are refused before tokenizing.
 */

import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { createRuntime } from "./mod.ts";
import { ChatTemplate, ChatTemplateError } from "./chat_template.ts";
import { ServeError } from "./errors.ts";
import { BudgetError } from "./jinja/budget.ts";
import { TemplateSandbox } from "./jinja/sandbox.ts";
import {
  expectError,
  post,
  serve,
  smallModelBytes,
  tinyRuntime,
  withMetadata,
} from "./serve_test_util.ts";

const CHAT = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ";
const MULTI = (ifMulti: string): string =>
  `{% if messages|length > 1 %}${ifMulti}{% endif %}${CHAT}`;

/** The two reproducers of the hardening issue (template_cpu_bomb.gguf, template_mem_bomb.gguf). */
const CPU_BOMB = MULTI(
  "{% for i in range(30000) %}{% set y = ('x' * 1048576).upper() %}{% endfor %}",
);
const MEM_BOMB = "{% set ns = namespace(l=[]) %}" +
  MULTI("{% for i in range(1200) %}{% set ns.l = ns.l + [('x' * 1048576).upper()] %}{% endfor %}");

/** The class: work per iteration, filters inside loops, size blow-ups of one operation. */
const BOMBS: Record<string, string> = {
  cpu: CPU_BOMB,
  mem: MEM_BOMB,
  "filters in a loop": MULTI(
    "{% for i in range(100000) %}{% set y = (messages|map(attribute='content')|join('-')) * 10000 %}{% set z = y|replace('a', 'bb')|upper %}{% endfor %}",
  ),
  "doubling concatenation": MULTI(
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
  ),
  "replace blow-up": MULTI("{{ ('x' * 1048576)|replace('x', 'y' * 1000) }}"),
  "empty-pattern replace": MULTI("{{ ('x' * 1048576).replace('', 'yyyyyyyy') }}"),
  "indent width": MULTI("{{ 'a\nb'|indent(1000000000) }}"),
  "tojson indent": MULTI("{{ messages|tojson(indent=100000000) }}"),
  "quadratic unique": MULTI(
    "{% set ns = namespace(l=[]) %}{% for i in range(20000) %}{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l|unique|length }}",
  ),
  "nested loops": MULTI(
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
  ),
  "split in a loop": MULTI(
    "{% for i in range(100000) %}{% set p = ('a b ' * 100000).split(' ') %}{% endfor %}",
  ),
  "macro fan-out": MULTI(
    "{% macro b(n) %}{% if n < 20 %}{% for i in range(10) %}{{ b(n + 1) }}{% endfor %}{% endif %}{% endmacro %}{{ b(0) }}",
  ),
  "caller in a loop": MULTI(
    "{% macro w() %}{% for i in range(100000) %}{{ caller() }}{% endfor %}{% endmacro %}{% call w() %}{{ messages|tojson }}{% endcall %}",
  ),
  "repr of a big list": MULTI(
    "{% set big = 'x' * 1048576 %}{% set ns = namespace(l=[]) %}{% for i in range(400) %}{% set ns.l = ns.l + [big] %}{% endfor %}{{ ns.l|string|length }}",
  ),
};

const SPECIAL = { bos: "<s>", eos: "</s>", addBos: true };
const THREE = [
  { role: "user", content: "hi" },
  { role: "assistant", content: "hello" },
  { role: "user", content: "again" },
];

/** Spawn the worker once, so that the first timed render does not include loading (and, under `deno test`, type-checking) its module. */
async function warmWorker(): Promise<void> {
  const sb = new TemplateSandbox();
  assert.equal(await sb.render("{{ 1 }}", {}), "1");
  sb.close();
}

Deno.test("template bombs pass start-up, then each multi-message render is bounded: 422 template_limit", async () => {
  await warmWorker();
  const times: string[] = [];
  for (const [name, src] of Object.entries(BOMBS)) {
    const t = new ChatTemplate("llama", src, SPECIAL);
    assert.equal(t.kind, "gguf", `${name}: the single-message smoke render passes`);
    const t0 = performance.now();
    await assert.rejects(
      t.renderAsync(THREE),
      (e) => e instanceof ServeError && e.code === "template_limit" && e.param === "messages",
      name,
    );
    const ms = performance.now() - t0;
    assert.ok(ms < 3000, `${name}: rendering took ${ms.toFixed(0)} ms`);
    times.push(`${name} ${ms.toFixed(0)} ms`);
    // the synchronous path has the same bounds
    assert.throws(
      () => t.render(THREE),
      (e) => e instanceof ServeError && e.code === "template_limit",
      name,
    );
    t.close();
  }
  console.log(times.join(", "));
});

Deno.test("a legitimate big conversation still renders (the bounds are not too tight)", async () => {
  const src = MULTI("") + "{{ messages|tojson|length }}";
  const t = new ChatTemplate("llama", src, SPECIAL);
  const big = Array.from({ length: 2000 }, (_, i) => ({
    role: i % 2 ? "assistant" : "user",
    content: "lorem ipsum dolor sit amet ".repeat(20),
  }));
  const r = await t.renderAsync(big);
  assert.ok(r.text.length > 2000 * 540, `rendered ${r.text.length} characters`);
  t.close();
});

async function bombServer(template: string, extra: Parameters<typeof serve>[1] = {}) {
  const bytes = await withMetadata(smallModelBytes(), { "tokenizer.chat_template": template });
  const rt = createRuntime(await loadModel(bytes, { backend: "ref" }), { name: "tiny" });
  return serve(rt, extra);
}

/** Fire `n` chat requests while polling /healthz every 20 ms; returns statuses and the slowest health answer. */
async function underFire(
  url: string,
  n: number,
  body: unknown,
  path = "/v1/chat/completions",
): Promise<
  { statuses: number[]; codes: (string | null)[]; slowestHealthMs: number; polls: number }
> {
  let slowest = 0;
  let polls = 0;
  let done = false;
  const poller = (async () => {
    while (!done) {
      const t0 = performance.now();
      const r = await fetch(`${url}/healthz`);
      assert.equal(r.status, 200);
      await r.body?.cancel();
      slowest = Math.max(slowest, performance.now() - t0);
      polls++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const results = await Promise.all(
    Array.from({ length: n }, async () => {
      const r = await fetch(`${url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const j = await r.json();
      return [r.status, j.error?.code ?? null] as const;
    }),
  );
  // keep polling a little after the last answer so that the poller saw the whole episode
  await new Promise((r) => setTimeout(r, 60));
  done = true;
  await poller;
  return {
    statuses: results.map((r) => r[0]),
    codes: results.map((r) => r[1]),
    slowestHealthMs: slowest,
    polls,
  };
}

for (const [name, template] of [["cpu", CPU_BOMB], ["mem", MEM_BOMB]] as const) {
  Deno.test(`server with the ${name}-bomb template: 422 per request, /healthz answers in < 1 s, other routes keep working`, async () => {
    const srv = await bombServer(template);
    const rss0 = Deno.memoryUsage().rss;
    try {
      const r = await underFire(srv.url, 4, { messages: THREE, max_tokens: 2 });
      assert.deepEqual(r.statuses, [422, 422, 422, 422]);
      assert.deepEqual(r.codes, Array(4).fill("template_limit"));
      assert.ok(r.polls >= 2, `polled ${r.polls} times`);
      assert.ok(r.slowestHealthMs < 1000, `slowest /healthz: ${r.slowestHealthMs.toFixed(0)} ms`);
      const growth = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
      assert.ok(growth < 400, `RSS grew by ${growth.toFixed(0)} MiB`);
      // a single-message chat and a completion still work
      const ok = await fetch(`${srv.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: THREE.slice(0, 1), max_tokens: 2 }),
      });
      assert.equal(ok.status, 200, await ok.clone().text());
      await ok.body?.cancel();
    } finally {
      await srv.close();
    }
  });
}

Deno.test("a render stuck past its deadline has its worker terminated; the next render gets a fresh one", async () => {
  const sb = new TemplateSandbox({
    // the in-worker budget would never stop this render: only the deadline does
    limits: { maxMs: 600_000, maxSteps: 1e15, maxAllocated: 1e15, maxIterations: 1e15 },
    deadlineMs: 300,
  });
  let maxGap = 0;
  let last = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
  }, 10);
  try {
    const t0 = performance.now();
    await assert.rejects(
      sb.render(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        {},
      ),
      (e) => e instanceof BudgetError && e.kind === "time" && /stopped/.test(e.message),
    );
    const ms = performance.now() - t0;
    assert.ok(ms >= 250 && ms < 3000, `stopped after ${ms.toFixed(0)} ms`);
    assert.equal(sb.killed, 1);
    assert.equal(await sb.render("{{ a }}-{{ b }}", { a: 1, b: "two" }), "1-two");
    assert.equal(sb.spawned, 2);
    assert.equal(sb.pending, 0);
    assert.ok(maxGap < 250, `the main thread stalled for ${maxGap.toFixed(0)} ms`);
  } finally {
    clearInterval(tick);
    sb.close();
  }
});

Deno.test("the sandbox runs jobs in order, drops aborted waiters and refuses a full queue", async () => {
  const sb = new TemplateSandbox({ maxPending: 2 });
  try {
    const ctl = new AbortController();
    const a = sb.render("{{ 'a' * 3 }}", {});
    const b = sb.render("b", {}, ctl.signal);
    await assert.rejects(
      sb.render("c", {}),
      (e) => e instanceof ChatTemplateError && e.code === "template_busy",
    );
    ctl.abort(new Error("gone"));
    await assert.rejects(b, /gone/);
    assert.equal(await a, "aaa");
    assert.equal(await sb.render("{{ 1 + 1 }}", {}), "2");
  } finally {
    sb.close();
  }
});

Deno.test("huge prompts are refused before tokenizing, and concurrent ones do not stall /healthz", async () => {
  const rt = await tinyRuntime();
  const srv = serve(rt);
  try {
    const huge = "lorem ipsum ".repeat(87_000); // ~1 MiB
    const t0 = performance.now();
    const body = await expectError(
      await post(srv.app, "/v1/completions", { prompt: huge }),
      400,
      "prompt_too_long",
      "prompt",
    );
    assert.match(body.error.message, /at least \d+ tokens/);
    assert.ok(performance.now() - t0 < 500);
    const r = await underFire(srv.url, 8, { prompt: huge, max_tokens: 1 }, "/v1/completions");
    assert.deepEqual(r.statuses, Array(8).fill(400));
    assert.ok(r.slowestHealthMs < 1000, `slowest /healthz: ${r.slowestHealthMs.toFixed(0)} ms`);
    // the bound is sound: a prompt right at the limit is tokenized, not refused by the estimate
    const atLimit = "a".repeat(rt.nCtx - 8);
    assert.ok(rt.minTokens(atLimit) <= rt.encode(atLimit).length);
    assert.ok(rt.maxTokenChars >= 2);
  } finally {
    await srv.close();
  }
});

Deno.test("maxTokenChars bounds the tokens of any text from below (property over random texts)", async () => {
  const rt = await tinyRuntime();
  const alphabet = ["a", "b", " ", "\n", "é", "😀", "<s>", "</s>", "the", "  ", "\u0000", "ab"];
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  for (let i = 0; i < 300; i++) {
    let s = "";
    const len = rnd(300);
    for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    assert.ok(rt.minTokens(s) <= rt.encode(s, false).length, JSON.stringify(s.slice(0, 80)));
  }
  rt.close();
});

Deno.test("without Workers (some hosts lack them) heavy renders run in-process under the same bounds", async () => {
  const RealWorker = globalThis.Worker;
  // deno-lint-ignore no-explicit-any
  (globalThis as any).Worker = class {
    constructor() {
      throw new TypeError("Worker is not supported here");
    }
  };
  try {
    const t = new ChatTemplate("llama", CPU_BOMB, SPECIAL);
    await assert.rejects(
      t.renderAsync(THREE),
      (e) => e instanceof ServeError && e.code === "template_limit",
    );
    assert.ok(t.usesWorker);
    // a heavy but legitimate render still completes
    const heavy = new ChatTemplate(
      "llama",
      "{% for i in range(100000) %}{{ i % 10 }}{% endfor %}" + CHAT,
      SPECIAL,
    );
    const r = await heavy.renderAsync(THREE);
    assert.ok(heavy.usesWorker, "over the inline bounds");
    assert.ok(r.text.startsWith("0123456789"));
    assert.ok(r.text.endsWith("[assistant] "));
  } finally {
    globalThis.Worker = RealWorker;
  }
});
