/**
 * Shared fixtures of the streaming tests: a small synthesized Q8_0 MoE, its
 * greedy tokens when fully resident, and a store context over any source.
 *
 * @module
 */

import {
  type ByteSource,
  createRefBackend,
  generateText,
  GgmlType,
  loadModel,
  type LoadModelOptions,
  type Model,
  type StreamingStoreContext,
  synthesizeModel,
} from "../../mod.ts";
import { StoreError } from "../errors.ts";

/** 4 layers × 8 experts (top-2), 26 112 bytes per expert. */
export const SPEC = {
  nEmbd: 64,
  nLayer: 4,
  nExpert: 8,
  nExpertUsed: 2,
  nFf: 128,
  type: GgmlType.Q8_0,
  seed: 11,
} as const;

/** A prompt long enough that prefill routes to most experts of a layer. */
export const PROMPT: readonly number[] = [1, 17, 42, 99, 250, 3, 77, 140, 8, 311];
/** Tokens generated in equivalence tests. */
export const N_TOKENS = 12;

let bytes: Uint8Array | null = null;
/** The model file. */
export function modelBytes(): Uint8Array {
  bytes ??= synthesizeModel(SPEC);
  return bytes;
}

/** Bytes of one expert and of all experts. */
export const EXPERT_BYTES = 3 * 128 * (64 / 32) * 34;
/** All experts' bytes. */
export const ALL_EXPERT_BYTES = EXPERT_BYTES * SPEC.nLayer * SPEC.nExpert;

/** Predicate for `assert.rejects`: a `StoreError` with `code`. */
export const isStoreError = (code: string) => (e: unknown): boolean =>
  e instanceof StoreError && e.code === code;

/** The model written to a fresh temporary `.gguf` file; returns its path. */
export async function modelFile(): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  await Deno.writeFile(path, modelBytes());
  return path;
}

let base: number[] | null = null;
/** Greedy tokens of the fully resident model. */
export async function residentTokens(): Promise<number[]> {
  if (!base) {
    const m = await loadModel(modelBytes(), { backend: "ref" });
    base = (await generateText(m, PROMPT, { maxTokens: N_TOKENS, temperature: 0 })).tokens;
    m.dispose();
  }
  return base;
}

/** Greedy tokens with `opts` (a fresh ref backend each time). */
export async function tokensWith(
  src: ByteSource | Uint8Array | string,
  opts: LoadModelOptions,
): Promise<{
  tokens: number[];
  model: Model;
}> {
  const model = await loadModel(src, { backend: createRefBackend(), ...opts });
  const r = await generateText(model, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  return { tokens: r.tokens, model };
}

/** A store context over `source` (locations from a resident load of the model). */
export async function storeContext(source: ByteSource): Promise<StreamingStoreContext> {
  let ctx: StreamingStoreContext | null = null;
  await loadModel(modelBytes(), {
    backend: createRefBackend(),
    hooks: {
      createStore: (c) => {
        ctx = { ...c, source };
        return {
          ensure() {},
          weights: () => null as never,
          stats: () => ({ hits: 0, misses: 0, evictions: 0, bytesFetched: 0, stallMs: 0 }),
        };
      },
    },
  });
  return ctx!;
}

/** A source that counts reads and can hold reads of chosen offsets until released. */
export class GatedSource implements ByteSource {
  readonly size: number;
  readonly name = "gated";
  readonly #inner: ByteSource;
  /** Reads started, by offset. */
  readonly reads = new Map<number, number>();
  readonly #held = new Set<number>();
  readonly #waiting: (() => void)[] = [];

  /** @param inner the real bytes */
  constructor(inner: ByteSource) {
    this.#inner = inner;
    this.size = inner.size;
  }

  /** Hold reads at these offsets until `release()`. */
  hold(...offsets: number[]): void {
    for (const o of offsets) this.#held.add(o);
  }

  /** Let held reads go. */
  release(): void {
    this.#held.clear();
    for (const w of this.#waiting.splice(0)) w();
  }

  /** Total reads. */
  get total(): number {
    return [...this.reads.values()].reduce((a, b) => a + b, 0);
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    this.reads.set(offset, (this.reads.get(offset) ?? 0) + 1);
    if (this.#held.has(offset)) await new Promise<void>((r) => this.#waiting.push(r));
    return await this.#inner.read(offset, length, signal);
  }
}
