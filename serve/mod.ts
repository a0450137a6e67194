/**
 * The OpenAI-compatible HTTP server as a library (`@moe-edge/runtime/serve`):
 * a Hono app over a {@link ModelRuntime}, the runtime that batches concurrent
 * generations, the chat templates and the server's typed errors. Kept out of the
 * package root so that importing the inference API loads no server code.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "@moe-edge/runtime";
 * import { defaultModelBytes } from "@moe-edge/runtime/default-model";
 * import { createApp, createRuntime } from "@moe-edge/runtime/serve";
 * const runtime = createRuntime(await loadModel(defaultModelBytes()), { name: "moe-edge-default" });
 * Deno.serve({ port: 8000 }, createApp(runtime).fetch);
 * ```
 *
 * @module
 */

export { type AppOptions, createApp } from "./app.ts";
export {
  createRuntime,
  type Generation,
  ModelRuntime,
  type RunRequest,
  type RuntimeOptions,
} from "./runtime.ts";
export { type OpenAIErrorBody, ServeError, type ServeErrorCode, toHttpError } from "./errors.ts";
export { type ChatMessage, ChatTemplate, chatTemplateFor } from "./chat_template.ts";
