/**
 * The main job: generate text from the default model (a small MoE the
 * project generates deterministically) and print it with timings.
 *
 * @module
 */

import { defaultModelBytes, generateText, loadModel } from "./mod.ts";

if (import.meta.main) {
  const model = await loadModel(defaultModelBytes());
  const prompt = Deno.env.get("MOE_EDGE_PROMPT") ?? "Once upon a time";
  const r = await generateText(model, prompt, { maxTokens: 32, temperature: 0 });
  console.log(`model: default (${model.arch}, ${model.hp.nExpert} experts, top-${model.hp.nExpertUsed}) on ${model.backend.name}`);
  console.log(`prompt: ${JSON.stringify(prompt)}`);
  console.log(`output: ${JSON.stringify(r.text)}`);
  console.log(
    `tokens: ${r.tokens.length}, prefill ${r.timings.prefillMs.toFixed(1)} ms, decode ${
      r.timings.decodeTokensPerS.toFixed(1)
    } tok/s`,
  );
}
