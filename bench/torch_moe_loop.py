#!/usr/bin/python3
"""PyTorch baselines for bench/run_layer_bench.sh (run with /usr/bin/python3: Debian's torch 1.13).

The MoE layer the way most PyTorch users write it: router linear, softmax, top-k, renormalise, then
a loop over experts that selects each expert's rows, runs the three matmuls of a SwiGLU FFN and
index_add_s the weighted output back. Two common spellings:
  torch_loop             expert weights stacked in (E, F, d) parameters, indexed w1[e] in the loop
                         (recent Hugging Face MoE blocks; matches shared/spec/anchors.md). In
                         torch 1.13 each w[e] costs a dense (E, F, d) gradient in backward, which
                         dominates fwd+bwd on many small experts.
  torch_loop_modulelist  one nn.Linear triple per expert in a ModuleList (the classic Hugging Face
                         Mixtral block); no such backward cost.
Plus the dense floor: the same FLOPs as one SwiGLU FFN on T*k rows (one GEMM chain).

Same shapes as bench/bench_layer.cpp: T = 4096, d = 512; coarse E=8 k=2 F=1024, fine E=64 k=8
F=256. float32, torch.set_num_threads(2). Forward is timed under torch.no_grad() (inference, the
cheaper choice for torch); forward+backward with autograd, loss = (y * dy).sum(). Median of several
repeats after one warm-up.

Prints one JSON line per (impl, shape):
  {"impl": "torch_loop" | "torch_loop_modulelist" | "torch_dense_floor", "shape": ..., "fwd_ms": ..., "fwdbwd_ms": ..., ...}
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as Fn

T, D = 4096, 512
SHAPES = {"coarse": dict(E=8, k=2, F=1024), "fine": dict(E=64, k=8, F=256)}


class LoopMoE(torch.nn.Module):
    def __init__(self, d, E, F, k, gen):
        super().__init__()
        self.E, self.k = E, k
        s_d, s_f = 1.0 / math.sqrt(d), 1.0 / math.sqrt(F)
        # Random gate, 1/sqrt(d): logits ~ N(0, 1), near-balanced routing.
        self.gate = torch.nn.Parameter(torch.randn(E, d, generator=gen) * s_d)
        self.w1 = torch.nn.Parameter(torch.randn(E, F, d, generator=gen) * s_d)
        self.w3 = torch.nn.Parameter(torch.randn(E, F, d, generator=gen) * s_d)
        self.w2 = torch.nn.Parameter(torch.randn(E, d, F, generator=gen) * s_f)

    def forward(self, x):
        logits = x @ self.gate.t()
        probs = torch.softmax(logits, dim=-1)
        weights, chosen = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(x)
        for e in range(self.E):
            tok, slot = torch.nonzero(chosen == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = x[tok]
            h = Fn.silu(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())
            out = h @ self.w2[e].t()
            y.index_add_(0, tok, out * weights[tok, slot, None])
        return y


class ExpertMLP(torch.nn.Module):
    def __init__(self, w1, w3, w2):
        super().__init__()
        self.w1 = torch.nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.w3 = torch.nn.Linear(w3.shape[1], w3.shape[0], bias=False)
        self.w2 = torch.nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        with torch.no_grad():
            self.w1.weight.copy_(w1)
            self.w3.weight.copy_(w3)
            self.w2.weight.copy_(w2)

    def forward(self, x):
        return self.w2(Fn.silu(self.w1(x)) * self.w3(x))


class ModuleListMoE(torch.nn.Module):
    """The classic Hugging Face Mixtral block: one nn.Linear triple per expert in a ModuleList."""

    def __init__(self, stacked):
        super().__init__()
        self.E, self.k = stacked.E, stacked.k
        self.gate = torch.nn.Linear(stacked.gate.shape[1], self.E, bias=False)
        with torch.no_grad():
            self.gate.weight.copy_(stacked.gate)
        self.experts = torch.nn.ModuleList(
            ExpertMLP(stacked.w1[e].detach(), stacked.w3[e].detach(), stacked.w2[e].detach())
            for e in range(self.E))

    def forward(self, x):
        probs = torch.softmax(self.gate(x), dim=-1)
        weights, chosen = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(x)
        expert_mask = Fn.one_hot(chosen, num_classes=self.E).permute(2, 1, 0)  # (E, k, T)
        for e in range(self.E):
            slot, tok = torch.where(expert_mask[e])
            if tok.numel() == 0:
                continue
            out = self.experts[e](x[tok]) * weights[tok, slot, None]
            y.index_add_(0, tok, out)
        return y


class DenseFloor(torch.nn.Module):
    def __init__(self, d, F, gen):
        super().__init__()
        s_d, s_f = 1.0 / math.sqrt(d), 1.0 / math.sqrt(F)
        self.w1 = torch.nn.Parameter(torch.randn(F, d, generator=gen) * s_d)
        self.w3 = torch.nn.Parameter(torch.randn(F, d, generator=gen) * s_d)
        self.w2 = torch.nn.Parameter(torch.randn(d, F, generator=gen) * s_f)

    def forward(self, x):
        return (Fn.silu(x @ self.w1.t()) * (x @ self.w3.t())) @ self.w2.t()


def median_ms(fn, min_repeats, max_repeats, budget_s):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times), len(times)


def measure(module, x, dy, args):
    def fwd():
        with torch.no_grad():
            module(x)

    def fwdbwd():
        module.zero_grad(set_to_none=True)
        x.grad = None
        (module(x) * dy).sum().backward()

    fwd_ms, n_fwd = median_ms(fwd, args.min_repeats, args.max_repeats, args.budget)
    both_ms, n_both = median_ms(fwdbwd, args.min_repeats, args.max_repeats, args.budget)
    return fwd_ms, both_ms, n_fwd, n_both


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="coarse,fine")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--max-repeats", type=int, default=7)
    p.add_argument("--budget", type=float, default=8.0,
                   help="stop repeating after this many seconds once min-repeats are done")
    p.add_argument("--tokens", type=int, default=T, help="T (smoke tests only; the table uses 4096)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.shapes.split(","):
        s = SHAPES[name]
        E, k, F = s["E"], s["k"], s["F"]
        gen = torch.Generator().manual_seed(1234)
        T_ = args.tokens
        flops = T_ * k * 6 * D * F
        common = dict(shape=name, T=T_, d=D, E=E, k=k, F=F, threads=torch.get_num_threads(),
                      torch=torch.__version__)

        x = torch.randn(args.tokens, D, generator=gen).requires_grad_(True)
        dy = torch.randn(args.tokens, D, generator=gen)
        moe = LoopMoE(D, E, F, k, gen)
        for impl, module in (("torch_loop", moe), ("torch_loop_modulelist", ModuleListMoE(moe))):
            fwd_ms, both_ms, n1, n2 = measure(module, x, dy, args)
            print(json.dumps(dict(impl=impl, fwd_ms=round(fwd_ms, 2), fwdbwd_ms=round(both_ms, 2),
                                  fwd_gflops=round(flops / fwd_ms * 1e-6, 2),
                                  fwdbwd_gflops=round(3 * flops / both_ms * 1e-6, 2),
                                  repeats=[n1, n2], **common)), flush=True)
            del module
        del moe, x, dy

        xd = torch.randn(T_ * k, D, generator=gen).requires_grad_(True)
        dyd = torch.randn(T_ * k, D, generator=gen)
        dense = DenseFloor(D, F, gen)
        fwd_ms, both_ms, n1, n2 = measure(dense, xd, dyd, args)
        print(json.dumps(dict(impl="torch_dense_floor", fwd_ms=round(fwd_ms, 2),
                              fwdbwd_ms=round(both_ms, 2),
                              fwd_gflops=round(flops / fwd_ms * 1e-6, 2),
                              fwdbwd_gflops=round(3 * flops / both_ms * 1e-6, 2),
                              repeats=[n1, n2], **common)), flush=True)
        del dense, xd, dyd
    return 0


if __name__ == "__main__":
    sys.exit(main())
