/**
 * The template render worker: renders chat templates off the main thread so
 * that a slow one cannot stall other requests, under the same budget as an
 * in-process render. Its parent ({@link ../template_sandbox.ts}) terminates
 * it when a render passes its deadline.
 *
 * Messages in: {@link RenderJob}. Messages out: `{ ready: true }` once loaded, then a
 * {@link RenderReply} per job.
 *
 * @module
 */

import { BudgetError } from "./budget.ts";
import { ChatTemplateError } from "./lexer.ts";
import { type RenderLimits, Template } from "./render.ts";

/** One render request. */
export interface RenderJob {
  /** Job id, echoed in the reply. */
  id: number;
  /** Template source. */
  source: string;
  /** Globals of the render. */
  vars: Record<string, unknown>;
  /** Bounds of the render. */
  limits: RenderLimits;
}

/** The answer to a {@link RenderJob}. */
export type RenderReply =
  | { id: number; ok: true; text: string }
  | { id: number; ok: false; code: string; bound: string | null; message: string };

let cached: { source: string; template: Template | ChatTemplateError } | null = null;

function compile(source: string): Template {
  if (cached?.source !== source) {
    let template: Template | ChatTemplateError;
    try {
      template = new Template(source);
    } catch (e) {
      template = e instanceof ChatTemplateError
        ? e
        : new ChatTemplateError("template_unsupported", String(e));
    }
    cached = { source, template };
  }
  if (cached.template instanceof ChatTemplateError) throw cached.template;
  return cached.template;
}

/** The worker's global scope, typed without the `deno.worker` lib (JSR bans lib directives). */
const scope = globalThis as unknown as {
  onmessage: ((ev: MessageEvent<RenderJob>) => void) | null;
  postMessage(message: RenderReply | { ready: true }): void;
};

scope.onmessage = (ev: MessageEvent<RenderJob>): void => {
  const { id, source, vars, limits } = ev.data;
  let reply: RenderReply;
  try {
    reply = { id, ok: true, text: compile(source).render(vars, limits) };
  } catch (e) {
    reply = {
      id,
      ok: false,
      code: e instanceof ChatTemplateError ? e.code : "template_render",
      bound: e instanceof BudgetError ? e.kind : null,
      message: e instanceof Error ? e.message : String(e),
    };
  }
  scope.postMessage(reply);
};

// the parent starts a render's deadline only once the module has loaded
scope.postMessage({ ready: true });
