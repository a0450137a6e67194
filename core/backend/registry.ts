/**
 * Backend registry and auto-selection. Backends register a factory with a
 * priority; `"auto"` tries them from the highest priority down and commits
 * to the first one that can be created (the reference backend, priority 0,
 * is always last and always works). Core never imports a backend module:
 * `wasm/` and `gpu/` register themselves when imported.
 *
 * @module
 */

import { BackendError } from "../errors.ts";
import type { Backend } from "./backend.ts";
import { createRefBackend } from "./ref_backend.ts";

/** Options a factory may honour (others ignore them). */
export interface BackendCreateOptions {
  /** Compute threads (the WASM backend; integer ≥ 1, default: the CPU count). */
  readonly threads?: number;
  /**
   * Heap bytes the caller's memory plan needs in the backend (weights, KV,
   * scratch). The WASM backend, whose one wasm32 memory holds 4 GiB, holds
   * more as several instances (wasm/sharded.ts); `caps.heapBytes` reports
   * what it got. Others ignore it.
   */
  readonly heapBytes?: number;
  /** With `heapBytes`: bytes each of several heaps keeps free for its scratch and KV growth. */
  readonly reserveBytes?: number;
  /**
   * Ask for memory a worker thread can write into (the WASM backend: shared
   * linear memory even at one thread), used by streamed experts' off-thread
   * loads. Backends without it ignore it.
   */
  readonly sharedMemory?: boolean;
}

/** Creates a backend; rejects (or resolves null) when unavailable here. */
export type BackendFactory = (opts?: BackendCreateOptions) => Promise<Backend | null>;

interface Entry {
  name: string;
  priority: number;
  factory: BackendFactory;
}

const entries = new Map<string, Entry>();

/** Register (or replace) a backend factory. Higher priority wins in auto-selection. */
export function registerBackend(name: string, priority: number, factory: BackendFactory): void {
  entries.set(name, { name, priority, factory });
}

/** Registered backend names, highest priority first. */
export function backendNames(): string[] {
  return [...entries.values()].sort((a, b) => b.priority - a.priority).map((e) => e.name);
}

registerBackend("ref", 0, () => Promise.resolve(createRefBackend()));

/**
 * Create a backend by name, or `"auto"` for the best available one.
 * Throws `BackendError` `"unknown_backend"` for an unregistered name and
 * `"unavailable"` when a named backend cannot run here.
 */
export async function createBackend(
  name = "auto",
  opts: BackendCreateOptions = {},
): Promise<Backend> {
  if (name === "auto") {
    const errors: string[] = [];
    for (const n of backendNames()) {
      try {
        const b = await entries.get(n)!.factory(opts);
        if (b) return b;
        errors.push(`${n}: unavailable`);
      } catch (e) {
        errors.push(`${n}: ${(e as Error).message}`);
      }
    }
    throw new BackendError("unavailable", `Cannot create any backend: ${errors.join("; ")}`);
  }
  const e = entries.get(name);
  if (!e) {
    throw new BackendError(
      "unknown_backend",
      `Cannot create backend '${name}': not registered (registered: ${backendNames().join(", ")})`,
      { backend: name },
    );
  }
  const b = await e.factory(opts);
  if (!b) {
    throw new BackendError(
      "unavailable",
      `Cannot create backend '${name}': unavailable in this runtime`,
    );
  }
  return b;
}
