import assert from "node:assert/strict";
import {
  createRefBackend,
  loadFromManifest,
  ManifestError,
  type ManifestProblem,
  type Router,
  sha256OfSource,
  sriSha256,
  StreamingExpertStore,
  validateModelManifest,
} from "../../mod.ts";
import { MemorySource } from "../store/byte_source.ts";
import {
  assertClose,
  cleanup,
  dirUrl,
  loadTestModel,
  logitsOf,
  manifestFor,
  modelBytes,
  negatingRouterCode,
  refTopK,
  SPEC,
  tempDir,
  writeJson,
  writeModel,
  writePlugin,
} from "./plugin_test_util.ts";

type Flags = Record<string, number | undefined>;
const flags = globalThis as unknown as Flags;

function problemsOf(e: unknown): ManifestProblem[] {
  assert.ok(e instanceof ManifestError, `expected ManifestError, got ${e}`);
  return e.details.problems as ManifestProblem[];
}

function has(problems: ManifestProblem[], path: RegExp, code: string): void {
  assert.ok(
    problems.some((p) => path.test(p.path) && p.code === code),
    `no ${code} at ${path}; got:\n${
      problems.map((p) => `${p.path} ${p.code} ${p.message}`).join("\n")
    }`,
  );
}

Deno.test("manifest: every schema problem is reported with its field and reason", () => {
  const problems = validateModelManifest({
    manifestVersion: 2,
    model: { sha256: "abc", extra: true },
    backend: "gpu",
    memory: { expertBudgetMb: -1, pinnedExperts: [[0]] },
    plugins: [{ use: "https://example.com/p/manifest.json" }, { use: "" }, {
      use: "mola",
      config: [],
    }, 7],
  }, "m.json");
  has(problems, /^m\.json: manifestVersion$/, "bad_value");
  has(problems, /model\.source$/, "missing_field");
  has(problems, /model\.sha256$/, "bad_format");
  has(problems, /model\.extra$/, "unknown_field");
  has(problems, /backend$/, "bad_value");
  has(problems, /memory\.expertBudgetMb$/, "out_of_range");
  has(problems, /memory\.pinnedExperts\[0\]$/, "bad_length");
  has(problems, /plugins\[0\]\.integrity$/, "missing_field");
  has(problems, /plugins\[1\]\.use$/, "bad_length");
  has(problems, /plugins\[2\]\.config$/, "bad_type");
  has(problems, /plugins\[3\]$/, "bad_type");
  assert.ok(problems.every((p) => p.message.length > 0));
  const ok = validateModelManifest({
    manifestVersion: 1,
    model: { source: "m.gguf" },
    plugins: [],
  });
  assert.deepEqual(ok, []);
  has(
    validateModelManifest({
      manifestVersion: 1,
      model: { source: "x" },
      plugins: [{ use: "http://a/b", integrity: `sha256-${"A".repeat(43)}=` }],
    }),
    /plugins\[0\]\.use/,
    "insecure_source",
  );
});

Deno.test("manifest: all problems of manifests, plugin manifests, configs, integrity and sha256 come together, before any code or weights", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const good = await writePlugin(dir, "good", negatingRouterCode("good", "__goodLoaded"), {
      config: {
        type: "object",
        properties: { level: { type: "integer" } },
        additionalProperties: false,
      },
    });
    const future = await writePlugin(
      dir,
      "future",
      negatingRouterCode("future", "__futureLoaded"),
      {
        apiVersion: 2,
        hooks: ["router", "bogus"],
        entry: "../escape.js",
      },
    );
    const signed = await writePlugin(dir, "signed", negatingRouterCode("signed", "__signedLoaded"));
    let allocs = 0;
    const be = createRefBackend();
    const alloc = be.allocSlot.bind(be);
    be.allocSlot = (n: number) => (allocs++, alloc(n));
    const m = manifestFor(model, [
      { use: good, config: { level: "high", extra: 1 } },
      { use: "route-top-p", config: { p: 2 } },
      { use: "no-such-plugin" },
      { use: future },
      { use: signed, integrity: `sha256-${"B".repeat(43)}=` },
      { use: "./missing-dir" },
    ], { model: { source: "model.gguf", sha256: "0".repeat(64) } });
    const e = await loadFromManifest(m as never, { baseUrl: dirUrl(dir), backend: be }).then(
      () => null,
      (e) => e,
    );
    const problems = problemsOf(e);
    assert.equal(e.code, "invalid_manifest");
    has(problems, /plugins\[0\] \(good\): config\.level$/, "bad_type");
    has(problems, /plugins\[0\] \(good\): config\.extra$/, "unknown_field");
    has(problems, /plugins\[1\] \(route-top-p\): config\.p$/, "out_of_range");
    has(problems, /plugins\[2\]\.use$/, "unknown_plugin");
    assert.match(
      problems.find((p) => p.code === "unknown_plugin")!.message,
      /built-ins: .*mola.*route-top-p/,
    );
    has(problems, /plugins\[3\] \(future\) manifest: apiVersion$/, "incompatible_api");
    has(problems, /plugins\[3\] \(future\) manifest: hooks\[1\]$/, "unknown_hook");
    has(problems, /plugins\[3\] \(future\) manifest: entry$/, "entry_outside");
    has(problems, /plugins\[4\]\.integrity$/, "integrity_mismatch");
    has(problems, /plugins\[5\]\.use$/, "not_found");
    has(problems, /model\.sha256$/, "sha256_mismatch");
    assert.match(e.message, /10 problems/);
    assert.equal(flags.__goodLoaded ?? 0, 0, "no plugin code ran");
    assert.equal(flags.__futureLoaded ?? 0, 0);
    assert.equal(flags.__signedLoaded ?? 0, 0);
    assert.equal(allocs, 0, "no weights were uploaded");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: a file path loads; correct integrity and sha256 pass; the plugin changes routing", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    const use = await writePlugin(dir, "neg", negatingRouterCode("neg", "__negLoaded"));
    const integrity = await sriSha256(await Deno.readFile(`${dir}/neg/manifest.json`));
    const sha256 = await sha256OfSource(new MemorySource(modelBytes()));
    const path = await writeJson(dir, "conf/model.json", {
      manifestVersion: 1,
      model: { source: "../model.gguf", sha256 },
      backend: "ref",
      plugins: [{ use: `.${use}`, integrity }],
    });
    const { model, plugins, manifest } = await loadFromManifest(path);
    assert.equal(plugins[0].manifest.name, "neg");
    assert.equal(manifest.model.sha256, sha256);
    assert.equal(flags.__negLoaded, 1);
    const ref: Router = { name: "ref", route: (l) => refTopK(l.map((v) => -v), 2) };
    assertClose(
      await logitsOf(model),
      await logitsOf(await loadTestModel({ wrapRouter: () => ref })),
      1e-5,
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: remote plugins load only from bytes that match their integrity", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const code = negatingRouterCode("remote-neg", "__remoteLoaded");
    const files = new Map<string, string>();
    const serve = ((input: RequestInfo | URL) => {
      const body = files.get(String(input));
      return Promise.resolve(
        body === undefined ? new Response("nope", { status: 404 }) : new Response(body),
      );
    }) as typeof fetch;
    const base = "https://plugins.example/neg/";
    const entryIntegrity = await sriSha256(new TextEncoder().encode(code));
    const man = JSON.stringify({
      name: "remote-neg",
      version: "1.0.0",
      apiVersion: 1,
      hooks: ["router"],
      entry: "mod.js",
      entryIntegrity,
      config: {},
    });
    files.set(`${base}manifest.json`, man);
    files.set(`${base}mod.js`, code.replace("__remoteLoaded", "__tamperedLoaded"));
    const integrity = await sriSha256(new TextEncoder().encode(man));
    const load = () =>
      loadFromManifest(manifestFor(model, [{ use: `${base}manifest.json`, integrity }]) as never, {
        fetch: serve,
      });
    const e = await load().then(() => null, (e) => e);
    has(
      problemsOf(e),
      /plugins\[0\] \(remote-neg\) manifest: entryIntegrity$/,
      "integrity_mismatch",
    );
    assert.equal(flags.__tamperedLoaded ?? 0, 0, "tampered code never ran");
    files.set(`${base}mod.js`, code);
    const { model: m } = await load();
    assert.equal(flags.__remoteLoaded, 1);
    const ref: Router = { name: "ref", route: (l) => refTopK(l.map((v) => -v), 2) };
    assertClose(
      await logitsOf(m),
      await logitsOf(await loadTestModel({ wrapRouter: () => ref })),
      1e-5,
    );
    files.set(`${base}manifest.json`, man.replace(/,"entryIntegrity":"[^"]+"/, ""));
    const e2 = await loadFromManifest(
      manifestFor(model, [{
        use: `${base}manifest.json`,
        integrity: await sriSha256(new TextEncoder().encode(files.get(`${base}manifest.json`)!)),
      }]) as never,
      { fetch: serve },
    ).then(() => null, (e) => e);
    has(problemsOf(e2), /entryIntegrity$/, "missing_field");
    // a model manifest fetched over https: its relative plugin paths are remote code too
    files.set(
      "https://models.example/m/model.json",
      JSON.stringify(manifestFor("model.gguf", [{ use: "./neg" }])),
    );
    const e3 = await loadFromManifest(new URL("https://models.example/m/model.json"), {
      fetch: serve,
    }).then(
      () => null,
      (e) => e,
    );
    has(problemsOf(e3), /plugins\[0\]\.integrity$/, "missing_field");
    has(problemsOf(e3), /model\.source$/, "http_status");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: bad JSON, pinned experts outside the model, and two cache plugins are ManifestErrors", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    await Deno.writeTextFile(`${dir}/bad.json`, "{ manifestVersion: 1 ");
    await assert.rejects(
      loadFromManifest(`${dir}/bad.json`),
      (e: Error & { code?: string }) => e instanceof ManifestError && e.code === "bad_json",
    );
    await assert.rejects(
      loadFromManifest(`${dir}/none.json`),
      (e: Error & { code?: string }) => e instanceof ManifestError && e.code === "not_found",
    );
    const e = await loadFromManifest(
      manifestFor(model, [{ use: "cache-lru" }, { use: "cache-lfu" }], {
        memory: { pinnedExperts: [[0, 1], [2, 0], [1, 9]] },
      }) as never,
    ).then(() => null, (e) => e);
    const problems = problemsOf(e);
    has(problems, /memory\.pinnedExperts\[1\]$/, "out_of_range");
    has(problems, /memory\.pinnedExperts\[2\]$/, "out_of_range");
    has(problems, /plugins$/, "conflicting_hooks");
    assert.equal(problems.length, 3);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: a pinned expert in a NextN block (counted by block_count, never run) is out of range", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir, { ...SPEC, arch: "bailingmoe2", bailing: { nextn: 1 } });
    const e = await loadFromManifest(
      manifestFor(model, [], { memory: { pinnedExperts: [[1, 0], [2, 0]] } }) as never,
    ).then(() => null, (e) => e);
    const problems = problemsOf(e);
    has(problems, /memory\.pinnedExperts\[1\]$/, "out_of_range");
    assert.equal(problems.length, 1);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: memory + a cache plugin give a streaming store with that policy and the same outputs", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const { model: m } = await loadFromManifest(manifestFor(model, [{ use: "cache-lru" }], {
      memory: { expertBudgetMb: 0.06, pinnedExperts: [[0, 0]] },
    }) as never);
    assert.ok(m.store instanceof StreamingExpertStore);
    assertClose(await logitsOf(m), await logitsOf(await loadTestModel()), 0);
    const s = m.store.stats();
    assert.ok(
      s.misses > 0 && s.evictions > 0,
      `expected streaming under the budget: ${JSON.stringify(s)}`,
    );
  } finally {
    await cleanup(dir);
  }
});
