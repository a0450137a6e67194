// Tokenize texts with llama.cpp itself (node-llama-cpp from tests/oracle/node_modules,
// prebuilt CPU binaries, nothing downloaded) — used by check.ts to confirm that the default
// model's vocabulary tokenizes identically in llama.cpp and in moe-edge.
//
// stdin: {"model": "path.gguf", "texts": ["...", ...]}
// stdout: {"tokens": [[id, ...], ...]}   (no BOS: llama_tokenize without add_special)

import { Buffer } from "node:buffer";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const require = createRequire(path.join(HERE, "..", "..", "tests", "oracle", "package.json"));
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(require.resolve("node-llama-cpp")).href
);
const llama = await getLlama({
  gpu: false,
  build: "never",
  usePrebuiltBinaries: true,
  skipDownload: true,
  progressLogs: false,
  maxThreads: 1,
  logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0 });
const tokens = req.texts.map((t) => Array.from(model.tokenize(t, false)));
await model.dispose();
// exit only once the pipe has taken everything (a large write is asynchronous)
process.stdout.write(JSON.stringify({ tokens }) + "\n", () => process.exit(0));
