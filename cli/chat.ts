/**
 * `cli chat`: an interactive conversation with the model's chat template
 * (the GGUF `tokenizer.chat_template`, else the architecture's fallback), as
 * `llama-cli -cnv` or `ollama run` do. One line of input is one user turn;
 * `/bye` (or end of input) ends it, `/clear` forgets the conversation.
 *
 * @module
 */

import { GenerationError } from "../core/errors.ts";
import { generate, type GenerateOptions } from "../core/generate/generate.ts";
import { Session } from "../core/generate/session.ts";
import type { Model } from "../core/model/model.ts";
import { type ChatMessage, chatTemplateFor } from "../serve/chat_template.ts";

/** Where the chat reads and writes. */
export interface ChatIO {
  /** User turns, one per line. */
  readonly lines: AsyncIterable<string>;
  /** The assistant's text (stdout). */
  write(text: string): Promise<void>;
  /** Prompts, notices and timings (stderr). */
  note(text: string): void;
  /** Print the `>>> ` prompt and the greeting (a terminal on both ends). */
  readonly interactive: boolean;
}

/** Ctrl-C handling: a signal per reply, and when no reply runs. */
export interface ChatInterrupt {
  /** An abort signal for the next reply. */
  signal(): AbortSignal;
  /** The reply ended (Ctrl-C now ends the chat). */
  idle(): void;
}

/** Options of {@link runChat}. */
export interface ChatOptions extends GenerateOptions {
  /** System prompt, sent as the first message. */
  system?: string;
  /** Print tokens/s after each reply. */
  stats?: boolean;
}

const HELP =
  "commands: /bye (or Ctrl-D) ends the chat, /clear forgets the conversation, /? help; " +
  '""" starts and ends a message of several lines';

/**
 * Runs the chat loop until `/bye` or the end of input. Each turn renders the whole
 * conversation with the chat template and generates the reply, streaming it; one session
 * keeps the KV cache between turns, so only the new turn is evaluated. When the context is
 * full the turn is refused with a notice (`/clear` starts over).
 * @param model the loaded model
 * @param opts generation options per reply, plus the system prompt
 * @param io input lines and output sinks
 * @param interrupt aborts the reply in progress (Ctrl-C); the chat continues
 * @returns the number of replies generated
 */
export async function runChat(
  model: Model,
  opts: ChatOptions,
  io: ChatIO,
  interrupt?: ChatInterrupt,
): Promise<number> {
  const template = chatTemplateFor(model);
  const system: ChatMessage[] = opts.system ? [{ role: "system", content: opts.system }] : [];
  let history: ChatMessage[] = [...system];
  let replies = 0;
  const session = new Session(model, { nCtx: opts.nCtx });
  try {
    replies = await loop();
  } finally {
    session.dispose();
  }
  return replies;

  async function loop(): Promise<number> {
    if (io.interactive) {
      io.note(`chat template: ${template.kind}. ${HELP}\n>>> `);
    }
    for await (const line of userTurns(io.lines)) {
      const cmd = line.trim();
      if (cmd === "/bye" || cmd === "/exit" || cmd === "/quit") break;
      if (cmd === "/clear") {
        history = [...system];
        io.note("(conversation cleared)\n");
      } else if (cmd === "/?" || cmd === "/help") {
        io.note(HELP + "\n");
      } else if (cmd !== "") {
        history.push({ role: "user", content: line });
        const rendered = template.render(history);
        const before = [...session.tokens];
        const it = generate(model, rendered.text, {
          ...opts,
          addBos: rendered.addBos,
          stop: [...template.stop, ...(opts.stop ?? [])],
          signal: interrupt?.signal(),
          session,
        });
        let text: string | null = null;
        let started = false;
        for (;;) {
          let r;
          try {
            r = await it.next();
          } catch (e) {
            if (!(e instanceof GenerationError && e.code === "context_full")) throw e;
            io.note(`(the context is full: ${e.message}; /clear starts over)\n`);
            break;
          }
          if (r.done) {
            text = r.value.text.trimStart();
            await io.write("\n");
            if (opts.stats) {
              const ids = r.value.promptTokens;
              let cached = 0;
              while (cached < ids.length - 1 && before[cached] === ids[cached]) cached++;
              io.note(statsLine(r.value, cached) + "\n");
            }
            break;
          }
          // the reply's leading space belongs to the template's turn boundary, not to the text
          const piece = started ? r.value.text : r.value.text.trimStart();
          if (piece !== "") started = true;
          await io.write(piece);
        }
        interrupt?.idle();
        if (text === null) history.pop(); // the turn did not fit
        else {
          history.push({ role: "assistant", content: text });
          replies++;
        }
      }
      if (io.interactive) io.note(">>> ");
    }
    return replies;
  }
}

/**
 * User turns from input lines: one line each, or the lines between `"""` and `"""` as one
 * message (as in Ollama). Line ends (`\r\n` too) are removed; an unterminated block ends at
 * the end of input.
 */
export async function* userTurns(lines: AsyncIterable<string>): AsyncGenerator<string> {
  let block: string[] | null = null;
  const Q = '"""';
  for await (const raw of lines) {
    const line = raw.replace(/\r$/, "");
    if (block !== null) {
      const end = line.trimEnd().endsWith(Q);
      const body = end ? line.trimEnd().slice(0, -Q.length) : line;
      if (!end || body.trim() !== "") block.push(body); // a closing """ alone adds no line
      if (end) {
        yield block.join("\n");
        block = null;
      }
      continue;
    }
    const t = line.trim();
    if (!t.startsWith(Q)) {
      yield line;
      continue;
    }
    const rest = t.slice(Q.length);
    if (rest.length >= Q.length && rest.endsWith(Q)) yield rest.slice(0, -Q.length); // """x"""
    else block = rest === "" ? [] : [rest];
  }
  if (block !== null) yield block.join("\n");
}

/**
 * One line of timings, as printed to stderr after `generate` and each chat reply.
 * @param r the generation's summary
 * @param cached prompt tokens taken from the KV cache (not evaluated)
 */
export function statsLine(r: {
  promptTokens: readonly number[];
  tokens: readonly number[];
  finishReason: string;
  timings: { prefillMs: number; decodeMs: number; decodeTokensPerS: number };
}, cached = 0): string {
  const t = r.timings;
  const n = r.promptTokens.length - cached;
  const prefillRate = t.prefillMs > 0 ? n / (t.prefillMs / 1000) : 0;
  return `[prompt ${n} tokens${cached ? ` (+${cached} cached)` : ""} in ${
    t.prefillMs.toFixed(1)
  } ms (${prefillRate.toFixed(1)} tokens/s), generated ${r.tokens.length} tokens in ${
    t.decodeMs.toFixed(1)
  } ms (${t.decodeTokensPerS.toFixed(1)} tokens/s), finish: ${r.finishReason}]`;
}

/** Lines of a byte stream (UTF-8), without their line ends. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
  if (buf !== "") yield buf;
}
