import assert from "node:assert/strict";
import pluginSchema from "../../schemas/plugin-manifest.schema.json" with { type: "json" };
import {
  type Expert,
  generateText,
  HOOK_NAMES,
  HOOKS,
  type LinearAdapter,
  type Plugin,
  PluginError,
  PluginHost,
  stamp,
  useKind,
} from "../../mod.ts";
import {
  cleanup,
  dirUrl,
  loadTestModel,
  loadWithPlugins,
  logitsOf,
  manifestFor,
  tempDir,
  writeModel,
  writePlugin,
} from "./plugin_test_util.ts";
import { loadFromManifest } from "../../mod.ts";

Deno.test("loader: the hook list, the Record<HookName, 1> and the manifest schema agree", () => {
  assert.deepEqual([...HOOK_NAMES], Object.keys(HOOKS));
  assert.deepEqual(pluginSchema.properties.hooks.items.enum, [...HOOK_NAMES]);
  assert.equal(useKind("mola"), "builtin");
  assert.equal(useKind("./x"), "local");
  assert.equal(useKind("plugins/x/manifest.json"), "local");
  assert.equal(useKind("https://a.b/m.json"), "remote");
  assert.equal(useKind("npm:@scope/moe-plugin@1.2.3"), "package");
});

async function setupError(
  code: string,
  manifest: Record<string, unknown> = {},
): Promise<PluginError> {
  const dir = await tempDir();
  try {
    const use = await writePlugin(dir, "p", code, manifest);
    return await loadWithPlugins(dir, [{ use }]).then(
      () => assert.fail("expected a PluginError"),
      (e) => e,
    );
  } finally {
    await cleanup(dir);
  }
}

Deno.test("loader: a plugin must implement exactly its declared hooks, under its manifest's name and version", async () => {
  const cases: [string, Record<string, unknown>, string][] = [
    [
      `export default () => ({ name: "p", version: "1.0.0", hooks: { router: (r) => r, adapter: () => [] } });`,
      {},
      "undeclared_hook",
    ],
    [`export default () => ({ name: "p", version: "1.0.0", hooks: {} });`, {}, "missing_hook"],
    [
      `export default () => ({ name: "p", version: "1.0.0", hooks: { router: (r) => r, route: () => 1 } });`,
      {},
      "unknown_hook",
    ],
    [
      `export default () => ({ name: "q", version: "1.0.0", hooks: { router: (r) => r } });`,
      {},
      "name_mismatch",
    ],
    [
      `export default () => ({ name: "p", version: "2.0.0", hooks: { router: (r) => r } });`,
      {},
      "version_mismatch",
    ],
    [
      `export default () => ({ name: "p", version: "1.0.0", hooks: { router: 5 } });`,
      {},
      "bad_hook",
    ],
    [`export default () => ({ name: "p", version: "1.0.0", hooks: { expertKinds: {} } });`, {
      hooks: ["expertKinds"],
    }, "bad_hook"],
    [`export const plugin = {};`, {}, "bad_entry"],
    [`export default () => 42;`, {}, "bad_plugin"],
  ];
  for (const [code, manifest, want] of cases) {
    const e = await setupError(code, manifest);
    assert.ok(e instanceof PluginError, `${want}: ${e}`);
    assert.equal(e.code, want, e.message);
    assert.match(e.message, /^plugin 'p' \(setup\): /);
    assert.deepEqual([e.details.plugin, e.details.hook], ["p", "setup"]);
  }
});

Deno.test("loader: errors thrown by a factory or at runtime are stamped with plugin and hook, cause kept", async () => {
  const e = await setupError(`export default () => { throw new RangeError("boom"); };`);
  assert.equal(e.code, "plugin_failed");
  assert.match(e.message, /plugin 'p' \(setup\): boom/);
  assert.ok((e as { cause?: unknown }).cause instanceof RangeError);
  const dir = await tempDir();
  try {
    const use = await writePlugin(
      dir,
      "flaky",
      `export default () => ({ name: "flaky", version: "1.0.0", hooks: { router: (r) => ({ name: "x", route: (l, layer) => { if (layer === 1) throw new Error("layer 1 broke"); return r.route(l, layer); } }) } });`,
    );
    const { model } = await loadWithPlugins(dir, [{ use }]);
    await assert.rejects(
      generateText(model, [1, 2, 3], { maxTokens: 2 }),
      (e: Error) =>
        e instanceof PluginError && /^plugin 'flaky' \(router\): layer 1 broke/.test(e.message),
    );
  } finally {
    await cleanup(dir);
  }
});

function plugin(name: string, hooks: Plugin["hooks"]): Plugin {
  return { name, version: "1.0.0", hooks };
}

Deno.test("registry: chain, collect and first-result-wins runners in manifest order", async () => {
  const seen: string[] = [];
  const host = new PluginHost([
    plugin("a", { router: (r) => (seen.push("a"), { name: `a(${r.name})`, route: r.route }) }),
    plugin("b", {}),
    plugin("c", { router: (r) => (seen.push("c"), { name: `c(${r.name})`, route: r.route }) }),
  ]);
  const base = {
    name: "base",
    route: () => ({ experts: new Int32Array(0), weights: new Float32Array(0) }),
  };
  assert.equal(host.wrapRouter(base, 0, {} as never).name, "c(a(base))");
  assert.deepEqual(seen, ["a", "c"]);
  const mk = (tag: number): LinearAdapter => ({ applies: () => tag > 0, apply: () => {} });
  const h2 = new PluginHost([
    plugin("x", { adapter: () => mk(1) }),
    plugin("y", { adapter: () => [mk(2), mk(3)] }),
  ]);
  assert.equal((await h2.adapters({} as never)).length, 3);
  const kind = (name: string, claim: (i: number) => boolean) => ({
    name,
    claims: (k: { index: number }) => claim(k.index),
    create: (e: Expert): Expert => ({ ...e, kind: name, forward: e.forward }),
  });
  const h3 = new PluginHost([
    plugin("k1", { expertKinds: [kind("even", (i) => i % 2 === 0)] }),
    plugin("k2", { expertKinds: [kind("small", (i) => i < 3)] }),
  ]);
  const e = (index: number): Expert => ({ kind: "swiglu", layer: 0, index, forward: () => {} });
  assert.deepEqual([0, 1, 2, 3].map((i) => h3.wrapExpert(e(i), {} as never).kind), [
    "even",
    "small",
    "even",
    "swiglu",
  ]);
  assert.equal(host.first("router", () => undefined), undefined);
  await assert.rejects(
    Promise.resolve().then(() => stamp("z", "cache", () => Promise.reject(new Error("later")))),
    /plugin 'z' \(cache\): later/,
  );
});

Deno.test("registry: weights hooks see every tensor (expert slices too), chain, and must keep the byte length", async () => {
  const names: string[] = [];
  const host = new PluginHost([
    plugin("rec", { weights: (t) => void names.push(t.name) }),
    plugin("zero-out", {
      weights: (t, b) => (t.name === "output.weight" ? new Uint8Array(b.length) : undefined),
    }),
  ]);
  const model = await loadTestModel(host.modelHooks());
  assert.ok(names.includes("token_embd.weight") && names.includes("blk.1.attn_q.weight"));
  assert.ok(
    names.includes("blk.0.ffn_up_exps.weight[3]") &&
      names.includes("blk.1.ffn_gate_exps.weight[0]"),
  );
  assert.ok((await logitsOf(model)).every((v) => v === 0), "output.weight was zeroed");
  const bad = new PluginHost([plugin("short", { weights: (_t, b) => b.subarray(1) })]);
  await assert.rejects(
    loadTestModel(bad.modelHooks()),
    (e: Error & { code?: string }) =>
      e instanceof PluginError && e.code === "bad_transform" &&
      /plugin 'short' \(weights\)/.test(e.message),
  );
});

Deno.test("loader: config defaults from the schema reach the factory; setup resolves paths against the manifest", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    await Deno.mkdir(`${dir}/data`);
    await Deno.writeTextFile(`${dir}/data/hello.txt`, "hi");
    const use = await writePlugin(
      dir,
      "echo",
      `export default async (config, setup) => {
        globalThis.__echo = { config, text: new TextDecoder().decode(await setup.readBytes(config.file)), base: setup.baseUrl.href };
        return { name: "echo", version: "1.0.0", hooks: { router: (r) => r } };
      };`,
      {
        config: {
          type: "object",
          properties: { k: { type: "integer", default: 3 }, file: { type: "string" } },
        },
      },
    );
    await loadFromManifest(
      manifestFor(model, [{ use, config: { file: "data/hello.txt" } }]) as never,
      { baseUrl: dirUrl(dir) },
    );
    const echo =
      (globalThis as unknown as { __echo: { config: unknown; text: string; base: string } }).__echo;
    assert.deepEqual(echo.config, { file: "data/hello.txt", k: 3 });
    assert.equal(echo.text, "hi");
    assert.equal(echo.base, dirUrl(dir).href);
  } finally {
    await cleanup(dir);
  }
});
