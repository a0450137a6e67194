/**
 * Malformed inputs never crash: fast-check mutations of valid model
 * manifests, plugin manifests, adapter configs and adapter safetensors end in
 * a typed moe-edge error (or a successful load), never a TypeError/RangeError.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { loadFromManifest, ManifestError, MoeEdgeError, readPeftAdapter } from "../../mod.ts";
import { molaAdapter, molaModules } from "../../plugins/mola/mod.ts";
import { smoraAdapter, smoraModules } from "../../plugins/smora/mod.ts";
import { loraAdapter, loraModules } from "../../plugins/lora/mod.ts";
import { loraFixture, molaFixture, smoraFixture } from "./adapters_test_util.ts";
import {
  adapterBytes,
  cleanup,
  dirUrl,
  gaussian,
  loadTestModel,
  tempDir,
  type TestTensor,
  writeAdapter,
  writeModel,
  writePlugin,
} from "./plugin_test_util.ts";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Mutation = { pick: number[]; op: string; value: Json; key: string };

/** A mutation: at a path chosen by `pick`, replace, delete, or add a key. */
const mutationArb = fc.record({
  pick: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
  op: fc.constantFrom("replace", "delete", "add"),
  value: fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
  key: fc.constantFrom(
    "use",
    "config",
    "p",
    "bias",
    "adapter",
    "source",
    "extra",
    "__proto__",
    "0",
    "*",
  ),
});

function mutate(doc: Json, m: Mutation): Json {
  const root = structuredClone(doc);
  let node: Json = root;
  for (const n of m.pick) {
    const kids: [string | number, Json][] = Array.isArray(node)
      ? node.map((v, i) => [i, v])
      : node && typeof node === "object"
      ? Object.entries(node)
      : [];
    const containers = kids.filter(([, v]) => v !== null && typeof v === "object");
    if (!containers.length || n % 3 === 0) break;
    node = containers[n % containers.length][1];
  }
  if (node === null || typeof node !== "object") return m.value;
  const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
  const k = keys.length ? keys[m.pick[0] % keys.length] : m.key;
  const target = node as Record<string | number, Json>;
  if (m.op === "delete") delete target[k];
  else if (m.op === "add") {
    Object.defineProperty(target, m.key, {
      value: m.value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else target[k] = m.value;
  return root;
}

const flags = globalThis as unknown as { __fuzzRan?: boolean };
const outcomes = new Map<string, number>();

function typed(e: unknown): void {
  const k = e instanceof MoeEdgeError ? `${e.name}:${e.code}` : "untyped";
  outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  assert.ok(
    e instanceof MoeEdgeError,
    `untyped failure: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : e}`,
  );
}

Deno.test("fuzz: mutated model manifests load or fail with a typed error", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const valid: Json = {
      manifestVersion: 1,
      model: { source: "model.gguf" },
      backend: "ref",
      memory: { pinnedExperts: [[0, 1]] },
      plugins: [
        { use: "route-top-p", config: { p: 0.5, minK: 1, layers: [0] } },
        { use: "router-bias", config: { bias: { "*": [0, 0.5, 0, 0] } } },
        { use: "expert-mask", config: { exclude: { "1": [2] } } },
        { use: "null-experts", config: { experts: [{ layer: 0, index: 3, kind: "copy" }] } },
      ],
      adapters: { a: [{ use: "lora", config: { adapter: "ad" } }] },
    };
    await writeAdapter(`${dir}/ad`, { r: 4, lora_alpha: 8 }, loraFixture(1, ["0:q"], 4).tensors);
    // the seed is valid
    assert.equal(
      (await loadFromManifest(valid as never, { baseUrl: dirUrl(dir) })).adapters.size,
      1,
    );
    await fc.assert(
      fc.asyncProperty(mutationArb, async (m) => {
        await loadFromManifest(mutate(valid, m) as never, { baseUrl: dirUrl(dir) }).catch(typed);
      }),
      { numRuns: 80 },
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("fuzz: mutated plugin manifests fail with a typed error before their code runs", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const manifest: Json = {
      name: "p",
      version: "1.0.0",
      apiVersion: 1,
      hooks: ["router"],
      entry: "mod.js",
      config: { type: "object", properties: { k: { type: "integer", minimum: 1 } } },
    };
    let i = 0;
    await fc.assert(
      fc.asyncProperty(mutationArb, async (m) => {
        const name = `p${i++}`;
        const mutated = mutate(manifest, m);
        const use = await writePlugin(
          dir,
          name,
          `globalThis.__fuzzRan = true; export default () => ({ name: "p", version: "1.0.0", hooks: { router: (r) => r } });`,
        );
        await Deno.writeTextFile(`${dir}/${name}/manifest.json`, JSON.stringify(mutated));
        flags.__fuzzRan = false;
        await loadFromManifest({
          manifestVersion: 1,
          model: { source: "model.gguf" },
          backend: "ref",
          plugins: [{ use, config: { k: 2 } }],
        }, {
          baseUrl: dirUrl(dir),
        }).catch((e) => {
          typed(e);
          if (e instanceof ManifestError) {
            assert.equal(flags.__fuzzRan, false, "plugin code ran despite manifest problems");
          }
        });
      }),
      { numRuns: 60 },
    );
  } finally {
    await cleanup(dir);
  }
});

const byteMutationArb: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({
    kind: fc.constant("flip" as const),
    at: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
      minLength: 1,
      maxLength: 8,
    }),
  }),
  fc.record({
    kind: fc.constant("truncate" as const),
    at: fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 1 }),
  }),
  fc.record({ kind: fc.constant("header" as const), mutation: mutationArb }),
);

type ByteMutation =
  | { kind: "flip" | "truncate"; at: [number, number][] }
  | { kind: "header"; mutation: Mutation };

function mutateBytes(bytes: Uint8Array, m: ByteMutation): Uint8Array {
  if (m.kind === "flip") {
    const out = bytes.slice();
    for (const [pos, v] of m.at) out[pos % out.length] = v;
    return out;
  }
  if (m.kind === "truncate") return bytes.slice(0, m.at[0][0] % bytes.length);
  if (m.kind !== "header") throw new Error("unreachable");
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const h = new TextEncoder().encode(JSON.stringify(mutate(header, m.mutation)));
  const out = new Uint8Array(8 + h.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(bytes.subarray(8 + n), 8 + h.length);
  return out;
}

/** LoRA (or, with `smora`, SMoRA) tensors on expert 1's w2 of layer 0 and expert 3's gate_proj of layer 1. */
function expertFixture(seed: number, r: number, smora: boolean): Record<string, TestTensor> {
  const g = gaussian(seed);
  const out: Record<string, TestTensor> = {};
  const mods: [string, number, number][] = [
    ["base_model.model.model.layers.0.block_sparse_moe.experts.1.w2", 48, 32],
    ["base_model.model.model.layers.1.mlp.experts.3.gate_proj", 32, 48],
  ];
  for (const [m, dIn, dOut] of mods) {
    out[`${m}.lora_A.weight`] = { shape: [r, dIn], data: g(r * dIn) };
    out[`${m}.lora_B.weight`] = { shape: [dOut, r], data: g(dOut * r) };
    if (smora) out[`${m}.lora_router.weight`] = { shape: [r, dIn], data: g(r * dIn) };
  }
  return out;
}

Deno.test("fuzz: mutated adapter safetensors and configs give typed errors in every LoRA plugin", async () => {
  const hp = (await loadTestModel()).hp;
  const ctx = { hp, backend: null as never };
  const fixtures: { cfg: Json; bytes: Uint8Array; kind: string }[] = [
    {
      cfg: { r: 4, lora_alpha: 8 },
      bytes: adapterBytes(loraFixture(1, ["0:q", "1:o"], 4).tensors),
      kind: "lora",
    },
    {
      cfg: { r: 2, lora_alpha: 8 },
      bytes: adapterBytes(molaFixture(2, [2, 3], ["q", "v"], 2).tensors),
      kind: "mola",
    },
    {
      cfg: { r: 4, lora_alpha: 8, activate_r: 2 },
      bytes: adapterBytes(smoraFixture(3, 2, ["k"], 4).tensors),
      kind: "smora",
    },
    // expert targets (Mixtral and Qwen-MoE names): mutated expert indices, widths and ranks
    {
      cfg: { r: 2, lora_alpha: 4, rank_pattern: { "experts.3.gate_proj": 2 } },
      bytes: adapterBytes(expertFixture(5, 2, false)),
      kind: "lora",
    },
    {
      cfg: { r: 4, lora_alpha: 8, activate_r: 2 },
      bytes: adapterBytes(expertFixture(6, 4, true)),
      kind: "smora",
    },
  ];
  const run = async (cfg: Json, bytes: Uint8Array, kind: string) => {
    const files: Record<string, Uint8Array> = {
      "adapter_config.json": new TextEncoder().encode(JSON.stringify(cfg)),
      "adapter_model.safetensors": bytes,
    };
    const ad = await readPeftAdapter((name) => Promise.resolve(files[name]), "fuzz");
    if (kind === "lora") loraAdapter(await loraModules(ad), ctx);
    else if (kind === "mola") molaAdapter(await molaModules(ad), hp, { topK: 2 });
    else smoraAdapter(await smoraModules(ad), ctx);
  };
  for (const f of fixtures) await run(f.cfg as Json, f.bytes, f.kind); // seeds are valid
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...fixtures),
      byteMutationArb,
      mutationArb,
      fc.boolean(),
      async (f, bm, cm, cfgToo) => {
        const cfg = cfgToo ? mutate(f.cfg as Json, cm) : f.cfg as Json;
        await run(cfg, mutateBytes(f.bytes, bm), f.kind).catch(typed);
      },
    ),
    // fixed seed: the coverage check below must not depend on luck
    { numRuns: 400, seed: 20261122 },
  );
  // the mutations reach past the header check into shapes, keys and configs
  const codes = [...outcomes.keys()];
  for (const want of ["SafetensorsError:", "PluginError:", "ManifestError:bad_adapter_config"]) {
    assert.ok(
      codes.some((c) => c.startsWith(want)),
      `no ${want} outcome among ${codes.join(", ")}`,
    );
  }
});

Deno.test("fuzz: a truncated adapter on disk is a stamped PluginError with a SafetensorsError cause", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    await writeAdapter(`${dir}/ad`, { r: 4 }, loraFixture(4, ["0:q"], 4).tensors);
    const bytes = await Deno.readFile(`${dir}/ad/adapter_model.safetensors`);
    await Deno.writeFile(
      `${dir}/ad/adapter_model.safetensors`,
      bytes.subarray(0, bytes.length - 3),
    );
    await assert.rejects(
      loadFromManifest({
        manifestVersion: 1,
        model: { source: model },
        plugins: [{ use: "lora", config: { adapter: "ad" } }],
      }, {
        baseUrl: dirUrl(dir),
      }),
      (e: Error & { code?: string; cause?: Error }) =>
        e.name === "PluginError" && e.cause?.name === "SafetensorsError" &&
        e.code === "out_of_file" &&
        /plugin 'lora' \(setup\)/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});
