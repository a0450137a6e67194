/**
 * The WebGPU backend. Importing this module registers it as `"webgpu"` in
 * core's backend registry, below WASM in auto-selection (see register.ts);
 * opt in with `import "@moe-edge/runtime/gpu"` and `backend: "webgpu"`.
 *
 * @example
 * ```ts ignore
 * import { createWebGpuBackend } from "./mod.ts";
 * const be = await createWebGpuBackend();
 * console.log(be?.device.description ?? "no WebGPU here");
 * be?.dispose();
 * ```
 *
 * @module
 */

import "./register.ts";

export {
  createWebGpuBackend,
  DEFAULT_CPU_OPS,
  type HostOp,
  type MatmulCall,
  type Placement,
  WEBGPU_FORMATS,
  WebGpuBackend,
  type WebGpuBackendOptions,
  type WebGpuStats,
} from "./backend.ts";
export type { BridgeOptions } from "./bridge.ts";
export type { DeviceInfo } from "./protocol.ts";
export {
  isSoftwareAdapter,
  WEBGPU_PRIORITY_HARDWARE,
  WEBGPU_PRIORITY_SOFTWARE,
  webGpuPriority,
} from "./register.ts";
