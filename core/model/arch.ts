/**
 * The architecture registry: one module per supported GGUF `general.architecture`
 * under `core/model/arch/` (hyper-parameters, tensors, the block's forward pass
 * composed from the shared blocks of `arch/blocks.ts`). Adding an architecture =
 * one new module + one line in `ARCHS` + tests (see docs/ARCHITECTURE.md).
 *
 * @module
 */

import type { ArchSpec } from "./arch/types.ts";
import { bailingmoe2 } from "./arch/bailingmoe2.ts";
import { deepseek2 } from "./arch/deepseek2.ts";
import { ernie45Moe } from "./arch/ernie4_5-moe.ts";
import { gptOss } from "./arch/gpt-oss.ts";
import { granitemoe } from "./arch/granitemoe.ts";
import { llama } from "./arch/llama.ts";
import { olmoe } from "./arch/olmoe.ts";
import { qwen2moe } from "./arch/qwen2moe.ts";
import { qwen3moe } from "./arch/qwen3moe.ts";

export type {
  ArchHParams,
  ArchSpec,
  ArchSynth,
  HParamContext,
  LayerContext,
  ModelScales,
  RoutingParams,
  SynthContext,
  SynthMetaEntry,
  SynthMetaParts,
  SynthSharedExpert,
  SynthStandardOptions,
} from "./arch/types.ts";
export type { QkNorm, SharedExpertKind } from "./arch/blocks.ts";

const ARCHS = {
  llama,
  qwen2moe,
  qwen3moe,
  olmoe,
  granitemoe,
  deepseek2,
  "gpt-oss": gptOss,
  "ernie4_5-moe": ernie45Moe,
  bailingmoe2,
} as const satisfies Readonly<Record<string, ArchSpec>>;

/** A registered architecture name (`general.architecture`), derived from the registry. */
export type ArchName = keyof typeof ARCHS;

/** The architecture of a synthetic model whose spec names none. */
export const DEFAULT_ARCH: ArchName = "llama";

/** Supported architecture names. */
export const SUPPORTED_ARCHS: readonly string[] = Object.keys(ARCHS);

/** Whether `name` is a registered architecture. */
export function isArchName(name: string): name is ArchName {
  return Object.hasOwn(ARCHS, name);
}

/** The module of `name`, or undefined when unsupported. */
export function archSpec(name: string): ArchSpec | undefined {
  return isArchName(name) ? ARCHS[name] : undefined;
}
