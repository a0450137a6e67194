/**
 * The server: the OpenAI-compatible API, metrics and dashboard over the
 * default model (the tiny MoE the project trains itself, embedded) or
 * the GGUF file named by `MOE_EDGE_MODEL`.
 *
 * - `deno task start` (runs `serve/start.ts`) listens on
 *   `MOE_EDGE_HOST`:`MOE_EDGE_PORT` (or `PORT`), default 127.0.0.1:8000;
 *   `deno task start --help` lists every setting.
 * - `deno serve --host H --port P main.ts` and Deno Deploy use the default
 *   export's `fetch`; there `deno serve` picks the address (its default is
 *   0.0.0.0:8000) and `MOE_EDGE_HOST`/`MOE_EDGE_PORT` are ignored.
 * - `deno run main.ts` works too (Deno then notes that `deno serve` exists).
 *
 * Without `MOE_EDGE_API_KEY` only loopback clients are served (others get
 * 403) unless `MOE_EDGE_PUBLIC=1`. Start-up failures print one line and
 * exit non-zero.
 *
 * @module
 */

import { banner, denoEnv, fail, listen, prepare, wantsHelp } from "./serve/program.ts";
import { helpText } from "./serve/config.ts";

if (import.meta.main && wantsHelp(Deno.args)) {
  console.log(helpText());
  Deno.exit(0);
}

const server = await prepare(denoEnv).catch(fail);

let servedByDeno = false;

/** `deno serve` / Deno Deploy entry. */
export default {
  fetch: server.app.fetch,
  onListen(addr: Deno.Addr): void {
    servedByDeno = true;
    const where = addr.transport === "tcp" || addr.transport === "udp"
      ? `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}/`
      : addr.transport;
    // one write, so that a reader that stops at the URL still gets every line
    const lines = [banner(server, where)];
    for (const k of ["MOE_EDGE_HOST", "MOE_EDGE_PORT", "PORT"]) {
      if (denoEnv(k)) {
        lines.push(`moe-edge: ${k} is ignored under deno serve: pass --host/--port to deno serve`);
      }
    }
    console.log(lines.join("\n"));
  },
} satisfies Deno.ServeDefaultExport;

if (import.meta.main) {
  // `deno serve` binds the default export right after this module finishes
  // evaluating and reports through onListen; under `deno run` nobody does.
  setTimeout(() => {
    if (servedByDeno) return;
    try {
      listen(server);
    } catch (e) {
      fail(e);
    }
  }, 0);
}
