/**
 * Turns a chat conversation into prompt text: the model's own Jinja template
 * (`tokenizer.chat_template` in the GGUF metadata) rendered in the sandbox,
 * or a per-architecture fallback when the template is absent or outside the
 * supported subset — ChatML for qwen2moe/qwen3moe/olmoe, `[INST]` for
 * llama/Mixtral.
 *
 * @module
 */

import type { Model } from "../core/model/model.ts";
import { ServeError } from "./errors.ts";
import { ChatTemplateError } from "./jinja/lexer.ts";
import { Template } from "./jinja/render.ts";

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
export type ChatTemplateKind = "gguf" | "chatml" | "inst";

/** A rendered prompt. */
export interface RenderedChat {
  /** Prompt text (special tokens as text). */
  text: string;
  /** Whether the tokenizer should still add BOS (false when the text starts with it). */
  addBos: boolean;
}

/** Architectures whose fallback is ChatML; all others use `[INST]`. */
export const CHATML_ARCHS: readonly string[] = ["qwen2moe", "qwen3moe", "olmoe", "qwen2", "qwen3"];

const SMOKE: readonly ChatMessage[] = [{ role: "user", content: "Hello" }];

/** Formats conversations for one model. */
export class ChatTemplate {
  /** Which template is in use. */
  readonly kind: ChatTemplateKind;
  /** Why the GGUF template was not used, when it was not. */
  readonly fallbackReason: string | null;
  /** Stop strings the format needs beyond the model's end-of-generation tokens. */
  readonly stop: readonly string[];
  readonly #template: Template | null;
  readonly #fallback: "chatml" | "inst";
  readonly #bos: string;
  readonly #eos: string;
  readonly #tokenizerAddsBos: boolean;

  /**
   * @param arch GGUF architecture (picks the fallback)
   * @param source `tokenizer.chat_template`, or null
   * @param special BOS/EOS token texts and whether the tokenizer adds BOS
   */
  constructor(
    arch: string,
    source: string | null,
    special: { bos: string; eos: string; addBos: boolean },
  ) {
    this.#fallback = CHATML_ARCHS.includes(arch) ? "chatml" : "inst";
    this.#bos = special.bos;
    this.#eos = special.eos;
    this.#tokenizerAddsBos = special.addBos;
    let template: Template | null = null;
    let reason: string | null = source === null ? "the model has no tokenizer.chat_template" : null;
    if (source !== null) {
      try {
        template = new Template(source);
        this.#renderGguf(template, SMOKE, true);
      } catch (e) {
        template = null;
        reason = e instanceof Error ? e.message : String(e);
      }
    }
    this.#template = template;
    this.kind = template ? "gguf" : this.#fallback;
    this.fallbackReason = reason;
    const usesImEnd = template ? source!.includes("<|im_end|>") : this.#fallback === "chatml";
    this.stop = usesImEnd ? ["<|im_end|>"] : [];
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
        text = this.#renderGguf(this.#template, messages, true);
      } catch (e) {
        if (e instanceof ChatTemplateError && e.code === "template_raise") {
          throw new ServeError(
            "invalid_request",
            `The model's chat template refused the conversation: ${e.message}`,
            {
              param: "messages",
            },
          );
        }
        if (e instanceof ChatTemplateError && e.code === "template_limit") {
          throw new ServeError("invalid_request", e.message, { param: "messages" });
        }
        text = this.#renderFallback(messages);
      }
    } else text = this.#renderFallback(messages);
    const startsWithBos = this.#bos !== "" && text.startsWith(this.#bos);
    return { text, addBos: this.#tokenizerAddsBos && !startsWithBos };
  }

  #renderGguf(t: Template, messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    return t.render(
      {
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.#bos,
        eos_token: this.#eos,
      },
      { maxOutput: 4 << 20, maxIterations: 1 << 20 },
    );
  }

  #renderFallback(messages: readonly ChatMessage[]): string {
    if (this.#fallback === "chatml") {
      let s = "";
      for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
      return s + "<|im_start|>assistant\n";
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
export function chatTemplateFor(model: Model): ChatTemplate {
  const v = model.file.metadata.get("tokenizer.chat_template");
  const source = v && typeof v.value === "string" ? v.value : null;
  const tok = model.tokenizer;
  const text = (id: number | null): string => (id === null ? "" : tok.tokenText(id));
  return new ChatTemplate(model.arch, source, {
    bos: text(tok.bosId),
    eos: text(tok.eosId),
    addBos: tok.addBos,
  });
}
