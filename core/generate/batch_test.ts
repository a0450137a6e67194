/**
 * The continuous-batching scheduler against `generate` alone: per-sequence sampling options,
 * seeds and stops, sequences joining and leaving, chunked prefill, cancellation, bounds.
 */

import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { GenerationError } from "../errors.ts";
import { defaultModelBytes } from "../model/default_model.ts";
import { loadModel, type Model } from "../model/model.ts";
import "../../wasm/register.ts";
import { BatchScheduler, type SequenceRequest, type StepInfo } from "./batch.ts";
import { type GenerateResult, generateText } from "./generate.ts";

const models: Record<string, Model> = {
  ref: await loadModel(defaultModelBytes(), { backend: "ref" }),
  wasm: await loadModel(defaultModelBytes(), { backend: "wasm" }),
};

const PROMPTS = [
  "The little fox",
  "Once upon a time",
  "A cat",
  "The sun was hot and the bird sang in the tall tree by the river",
  "Tom",
];

const reqArb = fc.record({
  prompt: fc.constantFrom(...PROMPTS),
  maxTokens: fc.integer({ min: 0, max: 10 }),
  temperature: fc.constantFrom(0, 0.7, 1.2),
  topK: fc.constantFrom(0, 5),
  seed: fc.integer({ min: 0, max: 1000 }),
  stop: fc.constantFrom([], ["."], ["was"], [" the"]),
  repetitionPenalty: fc.constantFrom(1, 1.3),
  delay: fc.integer({ min: 0, max: 3 }),
});

type Req = typeof reqArb extends fc.Arbitrary<infer T> ? T : never;

function seqReq(m: Model, r: Req): SequenceRequest {
  return {
    prompt: m.tokenizer.encode(r.prompt, { addBos: true }),
    maxTokens: r.maxTokens,
    temperature: r.temperature,
    topK: r.topK,
    seed: r.seed,
    stop: r.stop,
    repetitionPenalty: r.repetitionPenalty,
  };
}

/** Drain a sequence, concatenating its step texts. */
async function drain(
  steps: AsyncGenerator<{ text: string }, GenerateResult, void>,
): Promise<{ res: GenerateResult; streamed: string }> {
  let streamed = "";
  for (;;) {
    const r = await steps.next();
    if (r.done) return { res: r.value, streamed };
    streamed += r.value.text;
  }
}

for (const [name, m] of Object.entries(models)) {
  Deno.test(`batch (${name}): every sequence gets the tokens and text of generate alone`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(reqArb, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 8 }),
        async (reqs, chunk) => {
          const sched = new BatchScheduler(m, {
            maxSequences: 6,
            prefillChunk: chunk,
            prefillBurst: 2 * chunk,
          });
          // sequences join after `delay` steps of the scheduler
          const runs = reqs.map(async (r) => {
            while (sched.stepCount < r.delay && sched.active > 0) {
              await new Promise((res) => setTimeout(res, 0));
            }
            const seq = sched.submit(seqReq(m, r));
            const out = await drain(seq.steps);
            await seq.finished;
            return out;
          });
          const got = await Promise.all(runs);
          for (let i = 0; i < reqs.length; i++) {
            const r = seqReq(m, reqs[i]);
            const want = await generateText(m, r.prompt, r);
            assert.deepEqual(got[i].res.tokens, want.tokens, `sequence ${i}`);
            assert.equal(got[i].res.text, want.text);
            assert.equal(got[i].streamed, want.text);
            assert.equal(got[i].res.finishReason, want.finishReason);
          }
          assert.equal(sched.active, 0);
        },
      ),
      { numRuns: name === "ref" ? 12 : 8, seed: 7 },
    );
  });
}

const m = models.wasm;

Deno.test("batch: decoding sequences advance every step; a long prompt is prefilled in chunks", async () => {
  const infos: StepInfo[] = [];
  const sched = new BatchScheduler(m, {
    maxSequences: 4,
    prefillChunk: 4,
    onStep: (i) => infos.push(i),
  });
  const short = m.tokenizer.encode("The little fox", { addBos: true });
  const long = m.tokenizer.encode(PROMPTS[3].repeat(3), { addBos: true });
  assert.ok(long.length > 40);
  const a = sched.submit({ prompt: short, maxTokens: 30, ignoreEos: true, temperature: 0 });
  const it = a.steps;
  // a decodes alone for a few steps
  for (let i = 0; i < 3; i++) assert.equal((await it.next()).done, false);
  const before = infos.length;
  const b = sched.submit({ prompt: long, maxTokens: 4, temperature: 0 });
  const bDone = drain(b.steps);
  const aDone = drain(it);
  const [ra, rb] = await Promise.all([aDone, bDone]);
  const during = infos.slice(before);
  // while b's prompt is prefilled (≥ 10 steps of ≤ 4 tokens), a decodes at every one of them
  const prefillSteps = during.filter((s) => s.prefillRows > 0);
  assert.ok(prefillSteps.length >= Math.ceil(long.length / 4) - 1, `${prefillSteps.length} steps`);
  for (const s of prefillSteps) {
    assert.ok(s.prefillRows <= 4);
    assert.equal(s.decodeRows, 1);
  }
  const wantA = await generateText(m, short, { maxTokens: 30, ignoreEos: true, temperature: 0 });
  const wantB = await generateText(m, long, { maxTokens: 4, temperature: 0 });
  assert.deepEqual(ra.res.tokens, wantA.tokens);
  assert.deepEqual(rb.res.tokens, wantB.tokens);
});

Deno.test("batch: fairness — with k decoding sequences every step has k decode rows", async () => {
  const infos: StepInfo[] = [];
  const sched = new BatchScheduler(m, {
    maxSequences: 3,
    prefillChunk: 64,
    onStep: (i) => infos.push(i),
  });
  const seqs = PROMPTS.slice(0, 3).map((p) =>
    sched.submit({
      prompt: m.tokenizer.encode(p, { addBos: true }),
      maxTokens: 12,
      ignoreEos: true,
    })
  );
  const res = await Promise.all(seqs.map((s) => drain(s.steps)));
  for (const r of res) assert.equal(r.res.tokens.length, 12);
  // one prefill step for all three, then 11 steps each with all three decoding
  assert.equal(infos[0].prefillRows > 0, true);
  const decode = infos.filter((i) => i.prefillRows === 0);
  assert.equal(decode.length, 11);
  for (const i of decode) assert.equal(i.decodeRows, 3);
});

Deno.test("batch: cancel and abort free the slot at the next step; the others are unaffected", async () => {
  const infos: StepInfo[] = [];
  const sched = new BatchScheduler(m, { maxSequences: 3, onStep: (i) => infos.push(i) });
  const p = m.tokenizer.encode("Once upon a time", { addBos: true });
  const ac = new AbortController();
  const keep = sched.submit({
    prompt: p,
    maxTokens: 20,
    ignoreEos: true,
    seed: 3,
    temperature: 0.8,
  });
  const gone = sched.submit({ prompt: p, maxTokens: 100, ignoreEos: true });
  const aborted = sched.submit({ prompt: p, maxTokens: 100, ignoreEos: true, signal: ac.signal });
  const keepDone = drain(keep.steps);
  await gone.steps.next();
  await aborted.steps.next();
  const stepAtCancel = sched.stepCount;
  gone.cancel();
  ac.abort();
  await Promise.all([gone.finished, aborted.finished]);
  assert.ok(
    sched.stepCount - stepAtCancel <= 2,
    `left after ${sched.stepCount - stepAtCancel} steps`,
  );
  assert.equal(sched.active, 1);
  const g = await drain(gone.steps);
  assert.equal(g.res.finishReason, "abort");
  const a = await drain(aborted.steps);
  assert.equal(a.res.finishReason, "abort");
  const k = await keepDone;
  const want = await generateText(m, p, {
    maxTokens: 20,
    ignoreEos: true,
    seed: 3,
    temperature: 0.8,
  });
  assert.deepEqual(k.res.tokens, want.tokens);
  // a consumer returning early cancels too
  const early = sched.submit({ prompt: p, maxTokens: 100, ignoreEos: true });
  await early.steps.next();
  await early.steps.return(undefined as unknown as GenerateResult);
  await early.finished;
  assert.equal(sched.active, 0);
});

Deno.test("batch: bad requests and a full batch get typed errors", () => {
  const sched = new BatchScheduler(m, { maxSequences: 1 });
  const code = (c: string) => (e: unknown) => e instanceof GenerationError && e.code === c;
  assert.throws(() => sched.submit({ prompt: [], maxTokens: 1 }), code("empty_prompt"));
  assert.throws(() => sched.submit({ prompt: [1, 99999], maxTokens: 1 }), code("bad_token"));
  assert.throws(() => sched.submit({ prompt: [1, 0.5], maxTokens: 1 }), code("bad_token"));
  assert.throws(() => sched.submit({ prompt: [1], maxTokens: -1 }), code("bad_max_tokens"));
  assert.throws(
    () => sched.submit({ prompt: [1, 2, 3], maxTokens: 1, nCtx: 2 }),
    code("context_full"),
  );
  assert.throws(() => sched.submit({ prompt: [1], maxTokens: 1, nCtx: 0 }), code("bad_context"));
  assert.throws(
    () => sched.submit({ prompt: [1], maxTokens: 1, temperature: -1 }),
    GenerationError,
  );
  assert.throws(() => new BatchScheduler(m, { maxSequences: 0 }), code("bad_batch"));
  assert.throws(() => new BatchScheduler(m, { prefillChunk: 1.5 }), code("bad_batch"));
  assert.throws(
    () => new BatchScheduler(m, { prefillChunk: 8, prefillBurst: 4 }),
    code("bad_batch"),
  );
  const s = sched.submit({ prompt: [1], maxTokens: 1 });
  assert.throws(() => sched.submit({ prompt: [1], maxTokens: 1 }), code("batch_full"));
  s.cancel();
  return s.finished;
});

Deno.test("batch: a sequence hitting its context ends with 'length' like generate", async () => {
  const sched = new BatchScheduler(m, { maxSequences: 2 });
  const p = m.tokenizer.encode("The little fox", { addBos: true });
  const a = sched.submit({ prompt: p, maxTokens: 50, nCtx: p.length + 3, ignoreEos: true });
  const b = sched.submit({ prompt: p, maxTokens: 5, ignoreEos: true });
  const [ra, rb] = await Promise.all([drain(a.steps), drain(b.steps)]);
  const want = await generateText(m, p, { maxTokens: 50, nCtx: p.length + 3, ignoreEos: true });
  assert.deepEqual(ra.res.tokens, want.tokens);
  assert.equal(ra.res.finishReason, "length");
  assert.equal(rb.res.tokens.length, 5);
});

Deno.test("batch: a context beyond the model's memory plan is refused like Session's", () => {
  const plan = m.memoryPlan;
  assert.ok(plan, "the default model has a memory plan");
  const small = Object.create(m, { memoryPlan: { value: { ...plan, ctxLimit: 8 } } }) as Model;
  const sched = new BatchScheduler(small, { maxSequences: 1 });
  assert.throws(
    () => sched.submit({ prompt: [1, 2], maxTokens: 7 }),
    (e) => e instanceof GenerationError && e.code === "context_too_large",
  );
  const ok = sched.submit({ prompt: [1, 2], maxTokens: 6 });
  ok.cancel();
  return ok.finished;
});
