/**
 * The WASM SIMD backend. Importing this module registers it as `"wasm"` in
 * core's backend registry.
 *
 * @example
 * ```ts
 * import { createWasmBackend } from "./mod.ts";
 * const be = await createWasmBackend({ maxMemoryBytes: 512 * 1024 * 1024 });
 * console.log(be.name, be.caps.formats.length); // wasm 11
 * be.dispose();
 * ```
 *
 * @module
 */

import "./register.ts";

export {
  createWasmBackend,
  WASM_FORMATS,
  WasmBackend,
  type WasmBackendOptions,
} from "./backend.ts";
export { type ArenaStats, SlotArena } from "./arena.ts";
export {
  createShardedWasmBackend,
  ShardedWasmBackend,
  type ShardedWasmBackendOptions,
  type ShardStats,
} from "./sharded.ts";
export { type KernelVariant, relaxedSimdSupported } from "./pkg/moe_edge_kernels.ts";
export { WASM_BACKEND_PRIORITY } from "./register.ts";
