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

function logitBias(body: Record<string, unknown>): Map<number, number> {
  const out = new Map<number, number>();
  if (!present(body, "logit_bias")) return out;
  const v = body.logit_bias;
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    bad("logit_bias", `'logit_bias' must be an object of token id → bias: received ${typeName(v)}`);
  }
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_LOGIT_BIAS) {
    bad(
      "logit_bias",
      `'logit_bias' allows at most ${MAX_LOGIT_BIAS} entries: received ${entries.length}`,
    );
  }
  for (const [k, b] of entries) {
    if (!/^(0|[1-9]\d{0,9})$/.test(k)) {
      bad(
        "logit_bias",
        `'logit_bias' keys must be token ids (non-negative integers): received '${k.slice(0, 40)}'`,
      );
    }
    if (typeof b !== "number" || !Number.isFinite(b) || b < -100 || b > 100) {
      bad(
        "logit_bias",
        `'logit_bias[${k}]' must be a number between -100 and 100: received ${JSON.stringify(b)}`,
      );
    }
    out.set(Number(k), b);
  }
  return out;
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

function num(
  body: Record<string, unknown>,
  key: string,
  lo: number,
  hi: number,
  def: number,
): number {
  if (!present(body, key)) return def;
  const v = body[key];
  if (typeof v !== "number" || !Number.isFinite(v)) {
    bad(key, `'${key}' must be a number: received ${typeName(v)}`);
  }
  if (v < lo || v > hi) bad(key, `'${key}' must be between ${lo} and ${hi}: received ${v}`);
  return v;
}

function int(body: Record<string, unknown>, key: string, lo: number, hi: number): number | null {
  if (!present(body, key)) return null;
  const v = body[key];
  if (typeof v !== "number" || !Number.isInteger(v)) {
    bad(key, `'${key}' must be an integer: received ${JSON.stringify(v)}`);
  }
  if (v < lo || v > hi) bad(key, `'${key}' must be between ${lo} and ${hi}: received ${v}`);
  return v;
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
  if (present(body, "model") && typeof body.model !== "string") {
    bad("model", `'model' must be a string: received ${typeName(body.model)}`);
  }
  let maxTokens: number | null = null;
  for (const k of maxTokensKeys) maxTokens ??= int(body, k, 1, 1 << 30);
  let stop: string[] = [];
  if (present(body, "stop")) {
    const s = body.stop;
    if (typeof s === "string") stop = [s];
    else if (Array.isArray(s) && s.every((x) => typeof x === "string")) stop = s as string[];
    else bad("stop", `'stop' must be a string or an array of strings: received ${typeName(s)}`);
    if (stop.length > MAX_STOP) {
      bad("stop", `'stop' allows at most ${MAX_STOP} sequences: received ${stop.length}`);
    }
    stop = stop.filter((x) => x.length > 0);
  }
  if (present(body, "stream") && typeof body.stream !== "boolean") {
    bad("stream", `'stream' must be a boolean: received ${typeName(body.stream)}`);
  }
  let includeUsage = false;
  if (present(body, "stream_options")) {
    const so = body.stream_options;
    if (typeof so !== "object" || so === null || Array.isArray(so)) {
      bad("stream_options", `'stream_options' must be an object: received ${typeName(so)}`);
    }
    const iu = (so as Record<string, unknown>).include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== "boolean") {
      bad("stream_options.include_usage", `'stream_options.include_usage' must be a boolean`);
    }
    includeUsage = iu === true;
  }
  only(body, "n", (v) => v === 1, "must be 1: this server returns one choice");
  only(body, "logprobs", (v) => v === false || v === 0, "is not supported");
  only(body, "top_logprobs", (v) => v === 0, "is not supported");
  const seed = int(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (present(body, "ignore_eos") && typeof body.ignore_eos !== "boolean") {
    bad("ignore_eos", `'ignore_eos' must be a boolean: received ${typeName(body.ignore_eos)}`);
  }
  return {
    model: present(body, "model") ? body.model as string : null,
    maxTokens,
    stop,
    temperature: num(body, "temperature", 0, 2, 1),
    // top_p 0 means "only the most likely token"; the sampler wants p > 0
    topP: Math.max(num(body, "top_p", 0, 1, 1), Number.MIN_VALUE),
    topK: int(body, "top_k", 0, 1 << 30) ?? 0,
    minP: num(body, "min_p", 0, 1, 0),
    repetitionPenalty: repeatPenalty(body),
    frequencyPenalty: num(body, "frequency_penalty", -2, 2, 0),
    presencePenalty: num(body, "presence_penalty", -2, 2, 0),
    logitBias: logitBias(body),
    seed: seed === null ? null : seed >>> 0,
    stream: body.stream === true,
    includeUsage,
    ignoreEos: body.ignore_eos === true,
  };
}

function repeatPenalty(body: Record<string, unknown>): number {
  const v = num(body, "repeat_penalty", 0, 10, 1);
  if (v === 0) bad("repeat_penalty", "'repeat_penalty' must be greater than 0 (1 = off)");
  return v;
}

/** Validate a `/v1/completions` body. */
export function parseCompletionRequest(raw: unknown): CompletionParams {
  const body = asObject(raw);
  const p = common(body, ["max_tokens"]);
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
  const p = common(body, ["max_completion_tokens", "max_tokens"]);
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
