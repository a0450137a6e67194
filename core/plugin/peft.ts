/**
 * PEFT-style adapter directories (`adapter_config.json` +
 * `adapter_model.safetensors`): key parsing for plain LoRA, original MoLA
 * (`lora_A_{i}`, `router.router`), MoE-PEFT (`experts.{e}`, `moe_gate`) and
 * SMoRA/SRMoLE (`lora_router`, `lora_biases`), grouped per projection.
 *
 * @module
 */

import { ManifestError, SafetensorsError } from "../errors.ts";
import { firstNonFinite, readSafetensors, type SafetensorsFile } from "../formats/safetensors.ts";
import type { LinearName } from "../model/transformer.ts";
import { MemorySource } from "../store/byte_source.ts";
import { compilePatternMap, type PeftPattern } from "./pattern.ts";
import { MAX_MANIFEST_BYTES } from "./resolve.ts";
import type { PluginSetup } from "./types.ts";

/** What a tensor of an adapter is. */
export type PeftTensorKind = "A" | "B" | "B_bias" | "router" | "rank_router" | "rank_bias";

/** A parsed adapter tensor key. */
export interface PeftKey {
  /** Decoder layer; -1 for `lm_head`. */
  readonly layer: number;
  /** Our projection name. */
  readonly proj: LinearName;
  /** HF module path, e.g. `model.layers.0.self_attn.q_proj` (for rank/alpha patterns). */
  readonly module: string;
  /** Tensor role. */
  readonly kind: PeftTensorKind;
  /** Expert index for MoLA/MoE-PEFT experts, -1 otherwise. */
  readonly expert: number;
  /**
   * The model's routed expert the module belongs to (`experts.N.w1/w2/w3` as
   * in Mixtral, `experts.N.gate_proj/up_proj/down_proj` as in Qwen-MoE), -1
   * for projections outside the experts.
   */
  readonly ffnExpert: number;
}

const PROJ: Readonly<Record<string, LinearName>> = {
  q: "attn_q",
  k: "attn_k",
  v: "attn_v",
  o: "attn_output",
  gate: "ffn_gate",
  up: "ffn_up",
  down: "ffn_down",
};

/** Mixtral (`w1` gate, `w2` down, `w3` up) and Qwen-MoE expert projection names → ours. */
const EXPERT_PROJ: Readonly<Record<string, LinearName>> = {
  w1: "ffn_gate_exps",
  w3: "ffn_up_exps",
  w2: "ffn_down_exps",
  gate_proj: "ffn_gate_exps",
  up_proj: "ffn_up_exps",
  down_proj: "ffn_down_exps",
};

const EXPERT_RE =
  /^(?:base_model\.model\.)?((?:model\.|mola\.|dynmole\.)?layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj))\.(.+)$/;
const LAYER_RE =
  /^(?:base_model\.model\.)?((?:model\.|mola\.|dynmole\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj)\.(.+)$/;
const HEAD_RE = /^(?:base_model\.model\.)?(lm_head)\.(.+)$/;

function suffixKind(s: string): { kind: PeftTensorKind; expert: number } | string {
  let m: RegExpMatchArray | null;
  if (s === "lora_A.weight") return { kind: "A", expert: -1 };
  if (s === "lora_B.weight") return { kind: "B", expert: -1 };
  if (s === "lora_B.bias") return { kind: "B_bias", expert: -1 };
  if ((m = s.match(/^lora_([AB])_(\d+)\.weight$/))) {
    return { kind: m[1] as "A" | "B", expert: Number(m[2]) };
  }
  if ((m = s.match(/^experts\.(\d+)\.lora_([AB])\.weight$/))) {
    return { kind: m[2] as "A" | "B", expert: Number(m[1]) };
  }
  if (s === "router.router.weight" || s === "moe_gate.weight") {
    return { kind: "router", expert: -1 };
  }
  if (s === "lora_router.weight") return { kind: "rank_router", expert: -1 };
  if (s === "lora_biases") return { kind: "rank_bias", expert: -1 };
  if (s.startsWith("lora_magnitude_vector")) return "DoRA (lora_magnitude_vector) is not supported";
  if (s.startsWith("lora_embedding")) return "embedding LoRA is not supported";
  return "unrecognised adapter tensor";
}

/**
 * Parse an adapter tensor key. Returns a reason string for keys that are
 * recognisably unsupported or unknown (full `modules_to_save` tensors, DoRA).
 */
export function parsePeftKey(key: string): PeftKey | string {
  const x = key.match(EXPERT_RE);
  if (x) {
    const k = suffixKind(x[5]);
    if (typeof k === "string") return k;
    const ffnExpert = Number(x[3]);
    if (!Number.isSafeInteger(ffnExpert)) return "expert index out of range";
    return {
      layer: Number(x[2]),
      proj: EXPERT_PROJ[x[4]],
      module: x[1].replace(/^(?:mola|dynmole)\./, "model."),
      ...k,
      ffnExpert,
    };
  }
  const m = key.match(LAYER_RE);
  const h = m ? null : key.match(HEAD_RE);
  if (!m && !h) return "not a layer projection or lm_head";
  const suffix = m ? m[4] : h![2];
  const k = suffixKind(suffix);
  if (typeof k === "string") return k;
  const module = (m ? m[1] : h![1]).replace(/^(?:mola|dynmole)\./, "model.");
  return {
    layer: m ? Number(m[2]) : -1,
    proj: m ? PROJ[m[3]] : "output",
    module,
    ...k,
    ffnExpert: -1,
  };
}

/** Tensors of one adapted projection. */
export interface PeftModule {
  /** Layer (-1 for the output head). */
  readonly layer: number;
  /** Projection. */
  readonly proj: LinearName;
  /** The model's routed expert (for `ffn_*_exps`), -1 otherwise. */
  readonly ffnExpert: number;
  /** HF module path. */
  readonly module: string;
  /** Tensor names by role; `A`/`B` keyed by expert (-1 = single LoRA). */
  readonly a: Map<number, string>;
  /** `lora_B` names by expert. */
  readonly b: Map<number, string>;
  /** Other roles. */
  readonly other: Map<Exclude<PeftTensorKind, "A" | "B">, string>;
}

/** An adapter directory, parsed. */
export interface PeftAdapter {
  /** `adapter_config.json` as read. */
  readonly config: Readonly<Record<string, unknown>>;
  /** The safetensors index. */
  readonly file: SafetensorsFile;
  /** Modules keyed `"layer:proj"` (`"layer:proj:expert"` for expert projections) in file order. */
  readonly modules: ReadonlyMap<string, PeftModule>;
}

/** Reads a file of the adapter directory (relative name → bytes). */
export type AdapterFileReader = (name: string) => Promise<Uint8Array>;

/**
 * Read and index an adapter directory. Throws `ManifestError`
 * (`"bad_adapter_config"`) for a config that is not a JSON object or has a
 * non-numeric `r`/`lora_alpha`, `SafetensorsError` for a malformed file or
 * unsupported/unknown tensor keys (`"unsupported_tensor"`, listing all).
 */
export async function readPeftAdapter(
  read: AdapterFileReader,
  label = "adapter",
): Promise<PeftAdapter> {
  const cfgText = new TextDecoder().decode(await read("adapter_config.json"));
  let config: unknown;
  try {
    config = JSON.parse(cfgText);
  } catch (e) {
    throw new ManifestError(
      "bad_adapter_config",
      `${label}/adapter_config.json: not JSON: ${(e as Error).message}`,
      { field: "adapter_config.json" },
    );
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new ManifestError(
      "bad_adapter_config",
      `${label}/adapter_config.json: must be a JSON object`,
      {
        field: "adapter_config.json",
      },
    );
  }
  const c = config as Record<string, unknown>;
  for (const f of ["lora_alpha", "r"]) {
    const v = c[f];
    const pos = (x: unknown) => typeof x === "number" && Number.isFinite(x) && x > 0;
    const ok = v === undefined || pos(v) || (f === "r" && Array.isArray(v) && v.every(pos));
    if (!ok) {
      throw new ManifestError(
        "bad_adapter_config",
        `${label}/adapter_config.json: field '${f}' must be a positive number${
          f === "r" ? " or a list of them" : ""
        }: received ${JSON.stringify(v)}`,
        { field: f },
      );
    }
  }
  if (c.use_dora === true) {
    throw new ManifestError(
      "bad_adapter_config",
      `${label}/adapter_config.json: use_dora (DoRA) is not supported`,
      {
        field: "use_dora",
      },
    );
  }
  for (const field of ["rank_pattern", "alpha_pattern"]) {
    try {
      compiledPatterns(c[field], field); // every key is checked up front, not only those reached
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      throw new ManifestError(e.code, `${label}/${e.message}`, { ...e.details });
    }
  }
  const bytes = await read("adapter_model.safetensors");
  const file = await readSafetensors(new MemorySource(bytes, `${label}/adapter_model.safetensors`));
  const modules = new Map<string, PeftModule>();
  const bad: string[] = [];
  for (const name of file.tensors.keys()) {
    const k = parsePeftKey(name);
    if (typeof k === "string") {
      bad.push(`'${name}' (${k})`);
      continue;
    }
    const id = k.ffnExpert >= 0 ? `${k.layer}:${k.proj}:${k.ffnExpert}` : `${k.layer}:${k.proj}`;
    let m = modules.get(id);
    if (!m) {
      m = {
        layer: k.layer,
        proj: k.proj,
        ffnExpert: k.ffnExpert,
        module: k.module,
        a: new Map(),
        b: new Map(),
        other: new Map(),
      };
      modules.set(id, m);
    }
    if (k.kind === "A") m.a.set(k.expert, name);
    else if (k.kind === "B") m.b.set(k.expert, name);
    else m.other.set(k.kind, name);
  }
  if (bad.length) {
    throw new SafetensorsError(
      "unsupported_tensor",
      `${label}/adapter_model.safetensors: ${bad.length} tensor(s) not supported: ${
        bad.slice(0, 8).join(", ")
      }${bad.length > 8 ? ", …" : ""}`,
      { tensors: bad },
    );
  }
  return { config: c, file, modules };
}

/**
 * A tensor's values as f32, checked against `shape` (`SafetensorsError`
 * `"bad_shape"`) and scanned: a NaN or ±Infinity anywhere is `SafetensorsError`
 * `"non_finite"` naming the tensor and the index (adapters are small, so every
 * value is checked at load).
 */
export async function readTensor(
  file: SafetensorsFile,
  name: string,
  shape: readonly number[],
): Promise<Float32Array> {
  const t = file.tensor(name);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => shape[i] >= 0 && d !== shape[i])) {
    throw new SafetensorsError(
      "bad_shape",
      `${file.source.name}: tensor '${name}' has shape [${t.shape.join(", ")}], expected [${
        shape.map((d) => (d < 0 ? "?" : d)).join(", ")
      }]`,
      { name, shape: t.shape, expected: shape },
    );
  }
  const values = await file.readF32(name);
  const bad = firstNonFinite(values);
  if (bad >= 0) {
    throw new SafetensorsError(
      "non_finite",
      `${file.source.name}: tensor '${name}' holds a non-finite value (${
        values[bad]
      }) at index ${bad}`,
      { name, index: bad },
    );
  }
  return values;
}

/**
 * PEFT per-module value from `rank_pattern`/`alpha_pattern`: the first key
 * `k` (in the config's order) whose pattern matches the module path as PEFT's
 * `re.match(rf"(.*\.)?({k})$", module)` does wins, else `fallback`. Keys are
 * matched by a linear-time NFA (`compilePeftPattern`), never by a
 * backtracking `RegExp`; a key that is not a supported pattern, or a value
 * that is not a positive number, throws `ManifestError` (`"bad_pattern"`,
 * `"bad_adapter_config"`).
 */
export function patternValue(
  pattern: unknown,
  module: string,
  fallback: number,
  field = "rank_pattern",
): number {
  for (const [p, v] of compiledPatterns(pattern, field)) if (p.matches(module)) return v;
  return fallback;
}

const compiledCache = new WeakMap<object, readonly (readonly [PeftPattern, number])[]>();

function compiledPatterns(
  pattern: unknown,
  field: string,
): readonly (readonly [PeftPattern, number])[] {
  if (typeof pattern !== "object" || pattern === null) return compilePatternMap(pattern, field);
  let c = compiledCache.get(pattern);
  if (!c) compiledCache.set(pattern, c = compilePatternMap(pattern, field));
  return c;
}

/** Read the adapter directory named by a plugin config path (relative to the model manifest). */
export function openPeftAdapter(setup: PluginSetup, dir: string): Promise<PeftAdapter> {
  const base = setup.resolve(dir.endsWith("/") ? dir : `${dir}/`);
  return readPeftAdapter(
    (name) =>
      setup.readBytes(
        new URL(name, base).href,
        name.endsWith(".json") ? MAX_MANIFEST_BYTES : undefined,
      ),
    dir,
  );
}
