/**
 * The server as a program, shared by `main.ts` (`deno serve`, Deno Deploy,
 * `deno run main.ts`) and `serve/start.ts` (`deno task start`): read the
 * settings, load the model, build the app, listen, and turn every start-up
 * failure into one line on stderr and a non-zero exit code.
 *
 * @module
 */

import type { Hono } from "npm:hono@4";
// through mod.ts, so that the WASM backend registers itself for "auto"
import { type LinearAdapter, loadFromManifest, loadModel, type Model } from "../mod.ts";
import { createApp, isLoopback } from "./app.ts";
import { ConfigError, exposureLine, helpText, readConfig, type ServerConfig } from "./config.ts";
import { createRuntime, type ModelRuntime } from "./runtime.ts";
import { guardedServe, type GuardedServer } from "./guard.ts";

/** Exit code of a bad setting. */
export const EXIT_CONFIG = 2;
/** Exit code of any other start-up failure (model, address). */
export const EXIT_START = 1;

/** A start-up failure: a one-line message and the exit code. */
export class StartError extends Error {
  /** Process exit code. */
  readonly exitCode: number;
  /** @param message one line; @param exitCode process exit code */
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = "StartError";
    this.exitCode = exitCode;
  }
}

/** Everything a started server holds. */
export interface Prepared {
  /** Settings. */
  cfg: ServerConfig;
  /** The loaded model. */
  model: Model;
  /** Its runtime. */
  runtime: ModelRuntime;
  /** The HTTP app. */
  app: Hono;
}

/** Environment lookup that tolerates a missing `--allow-env` (then every setting is unset). */
export function denoEnv(key: string): string | undefined {
  try {
    return Deno.env.get(key);
  } catch {
    return undefined;
  }
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0].trim();
}

/** The embedded default model, imported only when no model file is named (2 MB of base64). */
async function defaultModel(): Promise<Uint8Array> {
  const { defaultModelBytes } = await import("../core/model/default_model.ts");
  return defaultModelBytes();
}

/** Read the settings and load the model. Throws {@link StartError}. */
export async function prepare(get: (key: string) => string | undefined): Promise<Prepared> {
  let cfg: ServerConfig;
  try {
    cfg = readConfig(get);
  } catch (e) {
    if (e instanceof ConfigError) throw new StartError(e.message, EXIT_CONFIG);
    throw e;
  }
  let model: Model;
  // a manifest's named adapters, served as '<model>:<name>' over the same base weights
  const adapters = new Map<string, readonly LinearAdapter[]>();
  try {
    const plan = {
      threads: cfg.threads,
      memoryBytes: cfg.memoryBytes,
      nCtx: cfg.nCtx,
      nSeq: cfg.maxConcurrent ?? 4,
    };
    if (cfg.manifestPath) {
      // the manifest's own backend unless MOE_EDGE_BACKEND is set
      const backend = get("MOE_EDGE_BACKEND")?.trim() ? cfg.backend : undefined;
      const r = await loadFromManifest(cfg.manifestPath, { ...plan, backend });
      model = r.model;
      for (const [name, a] of r.adapters) adapters.set(name, a.adapters);
    } else {
      model = await loadModel(cfg.modelPath ?? (await defaultModel()), {
        ...plan,
        backend: cfg.backend,
      });
    }
  } catch (e) {
    const what = cfg.manifestPath
      ? `the manifest '${cfg.manifestPath}'`
      : cfg.modelPath
      ? `the model '${cfg.modelPath}'`
      : "the embedded model";
    throw new StartError(`cannot load ${what}: ${oneLine(e)}`, EXIT_START);
  }
  let runtime: ModelRuntime;
  try {
    runtime = createRuntime(model, {
      name: cfg.modelName,
      adapters,
      maxConcurrent: cfg.maxConcurrent,
      maxQueue: cfg.maxQueue,
      nCtx: cfg.nCtx,
    });
  } catch (e) {
    throw new StartError(oneLine(e), EXIT_CONFIG);
  }
  const app = createApp(runtime, {
    apiKey: cfg.apiKey,
    public: cfg.public,
    publicMetrics: cfg.publicMetrics,
    corsOrigins: cfg.corsOrigins,
    maxBodyBytes: cfg.maxBodyBytes,
    bodyTimeoutMs: cfg.bodyTimeoutMs,
    requestTimeoutMs: cfg.requestTimeoutMs,
    templateTimeoutMs: cfg.templateTimeoutMs,
  });
  return { cfg, model, runtime, app };
}

/** The start-up banner: what is served where, and who may use it. */
export function banner(p: Prepared, url: string): string {
  const { hp } = p.model;
  return `moe-edge: serving '${p.runtime.name}' (${p.model.arch}, ${hp.nExpert} experts, ` +
    `top-${hp.nExpertUsed}, ${p.model.backend.name}) on ${url}\nmoe-edge: ${exposureLine(p.cfg)}`;
}

/**
 * Listen on the configured address (`deno run`). Refuses a non-loopback
 * address without an API key unless `MOE_EDGE_PUBLIC=1`. Throws
 * {@link StartError} (address in use, not permitted…).
 */
export function listen(p: Prepared): GuardedServer {
  checkExposure(p.cfg);
  const { hostname, port } = p.cfg;
  try {
    // Deno.serve has no header or idle timeout: the guard relays each connection to it
    return guardedServe({
      hostname,
      port,
      headerTimeoutMs: p.cfg.headerTimeoutMs,
      idleTimeoutMs: p.cfg.idleTimeoutMs,
      maxConnections: p.cfg.maxConnections,
      onListen: (addr) => {
        const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
        console.log(banner(p, `http://${host}:${addr.port}/`));
      },
    }, (req, info) => p.app.fetch(req, info));
  } catch (e) {
    const where = `${hostname}:${port}`;
    if (e instanceof Deno.errors.AddrInUse) {
      throw new StartError(
        `${where} is already in use: stop the other server or set MOE_EDGE_PORT`,
        EXIT_START,
      );
    }
    if (e instanceof Deno.errors.AddrNotAvailable) {
      throw new StartError(
        `${where} is not an address of this machine (MOE_EDGE_HOST)`,
        EXIT_START,
      );
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new StartError(`not allowed to listen on ${where}: ${oneLine(e)}`, EXIT_START);
    }
    throw new StartError(`cannot listen on ${where}: ${oneLine(e)}`, EXIT_START);
  }
}

/**
 * Refuse to listen on a non-loopback address without an API key unless
 * `MOE_EDGE_PUBLIC=1`. Throws {@link StartError}.
 */
export function checkExposure(cfg: ServerConfig): void {
  if (!cfg.apiKey && !cfg.public && !isLoopback(cfg.hostname)) {
    throw new StartError(
      `MOE_EDGE_HOST=${cfg.hostname} is not a loopback address and MOE_EDGE_API_KEY is not set: ` +
        "set a key, or MOE_EDGE_PUBLIC=1 to serve everyone without one",
      EXIT_CONFIG,
    );
  }
}

/** Print `e` as one line (a {@link StartError}, or any error) and exit non-zero. */
export function fail(e: unknown): never {
  const code = e instanceof StartError ? e.exitCode : EXIT_START;
  console.error(`moe-edge: cannot start: ${oneLine(e)}`);
  Deno.exit(code);
}

/** Whether `args` ask for help. */
export function wantsHelp(args: readonly string[]): boolean {
  return args.includes("--help") || args.includes("-h");
}

/** `deno task start`: help, or prepare and listen; failures exit with one line. */
export async function main(args: readonly string[]): Promise<GuardedServer> {
  if (wantsHelp(args)) {
    console.log(helpText());
    Deno.exit(0);
  }
  if (args.length > 0) {
    fail(
      new StartError(
        `unknown argument '${args[0]}' (settings are environment variables; see --help)`,
        EXIT_CONFIG,
      ),
    );
  }
  try {
    checkExposure(readConfig(denoEnv));
    return listen(await prepare(denoEnv));
  } catch (e) {
    if (e instanceof ConfigError) fail(new StartError(e.message, EXIT_CONFIG));
    fail(e);
  }
}
