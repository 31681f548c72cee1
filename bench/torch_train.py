#!/usr/bin/python3
"""PyTorch training-throughput baseline for bench/run_train_bench.sh (run with /usr/bin/python3:
Debian's torch 1.13, CPU).

switchyard's default model (docs/model.md) in float32, written the way a PyTorch user writes it
efficiently: nn.Module with nn.Linear(bias=False), fused qkv, RoPE from precomputed cos/sin
(rotate-half), attention as torch.matmul + causal mask + softmax (torch 1.13 has no
scaled_dot_product_attention), and the MoE FFN as the common Mixtral block: router Linear ->
softmax -> topk -> renormalise -> loop over experts (torch.where, index_select, the three matmuls
of a SwiGLU expert held as nn.Linear in a ModuleList, index_add_), plus the Switch balance loss
with coefficient 0.001 (the mixtral preset's default). Tied head. AdamW (betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on parameters with >= 2 dimensions, foreach=True; fused is not available in
1.13), warm-up + cosine learning rate, gradients clipped to global norm 1.0.

Data: random (T+1)-byte windows of data/corpus/train.bytes if it exists, else random bytes.
Each step: sample a batch, forward, backward, clip, optimiser step. The first --warmup steps are
untimed; the next --steps are timed one by one.

Prints one JSON line:
  {"impl": "torch", "tokens_per_s": ..., "ms_per_step": ..., "final_loss": ..., ...}
tokens_per_s and ms_per_step are from the median step time (as run_train_bench.sh does for
switchyard); mean_ms_per_step is also given.

--threads sets torch.set_num_threads (default 2, the issue's setting). On a small VM libgomp's
default wait policy can make 2 threads slower than 1 for this model's many small ops;
run_train_bench.sh therefore also runs OMP_WAIT_POLICY=PASSIVE and --threads 1 and compares
against the fastest.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, seq_len=128, experts=8,
              d_ff=256, k=2, rope_theta=10000.0, norm_eps=1e-5, init_std=0.02, balance=0.001)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_heads = c["n_heads"]
        self.head_dim = c["d_model"] // c["n_heads"]
        self.wqkv = nn.Linear(c["d_model"], 3 * c["d_model"], bias=False)
        self.wo = nn.Linear(c["d_model"], c["d_model"], bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        q, k, v = self.wqkv(x).split(C, dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att.masked_fill(mask, float("-inf"))
        att = torch.softmax(att, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, C)
        return self.wo(o)


class Expert(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1 = nn.Linear(d, f, bias=False)
        self.w3 = nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.E, self.k, self.balance = c["experts"], c["k"], c["balance"]
        self.gate = nn.Linear(c["d_model"], c["experts"], bias=False)
        self.experts = nn.ModuleList(Expert(c["d_model"], c["d_ff"]) for _ in range(c["experts"]))

    def forward(self, x):
        B, T, C = x.shape
        x = x.reshape(-1, C)
        N = x.shape[0]
        probs = torch.softmax(self.gate(x), dim=-1)
        weights, chosen = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(chosen == e)
            if tok.numel() == 0:
                continue
            out = expert(x.index_select(0, tok)) * weights[tok, slot].unsqueeze(-1)
            y.index_add_(0, tok, out)
        # Switch balance loss: alpha * E * sum_e f_e P_e, f_e = share of the N*k choices.
        f = torch.bincount(chosen.reshape(-1), minlength=self.E).to(x.dtype) / (N * self.k)
        aux = self.balance * self.E * (f * probs.mean(0)).sum()
        return y.view(B, T, C), aux


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.attn = Attention(c)
        self.mlp_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.moe = MoE(c)

    def forward(self, h, cos, sin, mask):
        h = h + self.attn(self.attn_norm(h), cos, sin, mask)
        y, aux = self.moe(self.mlp_norm(h))
        return h + y, aux


class MoELM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["d_model"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.final_norm = RMSNorm(c["d_model"], c["norm_eps"])
        T, D = c["seq_len"], c["d_model"] // c["n_heads"]
        inv = c["rope_theta"] ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        ang = torch.cat((ang, ang), dim=-1)                     # (T, D), rotate-half layout
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1),
                             persistent=False)
        # Init of docs/model.md: N(0, std); wo and w2 N(0, std / sqrt(2 L)); norms 1.
        std = c["init_std"]
        proj = std / math.sqrt(2 * c["n_layers"])
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, proj if name.endswith(("attn.wo.weight", "w2.weight"))
                                else std)

    def forward(self, idx, targets):
        B, T = idx.shape
        h = self.wte(idx)
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        aux = 0.0
        for layer in self.layers:
            h, a = layer(h, cos, sin, mask)
            aux = aux + a
        logits = F.linear(self.final_norm(h), self.wte.weight)  # tied head
        ce = F.cross_entropy(logits.view(B * T, -1), targets.reshape(-1))
        return ce + aux, ce


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--corpus", default="data/corpus/train.bytes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-warmup", type=int, default=30, help="learning-rate warm-up steps")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c = dict(CONFIG)
    B, T = args.batch, c["seq_len"]

    if os.path.exists(args.corpus):
        data = np.fromfile(args.corpus, dtype=np.uint8)
        source = args.corpus
    else:
        data = np.random.default_rng(args.seed).integers(0, 256, size=1 << 20, dtype=np.uint8)
        source = "random bytes"
    data = torch.from_numpy(data.astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed)
    offs = torch.arange(T + 1)

    def batch():
        starts = torch.randint(0, data.numel() - T - 1, (B,), generator=gen)
        w = data[starts[:, None] + offs]
        return w[:, :-1], w[:, 1:]

    model = MoELM(c)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    total = args.warmup + args.steps
    min_ratio = 0.1

    def lr_factor(step):
        if step < args.lr_warmup:
            return (step + 1) / args.lr_warmup
        prog = min(1.0, (step - args.lr_warmup) / max(1, total - args.lr_warmup))
        return min_ratio + 0.5 * (1 + math.cos(math.pi * prog)) * (1 - min_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    times, loss = [], float("nan")
    for step in range(total):
        t0 = time.perf_counter()
        x, y = batch()
        total_loss, ce = model(x, y)
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = total_loss.item()  # synchronises nothing on the CPU, but reads the value as a user would
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    mean = sum(times) / len(times)
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"impl": "torch", "tokens_per_s": B * T / med, "ms_per_step": 1e3 * med,
                      "mean_ms_per_step": 1e3 * mean, "mean_tokens_per_s": B * T / mean,
                      "final_loss": loss, "timed_steps": len(times), "warmup_steps": args.warmup,
                      "batch": B, "seq_len": T, "threads": torch.get_num_threads(),
                      "params": n_params, "data": source, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
