/**
 * Model and plugin manifests: their types, and validation against the JSON
 * Schemas in `schemas/` (with Ajv, every error collected). Problems carry the
 * field path and the reason; `manifestError` reports all of them at once.
 *
 * @module
 */

import { Ajv, type ErrorObject, type ValidateFunction } from "npm:ajv@8";
import { ManifestError } from "../errors.ts";
import modelSchema from "../../schemas/model-manifest.schema.json" with { type: "json" };
import pluginSchema from "../../schemas/plugin-manifest.schema.json" with { type: "json" };
import { compileSafeRegExp } from "./pattern.ts";
import { entryStaysInside } from "./resolve.ts";
import { type HookName, PLUGIN_API_VERSION } from "./types.ts";

/** One plugin of a model manifest. */
export interface PluginRef {
  /** Built-in name, local path, https URL of a plugin manifest, or npm:/jsr: specifier. */
  readonly use: string;
  /**
   * Subresource integrity: `sha256-<base64>` of the plugin manifest (required
   * for https and jsr:), or of the npm package tarball (`sha512-…`, required
   * for npm:).
   */
  readonly integrity?: string;
  /** Plugin config (validated against the plugin's config schema). */
  readonly config?: Readonly<Record<string, unknown>>;
}

/** A model manifest (`schemas/model-manifest.schema.json`). */
export interface ModelManifest {
  /** Always 1. */
  readonly manifestVersion: 1;
  /** The GGUF model. */
  readonly model: { readonly source: string; readonly sha256?: string };
  /** Backend name. */
  readonly backend?: "auto" | "ref" | "wasm" | "webgpu";
  /** Expert streaming settings. */
  readonly memory?: {
    readonly expertBudgetMb?: number;
    readonly pinnedExperts?: readonly (readonly [number, number])[];
    /** Resident low-bit copies of every expert in this type, used on misses (`--expert-fallback`). */
    readonly expertFallback?: string;
    /** Side GGUF with the copies (local, relative to the manifest; its `.manifest.json` is checked). */
    readonly expertFallbackFile?: string;
    /** Misses with a gate weight at or above this wait for full precision (default 0.8). */
    readonly expertCriticalWeight?: number;
    /** Which fallback uses load full precision in the background (`--expert-fallback-loads`). */
    readonly expertFallbackLoads?: string;
  };
  /** Plugins in application order. */
  readonly plugins: readonly PluginRef[];
  /**
   * Named adapters (served as `<model>:<name>`): plugins with only the
   * `adapter` hook, applied after `plugins` to the requests that pick them.
   */
  readonly adapters?: Readonly<Record<string, readonly PluginRef[]>>;
}

/** A plugin manifest (`schemas/plugin-manifest.schema.json`). */
export interface PluginManifest {
  /** Plugin name. */
  readonly name: string;
  /** Semantic version. */
  readonly version: string;
  /** Plugin API major version it targets. */
  readonly apiVersion: number;
  /** Human description. */
  readonly description?: string;
  /** Implemented hooks. */
  readonly hooks: readonly HookName[];
  /** Entry module, relative to the plugin folder. */
  readonly entry: string;
  /** `sha256-<base64>` of the entry (required over https and jsr:; checked whenever present). */
  readonly entryIntegrity?: string;
  /** JSON Schema of the config. */
  readonly config: Readonly<Record<string, unknown>>;
}

/** One thing wrong with a manifest or config. */
export interface ManifestProblem {
  /** Where: file or plugin label plus a field path, e.g. `model.json: plugins[1].config.rank`. */
  readonly path: string;
  /** Machine-readable code (`"missing_field"`, `"unknown_field"`, `"bad_type"`, …). */
  readonly code: string;
  /** Why. */
  readonly message: string;
}

const AJV_OPTIONS = {
  allErrors: true,
  strictSchema: true,
  strictNumbers: true,
  strictTypes: false,
  strictTuples: false,
  strictRequired: false,
  useDefaults: true,
  verbose: true,
  addUsedSchema: false, // plugin schemas may share an $id
} as const;
const ajv = new Ajv(AJV_OPTIONS);
/**
 * Plugin config schemas come from plugin manifests, so their `pattern` and
 * `patternProperties` regexes run on a linear-time matcher, never on a
 * backtracking `RegExp` (a pattern it cannot run safely makes the schema a
 * `bad_config_schema` problem).
 */
const configAjv = new Ajv({
  ...AJV_OPTIONS,
  allowMatchingProperties: true, // else Ajv tests each pattern on the property names with new RegExp
  code: {
    regExp: Object.assign((p: string, f: string) => compileSafeRegExp(p, f), {
      code: "compileSafeRegExp",
    }),
  },
});
let modelValidator: ValidateFunction | undefined;
let pluginValidator: ValidateFunction | undefined;
const configValidators = new WeakMap<object, ValidateFunction>();

const CODES: Readonly<Record<string, string>> = {
  required: "missing_field",
  additionalProperties: "unknown_field",
  type: "bad_type",
  enum: "bad_value",
  const: "bad_value",
  pattern: "bad_format",
  format: "bad_format",
  minimum: "out_of_range",
  maximum: "out_of_range",
  exclusiveMinimum: "out_of_range",
  exclusiveMaximum: "out_of_range",
  minItems: "bad_length",
  maxItems: "bad_length",
  minLength: "bad_length",
  maxLength: "bad_length",
  uniqueItems: "duplicate_item",
};

/** `/plugins/0/use` → `plugins[0].use`. */
export function fieldPath(pointer: string, child?: string): string {
  const parts = pointer.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (child !== undefined) parts.push(child);
  let s = "";
  for (const p of parts) s += /^\d+$/.test(p) ? `[${p}]` : s ? `.${p}` : p;
  return s || "(root)";
}

function describe(e: ErrorObject, data: unknown): ManifestProblem & { field: string } {
  const p = e.params as Record<string, unknown>;
  let field = fieldPath(e.instancePath);
  let message = e.message ?? "is invalid";
  const got = valueAt(data, e.instancePath);
  switch (e.keyword) {
    case "required":
      field = fieldPath(e.instancePath, String(p.missingProperty));
      message = "is required";
      break;
    case "additionalProperties": {
      field = fieldPath(e.instancePath, String(p.additionalProperty));
      const known = Object.keys(
        (e.parentSchema as { properties?: object } | undefined)?.properties ?? {},
      );
      const near = closest(String(p.additionalProperty), known);
      message = `is not a known field${near ? ` (did you mean '${near}'?)` : ""}`;
      break;
    }
    case "enum":
      message = `must be one of ${
        (p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")
      }: received ${JSON.stringify(got)}`;
      break;
    case "const":
      message = `must be ${JSON.stringify(p.allowedValue)}: received ${JSON.stringify(got)}`;
      break;
    case "type":
      message = `must be ${p.type}: received ${
        got === null ? "null" : Array.isArray(got) ? "array" : typeof got
      }`;
      break;
    case "pattern":
      message = `must match /${p.pattern}/: received ${JSON.stringify(got)}`;
      break;
    default:
      if (got === null || typeof got !== "object") message += `: received ${JSON.stringify(got)}`;
  }
  return { path: field, field, code: CODES[e.keyword] ?? "invalid", message };
}

/** The known name closest to `name` (case-insensitive match or edit distance ≤ 2). */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined, bestD = 3;
  for (const k of known) {
    const d = k.toLowerCase() === name.toLowerCase() ? 0 : editDistance(name, k);
    if (d < bestD && d < name.length) [best, bestD] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

function valueAt(data: unknown, pointer: string): unknown {
  let v = data;
  for (const p of pointer.split("/").slice(1)) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<string, unknown>)[p.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return v;
}

function run(
  validate: ValidateFunction,
  data: unknown,
  where: string,
  prefix = "",
): ManifestProblem[] {
  if (validate(data)) return [];
  const out: ManifestProblem[] = [];
  const seen = new Set<string>();
  for (const e of validate.errors ?? []) {
    if (e.keyword === "if") continue; // its `then` branch already reported the concrete field
    const d = describe(e, data);
    const path = `${where}: ${prefix}${prefix && d.field === "(root)" ? "" : d.field}`.replace(
      /\.$/,
      "",
    );
    const key = `${path}|${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ path, code: d.code, message: d.message });
  }
  return out;
}

/**
 * Validate a model manifest (shape only; plugins are checked by the loader).
 * Returns every problem; empty when valid.
 */
export function validateModelManifest(value: unknown, where = "manifest"): ManifestProblem[] {
  modelValidator ??= ajv.compile(modelSchema);
  const problems = run(modelValidator, value, where);
  // semantic checks run on whatever is well-formed, so one pass reports everything
  const plugins = (value as { plugins?: unknown } | null)?.plugins;
  if (Array.isArray(plugins)) {
    plugins.forEach((p: { use?: unknown }, i) => {
      if (typeof p?.use === "string" && p.use.startsWith("http://")) {
        problems.push({
          path: `${where}: plugins[${i}].use`,
          code: "insecure_source",
          message: `remote plugins must use https: received ${JSON.stringify(p.use)}`,
        });
      }
    });
  }
  return problems;
}

/**
 * Validate a plugin manifest: schema, API version gate, entry kept inside
 * the plugin folder (plain relative segments: no `.`/`..`, no `%` escapes,
 * which URL resolution would decode, no backslash), and a config schema that
 * compiles.
 */
export function validatePluginManifest(value: unknown, where: string): ManifestProblem[] {
  pluginValidator ??= ajv.compile(pluginSchema);
  const problems = run(pluginValidator, value, where).map((p) =>
    /: hooks\[\d+\]$/.test(p.path) && p.code === "bad_value" ? { ...p, code: "unknown_hook" } : p
  );
  if (typeof value !== "object" || value === null) return problems;
  const m = value as Partial<PluginManifest>;
  if (
    typeof m.apiVersion === "number" && Number.isInteger(m.apiVersion) &&
    m.apiVersion !== PLUGIN_API_VERSION
  ) {
    problems.push({
      path: `${where}: apiVersion`,
      code: "incompatible_api",
      message:
        `plugin targets plugin API ${m.apiVersion}; this runtime implements API ${PLUGIN_API_VERSION}`,
    });
  }
  if (typeof m.entry === "string" && !entryStaysInside(m.entry)) {
    problems.push({
      path: `${where}: entry`,
      code: "entry_outside",
      message: `must stay inside the plugin folder: received ${JSON.stringify(m.entry)}`,
    });
  }
  if (typeof m.config === "object" && m.config !== null && !Array.isArray(m.config)) {
    try {
      configValidator(m.config);
    } catch (e) {
      problems.push({
        path: `${where}: config`,
        code: "bad_config_schema",
        message: `is not a valid JSON Schema: ${(e as Error).message}`,
      });
    }
  }
  return problems;
}

function configValidator(schema: object): ValidateFunction {
  let v = configValidators.get(schema);
  if (!v) {
    v = configAjv.compile(schema);
    configValidators.set(schema, v);
  }
  return v;
}

/**
 * Validate `config` against a plugin's config schema, filling schema
 * defaults. Returns the completed config (a copy) and the problems.
 */
export function validatePluginConfig(
  schema: Readonly<Record<string, unknown>>,
  config: unknown,
  where: string,
): { config: Record<string, unknown>; problems: ManifestProblem[] } {
  const copy = structuredClone(config ?? {}) as Record<string, unknown>;
  const problems = run(configValidator(schema), copy, where, "config.");
  return { config: copy, problems };
}

/**
 * One `ManifestError` for all problems: `code` is the problem's own code
 * when there is one, else `"invalid_manifest"`; `details.problems` lists them.
 */
export function manifestError(all: readonly ManifestProblem[], source: string): ManifestError {
  const seen = new Set<string>();
  const problems = all.filter((p) => {
    const k = `${p.path}\u0000${p.code}`; // one problem found by two stages is reported once
    return seen.has(k) ? false : (seen.add(k), true);
  });
  const lines = problems.map((p) => `  - ${p.path}: ${p.message} [${p.code}]`);
  return new ManifestError(
    problems.length === 1 ? problems[0].code : "invalid_manifest",
    `Cannot load ${source}: ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n${
      lines.join("\n")
    }`,
    { problems },
  );
}
