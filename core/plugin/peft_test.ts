import assert from "node:assert/strict";
import fc from "npm:fast-check@4";
import { parsePeftKey, patternValue, type PeftKey, perLayer, PluginError } from "../../mod.ts";

Deno.test("peft: tensor keys of PEFT LoRA, original MoLA, MoE-PEFT and SRMoLE map to (layer, projection, role)", () => {
  const cases: [string, unknown][] = [
    ["base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", {
      layer: 3,
      proj: "attn_q",
      kind: "A",
      expert: -1,
      ffnExpert: -1,
    }],
    ["base_model.model.model.layers.0.self_attn.o_proj.lora_B.bias", {
      layer: 0,
      proj: "attn_output",
      kind: "B_bias",
      expert: -1,
      ffnExpert: -1,
    }],
    ["base_model.model.lm_head.lora_B.weight", {
      layer: -1,
      proj: "output",
      kind: "B",
      expert: -1,
      ffnExpert: -1,
    }],
    ["base_model.model.model.layers.1.mlp.down_proj.lora_A_7.weight", {
      layer: 1,
      proj: "ffn_down",
      kind: "A",
      expert: 7,
      ffnExpert: -1,
    }],
    ["base_model.model.model.layers.1.self_attn.k_proj.router.router.weight", {
      layer: 1,
      proj: "attn_k",
      kind: "router",
      expert: -1,
      ffnExpert: -1,
    }],
    ["mola.layers.2.self_attn.v_proj.experts.4.lora_B.weight", {
      layer: 2,
      proj: "attn_v",
      kind: "B",
      expert: 4,
      ffnExpert: -1,
    }],
    // PEFT on a Mixtral expert (w1 gate, w2 down, w3 up) and on a Qwen-MoE expert
    ["base_model.model.model.layers.2.block_sparse_moe.experts.5.w2.lora_A.weight", {
      layer: 2,
      proj: "ffn_down_exps",
      kind: "A",
      expert: -1,
      ffnExpert: 5,
    }],
    ["base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_A_3.weight", {
      layer: 0,
      proj: "ffn_gate_exps",
      kind: "A",
      expert: 3,
      ffnExpert: 0,
    }],
    ["base_model.model.model.layers.1.block_sparse_moe.experts.7.w3.lora_router.weight", {
      layer: 1,
      proj: "ffn_up_exps",
      kind: "rank_router",
      expert: -1,
      ffnExpert: 7,
    }],
    ["base_model.model.model.layers.3.mlp.experts.12.up_proj.lora_B.weight", {
      layer: 3,
      proj: "ffn_up_exps",
      kind: "B",
      expert: -1,
      ffnExpert: 12,
    }],
    ["base_model.model.model.layers.3.mlp.experts.1.down_proj.router.router.weight", {
      layer: 3,
      proj: "ffn_down_exps",
      kind: "router",
      expert: -1,
      ffnExpert: 1,
    }],
    ["dynmole.layers.2.mlp.up_proj.moe_gate.weight", {
      layer: 2,
      proj: "ffn_up",
      kind: "router",
      expert: -1,
      ffnExpert: -1,
    }],
    ["base_model.model.model.layers.5.mlp.gate_proj.lora_router.weight", {
      layer: 5,
      proj: "ffn_gate",
      kind: "rank_router",
      expert: -1,
      ffnExpert: -1,
    }],
    ["base_model.model.model.layers.5.mlp.gate_proj.lora_biases", {
      layer: 5,
      proj: "ffn_gate",
      kind: "rank_bias",
      expert: -1,
      ffnExpert: -1,
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
  assert.equal(
    (parsePeftKey(
      "base_model.model.model.layers.2.block_sparse_moe.experts.5.w2.lora_A.weight",
    ) as { module: string }).module,
    "model.layers.2.block_sparse_moe.experts.5.w2",
  );
  // an expert index past 2^53 is refused, not rounded onto another expert
  assert.match(
    parsePeftKey(
      "base_model.model.model.layers.0.block_sparse_moe.experts.99999999999999999999.w1.lora_A.weight",
    ) as string,
    /out of range/,
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
  // per-expert targets: patterns reach one expert, one projection of every expert, or all
  const e = "model.layers.1.block_sparse_moe.experts.3.w2";
  assert.equal(patternValue({ "experts.3.w2": 2, "w2": 6 }, e, 8), 2);
  assert.equal(patternValue({ "experts.4.w2": 2, "w2": 6 }, e, 8), 6);
  assert.equal(patternValue({ "w1": 2 }, e, 8), 8);
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

Deno.test("peft: every expert key form parses to its (layer, projection, expert); mutated keys are refused, never thrown", () => {
  const forms: [string, string, Record<string, string>][] = [
    ["block_sparse_moe", "mixtral", {
      w1: "ffn_gate_exps",
      w3: "ffn_up_exps",
      w2: "ffn_down_exps",
    }],
    ["mlp", "qwen", {
      gate_proj: "ffn_gate_exps",
      up_proj: "ffn_up_exps",
      down_proj: "ffn_down_exps",
    }],
  ];
  const suffixes: [string, string, number][] = [
    ["lora_A.weight", "A", -1],
    ["lora_B.weight", "B", -1],
    ["lora_A_3.weight", "A", 3],
    ["lora_B_0.weight", "B", 0],
    ["router.router.weight", "router", -1],
    ["lora_router.weight", "rank_router", -1],
    ["lora_biases", "rank_bias", -1],
  ];
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 200 }),
      fc.integer({ min: 0, max: 300 }),
      fc.constantFrom(...forms),
      fc.nat(),
      fc.constantFrom(...suffixes),
      fc.boolean(),
      (layer, expert, [mid, _style, names], pick, [suffix, kind, sub], prefix) => {
        const w = Object.keys(names)[pick % 3];
        const module = `model.layers.${layer}.${mid}.experts.${expert}.${w}`;
        const key = `${prefix ? "base_model.model." : ""}${module}.${suffix}`;
        const k = parsePeftKey(key) as PeftKey;
        assert.equal(typeof k, "object", key);
        assert.deepEqual(
          { ...k },
          { layer, proj: names[w], module, kind, expert: sub, ffnExpert: expert },
        );
        // a mutation of the key is either another valid key or a reason string: never a throw
        for (const bad of [key.replace(".experts.", ".expert."), key.replace(`.${w}.`, ".w4.")]) {
          const r = parsePeftKey(bad);
          assert.ok(typeof r === "string" || (r as PeftKey).ffnExpert === -1, bad);
        }
      },
    ),
    { numRuns: 300 },
  );
});
