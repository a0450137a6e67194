// llama.cpp's detokenizer, as a Node script for tests/tokenizer/detokenize_oracle_test.ts.
// Request on stdin: { model: path, cases: [{ ids: number[], special: boolean }] }.
// Response on stdout: { texts: string[] }, each llama_detokenize(ids, remove_special = false,
// unparse_special = special) through node-llama-cpp 3.22.1 (installed in tests/oracle).
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(HERE, "..", "oracle", "package.json"));
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(require.resolve("node-llama-cpp")).href
);

let input = "";
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const llama = await getLlama({
  gpu: false,
  build: "never",
  usePrebuiltBinaries: true,
  skipDownload: true,
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0, vocabOnly: true });
// LlamaModel.detokenize(tokens, special) without lastTokens calls llama_detokenize directly
const texts = req.cases.map((c) => model.detokenize(c.ids, c.special));
await model.dispose();
process.stdout.write(JSON.stringify({ texts }));
process.exit(0);
