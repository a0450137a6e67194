/**
 * Helpers for the plugin tests: synthetic models and PEFT adapters on disk,
 * manifests, deterministic random numbers, logits and closeness checks.
 *
 * @module
 */

import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import { writeSafetensors } from "../formats/safetensors.ts";
import {
  loadFromManifest,
  type LoadFromManifestOptions,
  loadModel,
  type LoadModelOptions,
  type ManifestLoadResult,
  type Model,
  type ModelHooks,
  type Route,
  Session,
  synthesizeModel,
  type SyntheticModelSpec,
} from "../../mod.ts";

/** A small llama-style MoE: 2 layers, 4 experts (2 used), n_embd 32. */
export const SPEC: SyntheticModelSpec = {
  arch: "llama",
  nEmbd: 32,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 2,
  nExpert: 4,
  nExpertUsed: 2,
  nFf: 48,
  nVocab: 512,
  seed: 11,
};

const cache = new Map<string, Uint8Array>();

/** GGUF bytes of `spec` (cached). */
export function modelBytes(spec: SyntheticModelSpec = SPEC): Uint8Array {
  const key = JSON.stringify(spec);
  let b = cache.get(key);
  if (!b) cache.set(key, b = synthesizeModel(spec));
  return b;
}

/** A fresh temporary directory (removed by `cleanup`). */
export async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "moe-edge-plugins-" });
}

/** Remove a temporary directory. */
export async function cleanup(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/** Write the model to `dir/model.gguf`; returns the path. */
export async function writeModel(dir: string, spec: SyntheticModelSpec = SPEC): Promise<string> {
  const p = `${dir}/model.gguf`;
  await Deno.writeFile(p, modelBytes(spec));
  return p;
}

/** Write JSON to `dir/name`; returns the path. */
export async function writeJson(dir: string, name: string, value: unknown): Promise<string> {
  const p = `${dir}/${name}`;
  await Deno.mkdir(p.slice(0, p.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(p, JSON.stringify(value, null, 2));
  return p;
}

/** A tensor to write into an adapter. */
export interface TestTensor {
  /** Row-major shape. */
  readonly shape: readonly number[];
  /** Values. */
  readonly data: Float32Array;
  /** dtype (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16";
}

/** Bytes of a PEFT adapter safetensors file. */
export function adapterBytes(tensors: Record<string, TestTensor>): Uint8Array {
  return writeSafetensors(
    Object.entries(tensors).map(([name, t]) => {
      const dtype = t.dtype ?? "F32";
      let data: Uint8Array;
      if (dtype === "F32") data = new Uint8Array(t.data.slice().buffer);
      else {
        const u = new Uint16Array(t.data.length);
        const f = new Float32Array(1), bits = new Uint32Array(f.buffer);
        for (let i = 0; i < u.length; i++) {
          f[0] = t.data[i];
          u[i] = dtype === "BF16" ? bits[0] >>> 16 : f32ToF16(t.data[i]);
        }
        data = new Uint8Array(u.buffer);
      }
      return [name, { dtype, shape: t.shape, data }] as const;
    }),
    { format: "pt" },
  );
}

function f32ToF16(v: number): number {
  const f = new Float32Array([v]), x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000, exp = ((x >>> 23) & 0xff) - 112, man = x & 0x7fffff;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | (man >>> 13);
}

/** Write `dir/adapter_config.json` and `dir/adapter_model.safetensors`. */
export async function writeAdapter(
  dir: string,
  config: unknown,
  tensors: Record<string, TestTensor>,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify(config));
  await Deno.writeFile(`${dir}/adapter_model.safetensors`, adapterBytes(tensors));
}

/** Deterministic Gaussian numbers (mulberry32 + Box–Muller). */
export function gaussian(seed: number): (n: number, scale?: number) => Float32Array {
  let s = seed >>> 0;
  const u = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  return (n: number, scale = 1): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    }
    return out;
  };
}

/** Load the test model with hooks on the reference backend. */
export async function loadTestModel(
  hooks?: ModelHooks,
  spec: SyntheticModelSpec = SPEC,
): Promise<Model> {
  const opts: LoadModelOptions = { backend: "ref", hooks };
  return await loadModel(modelBytes(spec), opts);
}

/** A prompt used across the tests. */
export const PROMPT: readonly number[] = [1, 17, 99, 256, 3, 44, 7];

/** Logits of every prompt token (a copy). */
export async function logitsOf(
  model: Model,
  tokens: readonly number[] = PROMPT,
): Promise<Float32Array> {
  const s = new Session(model, { nCtx: 64 });
  try {
    return (await s.eval(tokens, { allLogits: true })).slice();
  } finally {
    s.dispose();
  }
}

/** Largest |a-b| relative to max(1, |b|). */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths differ");
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  }
  return m;
}

/** Assert two arrays agree within `tol` (relative, see `maxRelDiff`). */
export function assertClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  tol: number,
  what = "values",
): void {
  const d = maxRelDiff(a, b);
  assert.ok(d <= tol, `${what}: max relative difference ${d} > ${tol}`);
}

/** Assert the arrays differ by more than `tol` somewhere (a plugin had an effect). */
export function assertDiffers(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  tol = 1e-3,
  what = "values",
): void {
  const d = maxRelDiff(a, b);
  assert.ok(d > tol, `${what}: expected a change, max relative difference is only ${d}`);
}

/** A manifest object for the test model at `modelPath` with `plugins`. */
export function manifestFor(
  modelPath: string,
  plugins: unknown[],
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { manifestVersion: 1, model: { source: modelPath }, backend: "ref", plugins, ...extra };
}

/** The `file:` URL of directory `dir` (with a trailing slash). */
export function dirUrl(dir: string): URL {
  return pathToFileURL(`${dir}/`);
}

/** Write the test model into `dir` and load it through a manifest with `plugins` (paths relative to `dir`). */
export async function loadWithPlugins(
  dir: string,
  plugins: unknown[],
  extra: Record<string, unknown> = {},
  opts: LoadFromManifestOptions = {},
): Promise<ManifestLoadResult> {
  const path = await writeModel(dir);
  return await loadFromManifest(manifestFor(path, plugins, extra) as never, {
    baseUrl: dirUrl(dir),
    ...opts,
  });
}

/**
 * The llama (Mixtral) routing of the test model, written independently of
 * core: softmax in f64, top-k with ties to the lower index, renormalized.
 */
export function refTopK(logits: ArrayLike<number>, k: number): Route {
  const m = Math.max(...Array.from(logits));
  const e = Array.from(logits, (l) => Math.exp(l - m));
  const s = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / s);
  const order = p.map((_, i) => i).sort((a, b) => p[b] - p[a] || a - b).slice(0, k);
  const w = order.map((i) => p[i]);
  const sum = w.reduce((a, b) => a + b, 0);
  return { experts: Int32Array.from(order), weights: Float32Array.from(w, (v) => v / sum) };
}

/** Write a local plugin folder `dir/name` with a manifest (overrides merged) and entry code. */
export async function writePlugin(
  dir: string,
  name: string,
  code: string,
  manifest: Record<string, unknown> = {},
): Promise<string> {
  await Deno.mkdir(`${dir}/${name}`, { recursive: true });
  const m = {
    name,
    version: "1.0.0",
    apiVersion: 1,
    hooks: ["router"],
    entry: "mod.js",
    config: { type: "object" },
    ...manifest,
  };
  await Deno.writeTextFile(`${dir}/${name}/manifest.json`, JSON.stringify(m));
  await Deno.writeTextFile(`${dir}/${name}/${m.entry}`, code);
  return `./${name}`;
}

/** Entry code of a router plugin that negates the gate logits and counts module evaluations in `globalThis[flag]`. */
export function negatingRouterCode(name: string, flag = "__moeEdgeLoaded"): string {
  return `globalThis.${flag} = (globalThis.${flag} ?? 0) + 1;
export default (config) => ({
  name: ${JSON.stringify(name)},
  version: "1.0.0",
  hooks: { router: (inner) => ({ name: "neg", route: (l, layer) => inner.route(l.map((v) => -v), layer) }) },
});
`;
}
