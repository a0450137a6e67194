/**
 * `POST /v1/completions` and `POST /v1/chat/completions`: validate, apply
 * the limits, wait for a slot, generate, and answer as JSON or as an SSE
 * stream. Both endpoints share one path; only the payload shapes differ.
 *
 * @module
 */

import type { Context } from "npm:hono@4";
import type { GenerateResult } from "../core/generate/generate.ts";
import type { ChatTemplate } from "./chat_template.ts";
import { ServeError, toHttpError } from "./errors.ts";
import type { ModelRuntime } from "./runtime.ts";
import { DONE, sseResponse } from "./sse.ts";
import { type CommonParams, parseChatRequest, parseCompletionRequest } from "./validate.ts";

/** Limits applied to generation requests (all resolved). */
export interface GenerationLimits {
  /** Most prompt tokens. */
  maxPromptTokens: number;
  /** Largest `max_tokens` accepted. */
  maxTokensCap: number;
  /** `max_tokens` of a completion request that sends none. */
  defaultCompletionTokens: number;
  /** Milliseconds from admission to the end of a generation. */
  requestTimeoutMs: number;
}

/** What the generation routes need. */
export interface GenerationDeps {
  /** The model runtime. */
  runtime: ModelRuntime;
  /** Chat formatting. */
  template: ChatTemplate;
  /** Limits. */
  limits: GenerationLimits;
  /** Reads the request's JSON body under the body limits. */
  readBody: (req: Request) => Promise<unknown>;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface Head {
  id: string;
  created: number;
  model: string;
  system_fingerprint: string;
}

/** Payload shapes of one endpoint. */
interface Shape {
  prefix: string;
  first(h: Head): unknown | null;
  chunk(h: Head, text: string): unknown;
  last(h: Head, finish: string): unknown;
  usage(h: Head, usage: Usage): unknown;
  full(h: Head, text: string, finish: string, usage: Usage): unknown;
}

const COMPLETION: Shape = {
  prefix: "cmpl-",
  first: () => null,
  chunk: (h, text) => ({
    ...h,
    object: "text_completion",
    choices: [{ text, index: 0, logprobs: null, finish_reason: null }],
  }),
  last: (h, finish) => ({
    ...h,
    object: "text_completion",
    choices: [{ text: "", index: 0, logprobs: null, finish_reason: finish }],
  }),
  usage: (h, usage) => ({ ...h, object: "text_completion", choices: [], usage }),
  full: (h, text, finish, usage) => ({
    ...h,
    object: "text_completion",
    choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
    usage,
  }),
};

const chatChunk = (h: Head, delta: Record<string, unknown>, finish: string | null): unknown => ({
  ...h,
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
});

const CHAT: Shape = {
  prefix: "chatcmpl-",
  first: (h) => chatChunk(h, { role: "assistant", content: "" }, null),
  chunk: (h, text) => chatChunk(h, { content: text }, null),
  last: (h, finish) => chatChunk(h, {}, finish),
  usage: (h, usage) => ({ ...h, object: "chat.completion.chunk", choices: [], usage }),
  full: (h, text, finish, usage) => ({
    ...h,
    object: "chat.completion",
    choices: [{
      index: 0,
      message: { role: "assistant", content: text, refusal: null },
      logprobs: null,
      finish_reason: finish,
    }],
    usage,
  }),
};

/** The base model or `<base>:<adapter>` (a named adapter); anything else is a 404 `model_not_found`. */
function checkModel(deps: GenerationDeps, model: string | null): void {
  deps.runtime.resolveModel(model);
}

/** Handler of `POST /v1/completions`. */
export async function completions(c: Context, deps: GenerationDeps): Promise<Response> {
  const p = parseCompletionRequest(await deps.readBody(c.req.raw));
  checkModel(deps, p.model);
  let ids: number[];
  if (typeof p.prompt === "string") {
    checkPromptSize(deps, p.prompt, "prompt");
    ids = await deps.runtime.encodeQueued(p.prompt, undefined, c.req.raw.signal);
  } else {
    const nVocab = deps.runtime.model.hp.nVocab;
    const i = p.prompt.findIndex((t) => t < 0 || t >= nVocab);
    if (i >= 0) {
      throw new ServeError(
        "invalid_request",
        `Token ${p.prompt[i]} at prompt[${i}] is outside the vocabulary of ${nVocab}`,
        { param: "prompt" },
      );
    }
    ids = p.prompt;
  }
  return await serveGeneration(
    c,
    deps,
    p,
    ids,
    [],
    COMPLETION,
    "prompt",
    deps.limits.defaultCompletionTokens,
  );
}

/** Handler of `POST /v1/chat/completions`. */
export async function chatCompletions(c: Context, deps: GenerationDeps): Promise<Response> {
  const p = parseChatRequest(await deps.readBody(c.req.raw));
  checkModel(deps, p.model);
  const rendered = await deps.template.renderAsync(p.messages, { signal: c.req.raw.signal });
  checkPromptSize(deps, rendered.text, "messages");
  const ids = await deps.runtime.encodeQueued(rendered.text, rendered.addBos, c.req.raw.signal);
  return await serveGeneration(
    c,
    deps,
    p,
    ids,
    [...deps.template.stop],
    CHAT,
    "messages",
    Infinity,
  );
}

/**
 * Refuse a prompt that is certainly over the token limit before tokenizing
 * it: a text of n UTF-16 code units has at least ⌊n / maxTokenChars⌋ tokens.
 */
function checkPromptSize(deps: GenerationDeps, text: string | number, param: string): void {
  const chars = typeof text === "string" ? text.length : text;
  const atLeast = Math.floor(chars / deps.runtime.maxTokenChars);
  if (atLeast > deps.limits.maxPromptTokens) {
    throw new ServeError(
      "prompt_too_long",
      `The prompt has at least ${atLeast} tokens (${chars} characters); the limit is ${deps.limits.maxPromptTokens}`,
      { param },
    );
  }
}

async function serveGeneration(
  c: Context,
  deps: GenerationDeps,
  p: CommonParams,
  ids: number[],
  extraStop: string[],
  shape: Shape,
  promptParam: string,
  defaultTokens: number,
): Promise<Response> {
  const { runtime, limits } = deps;
  const nVocab = runtime.model.hp.nVocab;
  for (const id of p.logitBias.keys()) {
    if (id >= nVocab) {
      throw new ServeError(
        "invalid_request",
        `'logit_bias' names token ${id}, outside the vocabulary of ${nVocab}`,
        { param: "logit_bias" },
      );
    }
  }
  if (ids.length === 0) {
    throw new ServeError("invalid_request", "The prompt has no tokens", { param: promptParam });
  }
  if (ids.length > limits.maxPromptTokens) {
    throw new ServeError(
      "prompt_too_long",
      `The prompt has ${ids.length} tokens; the limit is ${limits.maxPromptTokens}`,
      { param: promptParam },
    );
  }
  const room = runtime.nCtx - ids.length;
  if (p.maxTokens !== null && p.maxTokens > limits.maxTokensCap) {
    throw new ServeError(
      "max_tokens_too_large",
      `max_tokens is ${p.maxTokens}; the limit is ${limits.maxTokensCap}`,
      { param: "max_tokens" },
    );
  }
  const maxTokens = p.maxTokens ?? Math.min(defaultTokens, limits.maxTokensCap, room);
  if (room < 1 || maxTokens > room) {
    throw new ServeError(
      "context_length_exceeded",
      `This model's context is ${runtime.nCtx} tokens; the prompt has ${ids.length} and max_tokens asks for ${maxTokens}`,
      { param: p.maxTokens !== null ? "max_tokens" : promptParam },
    );
  }
  const timer = abortScope(c.req.raw.signal, limits.requestTimeoutMs);
  const signal = timer.signal;
  const timeoutError = (): ServeError =>
    new ServeError(
      "generation_timeout",
      `The generation did not finish within ${limits.requestTimeoutMs} ms`,
    );
  const clientClosed = (): ServeError =>
    new ServeError("client_closed", "The client closed the request");
  const abortError = (): ServeError => (timer.timedOut() ? timeoutError() : clientClosed());
  let gen;
  try {
    gen = await runtime.start({
      prompt: ids,
      maxTokens,
      stop: [...p.stop, ...extraStop],
      temperature: p.temperature,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      frequencyPenalty: p.frequencyPenalty,
      presencePenalty: p.presencePenalty,
      logitBias: p.logitBias,
      seed: p.seed ?? crypto.getRandomValues(new Uint32Array(1))[0],
      ignoreEos: p.ignoreEos,
      signal,
      adapter: runtime.resolveModel(p.model),
    });
  } catch (e) {
    timer.clear();
    throw signal.aborted ? abortError() : e;
  }
  const head: Head = {
    id: shape.prefix + crypto.randomUUID().replaceAll("-", ""),
    created: Math.floor(Date.now() / 1000),
    model: p.model ?? runtime.name,
    system_fingerprint: `moe-edge-${runtime.model.backend.name}`,
  };
  const usage = (r: GenerateResult): Usage => ({
    prompt_tokens: ids.length,
    completion_tokens: r.tokens.length,
    total_tokens: ids.length + r.tokens.length,
  });

  if (!p.stream) {
    let result: GenerateResult;
    try {
      for (;;) {
        const r = await gen.steps.next();
        if (r.done) {
          result = r.value;
          break;
        }
      }
    } catch (e) {
      throw signal.aborted ? abortError() : e;
    } finally {
      timer.clear();
      await gen.close();
    }
    if (result.finishReason === "abort") throw abortError();
    return c.json(shape.full(head, result.text, result.finishReason, usage(result)));
  }

  const g = gen;
  async function* events(): AsyncGenerator<unknown, void, void> {
    try {
      const first = shape.first(head);
      if (first !== null) yield first;
      let result: GenerateResult;
      for (;;) {
        const r = await g.steps.next();
        if (r.done) {
          result = r.value;
          break;
        }
        if (r.value.text) yield shape.chunk(head, r.value.text);
      }
      if (result.finishReason === "abort") {
        if (timer.timedOut()) yield toHttpError(timeoutError()).body;
        return;
      }
      yield shape.last(head, result.finishReason);
      if (p.includeUsage) yield shape.usage(head, usage(result));
      yield DONE;
    } catch (e) {
      if (!signal.aborted || timer.timedOut()) {
        yield toHttpError(signal.aborted ? abortError() : e).body;
      }
    } finally {
      timer.clear();
      await g.close();
    }
  }
  return sseResponse(events(), (reason) => {
    timer.abort(reason);
    timer.clear();
    g.close().catch(() => {});
  });
}

/** Aborts a generation: on client disconnect, on the deadline, or on demand. */
interface AbortScope {
  /** Aborted by any of the three. */
  readonly signal: AbortSignal;
  /** Whether the deadline fired. */
  timedOut(): boolean;
  /** Abort now (stream cancelled). */
  abort(reason?: unknown): void;
  /** Stop the timer and stop listening to the request. Idempotent. */
  clear(): void;
}

/**
 * Links the request's signal and a deadline to one controller. The request
 * listener is removed once the generation ends, because Deno (legacy mode)
 * also aborts `request.signal` after a successful response.
 */
function abortScope(request: AbortSignal, ms: number): AbortScope {
  const ctl = new AbortController();
  let timedOut = false;
  const onGone = (): void => ctl.abort(new DOMException("The client disconnected", "AbortError"));
  request.addEventListener("abort", onGone, { once: true });
  const id = setTimeout(() => {
    timedOut = true;
    ctl.abort(new DOMException(`Timed out after ${ms} ms`, "TimeoutError"));
  }, ms);
  return {
    signal: ctl.signal,
    timedOut: () => timedOut,
    abort: (reason) =>
      ctl.abort(reason ?? new DOMException("The client disconnected", "AbortError")),
    clear: () => {
      clearTimeout(id);
      request.removeEventListener("abort", onGone);
    },
  };
}
