/**
 * The server program's settings: one table of environment variables (the
 * `--help` text and the README are generated from the same entries), parsed
 * into typed values with one clear line per mistake.
 *
 * @module
 */

/** A setting the server reads from the environment. */
export interface Setting {
  /** Environment variable. */
  env: string;
  /** Default, as shown to people. */
  default: string;
  /** What it does. */
  help: string;
}

/** Every environment variable the server reads, in the order `--help` lists them. */
export const SETTINGS: readonly Setting[] = [
  { env: "MOE_EDGE_MODEL", default: "(embedded model)", help: "GGUF file to serve" },
  {
    env: "MOE_EDGE_MANIFEST",
    default: "(none)",
    help: "Model manifest to serve instead (its plugins; its adapters as <model>:<name>)",
  },
  {
    env: "MOE_EDGE_MODEL_NAME",
    default: "file name",
    help: "Model id in /v1/models and requests",
  },
  { env: "MOE_EDGE_BACKEND", default: "auto", help: "Compute backend: auto (WASM), wasm or ref" },
  {
    env: "MOE_EDGE_THREADS",
    default: "CPU count",
    help: "WASM compute threads, 1-64 (1 without Workers/shared memory)",
  },
  {
    env: "MOE_EDGE_HOST",
    default: "127.0.0.1",
    help: "Address to listen on (deno run / deno task start only)",
  },
  {
    env: "MOE_EDGE_PORT",
    default: "8000",
    help: "Port to listen on (deno run / deno task start only)",
  },
  {
    env: "PORT",
    default: "(none)",
    help: "Port when MOE_EDGE_PORT is unset (as platforms set it)",
  },
  {
    env: "MOE_EDGE_API_KEY",
    default: "(none)",
    help: "Require 'Authorization: Bearer <key>' on /v1/* and /metrics",
  },
  {
    env: "MOE_EDGE_PUBLIC",
    default: "0",
    help: "1 = serve non-loopback clients without an API key (otherwise they get 403)",
  },
  { env: "MOE_EDGE_PUBLIC_METRICS", default: "0", help: "1 = serve /metrics without the API key" },
  {
    env: "MOE_EDGE_CORS_ORIGINS",
    default: "(none)",
    help: "Comma-separated origins allowed from browsers (CORS), or *",
  },
  {
    env: "MOE_EDGE_MAX_CONCURRENT",
    default: "4",
    help: "Generations decoding at once",
  },
  { env: "MOE_EDGE_MAX_QUEUE", default: "64", help: "Requests waiting for a slot before 429" },
  {
    env: "MOE_EDGE_CTX",
    default: "min(train ctx, 2048)",
    help: "Largest context (prompt + completion) of one request",
  },
  {
    env: "MOE_EDGE_MEMORY_MB",
    default: "heap and machine",
    help: "Memory limit in MiB (weights, KV, scratch, experts); experts stream to fit",
  },
  { env: "MOE_EDGE_MAX_BODY_BYTES", default: "1048576", help: "Largest request body (413)" },
  {
    env: "MOE_EDGE_BODY_TIMEOUT_MS",
    default: "10000",
    help: "Time to receive a request body (408)",
  },
  {
    env: "MOE_EDGE_REQUEST_TIMEOUT_MS",
    default: "300000",
    help: "Time from admission to the end of a generation (504)",
  },
  {
    env: "MOE_EDGE_HEADER_TIMEOUT_MS",
    default: "10000",
    help: "Time for a connection's first request head; then it is closed (deno task start only)",
  },
  {
    env: "MOE_EDGE_IDLE_TIMEOUT_MS",
    default: "60000",
    help: "Time a connection may move no byte (and run no request) before it is closed",
  },
  {
    env: "MOE_EDGE_MAX_CONNECTIONS",
    default: "512",
    help: "Client connections open at once; more get 503 (deno task start only)",
  },
  {
    env: "MOE_EDGE_TEMPLATE_TIMEOUT_MS",
    default: "2000",
    help: "Time one chat template render may take (422)",
  },
];

/** The parsed settings. */
export interface ServerConfig {
  /** GGUF path, or null for the embedded model. */
  modelPath: string | null;
  /** Model manifest path (`MOE_EDGE_MANIFEST`), or null. */
  manifestPath: string | null;
  /** Model id. */
  modelName: string;
  /** Backend name. */
  backend: string;
  /** WASM compute threads (`MOE_EDGE_THREADS`; default `navigator.hardwareConcurrency`). */
  threads: number;
  /** Listen address. */
  hostname: string;
  /** Listen port. */
  port: number;
  /** API key, or null. */
  apiKey: string | null;
  /** Serve non-loopback clients without a key. */
  public: boolean;
  /** Serve /metrics without the key. */
  publicMetrics: boolean;
  /** CORS origins. */
  corsOrigins: string[];
  /** Generation slots. */
  maxConcurrent?: number;
  /** Queue places. */
  maxQueue?: number;
  /** Context per request. */
  nCtx?: number;
  /** `MOE_EDGE_MEMORY_MB` in bytes: the memory plan's limit. */
  memoryBytes?: number;
  /** Body size limit. */
  maxBodyBytes?: number;
  /** Body time limit. */
  bodyTimeoutMs?: number;
  /** Generation time limit. */
  requestTimeoutMs?: number;
  /** Template render time limit. */
  templateTimeoutMs?: number;
  /** Milliseconds for a connection's first request head (`deno task start`'s connection guard). */
  headerTimeoutMs: number;
  /** Milliseconds a connection may stay idle (no byte either way, no request running). */
  idleTimeoutMs: number;
  /** Client connections open at once. */
  maxConnections: number;
  /** Running on Deno Deploy. */
  deploy: boolean;
}

/** A setting has a bad value; the message is one line naming it. */
export class ConfigError extends Error {
  /** @param message one line */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * Parse the settings from `get` (an environment lookup; empty values count as
 * unset). Throws {@link ConfigError} naming the first bad variable.
 */
export function readConfig(get: (key: string) => string | undefined): ServerConfig {
  const env = (k: string): string | undefined => {
    const v = get(k)?.trim();
    return v ? v : undefined;
  };
  const int = (k: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const v = env(k);
    if (v === undefined) return undefined;
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(`${k} must be an integer from ${min} to ${max}: received '${v}'`);
    }
    return n;
  };
  const flag = (k: string): boolean => {
    const v = env(k)?.toLowerCase();
    if (v === undefined || v === "0" || v === "false" || v === "no") return false;
    if (v === "1" || v === "true" || v === "yes") return true;
    throw new ConfigError(`${k} must be 1 or 0: received '${get(k)}'`);
  };
  const modelPath = env("MOE_EDGE_MODEL") ?? null;
  const manifestPath = env("MOE_EDGE_MANIFEST") ?? null;
  if (modelPath && manifestPath) {
    throw new ConfigError(
      "MOE_EDGE_MANIFEST and MOE_EDGE_MODEL are both set: the manifest names its model; set one",
    );
  }
  const backend = env("MOE_EDGE_BACKEND") ?? "auto";
  if (!/^[a-z0-9_-]+$/i.test(backend)) {
    throw new ConfigError(`MOE_EDGE_BACKEND must be a backend name: received '${backend}'`);
  }
  const cors = (env("MOE_EDGE_CORS_ORIGINS") ?? "").split(",").map((s) => s.trim()).filter((s) =>
    s
  );
  for (const o of cors) {
    if (o !== "*" && !/^https?:\/\/[^/\s]+$/i.test(o)) {
      throw new ConfigError(
        `MOE_EDGE_CORS_ORIGINS must list origins like https://app.example (no path) or *: received '${o}'`,
      );
    }
  }
  const apiKey = env("MOE_EDGE_API_KEY");
  // = API_KEY_SYNTAX of auth.ts (not imported: config stays free of hono)
  if (apiKey !== undefined && !/^[A-Za-z0-9._~+/-]+=*$/.test(apiKey)) {
    throw new ConfigError(
      "MOE_EDGE_API_KEY must be letters, digits and . _ ~ + / - (optionally ending in =), " +
        "the characters of an RFC 6750 bearer token",
    );
  }
  return {
    modelPath,
    manifestPath,
    modelName: env("MOE_EDGE_MODEL_NAME") ??
      (modelPath
        ? modelPath.replace(/^.*[\\/]/, "").replace(/\.gguf$/i, "")
        : manifestPath
        ? manifestName(manifestPath)
        : "moe-edge-default"),
    backend,
    threads: int("MOE_EDGE_THREADS", 1, 64) ??
      Math.max(1, Math.min(64, navigator.hardwareConcurrency || 1)),
    hostname: env("MOE_EDGE_HOST") ?? "127.0.0.1",
    port: int("MOE_EDGE_PORT", 0, 65535) ?? int("PORT", 0, 65535) ?? 8000,
    apiKey: apiKey ?? null,
    public: flag("MOE_EDGE_PUBLIC"),
    publicMetrics: flag("MOE_EDGE_PUBLIC_METRICS"),
    corsOrigins: cors,
    maxConcurrent: int("MOE_EDGE_MAX_CONCURRENT", 1),
    maxQueue: int("MOE_EDGE_MAX_QUEUE", 0),
    nCtx: int("MOE_EDGE_CTX", 2),
    memoryBytes: ((mb) => mb === undefined ? undefined : mb * 1024 * 1024)(
      int("MOE_EDGE_MEMORY_MB", 1, 1 << 30),
    ),
    maxBodyBytes: int("MOE_EDGE_MAX_BODY_BYTES", 1),
    bodyTimeoutMs: int("MOE_EDGE_BODY_TIMEOUT_MS", 1),
    requestTimeoutMs: int("MOE_EDGE_REQUEST_TIMEOUT_MS", 1),
    templateTimeoutMs: int("MOE_EDGE_TEMPLATE_TIMEOUT_MS", 1),
    headerTimeoutMs: int("MOE_EDGE_HEADER_TIMEOUT_MS", 1, 2 ** 31 - 1) ?? 10_000,
    idleTimeoutMs: int("MOE_EDGE_IDLE_TIMEOUT_MS", 1, 2 ** 31 - 1) ?? 60_000,
    maxConnections: int("MOE_EDGE_MAX_CONNECTIONS", 1, 1_000_000) ?? 512,
    deploy: get("DENO_DEPLOYMENT_ID") !== undefined,
  };
}

/**
 * Default model id of a manifest: its file name without `.json`, or its folder's name for
 * `model.json` (`examples/adapters/model.json` → `adapters`).
 */
export function manifestName(path: string): string {
  const parts = path.split(/[\\/]/).filter((s) => s !== "");
  const file = (parts.at(-1) ?? "model.json").replace(/\.json$/i, "");
  return file === "model" && parts.length > 1 ? parts.at(-2)! : file || "model";
}

/** The settings as a Markdown table (README and `--help`). */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => `| \`${s.env}\` | ${s.default} | ${s.help} |`);
  return ["| Variable | Default | Meaning |", "| --- | --- | --- |", ...rows].join("\n");
}

/** The `--help` text. */
export function helpText(): string {
  const w = Math.max(...SETTINGS.map((s) => s.env.length));
  const d = Math.max(...SETTINGS.map((s) => s.default.length));
  const lines = SETTINGS.map((s) => `  ${s.env.padEnd(w)}  ${s.default.padEnd(d)}  ${s.help}`);
  return [
    "moe-edge server: an OpenAI-compatible API over one MoE model.",
    "",
    "Usage:",
    "  deno task start [--help]            listen on MOE_EDGE_HOST:MOE_EDGE_PORT",
    "  deno serve --host H --port P main.ts  (deno serve picks the address; HOST/PORT ignored)",
    "",
    "Settings (environment variables; empty = unset):",
    `  ${"Variable".padEnd(w)}  ${"Default".padEnd(d)}  Meaning`,
    ...lines,
    "",
    "Without MOE_EDGE_API_KEY only loopback clients are served (others get 403), and",
    "listening on a non-loopback address refuses to start, unless MOE_EDGE_PUBLIC=1.",
  ].join("\n");
}

/** One line saying who may use the server. */
export function exposureLine(cfg: ServerConfig): string {
  if (cfg.apiKey) {
    return `auth: API key required on /v1/*${cfg.publicMetrics ? "" : " and /metrics"}` +
      (cfg.corsOrigins.length ? `; CORS: ${cfg.corsOrigins.join(", ")}` : "");
  }
  if (cfg.public) {
    return "WARNING: no API key and MOE_EDGE_PUBLIC=1: anyone who can reach this address " +
      "can use the completion API and /metrics";
  }
  if (cfg.deploy) {
    return "auth: no API key on Deno Deploy, where every client is remote: all requests but " +
      "/healthz get 403 until MOE_EDGE_API_KEY (or MOE_EDGE_PUBLIC=1) is set";
  }
  return "auth: no API key: only loopback clients are served (others get 403); " +
    "set MOE_EDGE_API_KEY, or MOE_EDGE_PUBLIC=1 to serve everyone";
}
