/**
 * Validation of OpenAI request bodies into typed parameters. Every problem
 * is a `ServeError` naming the field (`param`), the way OpenAI reports it.
 * Unknown fields are ignored; known fields with the wrong type are refused;
 * every sampling field is honoured (`temperature`, `top_p`,
 * `frequency_penalty`, `presence_penalty`, `logit_bias`, `seed`, and
 * llama.cpp's `top_k`, `min_p`, `repeat_penalty`); features the runtime
 * lacks (n > 1, echo, logprobs, tools, function calls, non-text response
 * formats or modalities, audio, predicted outputs) are refused rather than
 * silently dropped.
 *
 * @module
 */

import { Ajv, type ErrorObject } from "npm:ajv@8";
import type { ChatMessage } from "./chat_template.ts";
import { ServeError } from "./errors.ts";

/** Sampling and stream settings shared by both endpoints. */
export interface CommonParams {
  /** Requested model id, or null when absent. */
  model: string | null;
  /** Requested completion budget, or null to use the server's default. */
  maxTokens: number | null;
  /** Stop strings. */
  stop: string[];
  /** Temperature (default 1, as OpenAI). */
  temperature: number;
  /** Nucleus mass (default 1). */
  topP: number;
  /** llama.cpp's `top_k` (default 0 = off). */
  topK: number;
  /** llama.cpp's `min_p` (default 0 = off). */
  minP: number;
  /** llama.cpp's `repeat_penalty` (default 1 = off). */
  repetitionPenalty: number;
  /** OpenAI's `frequency_penalty` in [-2, 2] (default 0). */
  frequencyPenalty: number;
  /** OpenAI's `presence_penalty` in [-2, 2] (default 0). */
  presencePenalty: number;
  /** OpenAI's `logit_bias`: token id → bias in [-100, 100] (ids checked against the vocabulary later). */
  logitBias: Map<number, number>;
  /** Seed, or null for a random one. */
  seed: number | null;
  /** Stream with SSE. */
  stream: boolean;
  /** Send a final usage chunk when streaming. */
  includeUsage: boolean;
  /** Keep going past end-of-generation tokens (llama.cpp's `ignore_eos` extension). */
  ignoreEos: boolean;
}

/** `POST /v1/completions` parameters. */
export interface CompletionParams extends CommonParams {
  /** Prompt text, or token ids. */
  prompt: string | number[];
}

/** `POST /v1/chat/completions` parameters. */
export interface ChatParams extends CommonParams {
  /** The conversation. */
  messages: ChatMessage[];
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool", "function"]);
const MAX_STOP = 4;
const MAX_LOGIT_BIAS = 1024;

/** A scalar request field: its JSON type and, for numbers, its closed range. */
interface Field {
  type: "number" | "integer" | "boolean" | "string";
  lo?: number;
  hi?: number;
}

const TOKENS = { type: "integer", lo: 1, hi: 1 << 30 } as const;
const UNIT = { type: "number", lo: 0, hi: 1 } as const;
const PENALTY = { type: "number", lo: -2, hi: 2 } as const;
/** The scalar fields. */
const FIELDS: Record<string, Field> = {
  model: { type: "string" },
  max_completion_tokens: TOKENS,
  max_tokens: TOKENS,
  stream: { type: "boolean" },
  seed: { type: "integer", lo: Number.MIN_SAFE_INTEGER, hi: Number.MAX_SAFE_INTEGER },
  ignore_eos: { type: "boolean" },
  temperature: { type: "number", lo: 0, hi: 2 },
  top_p: UNIT,
  top_k: { type: "integer", lo: 0, hi: 1 << 30 },
  min_p: UNIT,
  repeat_penalty: { type: "number", lo: 0, hi: 10 },
  frequency_penalty: PENALTY,
  presence_penalty: PENALTY,
};

/** Fields whose only accepted values are these (features the runtime lacks), and why. */
const REFUSED: Record<string, [accepted: unknown[], why: string]> = {
  n: [[1], "must be 1: this server returns one choice"],
  logprobs: [[false, 0], "is not supported"],
  top_logprobs: [[0], "is not supported"],
};

const schemaOf = (key: string): Record<string, unknown> => {
  const f = FIELDS[key];
  if (f !== undefined) {
    return {
      type: [f.type, "null"],
      ...(f.lo === undefined ? {} : { minimum: f.lo, maximum: f.hi }),
      // repeat_penalty 0 would divide by zero; 1 = off
      ...(key === "repeat_penalty" ? { exclusiveMinimum: 0 } : {}),
    };
  }
  if (key in REFUSED) return { enum: [...REFUSED[key][0], null] };
  if (key === "stop") {
    return { type: ["string", "array", "null"], items: { type: "string" }, maxItems: MAX_STOP };
  }
  if (key === "stream_options") {
    return {
      type: ["object", "null"],
      properties: { include_usage: { type: ["boolean", "null"] } },
    };
  }
  return { // logit_bias
    type: ["object", "null"],
    maxProperties: MAX_LOGIT_BIAS,
    propertyNames: { pattern: "^(0|[1-9][0-9]{0,9})$" },
    additionalProperties: { type: "number", minimum: -100, maximum: 100 },
  };
};

/**
 * JSON Schema of the typed fields both endpoints share (null counts as
 * absent), with properties in the order their errors are reported; Ajv
 * checks it and {@link schemaError} words its first error the way OpenAI
 * does. Endpoint-specific shapes (prompt forms, messages) stay in code below.
 */
function commonSchema(maxTokensKeys: readonly string[]): Record<string, unknown> {
  const keys = [
    "model",
    ...maxTokensKeys,
    "stop",
    "stream",
    "stream_options",
    ...Object.keys(REFUSED),
    "seed",
    "ignore_eos",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
  ];
  return { type: "object", properties: Object.fromEntries(keys.map((k) => [k, schemaOf(k)])) };
}

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
const COMPLETION_KEYS = ["max_tokens"] as const;
const CHAT_KEYS = ["max_completion_tokens", "max_tokens"] as const;
const checkCompletion = ajv.compile(commonSchema(COMPLETION_KEYS));
const checkChat = ajv.compile(commonSchema(CHAT_KEYS));

/** The OpenAI-style error for Ajv's first error `e` on `body`. */
function schemaError(body: Record<string, unknown>, e: ErrorObject): ServeError {
  const [key, sub] = e.instancePath.split("/").slice(1);
  const v = body[key];
  const err = (param: string, message: string): ServeError =>
    new ServeError("invalid_request", message, { param });
  const f = FIELDS[key];
  if (key in REFUSED) return err(key, `'${key}' ${REFUSED[key][1]}`);
  if (f !== undefined) {
    if (e.keyword === "exclusiveMinimum") {
      return err(key, `'${key}' must be greater than 0 (1 = off)`);
    }
    if (e.keyword !== "type") {
      return err(key, `'${key}' must be between ${f.lo} and ${f.hi}: received ${v}`);
    }
    const got = f.type === "integer" ? JSON.stringify(v) : typeName(v);
    return err(
      key,
      `'${key}' must be ${f.type === "integer" ? "an" : "a"} ${f.type}: received ${got}`,
    );
  }
  if (key === "stop") {
    // Ajv checks maxItems before items: a long array of non-strings is a type error first
    return e.keyword === "maxItems" && (v as unknown[]).every((x) => typeof x === "string")
      ? err(key, `'stop' allows at most ${MAX_STOP} sequences: received ${(v as unknown[]).length}`)
      : err(key, `'stop' must be a string or an array of strings: received ${typeName(v)}`);
  }
  if (key === "stream_options") {
    return sub === undefined
      ? err(key, `'stream_options' must be an object: received ${typeName(v)}`)
      : err("stream_options.include_usage", `'stream_options.include_usage' must be a boolean`);
  }
  // logit_bias
  if (e.keyword === "type" && sub === undefined) {
    return err(key, `'logit_bias' must be an object of token id → bias: received ${typeName(v)}`);
  }
  if (e.keyword === "maxProperties") {
    const n = Object.keys(v as object).length;
    return err(key, `'logit_bias' allows at most ${MAX_LOGIT_BIAS} entries: received ${n}`);
  }
  if (e.propertyName !== undefined || e.keyword === "propertyNames") {
    const k = String(e.propertyName ?? e.params.propertyName);
    return err(
      key,
      `'logit_bias' keys must be token ids (non-negative integers): received '${k.slice(0, 40)}'`,
    );
  }
  const b = (v as Record<string, unknown>)[sub];
  return err(
    key,
    `'logit_bias[${sub}]' must be a number between -100 and 100: received ${JSON.stringify(b)}`,
  );
}

function bad(param: string, message: string): never {
  throw new ServeError("invalid_request", message, { param });
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function present(body: Record<string, unknown>, key: string): boolean {
  return body[key] !== undefined && body[key] !== null;
}

/** `body[key]` as a number, or `def` when absent (Ajv checked type and range). */
function num(body: Record<string, unknown>, key: string, def: number): number {
  return present(body, key) ? body[key] as number : def;
}

function only(
  body: Record<string, unknown>,
  key: string,
  ok: (v: unknown) => boolean,
  why: string,
): void {
  if (present(body, key) && !ok(body[key])) bad(key, `'${key}' ${why}`);
}

/** The body must be a JSON object. */
export function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ServeError(
      "invalid_request",
      `The request body must be a JSON object: received ${typeName(body)}`,
    );
  }
  return body as Record<string, unknown>;
}

function common(body: Record<string, unknown>, maxTokensKeys: readonly string[]): CommonParams {
  const check = maxTokensKeys.length === 1 ? checkCompletion : checkChat;
  if (!check(body)) throw schemaError(body, check.errors![0]);
  let maxTokens: number | null = null;
  for (const k of maxTokensKeys) maxTokens ??= present(body, k) ? body[k] as number : null;
  const s = body.stop;
  const stop = (typeof s === "string" ? [s] : Array.isArray(s) ? s as string[] : [])
    .filter((x) => x.length > 0);
  const seed = present(body, "seed") ? body.seed as number : null;
  const logitBias = new Map<number, number>();
  if (present(body, "logit_bias")) {
    for (const [k, b] of Object.entries(body.logit_bias as Record<string, number>)) {
      logitBias.set(Number(k), b);
    }
  }
  return {
    model: present(body, "model") ? body.model as string : null,
    maxTokens,
    stop,
    temperature: num(body, "temperature", 1),
    // top_p 0 means "only the most likely token"; the sampler wants p > 0
    topP: Math.max(num(body, "top_p", 1), Number.MIN_VALUE),
    topK: num(body, "top_k", 0),
    minP: num(body, "min_p", 0),
    repetitionPenalty: num(body, "repeat_penalty", 1),
    frequencyPenalty: num(body, "frequency_penalty", 0),
    presencePenalty: num(body, "presence_penalty", 0),
    logitBias,
    seed: seed === null ? null : seed >>> 0,
    stream: body.stream === true,
    includeUsage: (body.stream_options as { include_usage?: unknown } | null)?.include_usage ===
      true,
    ignoreEos: body.ignore_eos === true,
  };
}

/** Validate a `/v1/completions` body. */
export function parseCompletionRequest(raw: unknown): CompletionParams {
  const body = asObject(raw);
  const p = common(body, COMPLETION_KEYS);
  only(body, "echo", (v) => v === false, "is not supported");
  only(body, "best_of", (v) => v === 1, "must be 1");
  only(body, "suffix", (v) => v === "", "is not supported");
  let prompt: string | number[];
  const pr = body.prompt;
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x));
  if (typeof pr === "string") prompt = pr;
  else if (isIds(pr)) prompt = pr;
  else if (Array.isArray(pr) && pr.length === 1 && (typeof pr[0] === "string" || isIds(pr[0]))) {
    prompt = pr[0];
  } else if (
    Array.isArray(pr) && pr.length > 1 && pr.every((x) => typeof x === "string" || isIds(x))
  ) {
    bad("prompt", `'prompt' holds ${pr.length} prompts; this server takes one per request`);
  } else if (pr === undefined || pr === null) bad("prompt", "'prompt' is required");
  else {bad(
      "prompt",
      `'prompt' must be a string or an array of token ids: received ${typeName(pr)}`,
    );}
  if (prompt === "") bad("prompt", "'prompt' must not be empty");
  return { ...p, prompt };
}

function content(v: unknown, i: number): string {
  const param = `messages[${i}].content`;
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) {
    bad(param, `'${param}' must be a string or an array of content parts: received ${typeName(v)}`);
  }
  let s = "";
  v.forEach((part, j) => {
    const p = part as Record<string, unknown> | null;
    if (typeof p !== "object" || p === null) {
      bad(`${param}[${j}]`, `'${param}[${j}]' must be an object`);
    }
    if (p.type !== "text") {
      bad(
        `${param}[${j}].type`,
        `content parts of type '${String(p.type)}' are not supported (text only)`,
      );
    }
    if (typeof p.text !== "string") {
      bad(`${param}[${j}].text`, `'${param}[${j}].text' must be a string`);
    }
    s += p.text;
  });
  return s;
}

/** Validate a `/v1/chat/completions` body. */
export function parseChatRequest(raw: unknown): ChatParams {
  const body = asObject(raw);
  const p = common(body, CHAT_KEYS);
  only(
    body,
    "tools",
    (v) => Array.isArray(v) && v.length === 0,
    "are not supported by this server",
  );
  only(
    body,
    "response_format",
    (v) => (v as { type?: unknown })?.type === "text",
    "other than {type:'text'} is not supported (no JSON mode or schemas)",
  );
  only(
    body,
    "tool_choice",
    (v) => v === "none" || (v === "auto" && !present(body, "tools")),
    "is not supported: this server has no tool calls",
  );
  only(
    body,
    "functions",
    (v) => Array.isArray(v) && v.length === 0,
    "are not supported by this server",
  );
  only(body, "function_call", (v) => v === "none", "is not supported by this server");
  only(
    body,
    "modalities",
    (v) => Array.isArray(v) && v.length === 1 && v[0] === "text",
    "other than ['text'] are not supported",
  );
  only(body, "audio", () => false, "output is not supported");
  only(body, "prediction", () => false, "(predicted outputs) is not supported");
  const ms = body.messages;
  if (!Array.isArray(ms)) bad("messages", `'messages' must be an array: received ${typeName(ms)}`);
  if (ms.length === 0) bad("messages", "'messages' must hold at least one message");
  const messages = ms.map((m, i): ChatMessage => {
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      bad(`messages[${i}]`, `'messages[${i}]' must be an object`);
    }
    const r = (m as Record<string, unknown>).role;
    if (typeof r !== "string" || !ROLES.has(r)) {
      bad(
        `messages[${i}].role`,
        `'messages[${i}].role' must be one of ${[...ROLES].join(", ")}: received ${
          JSON.stringify(r)
        }`,
      );
    }
    const msg: ChatMessage = {
      role: r,
      content: content((m as Record<string, unknown>).content, i),
    };
    const name = (m as Record<string, unknown>).name;
    if (typeof name === "string") msg.name = name;
    return msg;
  });
  return { ...p, messages };
}
