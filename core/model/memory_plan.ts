/**
 * The memory plan: one limit, everything inside it. Before a single weight is
 * uploaded, the loader adds up what a model needs — resident (non-expert)
 * weights, the KV cache at the chosen context, the backend's scratch, and the
 * host-side overhead (runtime, tokenizer, activations) — and checks it
 * against the heap the backend can address and the user's memory limit. When
 * every expert fits, they are resident; when they do not, experts stream
 * automatically under whatever is left (an explicit expert budget still
 * wins). A plan that cannot work fails at open with `ModelError`
 * `"memory_too_small"`, naming what would fit (the largest context, the
 * largest expert budget, the smallest limit) — never mid-generation.
 *
 * Facts and formulas: docs/memory.md.
 *
 * @module
 */

import { ModelError } from "../errors.ts";
import type { GgufFile } from "../formats/gguf_reader.ts";
import type { HParams } from "./hparams.ts";

const MIB = 1 << 20;

/** Runtime overhead outside the backend heap: Deno/V8, compiled kernels, JS buffers (measured: 104 MB peak RSS with the built-in model, docs/memory.md). */
export const HOST_BASE_BYTES = 96 * MIB;
/** Host bytes per vocabulary entry (tokenizer maps and strings, f32 logits and sampler buffers). */
export const HOST_BYTES_PER_VOCAB = 256;
/** Alignment slack per slot (arena granule). */
const SLOT_SLACK = 64;

/** What a model needs, read from its index (no weight read). */
export interface ModelNeeds {
  /** Bytes of backend slots for non-expert tensors (attention, norms, embeddings, shared experts…). */
  readonly residentBytes: number;
  /** Bytes of every routed expert (all layers). */
  readonly expertBytes: number;
  /** Bytes of the largest single expert (its three matrices). */
  readonly maxExpertBytes: number;
  /** Experts used per token (`k`). */
  readonly expertsPerToken: number;
  /** Number of routed experts in the file. */
  readonly expertCount: number;
  /** KV bytes per context position (all layers, K and V, f16). */
  readonly kvBytesPerToken: number;
  /** KV bytes per position of one layer (the transient of growing one layer). */
  readonly kvLayerBytesPerToken: number;
  /** Backend scratch bytes for a forward pass of `n` tokens with a context of `nCtx`. */
  scratchBytes(n: number, nCtx: number): number;
  /** Host (JS) bytes outside the backend heap for a context of `nCtx`. */
  hostBytes(nCtx: number): number;
}

/** A checked memory plan. */
export interface MemoryPlan {
  /** `"resident"`: every expert in a slot; `"streaming"`: experts load on demand under `expertBudgetBytes`. */
  readonly mode: "resident" | "streaming";
  /** Why that mode: the user's budget, the memory limit, or the backend heap. */
  readonly reason: "all_fit" | "explicit_budget" | "memory_limit" | "heap_limit";
  /** Expert bytes allowed in backend slots (all of them when resident). */
  readonly expertBudgetBytes: number;
  /** Context length the KV cache may grow to. */
  readonly nCtx: number;
  /** Non-expert weight bytes. */
  readonly residentBytes: number;
  /** KV cache bytes at `nCtx`, all sessions (each grows with use up to this). */
  readonly kvBytes: number;
  /** Backend scratch bytes reserved. */
  readonly scratchBytes: number;
  /** Host-side bytes reserved (runtime, tokenizer, activations). */
  readonly hostBytes: number;
  /** Bytes the backend heap may hold for this model (its cap, or what the limit leaves). */
  readonly heapBytes: number;
  /** The user's limit in bytes, or null (machine and backend decide). */
  readonly limitBytes: number | null;
  /** Total planned bytes (heap parts + host part). */
  readonly totalBytes: number;
  /** Largest context that fits beside the smallest usable expert budget. */
  readonly maxCtx: number;
  /** Largest context that fits beside this plan's expert budget (sessions may go up to it). */
  readonly ctxLimit: number;
  /** Bytes the model needs with every expert resident at `nCtx`. */
  readonly residentTotalBytes: number;
  /** Bytes the model needs at `nCtx` with the smallest expert budget. */
  readonly minTotalBytes: number;
}

/** Inputs of {@linkcode planMemory}. */
export interface PlanOptions {
  /** User limit on everything (weights, KV, scratch, experts, host), in bytes. */
  readonly memoryBytes?: number;
  /** Bytes the backend's heap can hold at most (wasm32: just under 4 GiB). */
  readonly heapBytes: number;
  /** Bytes the machine can give (default: no bound beyond the heap). */
  readonly machineBytes?: number;
  /** Context length (KV cache maximum). */
  readonly nCtx: number;
  /** Explicit expert budget (wins over the automatic choice). */
  readonly expertBudgetBytes?: number;
  /** Tokens of the largest forward pass (default `nCtx`: a whole-context prompt in one pass). */
  readonly nBatch?: number;
  /** Sessions (KV caches) alive at once (default 1; a server's concurrent slots). */
  readonly nSeq?: number;
}

/** Whether a tensor holds routed experts (merged `[n_expert]` 3-D tensors). */
export function isExpertTensor(name: string): boolean {
  return /\.ffn_(gate|up|down|gate_up)_exps\.weight$/.test(name);
}

/** Options of {@linkcode modelNeeds}. */
export interface ModelNeedsOptions {
  /**
   * Whether sliding-window/sink attention (gpt-oss) runs in core and keeps a
   * second f16 copy of its K/V rows there (core/model/arch/attention.ts): true
   * for a backend without `attentionExt` (WebGPU). Default true (conservative:
   * the backend is not known).
   */
  readonly coreKvCopy?: boolean;
}

/**
 * What a model needs, from its GGUF index and hyper-parameters: no weight is
 * read. Expert bytes are per-expert slices of the `*_exps` tensors.
 */
export function modelNeeds(file: GgufFile, hp: HParams, opts: ModelNeedsOptions = {}): ModelNeeds {
  let resident = 0;
  let experts = 0;
  let count = 0;
  const perLayer = new Map<number, { bytes: number; n: number }>();
  for (const t of file.tensors) {
    // blocks past the trunk (NextN/MTP, bailingmoe2) are never loaded
    const blk = /^blk\.(\d+)\./.exec(t.name);
    if (blk && Number(blk[1]) >= hp.nLayer) continue;
    if (isExpertTensor(t.name)) {
      const n = t.dims.length >= 3 ? t.dims[2] : 1;
      experts += t.nbytes + n * SLOT_SLACK;
      const layer = Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1);
      const cur = perLayer.get(layer) ?? { bytes: 0, n };
      cur.bytes += t.nbytes / Math.max(1, n);
      cur.n = n;
      perLayer.set(layer, cur);
    } else {
      resident += t.nbytes + SLOT_SLACK;
    }
  }
  let maxExpert = 0;
  for (const v of perLayer.values()) {
    maxExpert = Math.max(maxExpert, Math.ceil(v.bytes) + 3 * SLOT_SLACK);
    count += v.n;
  }
  const kvLayer = hp.nHeadKv * (hp.headDimK + hp.headDimV) * 2;
  // gpt-oss (sliding window + sinks) on a backend without attentionExt keeps a second f16 copy of
  // its K/V rows in core (core/model/arch/attention.ts): counted unless the caller says otherwise
  const kvTok = kvLayer * hp.nLayer * (hp.swa && (opts.coreKvCopy ?? true) ? 2 : 1);
  const g = Math.max(1, Math.floor(hp.nHead / Math.max(1, hp.nHeadKv)));
  const qDim = hp.nHead * Math.max(hp.headDimK, hp.headDimV);
  // widest matmul output / input besides the output head
  const wide = Math.max(
    qDim,
    hp.nFf,
    2 * hp.nFfExp,
    2 * hp.nFfShexp,
    hp.nEmbd,
    hp.mla ? hp.nHead * (hp.headDimK + hp.headDimV) : 0,
  );
  return {
    residentBytes: resident,
    expertBytes: experts,
    maxExpertBytes: maxExpert,
    expertsPerToken: Math.max(1, hp.nExpertUsed),
    expertCount: count,
    kvBytesPerToken: kvTok,
    kvLayerBytesPerToken: kvLayer,
    scratchBytes(n: number, nCtx: number): number {
      // one call's arrays: x in, quantized x, out (f32), attention's q/k/v/out and scores;
      // the region grows ×1.5 and its old hole stays behind: reserve twice the largest call
      const call = 4 * n * (hp.nEmbd + wide) + 2 * n * wide + 4 * n * 2 * qDim +
        4 * g * nCtx + 4 * n * g * Math.max(hp.headDimK, hp.headDimV) +
        4 * (hp.nVocab + hp.nEmbd) + 4 * wide * 4;
      return 2 * call + 2 * MIB;
    },
    hostBytes(nCtx: number): number {
      // runtime + tokenizer/logits + JS activations (x, residual, q, k, v, ffn, router rows)
      return HOST_BASE_BYTES + HOST_BYTES_PER_VOCAB * hp.nVocab +
        4 * nCtx * (8 * hp.nEmbd + 3 * wide + hp.nExpert);
    },
  };
}

function mb(n: number): string {
  return `${Math.ceil(n / MIB)} MiB`;
}

/**
 * Plan a model's memory. Throws `ModelError` `"memory_too_small"` when
 * nothing works, with `details` naming what would: `maxCtx` (the largest
 * context beside the smallest expert budget), `maxExpertBudgetBytes` (the
 * largest budget at this context), `minMemoryBytes` (the smallest limit at
 * this context); `"bad_memory"` for a limit that is not a positive number.
 */
export function planMemory(needs: ModelNeeds, opts: PlanOptions): MemoryPlan {
  const { nCtx } = opts;
  if (
    opts.memoryBytes !== undefined && !(Number.isFinite(opts.memoryBytes) && opts.memoryBytes > 0)
  ) {
    throw new ModelError(
      "bad_memory",
      `Cannot plan memory: the limit must be a positive number of bytes: received ${opts.memoryBytes}`,
      { memoryBytes: opts.memoryBytes },
    );
  }
  if (!Number.isInteger(nCtx) || nCtx < 1) {
    throw new ModelError(
      "bad_memory",
      `Cannot plan memory: nCtx must be a positive integer: received ${nCtx}`,
      {
        nCtx,
      },
    );
  }
  const nBatch = Math.min(opts.nBatch ?? nCtx, nCtx);
  const nSeq = Math.max(1, Math.floor(opts.nSeq ?? 1));
  const limit = opts.memoryBytes ?? null;
  const machine = opts.machineBytes ?? Infinity;
  const overall = Math.min(limit ?? Infinity, machine);
  const host = (c: number) => needs.hostBytes(c);
  const heapFixed = (c: number) =>
    needs.residentBytes + nSeq * needs.kvBytesPerToken * c + needs.kvLayerBytesPerToken * c +
    needs.scratchBytes(Math.min(nBatch, c), c);
  // bytes the heap may hold at context c: its cap, or what the limit leaves after the host part
  const heapAt = (c: number) => Math.min(opts.heapBytes, overall - host(c));
  const minBudget = needs.expertCount > 0
    ? Math.min(needs.expertBytes, needs.expertsPerToken * needs.maxExpertBytes)
    : 0;
  const kvBytes = nSeq * needs.kvBytesPerToken * nCtx;
  const scratch = needs.scratchBytes(nBatch, nCtx);
  const heap = heapAt(nCtx);
  const fixed = heapFixed(nCtx);
  const room = heap - fixed;
  // largest context with the smallest budget (binary search: needs grow with c)
  let lo = 0, hi = 1 << 20;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (heapFixed(mid) + minBudget <= heapAt(mid)) lo = mid;
    else hi = mid - 1;
  }
  const maxCtx = lo;
  const ctxFor = (budget: number) => {
    let a = 0, b = 1 << 20;
    while (a < b) {
      const mid = Math.ceil((a + b) / 2);
      if (heapFixed(mid) + budget <= heapAt(mid)) a = mid;
      else b = mid - 1;
    }
    return a;
  };
  const residentTotal = fixed + needs.expertBytes + host(nCtx);
  const minTotal = fixed + minBudget + host(nCtx);
  const details = {
    nCtx,
    maxCtx,
    maxExpertBudgetBytes: Math.max(0, room),
    minMemoryBytes: minTotal,
    residentTotalBytes: residentTotal,
    heapBytes: opts.heapBytes,
    memoryBytes: limit,
    residentBytes: needs.residentBytes,
    kvBytes,
    scratchBytes: scratch,
    expertBytes: needs.expertBytes,
    minExpertBudgetBytes: minBudget,
  };
  const which = limit !== null && overall - host(nCtx) < opts.heapBytes
    ? `the memory limit of ${mb(limit)}`
    : machine - host(nCtx) < opts.heapBytes
    ? `the machine's ${mb(machine)}`
    : `the backend heap of ${mb(opts.heapBytes)}`;
  const fits = maxCtx >= 1
    ? `a context of at most ${maxCtx} fits` +
      (limit !== null || heap < opts.heapBytes
        ? `, or a limit of at least ${mb(minTotal)} at this context`
        : "")
    : `no context fits; a limit of at least ${mb(minTotal)} would`;
  if (opts.expertBudgetBytes !== undefined) {
    const b = opts.expertBudgetBytes;
    if (b > room) {
      throw new ModelError(
        "memory_too_small",
        `Cannot open model: an expert budget of ${mb(b)} does not fit ${which} beside ` +
          `${mb(needs.residentBytes)} of resident weights, ${
            mb(kvBytes)
          } of KV cache (context ${nCtx}) ` +
          `and ${mb(scratch)} of scratch: a budget of at most ${mb(Math.max(0, room))} fits` +
          (room < minBudget ? ` (below one token's need of ${mb(minBudget)}; ${fits})` : ""),
        { ...details, expertBudgetBytes: b },
      );
    }
    return plan("streaming", "explicit_budget", b);
  }
  if (needs.expertBytes <= room) return plan("resident", "all_fit", needs.expertBytes);
  if (room < minBudget) {
    throw new ModelError(
      "memory_too_small",
      `Cannot open model: ${mb(needs.residentBytes)} of resident weights, ${
        mb(kvBytes)
      } of KV cache ` +
        `(context ${nCtx}), ${mb(scratch)} of scratch and one token's ${
          mb(minBudget)
        } of experts ` +
        `do not fit ${which}: ${fits}`,
      details,
    );
  }
  return plan(
    "streaming",
    limit !== null && overall - host(nCtx) < opts.heapBytes ? "memory_limit" : "heap_limit",
    Math.floor(room),
  );

  function plan(
    mode: MemoryPlan["mode"],
    reason: MemoryPlan["reason"],
    budget: number,
  ): MemoryPlan {
    const h = host(nCtx);
    return {
      mode,
      reason,
      expertBudgetBytes: budget,
      nCtx,
      residentBytes: needs.residentBytes,
      kvBytes,
      scratchBytes: scratch,
      hostBytes: h,
      heapBytes: heap,
      limitBytes: limit,
      totalBytes: fixed + budget + h,
      maxCtx,
      ctxLimit: Math.max(nCtx, ctxFor(budget)),
      residentTotalBytes: residentTotal,
      minTotalBytes: minTotal,
    };
  }
}

/** What {@linkcode backendHeapBytes} reads of a backend. */
export interface HeapBackend {
  /** Registry name. */
  readonly name: string;
  /** Capabilities (`heapBytes` when the backend reports its total heap). */
  readonly caps: { readonly maxSlotBytes: number; readonly heapBytes?: number };
}

/**
 * The heap a backend offers a plan: `caps.heapBytes` when it reports one
 * (the WASM backend over several instances), one wasm32 memory
 * (`caps.maxSlotBytes`) for a single-instance WASM backend, else unbounded
 * (the reference backend holds weights in JS memory; only the limit and the
 * machine bound it).
 */
export function backendHeapBytes(b: HeapBackend): number {
  if (b.caps.heapBytes !== undefined) return b.caps.heapBytes;
  return b.name === "wasm" ? b.caps.maxSlotBytes : Infinity;
}

/** What a bigger heap should hold: see {@linkcode widerHeap}. */
export interface WiderHeap {
  /** Heap bytes the plan needs in the backend (weights, KV, scratch, experts). */
  readonly heapBytes: number;
  /** Bytes each heap should keep free for its own scratch and KV growth. */
  readonly reserveBytes: number;
  /** The plan at that heap. */
  readonly plan: MemoryPlan;
}

/**
 * Whether a model needs a heap larger than `opts.heapBytes` (one wasm32
 * memory), and how large: when the heap, not the limit or the machine, is
 * what stops it — the plan at this heap fails, or streams for lack of heap
 * while with more heap every expert would be resident, or a memory limit was
 * given that the heap cannot fill. Returns null when one heap serves as well
 * (the model fits, or the limit binds first) or when no heap would help
 * (the plan fails anyway; the caller's plan reports why).
 */
export function widerHeap(needs: ModelNeeds, opts: PlanOptions): WiderHeap | null {
  let one: MemoryPlan | null = null;
  try {
    one = planMemory(needs, opts);
  } catch (e) {
    if (!(e instanceof ModelError && e.code === "memory_too_small")) throw e;
  }
  if (one !== null && (one.mode === "resident" || one.reason !== "heap_limit")) return null;
  let wide: MemoryPlan;
  try {
    wide = planMemory(needs, { ...opts, heapBytes: Infinity });
  } catch {
    return null;
  }
  // without a limit, a model that does not fit the machine streams inside one heap, as before:
  // a larger streaming cache would hold most of the machine's memory for a modest hit rate
  if (one !== null && wide.mode === "streaming" && wide.limitBytes === null) return null;
  const heapBytes = wide.totalBytes - wide.hostBytes;
  if (one !== null && heapBytes <= one.heapBytes) return null;
  return {
    heapBytes,
    reserveBytes: wide.scratchBytes + needs.kvLayerBytesPerToken * wide.nCtx,
    plan: wide,
  };
}

/** One-line summary of a plan (CLI `--verbose`, server start-up). */
export function describePlan(p: MemoryPlan): string {
  const experts = p.mode === "resident"
    ? `all experts resident (${mb(p.expertBudgetBytes)})`
    : `experts streaming under ${mb(p.expertBudgetBytes)} (${p.reason.replace("_", " ")})`;
  return `memory plan: ${mb(p.residentBytes)} weights + ${
    mb(p.kvBytes)
  } KV (ctx ${p.nCtx}, grows with use) + ` +
    `${mb(p.scratchBytes)} scratch + ${mb(p.hostBytes)} host; ${experts}; total ${
      mb(p.totalBytes)
    }` +
    (p.limitBytes !== null ? ` of ${mb(p.limitBytes)}` : "");
}
