/**
 * Side-effect module: registers the WebGPU backend as `"webgpu"` in core's
 * backend registry, with a priority that depends on the adapter:
 *
 * - a software adapter (`adapter.info.isFallbackAdapter`, or a description
 *   naming a CPU rasterizer such as llvmpipe/lavapipe/SwiftShader/WARP) gets
 *   {@link WEBGPU_PRIORITY_SOFTWARE} (5): below WASM (10), above the reference
 *   backend (0) — a CPU pretending to be a GPU never beats the WASM kernels;
 * - a hardware adapter gets {@link WEBGPU_PRIORITY_HARDWARE} (8), still below
 *   WASM: every op waits for a GPU readback, and Deno's `mapAsync` sleeps ~10 ms
 *   before it resolves, so WebGPU only wins once activations stay on the GPU
 *   between ops (ask for it by name: `backend: "webgpu"`);
 * - no `navigator.gpu` / no adapter: registered at the software priority with a
 *   factory that resolves null, so `createBackend("webgpu")` says "unavailable".
 *
 * The adapter is probed once, with a top-level await (about 0.25 s on a
 * software adapter), because the registry takes a fixed priority.
 *
 * @module
 */

import { registerBackend } from "../core/backend/registry.ts";
import { createWebGpuBackend } from "./backend.ts";

/** Registry priority on a hardware adapter (WASM is 10; see the module note on readbacks). */
export const WEBGPU_PRIORITY_HARDWARE = 8;
/** Registry priority on a software/fallback adapter or without WebGPU (below WASM's 10). */
export const WEBGPU_PRIORITY_SOFTWARE = 5;

const SOFTWARE = /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b/i;

/** Whether adapter info describes a software (CPU) implementation. */
export function isSoftwareAdapter(
  info: { readonly description?: string; readonly isFallbackAdapter?: boolean },
): boolean {
  return info.isFallbackAdapter === true || SOFTWARE.test(info.description ?? "");
}

/** The priority `"webgpu"` gets here: probes the default adapter. */
export async function webGpuPriority(): Promise<number> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) return WEBGPU_PRIORITY_SOFTWARE;
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return WEBGPU_PRIORITY_SOFTWARE;
    const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
    return isSoftwareAdapter({
        description: info.description,
        isFallbackAdapter: info.isFallbackAdapter ?? legacy,
      })
      ? WEBGPU_PRIORITY_SOFTWARE
      : WEBGPU_PRIORITY_HARDWARE;
  } catch {
    return WEBGPU_PRIORITY_SOFTWARE;
  }
}

registerBackend("webgpu", await webGpuPriority(), () => createWebGpuBackend());
