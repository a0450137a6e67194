import assert from "node:assert/strict";
import { parsePeftKey, patternValue, type PeftKey, perLayer, PluginError } from "../../mod.ts";

Deno.test("peft: tensor keys of PEFT LoRA, original MoLA, MoE-PEFT and SRMoLE map to (layer, projection, role)", () => {
  const cases: [string, unknown][] = [
    ["base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", {
      layer: 3,
      proj: "attn_q",
      kind: "A",
      expert: -1,
    }],
    ["base_model.model.model.layers.0.self_attn.o_proj.lora_B.bias", {
      layer: 0,
      proj: "attn_output",
      kind: "B_bias",
      expert: -1,
    }],
    ["base_model.model.lm_head.lora_B.weight", {
      layer: -1,
      proj: "output",
      kind: "B",
      expert: -1,
    }],
    ["base_model.model.model.layers.1.mlp.down_proj.lora_A_7.weight", {
      layer: 1,
      proj: "ffn_down",
      kind: "A",
      expert: 7,
    }],
    ["base_model.model.model.layers.1.self_attn.k_proj.router.router.weight", {
      layer: 1,
      proj: "attn_k",
      kind: "router",
      expert: -1,
    }],
    ["mola.layers.2.self_attn.v_proj.experts.4.lora_B.weight", {
      layer: 2,
      proj: "attn_v",
      kind: "B",
      expert: 4,
    }],
    ["dynmole.layers.2.mlp.up_proj.moe_gate.weight", {
      layer: 2,
      proj: "ffn_up",
      kind: "router",
      expert: -1,
    }],
    ["base_model.model.model.layers.5.mlp.gate_proj.lora_router.weight", {
      layer: 5,
      proj: "ffn_gate",
      kind: "rank_router",
      expert: -1,
    }],
    ["base_model.model.model.layers.5.mlp.gate_proj.lora_biases", {
      layer: 5,
      proj: "ffn_gate",
      kind: "rank_bias",
      expert: -1,
    }],
  ];
  for (const [key, want] of cases) {
    const k = parsePeftKey(key);
    assert.equal(typeof k, "object", `${key}: ${k}`);
    const { module: _m, ...rest } = k as PeftKey;
    assert.deepEqual(rest, want, key);
  }
  assert.equal(
    (parsePeftKey("mola.layers.2.self_attn.v_proj.moe_gate.weight") as { module: string }).module,
    "model.layers.2.self_attn.v_proj",
  );
  assert.match(
    parsePeftKey(
      "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
    ) as string,
    /DoRA/,
  );
  assert.match(
    parsePeftKey("base_model.model.model.embed_tokens.lora_embedding_A") as string,
    /not a layer/,
  );
  assert.match(
    parsePeftKey("base_model.model.model.layers.0.self_attn.q_proj.weight") as string,
    /unrecognised/,
  );
});

Deno.test("peft: rank/alpha patterns match module-name suffixes, first key wins", () => {
  const m = "model.layers.12.self_attn.v_proj";
  assert.equal(patternValue({ "v_proj": 16 }, m, 8), 16);
  assert.equal(patternValue({ "layers.12.self_attn.v_proj": 4, "v_proj": 16 }, m, 8), 4);
  assert.equal(patternValue({ "q_proj": 16 }, m, 8), 8);
  assert.equal(patternValue({ "proj": 16 }, m, 8), 8); // suffix must follow a dot
  // an invalid pattern is a typed error (PEFT's re.match would raise), never skipped silently
  assert.throws(
    () => patternValue({ "(": 3, "v_proj": 5 }, m, 8),
    (e: Error & { code?: string }) => e.name === "ManifestError" && e.code === "bad_pattern",
  );
  assert.equal(patternValue(undefined, m, 8), 8);
});

Deno.test("perLayer: numbers, explicit arrays and layer-group patterns (MoLA 2468, 8-6-4-2)", () => {
  assert.deepEqual(perLayer(2, 3, "k"), [2, 2, 2]);
  assert.deepEqual(perLayer("2468", 8, "e"), [2, 2, 4, 4, 6, 6, 8, 8]);
  assert.deepEqual(perLayer("8-6-4-2", 4, "e"), [8, 6, 4, 2]);
  assert.deepEqual(perLayer("10,2,2,2", 6, "e"), [10, 10, 2, 2, 2, 2]);
  assert.deepEqual(perLayer("2468", 32, "e").filter((_, l) => l % 8 === 0), [2, 4, 6, 8]);
  assert.deepEqual(perLayer([1, 2, 3], 3, "e"), [1, 2, 3]);
  for (const bad of [[1, 2], "24x8", "", "2468", 0, [0, 1, 1]] as const) {
    assert.throws(
      () => perLayer(bad as never, 3, "experts"),
      (e: Error) => e instanceof PluginError && /'experts'/.test(e.message),
    );
  }
});
