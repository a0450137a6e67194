/**
 * The adversarial probe's reproducers (copied into core/plugin/testdata/probe/) and
 * the class each stands for: non-finite adapter values, adapters that
 * overflow at run time, plugin entries outside their folder, ignored
 * entryIntegrity, and backtracking rank_pattern keys — all typed errors.
 */
import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import fc from "npm:fast-check@4";
import {
  loadFromManifest,
  ManifestError,
  type ManifestProblem,
  readPeftAdapter,
  Session,
} from "../../mod.ts";
import { loraModules } from "../../plugins/lora/mod.ts";
import { molaModules } from "../../plugins/mola/mod.ts";
import { smoraModules } from "../../plugins/smora/mod.ts";
import { loraFixture, modulePath, molaFixture, smoraFixture } from "./adapters_test_util.ts";
import {
  adapterBytes,
  cleanup,
  dirUrl,
  tempDir,
  type TestTensor,
  writeModel,
} from "./plugin_test_util.ts";

const PROBE = new URL("./testdata/probe/", import.meta.url);
const flags = globalThis as unknown as Record<string, unknown>;

function problemsOf(e: unknown): ManifestProblem[] {
  assert.ok(e instanceof ManifestError, `expected ManifestError, got ${e}`);
  return e.details.problems as ManifestProblem[];
}

Deno.test("probe: entry_escape and local_entry_integrity are ManifestErrors; their code never runs", async () => {
  const errors: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => void errors.push(a.join(" "));
  try {
    const e1 = await loadFromManifest(
      fromFileUrl(new URL("manifest/entry_escape/model.json", PROBE)),
    )
      .then(() => null, (e) => e);
    assert.ok(problemsOf(e1).some((p) => p.code === "entry_outside" && /entry$/.test(p.path)));
    const e2 = await loadFromManifest(
      fromFileUrl(new URL("manifest/local_entry_integrity/model.json", PROBE)),
    ).then(() => null, (e) => e);
    assert.ok(
      problemsOf(e2).some((p) => p.code === "integrity_mismatch" && /entryIntegrity$/.test(p.path)),
    );
  } finally {
    console.error = orig;
  }
  assert.deepEqual(errors, [], "probe code ran");
});

Deno.test("probe: redos_adapter is a typed error within a second", async () => {
  const t0 = performance.now();
  const e = await loadFromManifest(fromFileUrl(new URL("manifest/redos_adapter/model.json", PROBE)))
    .then(() => null, (e) => e);
  assert.ok(performance.now() - t0 < 5000, `took ${performance.now() - t0} ms`);
  // `((.*)*)*X` repeats a sub-pattern that can match nothing: refused by name
  const err = e as Error & { code?: string; cause?: Error };
  assert.equal(err?.name, "PluginError", String(e));
  assert.equal(err.code, "bad_pattern");
  assert.equal(err.cause?.name, "ManifestError");
  assert.match(err.message, /rank_pattern key "\(\(\.\*\)\*\)\*X"/);
});

Deno.test("probe: the NaN adapters are SafetensorsError non_finite naming the tensor", async () => {
  const dir = await tempDir();
  try {
    await Deno.copyFile(new URL("manifest/model.gguf", PROBE), `${dir}/model.gguf`);
    for await (const f of Deno.readDir(new URL("safetensors/", PROBE))) {
      await Deno.mkdir(`${dir}/${f.name}`);
      await Deno.copyFile(
        new URL(`safetensors/${f.name}`, PROBE),
        `${dir}/${f.name}/adapter_model.safetensors`,
      );
      await Deno.writeTextFile(`${dir}/${f.name}/adapter_config.json`, `{"r": 4, "lora_alpha": 8}`);
      const e = await loadFromManifest({
        manifestVersion: 1,
        model: { source: "model.gguf" },
        backend: "ref",
        plugins: [{ use: "lora", config: { adapter: f.name } }],
      } as never, { baseUrl: dirUrl(dir) }).then(() => null, (e) => e);
      assert.ok(e instanceof Error, `${f.name} loaded`);
      const err = e as Error & { code: string; cause?: Error & { details?: { name?: string } } };
      assert.equal(err.code, "non_finite", `${f.name}: ${err.message}`);
      assert.equal(err.cause?.name, "SafetensorsError");
      assert.match(err.message, /tensor '[^']+lora_[AB]\.weight'/);
    }
  } finally {
    await cleanup(dir);
  }
});

function poison(t: Record<string, TestTensor>, name: string, at: number, v: number) {
  const data = t[name].data.slice();
  data[at % data.length] = v;
  return { ...t, [name]: { ...t[name], data } };
}

Deno.test("adapters: a NaN or ±Inf anywhere in any tensor of any adapter kind (F32/F16/BF16) is non_finite", async () => {
  const kinds = [
    {
      cfg: { r: 4, lora_alpha: 8 },
      t: loraFixture(5, ["0:q", "1:o"], 4).tensors,
      read: loraModules,
    },
    { cfg: { r: 2 }, t: molaFixture(6, [2, 3], ["q", "v"], 2).tensors, read: molaModules },
    {
      cfg: { r: 4, activate_r: 2 },
      t: smoraFixture(7, 2, ["k"], 4).tensors,
      read: (ad: Awaited<ReturnType<typeof readPeftAdapter>>) => smoraModules(ad),
    },
  ];
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...kinds),
      fc.nat(),
      fc.nat(),
      fc.constantFrom(NaN, Infinity, -Infinity),
      fc.constantFrom("F32", "F16", "BF16") as fc.Arbitrary<"F32" | "F16" | "BF16">,
      async (k, which, at, v, dtype) => {
        const names = Object.keys(k.t);
        const name = names[which % names.length];
        const typed = Object.fromEntries(
          Object.entries(poison(k.t, name, at, v)).map(([n, t]) => [n, { ...t, dtype }]),
        );
        const files: Record<string, Uint8Array> = {
          "adapter_config.json": new TextEncoder().encode(JSON.stringify(k.cfg)),
          "adapter_model.safetensors": adapterBytes(typed),
        };
        const ad = await readPeftAdapter((n) => Promise.resolve(files[n]), "t");
        await assert.rejects(
          (k.read as (a: typeof ad) => Promise<unknown>)(ad),
          (e: Error & { code?: string }) =>
            e.name === "SafetensorsError" && e.code === "non_finite" && e.message.includes(name),
        );
      },
    ),
    { numRuns: 60, seed: 7 },
  );
});

Deno.test("adapters: finite weights that overflow at run time are PluginError non_finite, not NaN logits", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const t = loraFixture(9, ["0:q"], 4).tensors;
    const huge = Object.fromEntries(
      Object.entries(t).map(([n, x]) => [n, { ...x, data: x.data.map(() => 3e38) }]),
    );
    await Deno.mkdir(`${dir}/ad`);
    await Deno.writeTextFile(`${dir}/ad/adapter_config.json`, `{"r": 4, "lora_alpha": 8}`);
    await Deno.writeFile(`${dir}/ad/adapter_model.safetensors`, adapterBytes(huge));
    const { model } = await loadFromManifest({
      manifestVersion: 1,
      model: { source: "model.gguf" },
      backend: "ref",
      plugins: [{ use: "lora", config: { adapter: "ad" } }],
    } as never, { baseUrl: dirUrl(dir) });
    const s = new Session(model, { nCtx: 16 });
    try {
      await assert.rejects(
        s.eval([1, 2, 3]),
        (e: Error & { code?: string }) =>
          e.name === "PluginError" && e.code === "non_finite" && /layer 0 attn_q/.test(e.message),
      );
    } finally {
      s.dispose();
    }
    assert.ok(modulePath(0, "q").includes("q_proj"));
  } finally {
    await cleanup(dir);
  }
  void flags;
});

Deno.test("adapters: a non-finite lora_alpha (1e400 parses to Infinity) is bad_adapter_config", async () => {
  const files: Record<string, Uint8Array> = {
    "adapter_config.json": new TextEncoder().encode(`{"r": 4, "lora_alpha": 1e400}`),
    "adapter_model.safetensors": adapterBytes(loraFixture(1, ["0:q"], 4).tensors),
  };
  await assert.rejects(
    readPeftAdapter((n) => Promise.resolve(files[n]), "t"),
    (e: Error & { code?: string }) => e.code === "bad_adapter_config",
  );
});

Deno.test("adapters: merging an adapter that overflows the weight type is PluginError non_finite", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const t = loraFixture(9, ["1:v"], 4).tensors;
    const big = Object.fromEntries(
      Object.entries(t).map(([n, x]) => [n, { ...x, data: x.data.map((v) => v * 1e20) }]),
    );
    await Deno.mkdir(`${dir}/ad`);
    await Deno.writeTextFile(`${dir}/ad/adapter_config.json`, `{"r": 4, "lora_alpha": 8}`);
    await Deno.writeFile(`${dir}/ad/adapter_model.safetensors`, adapterBytes(big));
    await assert.rejects(
      loadFromManifest({
        manifestVersion: 1,
        model: { source: "model.gguf" },
        backend: "ref",
        plugins: [{ use: "lora", config: { adapter: "ad", merge: true } }],
      } as never, { baseUrl: dirUrl(dir) }),
      (e: Error & { code?: string }) =>
        e.name === "PluginError" && e.code === "non_finite" && /blk\.1\.attn_v/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("adapters: an adapter_config.json over 16 MiB is refused before it is read whole", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.mkdir(`${dir}/ad`);
    await Deno.writeTextFile(`${dir}/ad/adapter_config.json`, `{"r": 4}${" ".repeat(16 << 20)}`);
    await Deno.writeFile(
      `${dir}/ad/adapter_model.safetensors`,
      adapterBytes(loraFixture(1, ["0:q"], 4).tensors),
    );
    await assert.rejects(
      loadFromManifest({
        manifestVersion: 1,
        model: { source: "model.gguf" },
        backend: "ref",
        plugins: [{ use: "lora", config: { adapter: "ad" } }],
      } as never, { baseUrl: dirUrl(dir) }),
      (e: Error & { code?: string }) => e.name === "PluginError" && e.code === "too_large",
    );
  } finally {
    await cleanup(dir);
  }
});
