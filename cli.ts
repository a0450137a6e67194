/**
 * The moe-edge command line.
 *
 * ```sh
 * deno task cli generate --prompt "The little fox" --max-tokens 24
 * deno task cli chat --system "You tell short stories."
 * deno task cli inspect --model model.gguf
 * deno task cli manifest --model model.gguf --out experts.json
 * deno task cli trace --model model.gguf --prompt "Hello" --out trace.json
 * deno task cli generate --help
 * ```
 *
 * Exit codes: 0 success, 1 model or runtime error, 2 usage error, 130 interrupted.
 *
 * @module
 */

export { buildProgram, main } from "./cli/main.ts";
export { EXIT, UsageError } from "./cli/options.ts";
export { formatInspect, inspectModel, type InspectReport } from "./cli/inspect.ts";
import { main } from "./cli/main.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
