#!/usr/bin/env python3
"""Step 2 of adapter training: train a MoLA or SMoRA adapter on the FROZEN default model.

The base network is train.py's (the llama.cpp LLM_ARCH_LLAMA graph) with the weights the
runtime multiplies by: every tensor of core/model/default_model.gguf dequantized to f32
(adapter_prepare.ts writes them to out/adapters/base.bin). Adapters add a term to a
projection's output, exactly as moe-edge's plugins compute it:

- MoLA (plugins/mola): per projection a gate W_r [E_L, d_in], softmax over the E_L LoRA
  experts, top-k, weights renormalised, y += sum_j w_j * (alpha/r) * B_j (A_j x);
  E_L per layer (e.g. 2-4-6-8).
Each batch mixes in a share of the default model's own stories (story_mix) so the adapter
adds its domain without forgetting the base one.

- SMoRA (plugins/smora): one LoRA of rank r whose ranks are the experts: g = sigmoid(W_g x)
  (one value per block of P ranks), g' = g + b, top-k ranks of g', g^ = g'_I / sum g'_I,
  y += alpha * sum_{i in I} g^_i (A_i x) B[:, i]. b is updated without gradient
  (loss-free balancing: b_i += U * sign(mean load - load_i)), as SRMoLE does.

Targets use PEFT's module names for a Mixtral model: model.layers.L.self_attn.{q,k,v,o}_proj
and model.layers.L.block_sparse_moe.experts.E.{w1,w2,w3} (gate, down, up of expert E): an
expert's adapter runs only on the tokens routed to it.

Writes examples/<name>/adapter/{adapter_config.json, adapter_model.safetensors} (F16, PEFT
keys `base_model.model.<module>.<tensor>`), examples/<name>/reference.safetensors +
reference.json (the trainer's logits with the F16-rounded adapter for fixed prompts: the
runtime must reproduce them) and examples/<name>/train_log.json (held-out perplexity on the
target domain and on the default model's own stories, before and after).

Run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/train/train_adapter.py sea   (or qa)
"""

import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import rms_norm, rope_norm, rope_tables  # noqa: E402

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(HERE, "out", "adapters")

# The two shipped adapters. experts_per_layer: MoLA's E_L; targets: PEFT module suffixes.
RECIPES = {
    "sea": dict(
        name="mola-sea", method="mola", rank=4, alpha=8.0, top_k=2,
        experts_per_layer=[2, 4, 6, 8], targets=["q_proj", "k_proj", "v_proj", "o_proj"],
        lr=3e-3, seed=11, story_mix=0.1,
    ),
    "qa": dict(
        name="smora-qa", method="smora", rank=8, alpha=8.0, activate_r=4, partition=1,
        targets=["q_proj", "k_proj", "v_proj", "o_proj", "experts.w2"],
        lr=3e-3, seed=21, story_mix=0.25,
    ),
}
SEQ = 128
BATCH = int(os.environ.get("ADAPTER_BATCH", 8))
STEPS = int(os.environ.get("ADAPTER_STEPS", 1200))
TIME_BUDGET_S = float(os.environ.get("ADAPTER_TIME_BUDGET", 300))
WARMUP = 30
BIAS_RATE = 1e-3  # SMoRA loss-free balancing step
CFG = dict(n_embd=128, n_layer=4, n_head=4, n_head_kv=2, n_expert=8, n_expert_used=2, n_ff=128,
           rope_base=10000.0, eps=1e-5)


def load_base():
    meta = json.load(open(os.path.join(DATA, "base.json")))
    raw = np.fromfile(os.path.join(DATA, "base.bin"), dtype="<f4")
    t = {}
    for m in meta["tensors"]:
        n = int(np.prod(m["dims"]))
        a = raw[m["offset"] // 4: m["offset"] // 4 + n].reshape(list(reversed(m["dims"])))
        t[m["name"]] = torch.from_numpy(a.copy())
    return meta, t


def f16_round(p):
    return p.detach().half().float()


class Mola(torch.nn.Module):
    """LoRA experts + softmax top-k gate on one projection (plugins/mola/mix.ts)."""

    def __init__(self, d_in, d_out, n_exp, rank, alpha, top_k, g):
        super().__init__()
        self.router = torch.nn.Parameter(torch.randn(n_exp, d_in, generator=g) * 0.02)
        self.A = torch.nn.Parameter(torch.randn(n_exp, rank, d_in, generator=g) / math.sqrt(d_in))
        self.B = torch.nn.Parameter(torch.zeros(n_exp, d_out, rank))
        self.scale = alpha / rank
        self.k = top_k

    def forward(self, x):
        p = F.softmax(x @ self.router.t(), dim=-1)
        w, i = p.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        dense = torch.zeros_like(p).scatter(1, i, w)
        z = torch.einsum("nd,erd->ner", x, self.A)
        y = torch.einsum("ner,eor->neo", z, self.B)
        return self.scale * torch.einsum("ne,neo->no", dense, y)

    def tensors(self):
        out = [("router.router.weight", self.router)]
        for e in range(self.A.shape[0]):
            out += [(f"lora_A_{e}.weight", self.A[e]), (f"lora_B_{e}.weight", self.B[e])]
        return out

    def round_(self):
        with torch.no_grad():
            for p in (self.router, self.A, self.B):
                p.copy_(f16_round(p))


class Smora(torch.nn.Module):
    """One rank-r LoRA whose ranks are experts, sigmoid rank gate + bias (plugins/smora)."""

    def __init__(self, d_in, d_out, rank, alpha, k, partition, g):
        super().__init__()
        self.router = torch.nn.Parameter(torch.randn(rank // partition, d_in, generator=g) * 0.02)
        self.A = torch.nn.Parameter(torch.randn(rank, d_in, generator=g) / math.sqrt(d_in))
        self.B = torch.nn.Parameter(torch.zeros(d_out, rank))
        self.register_buffer("bias", torch.zeros(rank))
        self.alpha, self.k, self.P = alpha, k, partition
        self.load = torch.zeros(rank)

    def forward(self, x):
        g = torch.sigmoid(x @ self.router.t()).repeat_interleave(self.P, dim=-1) + self.bias
        v, i = g.topk(self.k, dim=-1)
        v = v / v.sum(-1, keepdim=True)
        if self.training:
            self.load += torch.bincount(i.reshape(-1), minlength=g.shape[-1]).float()
        z = (x @ self.A.t()).gather(1, i) * v * self.alpha
        c = torch.zeros(x.shape[0], g.shape[-1]).scatter(1, i, z)
        return c @ self.B.t()

    def balance(self):
        if self.load.sum() > 0:
            self.bias += BIAS_RATE * torch.sign(self.load.mean() - self.load)
        self.load.zero_()

    def tensors(self):
        return [("lora_A.weight", self.A), ("lora_B.weight", self.B),
                ("lora_router.weight", self.router), ("lora_biases", self.bias)]

    def round_(self):
        with torch.no_grad():
            for p in (self.router, self.A, self.B, self.bias):
                p.copy_(f16_round(p))


class Adapted(torch.nn.Module):
    """The frozen default model plus adapters keyed by PEFT module path."""

    def __init__(self, base, n_vocab, recipe):
        super().__init__()
        self.b = base
        self.n_vocab = n_vocab
        self.r = recipe
        self.mods = torch.nn.ModuleDict()
        g = torch.Generator().manual_seed(recipe["seed"])
        c = CFG
        d, hd = c["n_embd"], c["n_embd"] // c["n_head"]
        shapes = {"q_proj": (d, d), "k_proj": (d, c["n_head_kv"] * hd),
                  "v_proj": (d, c["n_head_kv"] * hd), "o_proj": (d, d),
                  "w1": (d, c["n_ff"]), "w3": (d, c["n_ff"]), "w2": (c["n_ff"], d)}
        self.paths = {}
        for L in range(c["n_layer"]):
            for t in recipe["targets"]:
                if t.startswith("experts."):
                    w = t.split(".")[1]
                    mods = [(f"model.layers.{L}.block_sparse_moe.experts.{e}.{w}", (L, w, e))
                            for e in range(c["n_expert"])]
                    sh = shapes[w]
                else:
                    mods = [(f"model.layers.{L}.self_attn.{t}", (L, t, -1))]
                    sh = shapes[t]
                for path, key in mods:
                    if recipe["method"] == "mola":
                        m = Mola(sh[0], sh[1], recipe["experts_per_layer"][L], recipe["rank"],
                                 recipe["alpha"], recipe["top_k"], g)
                    else:
                        m = Smora(sh[0], sh[1], recipe["rank"], recipe["alpha"],
                                  recipe["activate_r"], recipe["partition"], g)
                    self.mods[path.replace(".", "_")] = m
                    self.paths[key] = path

    def ad(self, L, name, e=-1):
        p = self.paths.get((L, name, e))
        return None if p is None or not self.use else self.mods[p.replace(".", "_")]

    use = True

    def lin(self, x, w, L, name, e=-1):
        y = x @ w.t()
        a = self.ad(L, name, e)
        return y if a is None else y + a(x.reshape(-1, x.shape[-1])).view(*y.shape)

    def moe(self, L, x):
        b, c = self.b, CFG
        p = f"blk.{L}."
        E, k = c["n_expert"], c["n_expert_used"]
        probs = F.softmax(x @ b[p + "ffn_gate_inp.weight"].t(), dim=-1)
        topw, topi = probs.topk(k, dim=-1)
        topw = topw / topw.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(E):
            tok, slot = (topi == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = x[tok]
            gt = self.lin(h, b[p + "ffn_gate_exps.weight"][e], L, "w1", e)
            up = self.lin(h, b[p + "ffn_up_exps.weight"][e], L, "w3", e)
            y = self.lin(F.silu(gt) * up, b[p + "ffn_down_exps.weight"][e], L, "w2", e)
            out.index_add_(0, tok, y * topw[tok, slot, None])
        return out

    def forward(self, idx, cos, sin):
        b, c = self.b, CFG
        B, T = idx.shape
        d, H, Hkv = c["n_embd"], c["n_head"], c["n_head_kv"]
        hd = d // H
        x = b["token_embd.weight"][idx]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for L in range(c["n_layer"]):
            p = f"blk.{L}."
            h = rms_norm(x, b[p + "attn_norm.weight"], c["eps"])
            q = self.lin(h, b[p + "attn_q.weight"], L, "q_proj").view(B, T, H, hd).transpose(1, 2)
            kk = self.lin(h, b[p + "attn_k.weight"], L, "k_proj").view(B, T, Hkv, hd).transpose(1, 2)
            v = self.lin(h, b[p + "attn_v.weight"], L, "v_proj").view(B, T, Hkv, hd).transpose(1, 2)
            q = rope_norm(q, cos[:T], sin[:T])
            kk = rope_norm(kk, cos[:T], sin[:T])
            kk = kk.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            att = (q @ kk.transpose(-1, -2)) / math.sqrt(hd) + mask
            a = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
            x = x + self.lin(a, b[p + "attn_output.weight"], L, "o_proj")
            h = rms_norm(x, b[p + "ffn_norm.weight"], c["eps"])
            x = x + self.moe(L, h.reshape(B * T, d)).view(B, T, d)
        x = rms_norm(x, b["output_norm.weight"], c["eps"])
        return x @ b["output.weight"].t()


def load_tokens(path):
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


@torch.no_grad()
def evaluate(model, data, bos, cos, sin, use=True):
    """Mean next-token cross-entropy over every document (each `<s> … </s>` scored whole)."""
    model.use = use
    starts = torch.nonzero(data == bos).flatten().tolist() + [len(data)]
    tot, n = 0.0, 0
    for s, e in zip(starts[:-1], starts[1:]):
        w = data[s:e][None, :]
        logits = model(w[:, :-1], cos, sin)
        tot += F.cross_entropy(logits[0], w[0, 1:], reduction="sum").item()
        n += w.shape[1] - 1
    model.use = True
    return tot / n


@torch.no_grad()
def greedy(model, ids, steps, cos, sin, eos):
    ids = list(ids)
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids]), cos, sin)[0, -1].argmax())
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


def write_safetensors(path, tensors, dtype, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors:
        a = t.detach().contiguous().numpy().astype("<f2" if dtype == "F16" else "<f4")
        b = a.tobytes()
        header[name] = dict(dtype=dtype, shape=list(a.shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    domain = sys.argv[1] if len(sys.argv) > 1 else "sea"
    R = RECIPES[domain]
    meta, base = load_base()
    bos, eos = meta["bos"], meta["eos"]
    torch.manual_seed(R["seed"])
    model = Adapted(base, meta["n_vocab"], R)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    cos, sin = rope_tables(512, CFG["n_embd"] // CFG["n_head"], CFG["rope_base"])
    train = load_tokens(os.path.join(DATA, domain, "train.bin"))
    valid = load_tokens(os.path.join(DATA, domain, "valid.bin"))
    stories = load_tokens(os.path.join(DATA, "stories_valid.bin"))
    before = dict(domain=evaluate(model, valid, bos, cos, sin, use=False),
                  stories=evaluate(model, stories, bos, cos, sin, use=False))
    print(f"{R['name']}: {n_params} adapter params; before: {before}", flush=True)
    opt = torch.optim.AdamW(params, lr=R["lr"], betas=(0.9, 0.99), weight_decay=0.0)
    g = torch.Generator().manual_seed(R["seed"])
    starts = torch.nonzero(train[: len(train) - SEQ - 1] == bos).flatten()
    # a share of each batch is the default model's own stories, so the adapter adds its domain
    # without forgetting the base one
    stories_train = load_tokens(os.path.join(DATA, "stories_train.bin"))
    s_starts = torch.nonzero(stories_train[: len(stories_train) - SEQ - 1] == bos).flatten()
    n_mix = round(BATCH * R["story_mix"])
    t0, log, steps, bound = time.time(), [], 0, "steps"
    for step in range(STEPS):
        prog = max(step / STEPS, (time.time() - t0) / TIME_BUDGET_S)
        if prog >= 1:
            bound = "time"
            break
        lr = R["lr"] * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        pick = starts[torch.randint(len(starts), (BATCH - n_mix,), generator=g)]
        s_pick = s_starts[torch.randint(len(s_starts), (n_mix,), generator=g)]
        w = torch.stack([train[s: s + SEQ + 1] for s in pick.tolist()] +
                        [stories_train[s: s + SEQ + 1] for s in s_pick.tolist()])
        logits = model(w[:, :-1], cos, sin)
        loss = F.cross_entropy(logits.reshape(-1, meta["n_vocab"]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if R["method"] == "smora":
            for m in model.mods.values():
                m.balance()
        steps = step + 1
        if step % 25 == 0:
            rec = dict(step=step, ce=round(loss.item(), 4), lr=round(lr, 6),
                       elapsed_s=round(time.time() - t0, 1))
            log.append(rec)
            print(json.dumps(rec), flush=True)
    train_s = time.time() - t0
    model.eval()
    for m in model.mods.values():
        m.round_()  # what ships (F16) is what the reference logits use
    after = dict(domain=evaluate(model, valid, bos, cos, sin),
                 stories=evaluate(model, stories, bos, cos, sin))
    print(f"done: {steps} steps ({bound}-bound) in {train_s:.0f} s; after: {after}", flush=True)

    out = os.path.join(ROOT, "examples", R["name"])
    os.makedirs(os.path.join(out, "adapter"), exist_ok=True)
    tensors = []
    for (L, t, e), path in sorted(model.paths.items(), key=lambda kv: kv[1]):
        for suffix, p in model.mods[path.replace(".", "_")].tensors():
            tensors.append((f"base_model.model.{path}.{suffix}", p))
    write_safetensors(os.path.join(out, "adapter", "adapter_model.safetensors"), tensors, "F16",
                      {"format": "pt"})
    targets = sorted({t.split(".")[-1] for t in R["targets"]})
    cfg = dict(peft_type="LORA", base_model_name_or_path="moe-edge default model",
               task_type="CAUSAL_LM", r=R["rank"], lora_alpha=R["alpha"], target_modules=targets,
               lora_dropout=0.0, bias="none", use_rslora=False)
    if R["method"] == "mola":
        cfg.update(r=[R["rank"]] * CFG["n_layer"], top_k=R["top_k"],
                   number_experts=R["experts_per_layer"])
    else:
        cfg.update(activate_r=R["activate_r"], rank_partition=R["partition"])
    json.dump(cfg, open(os.path.join(out, "adapter", "adapter_config.json"), "w"), indent=2)

    prompts = json.load(open(os.path.join(DATA, domain, "prompts.json")))
    pieces_ref, refs = [], []
    for i, pr in enumerate(prompts):
        ids = greedy(model, pr["tokens"], 16, cos, sin, eos)
        base_ids = (model.__setattr__("use", False), greedy(model, pr["tokens"], 16, cos, sin, eos),
                    model.__setattr__("use", True))[1]
        with torch.no_grad():
            lg = model(torch.tensor([ids]), cos, sin)[0]
        first = len(pr["tokens"]) - 1
        pieces_ref.append((f"prompt{i}", lg[first:]))
        refs.append(dict(text=pr["text"], prompt_tokens=pr["tokens"], tokens=ids,
                         base_tokens=base_ids, first_row=first))
    write_safetensors(os.path.join(out, "reference.safetensors"), pieces_ref, "F32")
    json.dump(dict(adapter=R["name"], method=R["method"], prompts=refs), open(
        os.path.join(out, "reference.json"), "w"), indent=1)
    json.dump(dict(recipe=R, adapter_params=n_params, steps=steps, bound=bound, seq=SEQ,
                   batch=BATCH, train_time_s=round(train_s, 1), torch=torch.__version__,
                   ce_before=before, ce_after=after,
                   ppl_before={k: round(math.exp(v), 3) for k, v in before.items()},
                   ppl_after={k: round(math.exp(v), 3) for k, v in after.items()}, log=log),
              open(os.path.join(out, "train_log.json"), "w"), indent=1)
    print("ppl before", {k: round(math.exp(v), 3) for k, v in before.items()},
          "after", {k: round(math.exp(v), 3) for k, v in after.items()}, flush=True)


if __name__ == "__main__":
    sys.exit(main())
