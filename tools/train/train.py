#!/usr/bin/env python3
"""Step 2 of the default-model pipeline: train the tiny MoE on the tokenized stories.

The network is exactly what llama.cpp's LLM_ARCH_LLAMA graph computes for a GGUF with
merged ffn_*_exps experts, so the exported weights need no conversion:

- token embedding -> n_layer x [RMSNorm -> GQA attention with RoPE NORM -> residual,
  RMSNorm -> MoE SwiGLU FFN -> residual] -> RMSNorm -> untied output;
- RoPE NORM rotates ADJACENT pairs (x[2i], x[2i+1]) by pos * base^(-2i/head_dim)
  (llama.cpp's LLAMA_ROPE_TYPE_NORM; HF checkpoints need a q/k permutation for it, we
  train in this layout directly);
- GQA: query head h reads kv head h // (n_head / n_head_kv) (ggml's broadcast);
- routing = Mixtral: softmax over all experts, top-k, renormalise the k weights;
- RMSNorm eps 1e-5, attention scale 1/sqrt(head_dim), rope base 10000.

Loss: next-token cross-entropy + AUX_COEF * Switch-style load-balancing loss
(n_expert * sum_e fraction_routed_e * mean_prob_e, per layer, averaged).
Adam(W) with warmup + cosine decay, a fixed number of steps, one CPU thread.

Reads tools/train/out/{train,valid}.bin and vocab.json (from prepare.ts); writes
tools/train/out/weights.bin (f32 LE, tensors in GGUF order), weights.json (names,
GGUF dims, offsets, hyper-parameters) and train_log.json.

Run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/train/train.py
"""

import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")

# Shape: must match DEFAULT_MODEL_SPEC in core/model/default_model.ts.
CFG = dict(
    n_embd=int(os.environ.get("TRAIN_EMBD", 128)),
    n_layer=4,
    n_head=4,
    n_head_kv=2,
    n_expert=8,
    n_expert_used=2,
    n_ff=int(os.environ.get("TRAIN_FF", 128)),
    rope_base=10000.0,
    eps=1e-5,
)
# Optimisation.
SEED = 1234
SEQ = 256
BATCH = int(os.environ.get("TRAIN_BATCH", 6))
STEPS = int(os.environ.get("TRAIN_STEPS", 1500))  # at most; see TIME_BUDGET_S
WARMUP = int(os.environ.get("TRAIN_WARMUP", 60))
LR = float(os.environ.get("TRAIN_LR", 5e-3))
LR_MIN = 3e-4
WEIGHT_DECAY = 0.01
AUX_COEF = 0.01
CLIP = 1.0
# Wall-clock budget of the optimisation loop. The LR schedule follows
# progress = max(step / STEPS, elapsed / TIME_BUDGET_S) and training stops at 1, so on a
# fast (uncontended) machine the run is step-bound and reproducible, on a busy one it
# still ends on time with a fully decayed learning rate.
TIME_BUDGET_S = float(os.environ.get("TRAIN_TIME_BUDGET", 630))


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq, head_dim, base):
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()  # [seq, hd/2]


def rope_norm(x, cos, sin):
    """x: [B, H, T, hd]; rotate adjacent pairs (llama.cpp LLAMA_ROPE_TYPE_NORM)."""
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    r0 = x0 * cos - x1 * sin
    r1 = x0 * sin + x1 * cos
    return torch.stack((r0, r1), dim=-1).flatten(-2)


class Model(torch.nn.Module):
    def __init__(self, n_vocab, c):
        super().__init__()
        self.c = c
        d, L, E, ff = c["n_embd"], c["n_layer"], c["n_expert"], c["n_ff"]
        hd = d // c["n_head"]
        kvd = c["n_head_kv"] * hd
        P = torch.nn.Parameter
        std = 0.02
        out_std = std / math.sqrt(2 * L)
        self.tok = P(torch.randn(n_vocab, d) * std)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            m = torch.nn.Module()
            m.attn_norm = P(torch.ones(d))
            m.wq = P(torch.randn(d, d) * std)
            m.wk = P(torch.randn(kvd, d) * std)
            m.wv = P(torch.randn(kvd, d) * std)
            m.wo = P(torch.randn(d, d) * out_std)
            m.ffn_norm = P(torch.ones(d))
            m.router = P(torch.randn(E, d) * std)
            m.gate = P(torch.randn(E, ff, d) * std)
            m.up = P(torch.randn(E, ff, d) * std)
            m.down = P(torch.randn(E, d, ff) * out_std)
            self.layers.append(m)
        self.out_norm = P(torch.ones(d))
        self.out = P(torch.randn(n_vocab, d) * std)

    def moe(self, m, x):
        """x: [N, d] -> ([N, d], aux loss)."""
        c = self.c
        E, k = c["n_expert"], c["n_expert_used"]
        probs = F.softmax(x @ m.router.t(), dim=-1)  # [N, E]
        topw, topi = probs.topk(k, dim=-1)
        topw = topw / topw.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        flat_i = topi.reshape(-1)
        flat_w = topw.reshape(-1)
        tok_of = torch.arange(x.shape[0]).repeat_interleave(k)
        order = torch.argsort(flat_i, stable=True)
        counts = torch.bincount(flat_i, minlength=E).tolist()
        start = 0
        for e in range(E):
            n = counts[e]
            if n == 0:
                continue
            sel = order[start:start + n]
            start += n
            t = tok_of[sel]
            h = x[t]
            y = (F.silu(h @ m.gate[e].t()) * (h @ m.up[e].t())) @ m.down[e].t()
            out.index_add_(0, t, y * flat_w[sel, None])
        frac = torch.tensor(counts, dtype=x.dtype) / (x.shape[0] * k)
        aux = E * (frac * probs.mean(0)).sum()
        return out, aux, counts

    def forward(self, idx, cos, sin):
        c = self.c
        B, T = idx.shape
        d, H, Hkv = c["n_embd"], c["n_head"], c["n_head_kv"]
        hd = d // H
        x = self.tok[idx]
        mask = torch.full((T, T), float("-inf")).triu(1)
        aux_total = 0.0
        loads = []
        for m in self.layers:
            h = rms_norm(x, m.attn_norm, c["eps"])
            q = (h @ m.wq.t()).view(B, T, H, hd).transpose(1, 2)
            kk = (h @ m.wk.t()).view(B, T, Hkv, hd).transpose(1, 2)
            v = (h @ m.wv.t()).view(B, T, Hkv, hd).transpose(1, 2)
            q = rope_norm(q, cos[:T], sin[:T])
            kk = rope_norm(kk, cos[:T], sin[:T])
            rep = H // Hkv
            kk = kk.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = (q @ kk.transpose(-1, -2)) / math.sqrt(hd) + mask
            a = F.softmax(att, dim=-1) @ v
            x = x + a.transpose(1, 2).reshape(B, T, d) @ m.wo.t()
            h = rms_norm(x, m.ffn_norm, c["eps"])
            y, aux, counts = self.moe(m, h.reshape(B * T, d))
            x = x + y.view(B, T, d)
            aux_total = aux_total + aux
            loads.append(counts)
        x = rms_norm(x, self.out_norm, c["eps"])
        return x @ self.out.t(), aux_total / len(self.layers), loads


def load_tokens(name):
    return torch.from_numpy(np.fromfile(os.path.join(OUT, name), dtype="<u2").astype(np.int64))


def batches(data, bos, g):
    """Windows of SEQ+1 tokens starting at a random story start (<s>)."""
    starts = torch.nonzero(data[: len(data) - SEQ - 1] == bos).flatten()
    while True:
        pick = starts[torch.randint(len(starts), (BATCH,), generator=g)]
        w = torch.stack([data[s: s + SEQ + 1] for s in pick.tolist()])
        yield w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model, data, bos, cos, sin):
    starts = torch.nonzero(data[: len(data) - SEQ - 1] == bos).flatten()[::4][:64]
    tot, n = 0.0, 0
    for i in range(0, len(starts), 16):
        w = torch.stack([data[s: s + SEQ + 1] for s in starts[i: i + 16].tolist()])
        logits, _, _ = model(w[:, :-1], cos, sin)
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                               reduction="sum").item()
        n += w[:, 1:].numel()
    return tot / n


@torch.no_grad()
def greedy(model, prompt, steps, cos, sin, eos):
    ids = list(prompt)
    for _ in range(steps):
        logits, _, _ = model(torch.tensor([ids]), cos, sin)
        nxt = int(logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


def gguf_tensors(model, n_vocab):
    """(name, GGUF dims (ne order), f32 array in ggml memory order)."""
    c = model.c
    d, E, ff = c["n_embd"], c["n_expert"], c["n_ff"]
    hd = d // c["n_head"]
    kvd = c["n_head_kv"] * hd
    a = lambda t: t.detach().float().contiguous().numpy()  # noqa: E731
    out = [("token_embd.weight", [d, n_vocab], a(model.tok)),
           ("output_norm.weight", [d], a(model.out_norm)),
           ("output.weight", [d, n_vocab], a(model.out))]
    for i, m in enumerate(model.layers):
        p = f"blk.{i}"
        out += [
            (f"{p}.attn_norm.weight", [d], a(m.attn_norm)),
            (f"{p}.attn_q.weight", [d, d], a(m.wq)),
            (f"{p}.attn_k.weight", [d, kvd], a(m.wk)),
            (f"{p}.attn_v.weight", [d, kvd], a(m.wv)),
            (f"{p}.attn_output.weight", [d, d], a(m.wo)),
            (f"{p}.ffn_norm.weight", [d], a(m.ffn_norm)),
            (f"{p}.ffn_gate_inp.weight", [d, E], a(m.router)),
            (f"{p}.ffn_gate_exps.weight", [d, ff, E], a(m.gate)),
            (f"{p}.ffn_down_exps.weight", [ff, d, E], a(m.down)),
            (f"{p}.ffn_up_exps.weight", [d, ff, E], a(m.up)),
        ]
    return out


def main():
    vocab = json.load(open(os.path.join(OUT, "vocab.json")))
    n_vocab = len(vocab["tokens"])
    bos, eos = vocab["bosId"], vocab["eosId"]
    pieces = vocab["tokens"]
    show = lambda ids: "".join(pieces[i] for i in ids if i > 2).replace("\u2581", " ")  # noqa
    train, valid = load_tokens("train.bin"), load_tokens("valid.bin")
    torch.manual_seed(SEED)
    model = Model(n_vocab, CFG)
    n_params = sum(p.numel() for p in model.parameters())
    hd = CFG["n_embd"] // CFG["n_head"]
    cos, sin = rope_tables(max(SEQ, 512), hd, CFG["rope_base"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(SEED)
    it = batches(train, bos, g)
    print(f"params {n_params}, train tokens {len(train)}, cfg {CFG}, seq {SEQ} batch {BATCH} "
          f"steps {STEPS}", flush=True)
    log = []
    t0 = time.time()
    steps_done = 0
    bound = "steps"
    for step in range(STEPS):
        el = time.time() - t0
        prog = max(step / STEPS, el / TIME_BUDGET_S)
        if prog >= 1:
            bound = "time"
            break
        lr = LR * min(1.0, (step + 1) / WARMUP)
        if step >= WARMUP:
            w0 = WARMUP / STEPS
            lr = LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * max(0.0, prog - w0) / (1 - w0)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = next(it)
        logits, aux, loads = model(x, cos, sin)
        ce = F.cross_entropy(logits.reshape(-1, n_vocab), y.reshape(-1))
        loss = ce + AUX_COEF * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        steps_done = step + 1
        el = time.time() - t0
        if step % 50 == 0 or step == STEPS - 1:
            rec = dict(step=step, ce=round(ce.item(), 4), aux=round(float(aux), 4),
                       lr=round(lr, 6), elapsed_s=round(el, 1))
            log.append(rec)
            print(json.dumps(rec), "load(L0):", loads[0], flush=True)
    train_time = time.time() - t0
    model.eval()
    # final train loss: mean CE over the last 50 logged batches is noisy; evaluate instead
    train_loss = evaluate(model, train, bos, cos, sin)
    valid_loss = evaluate(model, valid, bos, cos, sin)
    print(f"done: {steps_done} steps ({bound}-bound) in {train_time:.0f} s; train CE {train_loss:.4f} "
          f"(ppl {math.exp(train_loss):.2f}), valid CE {valid_loss:.4f} "
          f"(ppl {math.exp(valid_loss):.2f})", flush=True)
    fox = [bos] + [pieces.index(p) for p in ["\u2581The", "\u2581little", "\u2581fox"]]
    print("sample:", show(greedy(model, fox, 40, cos, sin, eos)), flush=True)

    # probe for check.ts: the training code's logits on the first 48 validation tokens,
    # to compare with moe-edge / llama.cpp running the exported GGUF
    probe = valid[:48]
    with torch.no_grad():
        pl, _, _ = model(probe[None, :], cos, sin)
    json.dump(dict(tokens=probe.tolist(), logits=[[round(v, 5) for v in r] for r in pl[0].tolist()]),
              open(os.path.join(OUT, "probe.json"), "w"))

    tensors = gguf_tensors(model, n_vocab)
    meta, off = [], 0
    with open(os.path.join(OUT, "weights.bin"), "wb") as f:
        for name, dims, arr in tensors:
            b = arr.astype("<f4").tobytes()
            assert len(b) == 4 * int(np.prod(dims)), name
            f.write(b)
            meta.append(dict(name=name, dims=dims, offset=off))
            off += len(b)
    json.dump(dict(config=CFG, n_vocab=n_vocab, params=n_params, seq=SEQ, batch=BATCH,
                   steps=steps_done, bound=bound, lr=LR, lr_min=LR_MIN, warmup=WARMUP,
                   weight_decay=WEIGHT_DECAY, aux_coef=AUX_COEF, seed=SEED,
                   train_time_s=round(train_time, 1), train_loss=round(train_loss, 4),
                   valid_loss=round(valid_loss, 4), torch=torch.__version__, tensors=meta),
              open(os.path.join(OUT, "weights.json"), "w"), indent=1)
    json.dump(log, open(os.path.join(OUT, "train_log.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
