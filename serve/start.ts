/**
 * `deno task start`: listen on `MOE_EDGE_HOST`:`MOE_EDGE_PORT` (default
 * 127.0.0.1:8000) and serve the model of `MOE_EDGE_MODEL`. `--help` lists
 * every setting. A separate entry from `main.ts` (which keeps the
 * `export default { fetch }` that `deno serve` and Deno Deploy use), so that
 * `deno run` has no reason to suggest `deno serve`.
 *
 * @module
 */

import { main } from "./program.ts";

if (import.meta.main) await main(Deno.args);
