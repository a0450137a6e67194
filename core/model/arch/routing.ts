/**
 * Routing hyper-parameters shared by the architectures whose routers llama.cpp configures from
 * GGUF keys (`expert_gating_func`, `expert_group_count`, `expert_group_used_count`): deepseek2,
 * bailingmoe2. Bounded reads with typed errors, after llama.cpp's `llama_model::load_hparams`
 * checks and `build_moe_ffn`.
 *
 * @module
 */

import { ModelError } from "../../errors.ts";
import { badHparam } from "../hparams.ts";
import type { Gating } from "../../moe/router.ts";
import type { HParamContext } from "./types.ts";

/** llama.cpp `llama_expert_gating_func_type` values of `expert_gating_func` this package runs. */
const GATING: Readonly<Record<number, Gating>> = {
  1: "softmax",
  2: "sigmoid",
  3: "softmax_weight",
};

/**
 * The gate function of `expert_gating_func` value `gf` (1 softmax, 2 sigmoid, 3 softmax over the
 * selected logits); `ModelError` `unsupported_hparam` for 4 (sqrt-softplus), `bad_hparam` for
 * any other value.
 */
export function gatingOf(c: HParamContext, gf: number): Gating {
  const g = Object.hasOwn(GATING, gf) ? GATING[gf] : undefined;
  if (g) return g;
  if (gf === 4) {
    throw new ModelError(
      "unsupported_hparam",
      `Cannot load model: expert_gating_func ${gf} (sqrt-softplus) is not supported`,
      { field: "expert_gating_func" },
    );
  }
  throw badHparam(
    "expert_gating_func",
    `${c.arch}.expert_gating_func must be 1 (softmax), 2 (sigmoid) or 3 ` +
      `(softmax over the selected): received ${gf}`,
  );
}

/**
 * Group-limited routing (`expert_group_count` > 1: experts form that many equal groups, only the
 * best `expert_group_used_count` compete); `{ nGroups: 0, nGroupUsed: 0 }` when absent, 0 or 1.
 * As llama.cpp asserts: fewer groups than experts, groups dividing the experts, 1 ≤ used < groups;
 * and enough experts in the used groups for `expert_used_count`. `ModelError` `bad_hparam`
 * naming the key otherwise.
 */
export function readExpertGroups(c: HParamContext): { nGroups: number; nGroupUsed: number } {
  const nGroups = c.int("expert_group_count", 0, 0, Math.max(0, c.nExpert - 1));
  if (nGroups <= 1) return { nGroups, nGroupUsed: 0 };
  const nGroupUsed = c.int("expert_group_used_count", undefined, 1, nGroups - 1);
  const per = c.nExpert / nGroups;
  if (!Number.isInteger(per) || c.nExpertUsed > nGroupUsed * per) {
    throw badHparam(
      "expert_group_count",
      `${c.arch}.expert_group_count ${nGroups} (expert_group_used_count ` +
        `${nGroupUsed}) must split expert_count ${c.nExpert} evenly and leave ` +
        `expert_used_count ${c.nExpertUsed} experts to choose from`,
    );
  }
  return { nGroups, nGroupUsed };
}
