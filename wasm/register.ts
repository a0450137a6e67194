/**
 * Side-effect module: registers the WASM backend as `"wasm"` (priority 10,
 * above the reference backend) in core's backend registry. Import it (or
 * `wasm/mod.ts`) once at start-up.
 *
 * @module
 */

import { type BackendFactory, registerBackend } from "../core/backend/registry.ts";
import { createWasmBackend } from "./backend.ts";
import { createShardedWasmBackend } from "./sharded.ts";

/** Registry priority of the WASM backend (the reference backend is 0). */
export const WASM_BACKEND_PRIORITY = 10;

/**
 * The `"wasm"` factory: one instance, or several when asked for a heap (a memory plan past one
 * wasm32 memory, `BackendCreateOptions.heapBytes`). Threads default to the CPU count
 * (`navigator.hardwareConcurrency`, at most 64; 1 where Workers or shared memory are missing).
 */
export const wasmBackendFactory: BackendFactory = (opts) =>
  opts?.heapBytes !== undefined
    ? createShardedWasmBackend({
      threads: opts.threads ?? "auto",
      heapBytes: opts.heapBytes,
      reserveBytes: opts.reserveBytes,
    })
    : createWasmBackend({ threads: opts?.threads ?? "auto", sharedMemory: opts?.sharedMemory });

registerBackend("wasm", WASM_BACKEND_PRIORITY, wasmBackendFactory);
