/**
 * Options and inputs of the streaming expert store, and the checks made at
 * creation (budget against one token's need, pinned experts, manifest fit).
 *
 * @module
 */

import type { Backend } from "../backend/backend.ts";
import type { ExpertWeights } from "../moe/expert.ts";
import type { FallbackCopiesOptions } from "./fallback_copies.ts";
import { StoreError } from "../errors.ts";
import type { ExpertLocation } from "./expert_location.ts";
import type { ByteSource } from "./byte_source.ts";
import type { CachePolicy } from "./cache_policy.ts";
import type { ExpertBytesHook } from "./expert_loader.ts";
import { checkManifestFits, type ExpertManifest, type ExpertRef } from "./expert_manifest.ts";
import type { Prefetcher } from "./prefetch.ts";

/** Options of the streaming store. */
export interface StreamingStoreOptions {
  /** Bytes of backend slots experts may hold (pinned ones included). */
  expertBudgetBytes: number;
  /** Eviction policy (default: the built-in least-recently-used one). */
  policy?: CachePolicy;
  /** Loads experts ahead of use (default: none). */
  prefetcher?: Prefetcher;
  /** Per-expert SHA-256 (checked on every load) and pinned experts. */
  manifest?: ExpertManifest;
  /** Experts to keep resident always, besides the manifest's. */
  pinned?: readonly ExpertRef[];
  /** Most prefetch loads in flight at once (default `2 · nExpertUsed`). */
  maxPrefetchInflight?: number;
  /** Told every `ensure` step (layer, keys `layer·nExpert+index`), e.g. to record a trace for Belady. */
  onStep?: (layer: number, keys: readonly number[]) => void;
  /** Told when a prefetch fails (the next demand load retries and reports). */
  onPrefetchError?: (error: Error) => void;
  /**
   * Repack a streamed expert for the faster kernels on this use (default:
   * the backend's `repackAfterUses`, the smallest over the expert's
   * matrices, else 3; on the WASM backend's relaxed build 8 for Q4_0, Q4_K
   * and Q8_0, whose standard-layout decode runs at 1.1–1.4× the packed
   * time, 3 otherwise; 1 = at load, as resident experts; `Infinity` =
   * never). `"auto"`: at
   * load once the layer's loaded experts are used ≥ 1.8 times per load on
   * average (after 8 loads), else on the third use, and a step waiting for
   * its loads repacks its resident experts meanwhile. A repack costs about
   * one standard-layout matvec (break-even 1.6–1.8 uses in isolation), but
   * end to end `"auto"` measured 5 % faster to 23 % slower than 3 on the
   * bench MoE (docs/streaming.md), hence not the default. Results are
   * identical whatever the setting.
   */
  packAfterUses?: number | "auto";
  /**
   * Read streamed experts straight into their slots when the backend gives
   * slot views (`Backend.slotBytes`) and no bytes hook transforms them
   * (default true; false: read into a buffer, then copy it into the slot).
   * Results are identical either way.
   */
  readInPlace?: boolean;
  /**
   * Load misses on a worker thread (`core/store/load_worker.ts`) when they
   * are read in place from a local file into slots over shared memory
   * (`loadModel` then creates the WASM backend with `sharedMemory: true`):
   * the worker reads each matrix into its slot and hashes it there, demand
   * loads before background ones; this thread only compares the hashes. If
   * the worker dies, the loads it owed fail with `StoreError`
   * `"load_failed"` and later loads run on this thread. Results are
   * identical either way. Default false: on the 2-vCPU machine it measured
   * no faster end to end (the shared-memory build computes slower there and
   * the reads already run on the I/O pool; docs/streaming.md).
   */
  offThreadLoads?: boolean;
  /**
   * Opt-in (default false): check each expert once, at its first load (its
   * first-read hashes recorded, the manifest's SHA-256 when there is one),
   * and read it again after eviction without hashing while the source is a
   * local file whose change check passes after every read (same size and
   * mtime as at open; `FileSource` with `checkChanges`). Saves the hash of
   * every re-read (≈ 0.4 ms per 4.6 MiB expert here, docs/streaming.md,
   * session 8) but **weakens the check**: a file rewritten in place with
   * its size and mtime kept (or a disk returning different bytes) is no
   * longer noticed on re-reads; the default compares every re-read with
   * its first read. Only in-place loads from local files; other sources
   * and the copying path verify as usual. Results are identical either way
   * when the file is intact.
   */
  verifyOnce?: boolean;
  /**
   * Allocate the evictable budget's slots when the store is created and
   * touch every page of them (default true), so that no miss reads into
   * memory the process never wrote: on this VM a 4.6 MiB read into fresh
   * memory cost 2.4–3.3 ms against 0.8–1.0 ms into memory already mapped
   * (page faults and zeroing; docs/streaming.md, session 8). With fallback
   * copies nearly every load went to a fresh slot. Costs the budget's
   * memory at once (what it allows anyway) and the time to touch it at load
   * (~0.5 ms per MiB here); at most as many slots as there are unpinned
   * experts; all or nothing (when the heap runs out first, loads allocate
   * on demand as without it). Only on backends with slot views
   * (`Backend.slotBytes`). Results are identical either way.
   */
  prefaultSlots?: boolean;
  /**
   * Tell the MoE layer which experts of a step are ready one by one
   * (`ensureEach`): it computes the resident ones first, then each missed
   * expert as soon as its own load lands, while the others still load
   * (default true; false: the step waits for all of its loads, then
   * computes). Results are identical either way (expert outputs are
   * combined in rank order whatever order they are computed in).
   */
  perExpertReady?: boolean;
  /**
   * Read the misses of one step one expert after another (in place; default
   * false: all of a step's reads at once). Reads share the I/O bandwidth:
   * one after another, the first lands earlier (1.7 against 2.5 ms for two
   * 4.6 MiB experts from the page cache) and is checked and computed while
   * the next one reads; in parallel, one of them still lands first (1.75
   * ms) and the pair lands sooner. Measured no faster end to end on the
   * bench MoE (docs/streaming.md), and serial requests would add up a
   * remote source's latency, hence off.
   */
  staggerLoads?: boolean;
  /**
   * A prefetch for layer `l` may evict experts of layer `l` it does not
   * predict, even ones the last token used: the predicted step is their
   * next chance of reuse. Default false: a prefetch only takes free slots or
   * experts unused for a whole token, which at a budget of about one token's
   * experts leaves it almost no room. Turn it on for a predictor that is
   * right more often than recency (on the locality trace, where the last
   * token's expert comes back 60 % of the time, it took the affinity
   * prefetcher at 25 % from 0.93× to 0.53× of Belady's hit rate).
   */
  prefetchReplacesLayer?: boolean;
  /** Resident low-bit copies computed with on a miss instead of waiting (HOBBIT). */
  fallback?: ExpertFallback;
  /** Make or read such copies when the store is created (`--expert-fallback TYPE`); ignored with `fallback`. */
  fallbackCopies?: FallbackCopiesOptions;
}

/**
 * Low-bit copies of experts, resident, used on a miss (mixed-precision
 * offloading, HOBBIT): a miss whose gate weight is below `criticalWeight`
 * is computed with the copy at once while the full-precision expert loads
 * in the background (as a prefetch) for later tokens; a critical miss waits
 * for full precision as usual.
 */
export interface ExpertFallback {
  /** The copy of expert `index` of `layer`, or null when it has none. */
  weights(layer: number, index: number): ExpertWeights | null;
  /** Misses with a gate weight at or above this wait for full precision (default 0.8). */
  readonly criticalWeight?: number;
  /**
   * Load the full-precision expert in the background on a fallback use, for
   * later tokens, as far as `backgroundLoads` allows (default true; false:
   * never).
   */
  readonly loadOnFallback?: boolean;
  /** Which fallback uses queue a background full-precision load (default `DEFAULT_BACKGROUND_LOADS`). */
  readonly backgroundLoads?: BackgroundLoadPolicy;
}

/**
 * Which fallback uses load the full-precision expert in the background
 * (HOBBIT loads full precision only for experts that matter): a use queues
 * a load when its gate weight share reaches `minWeight` **or** its expert is
 * used often in its layer (`minFrequency`), and at most `maxPerToken` loads
 * are queued per forward pass. Every background load reads and hashes a
 * whole expert beside the compute and takes a slot; one that is evicted
 * before its next use is pure cost (on the bench MoE at 25 %, loading on
 * every fallback use took decode from 1.03× to 0.75× of resident:
 * docs/streaming.md). The default loads by frequency only: by gate weight,
 * the misses that matter are the critical ones, which wait for full
 * precision anyway. `{ minWeight: 0, maxPerToken: Infinity }` loads on
 * every use (the earlier behaviour).
 */
export interface BackgroundLoadPolicy {
  /**
   * Share of the token's routed gate weight (`w / Σ w` over its k experts:
   * the gate weight itself for routers that normalize) at or above which a
   * fallback use queues a load (default `Infinity`: never by weight; 0.5
   * would load every expert that carries at least half of the token's mix).
   */
  readonly minWeight?: number;
  /**
   * Or when the expert's recent routing frequency in its layer (decayed
   * over about 8 tokens) is at least this many times the uniform share
   * k/n (default 2; `Infinity`: never by frequency).
   */
  readonly minFrequency?: number;
  /** At most this many background loads queued per forward pass (one token at decode; default k, the experts per token). */
  readonly maxPerToken?: number;
}

/** Default `ExpertFallback.criticalWeight`. */
export const DEFAULT_CRITICAL_WEIGHT = 0.8;

/** Default `ExpertFallback.backgroundLoads` (`maxPerToken` absent: k, the experts per token). */
export const DEFAULT_BACKGROUND_LOADS: BackgroundLoadPolicy = {
  minWeight: Infinity,
  minFrequency: 2,
};

/** Decay per token of the routing frequency `BackgroundLoadPolicy.minFrequency` reads (a window of about 8 tokens). */
export const FREQUENCY_DECAY = 7 / 8;

/** What the store is built from (`StoreContext` of `loadModel` fits). */
export interface StreamingStoreContext {
  /** Backend holding the slots. */
  readonly backend: Backend;
  /** Where expert bytes come from. */
  readonly source: ByteSource;
  /** `locations[l][e]` (empty for dense layers). */
  readonly locations: readonly (readonly ExpertLocation[])[];
  /** Checks or transforms expert bytes before upload (after the integrity check). */
  readonly expertBytes?: ExpertBytesHook;
  /** Model sizes. */
  readonly hp: {
    readonly nLayer: number;
    readonly nExpert: number;
    readonly nExpertUsed: number;
    readonly nEmbd: number;
  };
}

/** What `loadFromManifest` asks of an expert store (structurally its `ManifestStoreRequest`). */
export interface StreamingStoreRequest {
  /** Byte budget; all expert bytes when absent (plugins without `memory.expertBudgetMb`). */
  readonly budgetBytes?: number;
  /** `[layer, expert]` pairs to keep resident. */
  readonly pinned: readonly (readonly [number, number])[];
  /** Cache policy from a `cache` plugin. */
  readonly policy?: CachePolicy;
  /** Prefetcher from a `prefetch` plugin. */
  readonly prefetcher?: Prefetcher;
  /** Fallback copies (`memory.expertFallback`). */
  readonly fallbackCopies?: FallbackCopiesOptions;
}

/** The budget split that `checkBudget` approved. */
export interface BudgetPlan {
  /** Experts to pin, deduplicated. */
  readonly pinned: readonly ExpertLocation[];
  /** Their bytes. */
  readonly pinnedBytes: number;
  /** Bytes of the largest expert. */
  readonly maxExpertBytes: number;
}

/**
 * Check a budget against the model: positive, holding the pinned experts
 * plus one token's need (k experts of the largest size), and a manifest that
 * fits. Throws `StoreError` `"bad_budget"`, `"no_expert"`,
 * `"manifest_mismatch"` or `"budget_too_small"`.
 */
export function checkBudget(ctx: StreamingStoreContext, opts: StreamingStoreOptions): BudgetPlan {
  const budget = opts.expertBudgetBytes;
  if (!Number.isSafeInteger(budget) || budget <= 0) {
    throw new StoreError(
      "bad_budget",
      `Cannot stream experts: budget must be a positive byte count: received ${budget}`,
    );
  }
  if (opts.manifest) checkManifestFits(opts.manifest, ctx.source, ctx.locations);
  const pinned = new Map<string, ExpertLocation>();
  for (const r of [...(opts.manifest?.pinned ?? []), ...(opts.pinned ?? [])]) {
    const loc = ctx.locations[r.layer]?.[r.index];
    if (!loc) {
      throw new StoreError(
        "no_expert",
        `Cannot pin expert ${r.index} of layer ${r.layer}: no such expert`,
        { layer: r.layer, index: r.index },
      );
    }
    pinned.set(`${r.layer}:${r.index}`, loc);
  }
  const pinnedBytes = [...pinned.values()].reduce((a, l) => a + l.bytes, 0);
  const all = ctx.locations.flat();
  const maxExpertBytes = all.reduce((m, l) => Math.max(m, l.bytes), 0);
  const k = ctx.hp.nExpertUsed || 1;
  const need = pinnedBytes + k * maxExpertBytes;
  if (all.length > 0 && budget < need) {
    throw new StoreError(
      "budget_too_small",
      `Cannot stream experts: a budget of ${budget} bytes is below one token's need of ${need} bytes ` +
        `(${k} experts of ${maxExpertBytes} bytes for one layer` +
        (pinnedBytes ? ` + ${pinnedBytes} pinned` : "") + ")",
      { budget, need, k, expertBytes: maxExpertBytes, pinnedBytes },
    );
  }
  return { pinned: [...pinned.values()], pinnedBytes, maxExpertBytes };
}

/**
 * Parse the text form of a `BackgroundLoadPolicy` (`--expert-fallback-loads`,
 * `memory.expertFallbackLoads`): `all` (every fallback use), `none` (null:
 * never, `loadOnFallback: false`), `default`, or comma-separated
 * `weight=W`, `freq=F`, `per-token=N` (each optional, the others keep their
 * defaults; `inf` for Infinity). Throws `StoreError` `"bad_option"`.
 */
export function parseBackgroundLoads(text: string): BackgroundLoadPolicy | null {
  const t = text.trim().toLowerCase();
  if (t === "none") return null;
  if (t === "all") return { minWeight: 0, maxPerToken: Infinity };
  if (t === "default") return { ...DEFAULT_BACKGROUND_LOADS };
  const names: Record<string, keyof BackgroundLoadPolicy> = {
    weight: "minWeight",
    freq: "minFrequency",
    "per-token": "maxPerToken",
  };
  const out: { -readonly [K in keyof BackgroundLoadPolicy]: number } = {};
  for (const part of t.split(",")) {
    const m = /^([a-z-]+)=(inf|infinity|\d+(?:\.\d+)?|\.\d+)$/.exec(part.trim());
    const key = m ? names[m[1]] : undefined;
    if (!m || !key || out[key] !== undefined) {
      throw new StoreError(
        "bad_option",
        `Cannot read background loads '${text}': expected all, none, default or ` +
          `weight=W,freq=F,per-token=N (numbers ≥ 0 or inf, each once)`,
        { value: text },
      );
    }
    out[key] = m[2].startsWith("inf") ? Infinity : Number(m[2]);
  }
  return out;
}
