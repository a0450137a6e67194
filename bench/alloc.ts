/**
 * Allocation per decoded token on the forward path (`Session.eval` of one
 * token), measured as JS heap growth with a young generation large enough
 * that no garbage collection runs during the measured window.
 *
 * Run: deno run -A --v8-flags=--max-semi-space-size=512,--expose-gc bench/alloc.ts [--backend wasm]
 *
 * @module
 */

import { loadModel, Session, synthesizeModel } from "../mod.ts";

const backend = Deno.args.includes("--backend")
  ? Deno.args[Deno.args.indexOf("--backend") + 1]
  : "wasm";
const model = await loadModel(
  synthesizeModel({
    nEmbd: 128,
    nLayer: 4,
    nExpert: 8,
    nExpertUsed: 2,
    nFf: 256,
    nVocab: 512,
    seed: 2,
  }),
  { backend },
);
const s = new Session(model, { nCtx: 1024 });
await s.eval([1, 2, 3, 4]);
const gc = (globalThis as { gc?: () => void }).gc;
let tok = 5;
// warm up: JIT, scratch buffers, caches
for (let i = 0; i < 3000; i++) {
  if (s.position >= 1000) s.truncate(4);
  tok = (tok * 31 + 7) % 512, await s.eval([tok]);
}
s.truncate(4);
gc?.();
const n = 512;
const before = Deno.memoryUsage().heapUsed;
for (let i = 0; i < n; i++) tok = (tok * 31 + 7) % 512, await s.eval([tok]);
const after = Deno.memoryUsage().heapUsed;
const perToken = (after - before) / n;
console.log(
  JSON.stringify({
    backend,
    tokens: n,
    heapGrowthBytes: after - before,
    bytesPerToken: Math.round(perToken),
  }),
);
