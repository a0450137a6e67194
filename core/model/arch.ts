/**
 * The architecture registry: one module per supported GGUF `general.architecture`
 * under `core/model/arch/` (hyper-parameters, tensors, the block's forward pass
 * composed from the shared blocks of `arch/blocks.ts`). Adding an architecture =
 * one new module + one line in `ARCHS` + tests (see docs/ARCHITECTURE.md).
 *
 * @module
 */

import type { ArchSpec } from "./arch/types.ts";
import { deepseek2 } from "./arch/deepseek2.ts";
import { gptOss } from "./arch/gpt-oss.ts";
import { granitemoe } from "./arch/granitemoe.ts";
import { llama } from "./arch/llama.ts";
import { olmoe } from "./arch/olmoe.ts";
import { qwen2moe } from "./arch/qwen2moe.ts";
import { qwen3moe } from "./arch/qwen3moe.ts";

export type {
  ArchHParams,
  ArchSpec,
  HParamContext,
  LayerContext,
  ModelScales,
  RoutingParams,
} from "./arch/types.ts";
export type { QkNorm, SharedExpertKind } from "./arch/blocks.ts";

const ARCHS: Readonly<Record<string, ArchSpec>> = {
  llama,
  qwen2moe,
  qwen3moe,
  olmoe,
  granitemoe,
  deepseek2,
  "gpt-oss": gptOss,
};

/** Supported architecture names. */
export const SUPPORTED_ARCHS: readonly string[] = Object.keys(ARCHS);

/** The module of `name`, or undefined when unsupported. */
export function archSpec(name: string): ArchSpec | undefined {
  return Object.hasOwn(ARCHS, name) ? ARCHS[name] : undefined;
}
