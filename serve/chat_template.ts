/**
 * Turns a chat conversation into prompt text: the model's own Jinja template
 * (`tokenizer.chat_template` in the GGUF metadata) rendered in the sandbox,
 * or a per-architecture fallback when the template is absent or outside the
 * supported subset — ChatML for qwen2moe/qwen3moe/olmoe, llama.cpp's
 * `bailing2` roles for bailingmoe2 (Ling 2.0), `[INST]` for llama/Mixtral and
 * the rest.
 *
 * @module
 */

import type { Model } from "../core/model/model.ts";
import { ServeError } from "./errors.ts";
import { BudgetError } from "./jinja/budget.ts";
import { ChatTemplateError } from "./jinja/lexer.ts";
import { DEFAULT_RENDER_LIMITS, type RenderLimits, Template } from "./jinja/render.ts";
import { TemplateSandbox } from "./jinja/sandbox.ts";

export { ChatTemplateError } from "./jinja/lexer.ts";

/** One chat message with its content flattened to text. */
export interface ChatMessage {
  /** `system`, `user`, `assistant`, `tool`, … */
  role: string;
  /** Text content. */
  content: string;
  /** Optional author name. */
  name?: string;
}

/** Where a template came from. */
export type ChatTemplateKind = "gguf" | "chatml" | "inst" | "bailing2";

/** A rendered prompt. */
export interface RenderedChat {
  /** Prompt text (special tokens as text). */
  text: string;
  /** Whether the tokenizer should still add BOS (false when the text starts with it). */
  addBos: boolean;
}

/** Architectures whose fallback is ChatML; all others use `[INST]` (bailingmoe2: Ling 2.0's roles). */
export const CHATML_ARCHS: readonly string[] = ["qwen2moe", "qwen3moe", "olmoe", "qwen2", "qwen3"];

/** The fallback format of architecture `arch`. */
function fallbackOf(arch: string): "chatml" | "inst" | "bailing2" {
  if (CHATML_ARCHS.includes(arch)) return "chatml";
  return arch === "bailingmoe2" ? "bailing2" : "inst";
}

const SMOKE: readonly ChatMessage[] = [{ role: "user", content: "Hello" }];

/**
 * Bounds of the first, in-process attempt of {@link ChatTemplate.renderAsync}:
 * real templates finish far inside them (well under a millisecond of work);
 * a render that does not is re-run in the worker under the full bounds, so
 * the main thread never spends more than about this on one render.
 */
export const INLINE_RENDER_LIMITS: Readonly<Required<RenderLimits>> = {
  ...DEFAULT_RENDER_LIMITS,
  maxSteps: 256 << 10,
  maxAllocated: 16 << 20,
  maxMs: 25,
};

/** Options of {@link ChatTemplate}. */
export interface ChatTemplateOptions {
  /** Bounds of each render of the model's template (default {@link DEFAULT_RENDER_LIMITS}). */
  limits?: RenderLimits;
}

/** Formats conversations for one model. */
export class ChatTemplate {
  /** Which template is in use. */
  readonly kind: ChatTemplateKind;
  /** Why the GGUF template was not used, when it was not. */
  readonly fallbackReason: string | null;
  /** Stop strings the format needs beyond the model's end-of-generation tokens. */
  readonly stop: readonly string[];
  readonly #template: Template | null;
  readonly #source: string | null;
  readonly #limits: Required<RenderLimits>;
  #sandbox: TemplateSandbox | null = null;
  /** Set once an in-process render went over the inline bounds: render in the worker from then on. */
  #heavy = false;
  readonly #fallback: "chatml" | "inst" | "bailing2";
  readonly #bos: string;
  readonly #eos: string;
  readonly #tokenizerAddsBos: boolean;

  /**
   * @param arch GGUF architecture (picks the fallback)
   * @param source `tokenizer.chat_template`, or null
   * @param special BOS/EOS token texts and whether the tokenizer adds BOS
   * @param opts render bounds
   */
  constructor(
    arch: string,
    source: string | null,
    special: { bos: string; eos: string; addBos: boolean },
    opts: ChatTemplateOptions = {},
  ) {
    this.#limits = { ...DEFAULT_RENDER_LIMITS, ...opts.limits };
    this.#fallback = fallbackOf(arch);
    this.#bos = special.bos;
    this.#eos = special.eos;
    this.#tokenizerAddsBos = special.addBos;
    let template: Template | null = null;
    let reason: string | null = source === null ? "the model has no tokenizer.chat_template" : null;
    if (source !== null) {
      try {
        template = new Template(source);
        this.#renderGguf(template, SMOKE, this.#limits);
      } catch (e) {
        template = null;
        reason = e instanceof Error ? e.message : String(e);
      }
    }
    this.#template = template;
    this.#source = template ? source : null;
    this.kind = template ? "gguf" : this.#fallback;
    this.fallbackReason = reason;
    const usesImEnd = template ? source!.includes("<|im_end|>") : this.#fallback === "chatml";
    this.stop = usesImEnd
      ? ["<|im_end|>"]
      : this.#fallback === "bailing2" && !template
      ? ["<|role_end|>"]
      : [];
  }

  /**
   * Render `messages` followed by the assistant's turn. Throws `ServeError`
   * `"invalid_request"` when the model's template refuses the conversation
   * (e.g. roles that do not alternate).
   */
  render(messages: readonly ChatMessage[]): RenderedChat {
    let text: string;
    if (this.#template) {
      try {
        text = this.#renderGguf(this.#template, messages, this.#limits);
      } catch (e) {
        text = this.#recover(e, messages);
      }
    } else text = this.#renderFallback(messages);
    return this.#finish(text);
  }

  /**
   * Like {@link render}, without blocking the event loop for long: the
   * render is tried in-process under {@link INLINE_RENDER_LIMITS}; one that
   * needs more runs in a Worker under the full bounds and a deadline (a stuck
   * worker is terminated). Throws `ServeError` `"template_limit"` when the
   * template goes over a bound, `"invalid_request"` when it refuses the
   * conversation, or the signal's reason when it aborts while waiting.
   */
  async renderAsync(
    messages: readonly ChatMessage[],
    opts: { signal?: AbortSignal } = {},
  ): Promise<RenderedChat> {
    if (!this.#template) return this.#finish(this.#renderFallback(messages));
    if (!this.#heavy) {
      try {
        return this.#finish(this.#renderGguf(this.#template, messages, INLINE_RENDER_LIMITS));
      } catch (e) {
        const inlineBound = e instanceof BudgetError &&
          (e.kind === "steps" || e.kind === "memory" || e.kind === "time");
        if (!inlineBound) return this.#finish(this.#recover(e, messages));
        this.#heavy = true;
      }
    }
    this.#sandbox ??= new TemplateSandbox({ limits: this.#limits });
    let text: string;
    try {
      text = await this.#sandbox.render(this.#source!, this.#vars(messages), opts.signal);
    } catch (e) {
      if (opts.signal?.aborted && e === opts.signal.reason) throw e;
      if (e instanceof ChatTemplateError && e.code === "template_worker_unavailable") {
        // a host without Workers: render here, under the same bounds (blocking up to maxMs)
        return this.render(messages);
      }
      text = this.#recover(e, messages);
    }
    return this.#finish(text);
  }

  /** Whether renders now go to the worker (a render went over the inline bounds). */
  get usesWorker(): boolean {
    return this.#heavy;
  }

  /** Stop the render worker, if one is running. */
  close(): void {
    this.#sandbox?.close();
    this.#sandbox = null;
  }

  /** Map a render failure: a refusal or a bound is the request's error; anything else falls back. */
  #recover(e: unknown, messages: readonly ChatMessage[]): string {
    if (e instanceof ChatTemplateError && e.code === "template_raise") {
      throw new ServeError(
        "invalid_request",
        `The model's chat template refused the conversation: ${e.message}`,
        { param: "messages" },
      );
    }
    if (e instanceof ChatTemplateError && e.code === "template_busy") {
      throw new ServeError("queue_full", `${e.message}; retry later`, { retryAfter: 1 });
    }
    if (e instanceof ChatTemplateError && e.code === "template_limit") {
      throw new ServeError(
        "template_limit",
        `The model's chat template went over its bounds for this conversation: ${e.message}`,
        { param: "messages" },
      );
    }
    return this.#renderFallback(messages);
  }

  #finish(text: string): RenderedChat {
    const startsWithBos = this.#bos !== "" && text.startsWith(this.#bos);
    return { text, addBos: this.#tokenizerAddsBos && !startsWithBos };
  }

  #vars(messages: readonly ChatMessage[]): Record<string, unknown> {
    return {
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: true,
      bos_token: this.#bos,
      eos_token: this.#eos,
    };
  }

  #renderGguf(t: Template, messages: readonly ChatMessage[], limits: RenderLimits): string {
    return t.render(this.#vars(messages), limits);
  }

  #renderFallback(messages: readonly ChatMessage[]): string {
    if (this.#fallback === "chatml") {
      let s = "";
      for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
      return s + "<|im_start|>assistant\n";
    }
    if (this.#fallback === "bailing2") {
      // Ling 2.0 (llama.cpp's "bailing2"): <role>ROLE</role>text<|role_end|> per message, user as
      // HUMAN, a default system turn when the conversation has none
      const role = (r: string) =>
        r === "user" ? "HUMAN" : r === "developer" ? "SYSTEM" : r.toUpperCase();
      let s =
        messages.length > 0 && (messages[0].role === "system" || messages[0].role === "developer")
          ? ""
          : "<role>SYSTEM</role>detailed thinking off<|role_end|>";
      for (const m of messages) s += `<role>${role(m.role)}</role>${m.content}<|role_end|>`;
      return s + "<role>ASSISTANT</role>";
    }
    // Mistral/Mixtral [INST] format; system text goes in front of the first user turn
    let s = this.#bos;
    let system = "";
    for (const m of messages) {
      if (m.role === "system" || m.role === "developer") {
        system += (system ? "\n\n" : "") + m.content;
      } else if (m.role === "assistant") {
        s += `${m.content}${this.#eos}`;
      } else {
        const body = system ? `${system}\n\n${m.content}` : m.content;
        system = "";
        s += `[INST] ${body} [/INST]`;
      }
    }
    if (system) s += `[INST] ${system} [/INST]`;
    return s;
  }
}

/** The chat template of a loaded model (its GGUF template or the architecture's fallback). */
export function chatTemplateFor(model: Model, opts: ChatTemplateOptions = {}): ChatTemplate {
  const v = model.file.metadata.get("tokenizer.chat_template");
  const source = v && typeof v.value === "string" ? v.value : null;
  const tok = model.tokenizer;
  const text = (id: number | null): string => (id === null ? "" : tok.tokenText(id));
  return new ChatTemplate(model.arch, source, {
    bos: text(tok.bosId),
    eos: text(tok.eosId),
    addBos: tok.addBos,
  }, opts);
}
