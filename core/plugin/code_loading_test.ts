/**
 * Plugin code runs only from inside its own folder (after URL normalisation
 * and symlinks), declared `entryIntegrity` is verified and exactly the
 * verified bytes are imported, a remote manifest cannot reach local files,
 * plain http is refused, and npm:/jsr: plugins are pinned and verified.
 */
import assert from "node:assert/strict";
import {
  loadFromManifest,
  ManifestError,
  type ManifestProblem,
  parsePackageSpec,
  preparePlugins,
  sri,
  sriSha256,
  unpackNpmTarball,
} from "../../mod.ts";
import { cleanup, dirUrl, manifestFor, tempDir, writeModel } from "./plugin_test_util.ts";

const flags = globalThis as unknown as Record<string, number | undefined>;

function problemsOf(e: unknown): ManifestProblem[] {
  assert.ok(e instanceof ManifestError, `expected ManifestError, got ${e}`);
  return e.details.problems as ManifestProblem[];
}

function has(problems: ManifestProblem[], path: RegExp, code: string): void {
  assert.ok(
    problems.some((p) => path.test(p.path) && p.code === code),
    `no ${code} at ${path}; got:\n${problems.map((p) => `${p.path} ${p.code} ${p.message}`)}`,
  );
}

/** Router plugin code that bumps `globalThis[flag]` when its module is evaluated. */
function code(name: string, flag: string): string {
  return `globalThis.${flag} = (globalThis.${flag} ?? 0) + 1;
export default () => ({ name: ${
    JSON.stringify(name)
  }, version: "1.0.0", hooks: { router: (r) => r } });
`;
}

function pluginManifest(name: string, entry: string, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    name,
    version: "1.0.0",
    apiVersion: 1,
    hooks: ["router"],
    entry,
    config: { type: "object" },
    ...extra,
  });
}

const ESCAPES = [
  "%2e%2e/evil.js",
  ".%2E/evil.js",
  "%2E%2E/evil.js",
  "..%2fevil.js",
  "..%2Fevil.js",
  "../evil.js",
  "./../evil.js",
  "sub/../../evil.js",
  "sub/%2e%2e/%2e%2e/evil.js",
  "..\\evil.js",
  "sub/..",
  "./mod.js?x=../../evil.js",
  "mod.js#../evil.js",
];

Deno.test("code loading: an entry that escapes its folder (encoded, dotted, backslashed) never runs", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.writeTextFile(`${dir}/evil.js`, code("p", "__evilRan"));
    await Deno.mkdir(`${dir}/plug/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/plug/mod.js`, code("p", "__goodRan"));
    for (const entry of ESCAPES) {
      await Deno.writeTextFile(`${dir}/plug/manifest.json`, pluginManifest("p", entry));
      flags.__evilRan = 0;
      const e = await loadFromManifest(manifestFor("model.gguf", [{ use: "./plug" }]) as never, {
        baseUrl: dirUrl(dir),
      }).then(() => null, (e) => e);
      const ps = problemsOf(e);
      assert.ok(
        ps.some((p) => /manifest: entry$/.test(p.path)),
        `${entry}: ${ps.map((p) => p.code)}`,
      );
      assert.equal(flags.__evilRan, 0, `code outside the folder ran for entry ${entry}`);
    }
    // the same folder with a plain entry loads
    await Deno.writeTextFile(`${dir}/plug/manifest.json`, pluginManifest("p", "mod.js"));
    await loadFromManifest(manifestFor("model.gguf", [{ use: "./plug" }]) as never, {
      baseUrl: dirUrl(dir),
    });
    assert.equal(flags.__goodRan, 1);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: a symlinked entry pointing outside the plugin folder is refused", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.writeTextFile(`${dir}/evil.js`, code("p", "__symEvil"));
    await Deno.mkdir(`${dir}/plug`);
    await Deno.symlink(`${dir}/evil.js`, `${dir}/plug/mod.js`);
    await Deno.writeTextFile(`${dir}/plug/manifest.json`, pluginManifest("p", "mod.js"));
    const e = await loadFromManifest(manifestFor("model.gguf", [{ use: "./plug" }]) as never, {
      baseUrl: dirUrl(dir),
    }).then(() => null, (e) => e);
    has(problemsOf(e), /\(p\) manifest: entry$/, "entry_outside");
    assert.equal(flags.__symEvil ?? 0, 0);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: a local entryIntegrity is verified and exactly the verified bytes run", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.mkdir(`${dir}/plug`);
    const good = code("p", "__verifiedRan");
    await Deno.writeTextFile(`${dir}/plug/mod.js`, good);
    const wrong = await sriSha256(new TextEncoder().encode("something else"));
    await Deno.writeTextFile(
      `${dir}/plug/manifest.json`,
      pluginManifest("p", "mod.js", { entryIntegrity: wrong }),
    );
    const m = manifestFor("model.gguf", [{ use: "./plug" }]);
    const e = await loadFromManifest(m as never, { baseUrl: dirUrl(dir) }).then(
      () => null,
      (e) => e,
    );
    has(problemsOf(e), /\(p\) manifest: entryIntegrity$/, "integrity_mismatch");
    assert.equal(flags.__verifiedRan ?? 0, 0, "code ran although its hash does not match");

    const right = await sriSha256(new TextEncoder().encode(good));
    await Deno.writeTextFile(
      `${dir}/plug/manifest.json`,
      pluginManifest("p", "mod.js", { entryIntegrity: right }),
    );
    // check, then swap the file before import: the verified bytes are what runs
    const { prepared, problems } = await preparePlugins([{ use: "./plug" }], {
      baseUrl: dirUrl(dir),
    });
    assert.deepEqual(problems, []);
    assert.match(prepared[0].entry, /^data:/);
    await Deno.writeTextFile(`${dir}/plug/mod.js`, code("p", "__swappedRan"));
    await import(prepared[0].entry);
    assert.equal(flags.__verifiedRan, 1);
    assert.equal(flags.__swappedRan ?? 0, 0, "bytes swapped after the check ran");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: a manifest fetched over https cannot name local code, files or models; http is refused", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.mkdir(`${dir}/plug`);
    await Deno.writeTextFile(`${dir}/plug/mod.js`, code("p", "__localFromRemote"));
    await Deno.writeTextFile(`${dir}/plug/manifest.json`, pluginManifest("p", "mod.js"));
    const files = new Map<string, string>();
    const serve = ((input: RequestInfo | URL) => {
      const body = files.get(String(input));
      return Promise.resolve(new Response(body ?? "nope", { status: body ? 200 : 404 }));
    }) as typeof fetch;
    for (const use of [`${dir}/plug`, `file://${dir}/plug/manifest.json`]) {
      files.set(
        "https://models.example/m/model.json",
        JSON.stringify(manifestFor(`${dir}/model.gguf`, [{ use }])),
      );
      const e = await loadFromManifest(new URL("https://models.example/m/model.json"), {
        fetch: serve,
      }).then(() => null, (e) => e);
      const ps = problemsOf(e);
      has(ps, /plugins\[0\]\.use$/, "local_from_remote");
      has(ps, /model\.source$/, "local_from_remote");
    }
    assert.equal(flags.__localFromRemote ?? 0, 0);
    // plain http: the manifest itself is refused
    await assert.rejects(
      loadFromManifest(new URL("http://models.example/m/model.json"), { fetch: serve }),
      (e: ManifestError) => e.code === "insecure_source",
    );
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: npm:/jsr: specifiers need an exact version and an integrity", async () => {
  for (
    const bad of ["npm:foo", "npm:foo@^1.2.3", "npm:foo@latest", "npm:foo@1", "npm:foo@1.2.3/sub"]
  ) {
    assert.equal(typeof parsePackageSpec(bad), "string", bad);
  }
  assert.deepEqual(parsePackageSpec("npm:@s/p@1.2.3"), {
    registry: "npm",
    name: "@s/p",
    version: "1.2.3",
  });
  assert.deepEqual(parsePackageSpec("jsr:@s/p@0.1.0-rc.1"), {
    registry: "jsr",
    name: "@s/p",
    version: "0.1.0-rc.1",
  });
  assert.equal(typeof parsePackageSpec("jsr:p@1.0.0"), "string"); // jsr needs a scope
  const { problems } = await preparePlugins([
    { use: "npm:some-plugin" },
    { use: "jsr:@s/p@^1.0.0", integrity: `sha256-${"A".repeat(43)}=` },
    { use: "npm:some-plugin@1.0.0" },
  ]);
  has(problems, /plugins\[0\]\.use$/, "unpinned_package");
  has(problems, /plugins\[1\]\.use$/, "unpinned_package");
  has(problems, /plugins\[2\]\.integrity$/, "missing_field");
});

/** A gzip'd ustar archive with `files` under `package/`, as `npm pack` writes. */
async function npmTarball(files: Record<string, string>): Promise<Uint8Array> {
  const blocks: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (const [name, body] of Object.entries(files)) {
    const h = new Uint8Array(512);
    h.set(enc.encode(`package/${name}`), 0);
    h.set(enc.encode("0000644\0"), 100);
    const data = enc.encode(body);
    h.set(enc.encode(`${data.length.toString(8).padStart(11, "0")}\0`), 124);
    h.set(enc.encode("        "), 148);
    h[156] = 0x30;
    h.set(enc.encode("ustar\x0000"), 257);
    let sum = 0;
    for (const b of h) sum += b;
    h.set(enc.encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    blocks.push(h, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const tar = new Uint8Array(blocks.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of blocks) tar.set(b, o), o += b.length;
  const gz = new Blob([tar as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(gz).arrayBuffer());
}

Deno.test("code loading: an npm: plugin loads from its verified tarball; a wrong tarball never runs", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const tgz = await npmTarball({
      "package.json": JSON.stringify({ name: "moe-plug", version: "1.2.3" }),
      "manifest.json": pluginManifest("moe-plug", "dist/mod.js"),
      "dist/mod.js": code("moe-plug", "__npmRan"),
    });
    const files = await unpackNpmTarball(tgz);
    assert.deepEqual([...files.keys()].sort(), ["dist/mod.js", "manifest.json", "package.json"]);
    let body = tgz;
    const serve = ((input: RequestInfo | URL) => {
      const ok = String(input) === "https://registry.npmjs.org/moe-plug/-/moe-plug-1.2.3.tgz";
      return Promise.resolve(
        new Response(ok ? (body as Uint8Array<ArrayBuffer>) : "nope", { status: ok ? 200 : 404 }),
      );
    }) as typeof fetch;
    const integrity = await sri("sha512", tgz);
    const m = manifestFor(model, [{ use: "npm:moe-plug@1.2.3", integrity }]);
    body = await npmTarball({
      "manifest.json": pluginManifest("moe-plug", "dist/mod.js"),
      "dist/mod.js": code("moe-plug", "__npmTampered"),
    });
    const e = await loadFromManifest(m as never, { fetch: serve }).then(() => null, (e) => e);
    has(problemsOf(e), /plugins\[0\]\.integrity$/, "integrity_mismatch");
    assert.equal(flags.__npmTampered ?? 0, 0);
    body = tgz;
    const { plugins } = await loadFromManifest(m as never, { fetch: serve });
    assert.equal(plugins[0].manifest.name, "moe-plug");
    assert.equal(flags.__npmRan, 1);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: a jsr: plugin needs its manifest integrity and entryIntegrity", async () => {
  const dir = await tempDir();
  try {
    const model = await writeModel(dir);
    const entry = code("jsr-plug", "__jsrRan");
    const man = pluginManifest("jsr-plug", "mod.js", {
      entryIntegrity: await sriSha256(new TextEncoder().encode(entry)),
    });
    const files = new Map([
      ["https://jsr.io/@moe/plug/0.2.0/manifest.json", man],
      ["https://jsr.io/@moe/plug/0.2.0/mod.js", entry],
    ]);
    const serve = ((input: RequestInfo | URL) => {
      const b = files.get(String(input));
      return Promise.resolve(new Response(b ?? "nope", { status: b ? 200 : 404 }));
    }) as typeof fetch;
    const integrity = await sriSha256(new TextEncoder().encode(man));
    const { plugins } = await loadFromManifest(
      manifestFor(model, [{ use: "jsr:@moe/plug@0.2.0", integrity }]) as never,
      { fetch: serve },
    );
    assert.equal(plugins[0].manifest.name, "jsr-plug");
    assert.equal(flags.__jsrRan, 1);
    files.set("https://jsr.io/@moe/plug/0.2.0/mod.js", code("jsr-plug", "__jsrTampered"));
    const e = await loadFromManifest(
      manifestFor(model, [{ use: "jsr:@moe/plug@0.2.0", integrity }]) as never,
      { fetch: serve },
    ).then(() => null, (e) => e);
    has(problemsOf(e), /entryIntegrity$/, "integrity_mismatch");
    assert.equal(flags.__jsrTampered ?? 0, 0);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: a verified entry with a relative import fails typed (it must be self-contained)", async () => {
  const dir = await tempDir();
  try {
    await writeModel(dir);
    await Deno.mkdir(`${dir}/plug`);
    const src = `import x from "./other.js";\nexport default x;\n`;
    await Deno.writeTextFile(`${dir}/plug/other.js`, code("p", "__otherRan"));
    await Deno.writeTextFile(`${dir}/plug/mod.js`, src);
    await Deno.writeTextFile(
      `${dir}/plug/manifest.json`,
      pluginManifest("p", "mod.js", {
        entryIntegrity: await sriSha256(new TextEncoder().encode(src)),
      }),
    );
    await assert.rejects(
      loadFromManifest(manifestFor("model.gguf", [{ use: "./plug" }]) as never, {
        baseUrl: dirUrl(dir),
      }),
      (e: Error & { code?: string }) => e.name === "PluginError" && /plugin 'p'/.test(e.message),
    );
    assert.equal(flags.__otherRan ?? 0, 0);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("manifest: problems from every stage come in one error", async () => {
  const dir = await tempDir();
  try {
    await Deno.mkdir(`${dir}/bad`);
    await Deno.writeTextFile(`${dir}/bad/mod.js`, code("bad", "__badRan"));
    await Deno.writeTextFile(
      `${dir}/bad/manifest.json`,
      JSON.stringify({
        name: "bad",
        version: "1.0.0",
        apiVersion: 1,
        hooks: ["router", "nope"], // plugin manifest schema problem
        entry: "%2e%2e/mod.js", // semantic plugin manifest problem
        config: { type: "object", properties: { k: { type: "integer" } } },
      }),
    );
    const e = await loadFromManifest({
      manifestVersion: 1,
      model: { source: "missing.gguf" }, // model problem
      backend: "fast", // model manifest schema problem
      plugins: [
        { use: "http://x.example/p/manifest.json", integrity: `sha256-${"A".repeat(43)}=` },
        { use: "./bad", config: { k: "high" } }, // config problem
        { use: "no-such-builtin" },
      ],
    } as never, { baseUrl: dirUrl(dir) }).then(() => null, (e) => e);
    const ps = problemsOf(e);
    has(ps, /backend$/, "bad_value");
    has(ps, /plugins\[0\]\.use$/, "insecure_source");
    has(ps, /plugins\[1\] \(bad\) manifest: hooks\[1\]$/, "unknown_hook");
    has(ps, /plugins\[1\] \(bad\) manifest: entry$/, "entry_outside");
    has(ps, /plugins\[1\] \(bad\): config\.k$/, "bad_type");
    has(ps, /plugins\[2\]\.use$/, "unknown_plugin");
    assert.ok(ps.some((p) => /model\.source$/.test(p.path)), "model problem missing");
    assert.equal(ps.filter((p) => p.code === "insecure_source").length, 1, "reported once");
    assert.equal(flags.__badRan ?? 0, 0);
  } finally {
    await cleanup(dir);
  }
});

Deno.test("code loading: manifests and code over the size bound are refused before they are read whole", async () => {
  const big = "x".repeat((16 << 20) + 1);
  const serve = ((input: RequestInfo | URL) =>
    Promise.resolve(
      String(input).endsWith("len.json")
        ? new Response("{}", { headers: { "content-length": String(1 << 30) } })
        : new Response(big),
    )) as typeof fetch;
  for (const u of ["https://m.example/len.json", "https://m.example/stream.json"]) {
    await assert.rejects(
      loadFromManifest(new URL(u), { fetch: serve }),
      (e: ManifestError) => e.code === "too_large",
      u,
    );
  }
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/model.json`, big);
    await assert.rejects(
      loadFromManifest(`${dir}/model.json`),
      (e: ManifestError) => e.code === "too_large",
    );
  } finally {
    await cleanup(dir);
  }
});
