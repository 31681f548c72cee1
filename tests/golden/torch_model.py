#!/usr/bin/python3
"""Independent PyTorch (float64, autograd) implementation of switchyard's MoE language model.

    torch_model.py --config model.json --weights w.safetensors --tokens tokens.safetensors
                   --out out.safetensors [--steps 10 --lr 3e-3 --warmup 20 --total-steps 200
                   --weight-decay 0.1 --grad-clip 1.0 --min-lr-ratio 0.1 --eps 1e-8]
    torch_model.py --self-test      (finite-difference and init checks, no files)

The contract is docs/model.md (architecture, RoPE, parameter names and shapes, optimiser); the MoE
layers follow docs/layer-config.md through the routers of torch_layer.py. Like llm.c's
test_gpt2: the golden side is written the way a PyTorch user writes it, with autograd for every
gradient, and the C++ test compares against it.

Inputs: the model's safetensors checkpoint (float32, names of docs/model.md; every name must be
present with its shape and no other tensor may be there), and `tokens` (B, T+1) int32/int64:
inputs tokens[:, :-1], targets tokens[:, 1:].

Outputs (float64 unless noted):
  logits (B, T, V), loss (scalar) = ce_loss + aux_loss at the initial weights;
  ce_loss, aux_loss (scalars), aux.<l> (scalar) for every MoE layer l;
  grad.<name> for every trainable parameter (the gradient of `loss`);
  losses (N): the loss at each of N AdamW steps, computed before that step's update
  (losses[0] == loss); lrs (N): the learning rate used at each step; grad_norms (N): the global
  gradient norm before clipping; route_margin (N): the smallest gap, over tokens and MoE layers of
  that step's forward, between a discrete routing decision and its tie (k-th vs (k+1)-th selection
  score for top-k routers; see route_margin()) -- float32 can route differently below ~1e-5;
  route.<step>.<i> (T, E): 1 where token t ran expert e in the i-th MoE layer at that step, and
  route_margin.<step>.<i> (T): each token's own margin, so that a routing flip in the C++ run can
  be told apart from a near-tie;
  final.<name>: every parameter after the N steps (diagnostics).
MindSkip (model.json attention_skip, docs/routers/mindskip.md), per skipping layer l:
  skip_loss.<l>, skip_score.<l> (B) at the initial weights; skip.<step>.<l> (B): 1 where the
  sequence's attention ran at that step, skip_margin.<step>.<l> (B): |s - threshold| (part of
  route_margin); eval_logits (B, T, V): the evaluation forward at the initial weights.

Optimiser (docs/model.md; the details the contract leaves open are fixed here as in llm.c):
  t = step + 1; lr(step) = lr * (step + 1) / warmup for step < warmup, else
  min_lr + 0.5 (1 + cos(pi * (step - warmup) / max(1, total - warmup))) (lr - min_lr),
  min_lr = min_lr_ratio * lr (progress clamped to [0, 1]);
  global norm over all trainable gradients; if grad_clip > 0 and norm > grad_clip every gradient
  is multiplied by grad_clip / norm;
  m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t))
  + eps) + lr wd p (the decay term only for parameters with >= 2 dimensions, from the p before
  the step).
Router state after each step (docs/model.md "After each step the routers' non-gradient state
updates"): top-k routers with bias_update_rate u > 0: b_e += u sign(mean(c) - c_e), c = the
step's choices per expert before any drop (all ranks); ReMoE: lambda *= rate if the zero fraction
1 - kept/(T E), averaged over the MoE layers as in the paper, < 1 - k/E else lambda /= rate. Both as src/routers/topk.cpp and remoe.cpp do it.
StableMoE: steps += 1 and stage 2 once steps >= S1 (stage1_steps, or floor(stage1_fraction *
total steps)); in stage 2 its token_embedding and token_centroids are frozen (requires_grad off:
no gradient, no moments, no decay) and never take weight decay in any stage.

The MoE layers run in training mode (jitter, GShard's random second expert and BASE's auction
are rejected by torch_layer.parse_config: their random draws are not replayed).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import torch_layer as TL  # noqa: E402

DTYPE = torch.float64

MODEL_DEFAULTS = {
    "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128,
    "moe_every": 1, "experts": 8, "d_ff": 256, "shared_d_ff": 0, "dense_d_ff": 512,
    "activation": "swiglu", "swiglu_alpha": None, "swiglu_limit": None, "tied_head": True, "rope_theta": 10000.0, "norm_eps": 1e-5,
    "init_std": 0.02, "router": {"router": "mixtral", "k": 2}, "moe_layers": None,
    "shared_expert_gate": False, "moe_sublayers": 1, "attention_skip": None,
}

SKIP_KEYS = {"threshold", "loss", "gate", "layers"}

# MindSkip (docs/routers/mindskip.md): per skipping layer of the last forward, in layer order,
# {"layer", "score" (B,), "kept" (B,) bool, "loss"} -- set by forward().
SKIP_INFOS = []


class ModelError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# Configuration and parameters
# ----------------------------------------------------------------------------------------------

def parse_model_config(j):
    if not isinstance(j, dict):
        raise ModelError("model.json: top level must be an object")
    unknown = sorted(set(j) - set(MODEL_DEFAULTS))
    if unknown:
        raise ModelError(f"model.json: unknown keys {unknown}")
    cfg = dict(MODEL_DEFAULTS)
    cfg.update(j)
    if cfg["activation"] not in TL.ACTIVATIONS:
        raise ModelError(f"model.json: bad activation {cfg['activation']!r}")
    if cfg["d_model"] % cfg["n_heads"] or (cfg["d_model"] // cfg["n_heads"]) % 2:
        raise ModelError("model.json: d_model / n_heads must be an even integer")
    S = cfg["moe_sublayers"]
    if not isinstance(S, int) or isinstance(S, bool) or not 1 <= S <= 8:
        raise ModelError(f"model.json: moe_sublayers must be an integer in [1, 8], got {S!r}")
    router = dict(cfg["router"])
    for key in ("activation", "swiglu_alpha", "swiglu_limit", "training", "seed", "vocab_size"):
        if key in router:
            raise ModelError(f"model.json: router must not set {key!r} (the model sets it)")
    if router.get("router") in TL.ROUTERS and TL.ROUTERS[router["router"]][0] in TL.VOCAB_FAMILIES:
        router["vocab_size"] = cfg["vocab_size"]  # its logits read the input token ids
    # The model sets activation and training; the seed only matters for random draws, which
    # parse_config rejects in training mode.
    router["activation"] = cfg["activation"]
    for key in ("swiglu_alpha", "swiglu_limit"):  # parse_config checks them
        if cfg[key] is not None:
            router[key] = cfg[key]
    router["training"] = True
    cfg["layer"] = TL.parse_config(router)
    sk = cfg["attention_skip"]
    if sk is not None:  # model.json carries every field, the layer list resolved
        if not isinstance(sk, dict) or set(sk) != SKIP_KEYS:
            raise ModelError(f"model.json: attention_skip must have exactly {sorted(SKIP_KEYS)}")
        if sk["gate"] not in ("ste", "score") or not 0.0 <= sk["threshold"] <= 1.0:
            raise ModelError(f"model.json: bad attention_skip {sk}")
        if any(not 0 <= l < cfg["n_layers"] for l in sk["layers"]):
            raise ModelError(f"model.json: attention_skip layers {sk['layers']} out of range")
    return cfg


def skips(cfg, l):
    return cfg["attention_skip"] is not None and l in cfg["attention_skip"]["layers"]


def is_moe_layer(cfg, l):
    if cfg["moe_layers"] is not None:  # the explicit list of MoE layers
        return l in cfg["moe_layers"]
    return (l + 1) % cfg["moe_every"] == 0


def moe_units(cfg):
    """[(key, l, s, prefix)] for every MoE layer in forward order: an MoE block's moe_sublayers
    sub-layers s (CartesianMoE: 2), each an ordinary MoE layer with its parameters under prefix
    (layers.l.moe. for one sub-layer, layers.l.subS.moe. for more); key indexes the router
    states (l, or (l, s) with sub-layers)."""
    S = cfg["moe_sublayers"]
    out = []
    for l in range(cfg["n_layers"]):
        if not is_moe_layer(cfg, l):
            continue
        for s in range(S):
            if S == 1:
                out.append((l, l, 0, f"layers.{l}.moe."))
            else:
                out.append(((l, s), l, s, f"layers.{l}.sub{s}.moe."))
    return out


def aux_name(cfg, l, s):
    return f"aux.{l}" if cfg["moe_sublayers"] == 1 else f"aux.{l}.{s}"


def num_router_outputs(cfg):
    layer = cfg["layer"]
    if layer["family"] == "topk":
        return cfg["experts"] + int(layer["params"]["null_experts"])
    if layer["family"] == "duollm":  # small, big (and skip)
        return 3 if layer["params"]["skip"] else 2
    if layer["family"] == "flextron":  # the experts block and the width block
        return cfg["experts"] + len(layer["params"]["widths"])
    return cfg["experts"]


def param_specs(cfg):
    """[(name, shape, trainable, init)] in the order of docs/model.md; init: 'normal', 'proj'
    (std / sqrt(2 n_layers)), 'ones', 'zeros'."""
    V, C, L = cfg["vocab_size"], cfg["d_model"], cfg["n_layers"]
    E, Fe, Fs, Fd = cfg["experts"], cfg["d_ff"], cfg["shared_d_ff"], cfg["dense_d_ff"]
    swiglu = TL.has_up(cfg["activation"])
    specs = [("wte", (V, C), True, "normal")]
    for l in range(L):
        p = f"layers.{l}."
        specs += [(p + "attn_norm", (C,), True, "ones"),
                  (p + "attn.wqkv", (3 * C, C), True, "normal"),
                  (p + "attn.wo", (C, C), True, "proj")]
        if skips(cfg, l):  # MindSkip's router w (1, C), no bias
            specs.append((p + "attn_skip.weight", (1, C), True, "normal"))
        specs.append((p + "mlp_norm", (C,), True, "ones"))
        for _, _, s, m in [u for u in moe_units(cfg) if u[1] == l]:
            if s > 0:  # x_s = RMSNorm(x_{s-1} + y_{s-1}) with this weight
                specs.append((f"layers.{l}.sub{s}.norm", (C,), True, "ones"))
            if distill_dim(cfg):  # StableMoE: centroids and the token-id router instead
                D = distill_dim(cfg)
                specs += [(m + "router.centroids", (E, C), True, "normal"),
                          (m + "router.token_embedding", (V, D), True, "normal"),
                          (m + "router.token_centroids", (E, D), True, "normal")]
            elif recurrent_dim(cfg):  # RMoE: its projection and gate instead of gate.weight
                r = recurrent_dim(cfg)
                specs += [(m + "router.projection", (r, C), True, "normal"),
                          (m + "router.gate", (num_router_outputs(cfg), r), True, "normal")]
            elif global_dim(cfg):  # SpeechMoE2: a gate over [x, g] and the projection P
                D = global_dim(cfg)
                specs += [(m + "router.gate", (num_router_outputs(cfg), C + D), True, "normal"),
                          (m + "router.global_projection", (D, C), True, "normal")]
            elif remoe_gate_scale(cfg) != 1.0:  # ReMoE's gate_lr_scale: router.gate instead
                specs.append((m + "router.gate", (num_router_outputs(cfg), C), True, "normal"))
            elif aoe_rank(cfg):  # AoE: every expert's W_down instead of gate.weight
                specs.append((m + "router.down", (num_router_outputs(cfg) * aoe_rank(cfg), C),
                              True, "normal"))
            elif cfg["layer"]["family"] not in ("hash", "thor"):  # routers without a gate hold none
                specs.append((m + "gate.weight", (num_router_outputs(cfg), C), True, "normal"))
            # w1 reads x, or (AoE) the expert's r-dimensional activation W_down,e x
            specs.append((m + "experts.w1", (E, Fe, aoe_rank(cfg) or C), True, "normal"))
            if swiglu:
                specs.append((m + "experts.w3", (E, Fe, C), True, "normal"))
            specs.append((m + "experts.w2", (E, C, Fe), True, "proj"))
            if Fs > 0:
                specs.append((m + "shared.w1", (Fs, C), True, "normal"))
                if swiglu:
                    specs.append((m + "shared.w3", (Fs, C), True, "normal"))
                specs.append((m + "shared.w2", (C, Fs), True, "proj"))
                if cfg["shared_expert_gate"]:  # Qwen2-MoE's sigmoid gate on the shared expert
                    specs.append((m + "shared.gate", (1, C), True, "normal"))
            specs.append((m + "gate.bias", (E,), False, "zeros"))
        if not is_moe_layer(cfg, l):
            specs.append((p + "mlp.w1", (Fd, C), True, "normal"))
            if swiglu:
                specs.append((p + "mlp.w3", (Fd, C), True, "normal"))
            specs.append((p + "mlp.w2", (C, Fd), True, "proj"))
    specs.append(("final_norm", (C,), True, "ones"))
    if not cfg["tied_head"]:
        specs.append(("lm_head", (V, C), True, "normal"))
    if recurrent_dim(cfg):  # RMoE's GRU cell, one for all MoE layers, after the head
        r = recurrent_dim(cfg)
        specs += [("moe.router.gru_weight_ih", (3 * r, r), True, "normal"),
                  ("moe.router.gru_weight_hh", (3 * r, r), True, "normal"),
                  ("moe.router.gru_bias_ih", (3 * r,), True, "normal"),
                  ("moe.router.gru_bias_hh", (3 * r,), True, "normal")]
    return specs


def remoe_gate_scale(cfg):
    """ReMoE's gate_lr_scale s (z = s x router.gateᵀ where s != 1, beyond the paper), else 1."""
    layer = cfg["layer"]
    return float(layer["params"]["gate_lr_scale"]) if layer["family"] == "remoe" else 1.0


def distill_dim(cfg):
    """StableMoE's token-embedding width D, else 0."""
    layer = cfg["layer"]
    return int(layer["params"]["distill_dim"]) if layer["family"] == "stablemoe" else 0


def no_decay(cfg):
    """Matrices without weight decay: StableMoE's token embedding and token centroids (as the
    router's tensor specs say); every other parameter with >= 2 dimensions decays."""
    if not distill_dim(cfg):
        return set()
    return {m + "router." + n for _, _, _, m in moe_units(cfg)
            for n in ("token_embedding", "token_centroids")}


def stablemoe_switch_step(cfg, total_steps):
    """S1: stage1_steps, or floor(stage1_fraction * total steps) where that is -1."""
    p = cfg["layer"]["params"]
    steps = int(p["stage1_steps"])
    return steps if steps >= 0 else int(math.floor(float(p["stage1_fraction"]) * total_steps))


def global_dim(cfg):
    """SpeechMoE2's global embedding width where the router's logits are "global", else 0."""
    layer = cfg["layer"]
    if layer["family"] == "topk" and layer["params"].get("logits") == "global":
        return int(layer["params"]["global_dim"])
    return 0


def aoe_rank(cfg):
    """AoE's rank r where the router's logits are "aoe" (the experts' gates read W_down,e x),
    else 0."""
    layer = cfg["layer"]
    if layer["family"] == "topk" and layer["params"].get("logits") == "aoe":
        return int(layer["params"]["aoe_rank"])
    return 0


def recurrent_dim(cfg):
    """RMoE's GRU width where the router's logits are "recurrent", else 0."""
    layer = cfg["layer"]
    if layer["family"] == "topk" and layer["params"].get("logits") == "recurrent":
        return int(layer["params"]["recurrent_dim"])
    return 0


def load_params(cfg, tensors):
    """dict name -> float64 tensor (trainable ones require grad); checks names and shapes."""
    specs = param_specs(cfg)
    expected = {name for name, _, _, _ in specs}
    problems = []
    missing = [n for n, _, _, _ in specs if n not in tensors]
    extra = sorted(set(tensors) - expected)
    if missing:
        problems.append(f"missing tensors {missing}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    for name, shape, _, _ in specs:
        if name in tensors and tuple(tensors[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
    if problems:
        raise ModelError("weights: " + "; ".join(problems))
    params = {}
    for name, _, trainable, _ in specs:
        t = torch.tensor(np.asarray(tensors[name], dtype=np.float64), dtype=DTYPE)
        params[name] = t.requires_grad_(trainable)
    return params


def init_params(cfg, seed):
    """Random parameters by the init rules of docs/model.md (for --self-test)."""
    gen = torch.Generator().manual_seed(seed)
    std = cfg["init_std"]
    params = {}
    for name, shape, trainable, init in param_specs(cfg):
        if init == "ones":
            t = torch.ones(shape, dtype=DTYPE)
        elif init == "zeros":
            t = torch.zeros(shape, dtype=DTYPE)
        else:
            s = std if init == "normal" else std / math.sqrt(2 * cfg["n_layers"])
            t = torch.randn(shape, generator=gen, dtype=DTYPE) * s
        params[name] = t.requires_grad_(trainable)
    return params


# ----------------------------------------------------------------------------------------------
# The MoE layer with autograd through its input (the structure of torch_layer.run_layer)
# ----------------------------------------------------------------------------------------------

def route_margin(family, p, z, s_sel, E, groups):
    """(T,) per token: the smallest distance of one of its discrete routing decisions from a tie
    (float64 scores); inf where the router makes no discrete decision."""
    z = z.detach()
    T = z.shape[0]
    none = torch.full((T,), math.inf, dtype=torch.float64)
    if family == "topk":
        k = int(p["k"])
        if s_sel.shape[1] <= k:
            return none
        top = torch.topk(s_sel, k + 1, dim=-1).values
        gap = (top[:, k - 1] - top[:, k]).to(torch.float64)
        return torch.where(torch.isfinite(gap), gap, none)
    if family == "expert_choice":
        s = torch.softmax(z, dim=-1)
        out = none.clone()
        for (a, b) in groups:
            Tg = b - a
            C = min(Tg, math.ceil(Tg * float(p["capacity_factor"]) / E))
            if C >= Tg:
                continue
            cols = s[a:b].t()  # (E, Tg)
            top = torch.topk(cols, C + 1, dim=-1).values
            last_in, first_out = top[:, C - 1:C], top[:, C:C + 1]
            # chosen tokens: distance down to the first one left out; the others: up to the last in
            dist = torch.where(cols >= last_in, cols - first_out, last_in - cols)
            out[a:b] = torch.minimum(out[a:b], dist.min(0).values.to(torch.float64))
        return out
    if family == "remoe":
        return z.abs().min(-1).values.to(torch.float64)
    if family == "top_p":
        s = torch.softmax(z, dim=-1)
        vals = torch.sort(s, dim=-1, descending=True).values
        before = torch.cumsum(vals, dim=-1) - vals
        return (before - float(p["threshold"])).abs().min(-1).values.to(torch.float64)
    if family == "base":
        top = torch.topk(z, 2, dim=-1).values
        return (top[:, 0] - top[:, 1]).to(torch.float64)
    if family == "duollm":  # the argmax of softmax(z) over (small, big[, skip])
        top = torch.topk(torch.softmax(z, dim=-1), 2, dim=-1).values
        return (top[:, 0] - top[:, 1]).to(torch.float64)
    if family == "flextron":  # the top-k set of the experts block, the width block's argmax
        k, out = int(p["k"]), none.clone()
        if k < E:
            top = torch.topk(torch.softmax(z[:, :E], dim=-1), k + 1, dim=-1).values
            out = torch.minimum(out, (top[:, k - 1] - top[:, k]).to(torch.float64))
        if z.shape[1] - E > 1:
            top = torch.topk(torch.softmax(z[:, E:], dim=-1), 2, dim=-1).values
            out = torch.minimum(out, (top[:, 0] - top[:, 1]).to(torch.float64))
        return out
    if family == "stablemoe":  # z = [s | shat]: the routing block's argmax (s in stage 1)
        block = z[:, :E] if int(p["stage"]) == 1 else z[:, E:]
        if E < 2:
            return none
        top = torch.topk(block, 2, dim=-1).values
        return (top[:, 0] - top[:, 1]).to(torch.float64)
    return none


def damoe_margin(p, z, E, importance, seq_lens):
    """(T,) DA-MoE: the gap between the K_t-th and (K_t+1)-th softmax scores, and the distance
    of k s_t / m_t from the rounding's half-integer where that decides K_t (the importance comes
    from float32 attention in the engine, float64 here)."""
    s = torch.sort(torch.softmax(z.detach(), dim=-1), dim=-1, descending=True).values
    K = TL.damoe_experts(importance, seq_lens, E, p)
    wanted = TL.damoe_wanted(importance, seq_lens, p)
    lo, hi = min(int(p["k_min"]), E), min(int(p["k_max"]), E)
    out = torch.full((z.shape[0],), math.inf, dtype=torch.float64)
    for t, k in enumerate(K):
        if k < E:
            out[t] = float(s[t, k - 1] - s[t, k])
        half = math.floor(wanted[t]) + 0.5  # the nearest rounding boundary that matters
        if lo + 0.5 <= half <= hi - 0.5:  # between two counts the clamp allows
            out[t] = min(float(out[t]), abs(wanted[t] - half))
    return out


def self_importance(att):
    """att (B, H, T, T) causal attention probabilities -> (B T,) the weight each token's query
    gives itself, mean over heads, times its t + 1 visible keys; detached (no gradient)."""
    B, H, T, _ = att.shape
    diag = torch.diagonal(att.detach(), dim1=-2, dim2=-1).mean(1)          # (B, T)
    return (diag * torch.arange(1, T + 1, dtype=att.dtype)).reshape(B * T)


def moe_forward(layer, x, P, prefix, E, seq_lens, token_ids, state, carry=None,
                importance=None):
    """x (T, d) with autograd. Returns (y, aux, info): info has counts (E), kept rows,
    margin, and RMoE's router carry out (its GRU state; `carry` is the previous MoE layer's).
    `state` holds the non-gradient router state (remoe lambda)."""
    T, d = x.shape
    family, p, losses = layer["family"], dict(layer["params"]), layer["losses"]
    if family == "remoe":
        p["lambda"] = state["lambda"]
    if family == "stablemoe":
        p["stage"] = state["stage"]
    swiglu = TL.has_up(layer["activation"])
    w1, w2 = P[prefix + "experts.w1"], P[prefix + "experts.w2"]
    w3 = P[prefix + "experts.w3"] if swiglu else None
    sw1 = P.get(prefix + "shared.w1")
    sw2 = P.get(prefix + "shared.w2")
    sw3 = P.get(prefix + "shared.w3") if swiglu else None
    gate = P.get(prefix + "gate.weight")
    bias = P.get(prefix + "gate.bias")
    bias = bias.detach() if bias is not None else None
    groups = TL.group_ranges(layer["routing_groups"], seq_lens, T)

    y = torch.zeros(T, d, dtype=x.dtype)
    z, passthrough = None, None
    gate_in = None  # AoE: (T, R, r) the activations the experts' gates read instead of x
    margin = torch.full((T,), math.inf, dtype=torch.float64)
    counts = None
    if family == "smear":
        ys, combs = [], []
        for (a, b) in TL.seq_ranges(seq_lens, T):
            m = x[a:b].mean(0)
            pe = torch.softmax(gate @ m, dim=-1)
            mw1 = (pe[:, None, None] * w1).sum(0)
            mw2 = (pe[:, None, None] * w2).sum(0)
            mw3 = (pe[:, None, None] * w3).sum(0) if swiglu else None
            ys.append(TL.ffn(x[a:b], mw1, mw3, mw2, layer))
            combs.append(pe.unsqueeze(0).expand(b - a, E))
        y = torch.cat(ys, 0)
        routing = TL.Routing(torch.cat(combs, 0), torch.ones(T, E, dtype=torch.bool))
    else:
        if family in ("hash", "thor"):
            if family == "hash":
                experts = TL.hash_table(token_ids, E, p)
            else:  # the model gives MoE layer l the seed l; its calls count the draws
                experts = TL.thor_experts({**layer, "seed": state["seed"]}, T, d, E, groups,
                                          state["calls"])
                state["calls"] += 1
            kept = torch.zeros(T, E, dtype=torch.bool)
            kept[torch.arange(T), torch.tensor(experts, dtype=torch.long)] = True
            routing = TL.Routing(kept.to(x.dtype), kept)
        else:
            carry_out = None
            if family == "topk" and p.get("logits") == "recurrent":
                shared = {n: P["moe.router." + n] for n in
                          ("gru_weight_ih", "gru_weight_hh", "gru_bias_ih", "gru_bias_hh")}
                own = {n: P[prefix + "router." + n] for n in ("projection", "gate")}
                carry_out = TL.recurrent_state(x, {**shared, **own}, carry)  # (T, r)
                z = carry_out @ own["gate"].t()
            elif family == "topk" and p.get("logits") == "global":  # SpeechMoE2, per sequence
                tensors = {n: P[prefix + "router." + n] for n in ("gate", "global_projection")}
                z = TL.global_logits(x, tensors, seq_lens)
            elif family == "remoe" and float(p["gate_lr_scale"]) != 1.0:
                z = float(p["gate_lr_scale"]) * (x @ P[prefix + "router.gate"].t())
            elif family == "topk" and p.get("logits") == "aoe":  # z = ‖W_down,e x‖₂
                gate_in = (x @ P[prefix + "router.down"].t()).reshape(T, -1, int(p["aoe_rank"]))
                z = torch.linalg.vector_norm(gate_in, dim=2)
            elif family == "stablemoe":  # s = W x and shat = K Q[id], side by side
                tensors = {n: P[prefix + "router." + n]
                           for n in ("centroids", "token_embedding", "token_centroids")}
                s_aff, shat = TL.distilled_logits(x, tensors, token_ids, int(layer["vocab_size"]))
                z = torch.cat([s_aff, shat], 1)
            else:
                z = x @ gate.t()
            if family == "topk":
                routing = TL.route_topk(z, bias, E, p, groups, losses["balance_top1_only"])
                if float(p["sparsity_loss"]) > 0 or float(p["importance_loss"]) > 0:
                    routing.own_loss = TL.speechmoe_losses(z, p)
                # selection scores as route_topk forms them, for the margin and the counts
                s = torch.softmax(z, -1) if p["score"] == "softmax" else torch.sigmoid(z)
                sel = s.detach().clone()
                if bias is not None:
                    sel[:, :E] = sel[:, :E] + bias
                if int(p["groups"]) > 1:
                    # group exclusion: recompute as route_topk does
                    G = int(p["groups"])
                    gs = E // G
                    grouped = sel[:, :E].reshape(T, G, gs)
                    gscore = torch.topk(grouped, min(2, gs), dim=-1).values.sum(-1)
                    keep_g = torch.zeros(T, G, dtype=torch.bool)
                    keep_g.scatter_(1, TL.topk_indices(gscore, int(p["topk_groups"])), True)
                    excl = (~keep_g).unsqueeze(-1).expand(T, G, gs).reshape(T, E)
                    sel[:, :E] = sel[:, :E].masked_fill(excl, float("-inf"))
                idx = TL.topk_indices(sel, int(p["k"]))
                margin = route_margin(family, p, z, sel, E, groups)
                if int(p["groups"]) > 1 and int(p["topk_groups"]) < int(p["groups"]):
                    kg = int(p["topk_groups"])
                    gtop = torch.topk(gscore, kg + 1, dim=-1).values
                    margin = torch.minimum(margin, (gtop[:, kg - 1] - gtop[:, kg]).to(torch.float64))
                counts = torch.zeros(sel.shape[1], dtype=x.dtype).index_add_(
                    0, idx.reshape(-1), torch.ones(idx.numel(), dtype=x.dtype))[:E]
            elif family == "expert_choice":
                routing = TL.route_expert_choice(z, E, p, groups)
            elif family == "top_p":
                routing = TL.route_top_p(z, E, p)
            elif family == "damoe":  # K_t from the block's attention importance
                imp = importance.tolist()
                routing = TL.route_damoe(z, E, p, imp, seq_lens)
            elif family == "soft":
                routing = TL.route_soft(z, E)
            elif family == "remoe":
                routing = TL.route_remoe(z, E, p, bias)
            elif family == "stablemoe":
                routing = TL.route_stablemoe(s_aff, shat, E, p, groups, True)
            elif family == "competesmoe":  # the layer's seed l, its call count and steps decide
                compete = TL.competesmoe_competes({**layer, "seed": state["seed"]}, T, d,
                                                  state["steps"], state["warmup"], state["calls"])
                state["calls"] += 1
                routing = TL.route_competesmoe(z, x, w1, w3, w2, E, p, layer, compete)
            elif family == "base":
                best = TL.topk_indices(z.detach(), 1)[:, 0]
                kept = torch.zeros(T, E, dtype=torch.bool)
                kept[torch.arange(T), best] = True
                alpha = torch.sigmoid(z)
                routing = TL.Routing(alpha * kept, kept)
                passthrough = 1 - alpha.gather(1, best[:, None])
            elif family == "duollm":  # routed by the argmax (random routes are not replayed)
                if p["random_routes"]:
                    raise ModelError("duollm random_routes: the model's draws are not replayed")
                routing = TL.route_duollm(z, E, p, w1.shape[1], False, None)
            elif family == "flextron":
                routing = TL.route_flextron(z, E, p, w1.shape[1])
            else:
                raise ModelError(f"router family {family} not implemented")
            if family == "competesmoe":  # the k-th against the (k+1)-th of what chose
                k = int(p["k"])
                margin = torch.full((T,), math.inf, dtype=torch.float64)
                if k < E:
                    top = torch.topk(routing.score, k + 1, dim=-1).values
                    margin = (top[:, k - 1] - top[:, k]).to(torch.float64)
            elif family == "damoe":
                margin = damoe_margin(p, z, E, imp, seq_lens)
            elif family != "topk":
                margin = route_margin(family, p, z, None, E, groups)
            if family == "remoe" and float(p["bias_update_rate"]) > 0 and bias is not None:
                margin = route_margin(family, p, z + bias, None, E, groups)  # R = ReLU(z + b)
        W = routing.weights
        widths = getattr(routing, "widths", None)  # (T, E) per-assignment widths, or None
        for e in range(E):
            tok = torch.nonzero(routing.kept[:, e], as_tuple=False).squeeze(1)
            if tok.numel() == 0:
                continue
            if widths is not None:  # each token on expert e's first w hidden units, by w
                for w in sorted(set(int(v) for v in widths[tok, e])):
                    sub = tok[widths[tok, e] == w]
                    out = TL.ffn(x[sub], w1[e][:w], w3[e][:w] if swiglu else None, w2[e][:, :w],
                                 layer)
                    y = y.index_add(0, sub, out * W[sub, e:e + 1])
                continue
            out = TL.ffn(x[tok], w1[e], w3[e] if swiglu else None, w2[e], layer,
                         None if gate_in is None else gate_in[tok, e])
            y = y.index_add(0, tok, out * W[tok, e:e + 1])
        if passthrough is not None:
            y = y + passthrough * x
    if sw1 is not None:
        shared = TL.ffn(x, sw1, sw3, sw2, layer)
        sgate = P.get(prefix + "shared.gate")
        if sgate is not None:
            shared = torch.sigmoid(x @ sgate.t()) * shared
        y = y + shared

    aux = torch.zeros((), dtype=x.dtype)
    if z is not None and routing.choices is not None:
        R = z.shape[1]
        if losses["balance"]:
            alpha = float(losses["balance"])
            P_all, C_all = routing.bal_prob, routing.choices.detach()
            if losses["balance_mode"] == "sequence":
                parts = []
                for (a, b) in TL.seq_ranges(seq_lens, T):
                    c = C_all[a:b].sum(0)
                    parts.append(alpha * R * ((c / c.sum()) * P_all[a:b].mean(0)).sum())
                aux = aux + torch.stack(parts).mean()
            elif losses["balance_mode"] == "global_batch":
                raise ModelError("global_batch balance needs grad_accum > 1; not implemented")
            else:
                c = C_all.sum(0)
                aux = aux + alpha * R * ((c / c.sum()) * P_all.mean(0)).sum()
        if losses["z"]:
            aux = aux + float(losses["z"]) * (torch.logsumexp(z, dim=-1) ** 2).mean()
        if losses["entropy"]:
            pr = routing.bal_prob
            aux = aux + float(losses["entropy"]) * (-(pr * torch.log(pr)).sum(-1)).mean()
    if routing.own_loss is not None:
        aux = aux + routing.own_loss
    info = {"counts": counts, "kept_rows": int(routing.kept.sum()),
            "margin": float(margin.min()) if T else math.inf, "margin_tokens": margin,
            "kept": routing.kept.detach()}
    if family not in ("smear", "hash", "thor"):
        info["router_carry"] = carry_out
    return y, aux, info


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x (B, H, T, D); rotate-half form, positions 0..T-1."""
    T, D = x.shape[-2], x.shape[-1]
    half = D // 2
    i = torch.arange(half, dtype=DTYPE)
    inv = theta ** (-2.0 * i / D)
    ang = torch.arange(T, dtype=DTYPE)[:, None] * inv[None, :]   # (T, D/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def dense_ffn(x, P, prefix, layer):
    """The dense FFN with the MoE layers' activation (layer: TL.parse_config's dict)."""
    w3 = P[prefix + "mlp.w3"] if TL.has_up(layer["activation"]) else None
    return TL.ffn(x, P[prefix + "mlp.w1"], w3, P[prefix + "mlp.w2"], layer)


def forward(cfg, P, inputs, targets, states):
    """inputs, targets (B, T) int64. Returns (logits, ce, aux_total, aux_per_layer, infos)."""
    B, T = inputs.shape
    C, H = cfg["d_model"], cfg["n_heads"]
    D = C // H
    eps = cfg["norm_eps"]
    h = P["wte"][inputs]                                   # (B, T, C)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    aux_layers, infos = [], []
    token_ids = inputs.reshape(-1).tolist()
    carry = None  # RMoE: the GRU state passed from one MoE layer to the next
    SKIP_INFOS.clear()
    skip_losses = []
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        a = rmsnorm(h, P[p + "attn_norm"], eps)
        qkv = a @ P[p + "attn.wqkv"].t()                   # (B, T, 3C)
        q, k, v = qkv.split(C, dim=-1)
        q = q.reshape(B, T, H, D).transpose(1, 2)
        k = k.reshape(B, T, H, D).transpose(1, 2)
        v = v.reshape(B, T, H, D).transpose(1, 2)
        q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, C)
        if skips(cfg, l):
            # MindSkip: one score per sequence from the mean of the attention's input; the
            # attention's output joins only where s >= threshold. Computed everywhere here and
            # masked: a skipped sequence's g is exactly 0 and so is its gradient.
            sk = cfg["attention_skip"]
            s = torch.sigmoid(a.mean(dim=1) @ P[p + "attn_skip.weight"][0])        # (B,)
            kept = (s >= sk["threshold"]).detach()
            k = kept.to(DTYPE)
            if sk["gate"] == "ste":  # forward 1 (kept) / 0, straight-through gradient
                g = k * (1.0 + s - s.detach())
                loss = sk["loss"] * (k + s - s.detach()).mean()
            else:
                g = k * s
                loss = sk["loss"] * s.mean()
            h = h + g[:, None, None] * (o @ P[p + "attn.wo"].t())
            skip_losses.append(loss)
            SKIP_INFOS.append({"layer": l, "score": s.detach().clone(), "kept": kept.clone(),
                               "loss": float(loss.detach()),
                               "margin": (s.detach() - sk["threshold"]).abs()})
        else:
            h = h + o @ P[p + "attn.wo"].t()
        m = rmsnorm(h, P[p + "mlp_norm"], eps)
        if is_moe_layer(cfg, l):
            # The block's sub-layers in order: sub-layer s > 0 reads RMSNorm(x + y) of the one
            # before (its input plus its output); the last one's output joins the residual.
            x = m.reshape(B * T, C)
            for key, _, s, prefix in [u for u in moe_units(cfg) if u[1] == l]:
                if s > 0:
                    x = rmsnorm(x + y, P[f"layers.{l}.sub{s}.norm"], eps)
                y, aux, info = moe_forward(cfg["layer"], x, P, prefix, cfg["experts"], [T] * B,
                                           token_ids, states[key], carry, self_importance(att))
                carry = info.get("router_carry")
                aux_layers.append(aux)
                infos.append(info)
            h = h + y.reshape(B, T, C)
        else:
            h = h + dense_ffn(m, P, p, cfg["layer"])
    hf = rmsnorm(h, P["final_norm"], eps)
    head = P["wte"] if cfg["tied_head"] else P["lm_head"]
    logits = hf @ head.t()                                 # (B, T, V)
    ce = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))
    aux_total = torch.zeros((), dtype=DTYPE)
    for a in aux_layers:
        aux_total = aux_total + a
    for a in skip_losses:  # MindSkip's skip loss joins the aux loss
        aux_total = aux_total + a
    return logits, ce, aux_total, aux_layers, infos


def learning_rate(step, lr, warmup, total, min_lr_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    min_lr = min_lr_ratio * lr
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def initial_states(cfg, total_steps=None):
    """Per MoE layer: the router's non-gradient state. StableMoE: its steps, stage and S1 (from
    total_steps where stage1_steps is -1; a stage-1 router whose S1 is 0 starts in stage 2)."""
    states = {}
    for key, l, s, _ in moe_units(cfg):
        if True:
            st = {}
            if cfg["layer"]["family"] == "remoe":
                st["lambda"] = float(cfg["layer"]["params"]["lambda"])
            if cfg["layer"]["family"] == "thor":  # the layer's seed: its index among the units
                st.update(seed=l * cfg["moe_sublayers"] + s, calls=0)
            if cfg["layer"]["family"] == "competesmoe":  # W: warmup_steps or the run's share
                p = cfg["layer"]["params"]
                W = int(p["warmup_steps"])
                if W < 0:
                    W = int(math.floor(float(p["warmup_fraction"]) * (total_steps or 0)))
                st.update(seed=l * cfg["moe_sublayers"] + s, calls=0, steps=0, warmup=W)
            if cfg["layer"]["family"] == "stablemoe":
                st.update(steps=0, stage=int(cfg["layer"]["params"]["stage"]))
                if total_steps is not None:
                    st["switch"] = stablemoe_switch_step(cfg, total_steps)
                    if st["switch"] == 0:
                        st["stage"] = 2
            states[key] = st
    return states


def frozen_names(cfg, states):
    """Parameters the optimiser leaves alone now: StableMoE's Q and K in stage 2."""
    if cfg["layer"]["family"] != "stablemoe":
        return set()
    prefix = {key: m for key, _, _, m in moe_units(cfg)}
    return {prefix[key] + "router." + n for key, st in states.items() if st["stage"] == 2
            for n in ("token_embedding", "token_centroids")}


def update_router_state(cfg, P, states, infos):
    layer = cfg["layer"]
    E = cfg["experts"]
    units = moe_units(cfg)
    # ReMoE's S: the zero fraction averaged over the MoE layers (one controller for the model).
    zeros = [1.0 - info["kept_rows"] / (info["T"] * E) for info in infos]
    mean_zero = sum(zeros) / len(zeros) if zeros else 0.0
    for (l, _, _, m), info in zip(units, infos):  # l: the unit's state key
        if layer["family"] == "topk":
            u = float(layer["params"]["bias_update_rate"])
            if u > 0:
                c = info["counts"]
                err = c.mean() - c
                with torch.no_grad():
                    P[m + "gate.bias"] += u * torch.sign(err)
        elif layer["family"] == "competesmoe":  # one more update done
            states[l]["steps"] += 1
        elif layer["family"] == "stablemoe":  # one more update done; stage 2 from S1 on
            st = states[l]
            st["steps"] += 1
            if st["stage"] == 1 and st["steps"] >= st["switch"]:
                st["stage"] = 2
        elif layer["family"] == "remoe":
            st = states[l]
            target = 1.0 - float(layer["params"]["k"]) / E
            rate = float(layer["params"]["lambda_rate"])
            st["lambda"] = st["lambda"] * rate if mean_zero < target else st["lambda"] / rate
            # beyond the paper: each expert's threshold bias ±u towards the activation rate k/E
            u = float(layer["params"]["bias_update_rate"])
            if u > 0:
                rate = info["kept"].sum(0).to(DTYPE) / info["T"]
                err = float(layer["params"]["k"]) / E - rate
                with torch.no_grad():
                    P[m + "gate.bias"] += u * torch.sign(err)


def train(cfg, P, inputs, targets, steps, opt):
    """Returns (step-0 outputs dict, per-step arrays dict). Updates P in place."""
    names = [n for n, t in P.items() if t.requires_grad]
    tensors = [P[n] for n in names]
    m = [torch.zeros_like(t) for t in tensors]
    v = [torch.zeros_like(t) for t in tensors]
    states = initial_states(cfg, opt["total_steps"])
    decay_free = no_decay(cfg)
    b1, b2, eps = 0.9, 0.95, opt["eps"]
    out0 = {}
    losses, lrs, norms, margins, route = [], [], [], [], {}
    # THOR's consistency regularisation: two passes, each with its own draws; the objective is
    # 1/2 (CE + aux) of each plus 1/2 alpha mean symmetric KL; the second pass is reported.
    alpha = float(cfg["layer"]["params"].get("consistency", 0.0))
    for step in range(max(steps, 1)):
        # Frozen parameters (StableMoE's stage 2) do not require grad: their gradient is None
        # (reported as 0) and the update below skips them, moments and decay included.
        frozen = frozen_names(cfg, states)
        for n, t in zip(names, tensors):
            t.requires_grad_(n not in frozen)
        logits, ce, aux, aux_layers, infos = forward(cfg, P, inputs, targets, states)
        if alpha > 0:
            V = logits.shape[-1]
            logits2, ce2, aux2, aux_layers, infos = forward(cfg, P, inputs, targets, states)
            lp = torch.log_softmax(logits.reshape(-1, V), -1)
            lq = torch.log_softmax(logits2.reshape(-1, V), -1)
            skl = 0.5 * ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()
            ce = 0.5 * (ce + ce2)
            aux = 0.5 * (aux + aux2) + 0.5 * alpha * skl
            logits = logits2
        for info in infos:
            info["T"] = inputs.numel()
        skip_infos = [dict(i) for i in SKIP_INFOS]  # the (second) pass's MindSkip decisions
        loss = ce + aux
        live = [i for i, n in enumerate(names) if n not in frozen]
        got = torch.autograd.grad(loss, [tensors[i] for i in live], allow_unused=True)
        grads = [None] * len(tensors)
        for i, g in zip(live, got):
            grads[i] = g
        grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, tensors)]
        if step == 0:
            out0["logits"] = logits.detach().numpy()
            out0["loss"] = np.array(float(loss.detach()))
            out0["ce_loss"] = np.array(float(ce.detach()))
            out0["aux_loss"] = np.array(float(aux.detach()))
            for (_, l, s, _), a in zip(moe_units(cfg), aux_layers):
                out0[aux_name(cfg, l, s)] = np.array(float(a.detach()))
            for n, g in zip(names, grads):
                out0["grad." + n] = g.detach().numpy().copy()
            for si in skip_infos:
                out0[f"skip_loss.{si['layer']}"] = np.array(si["loss"])
                out0[f"skip_score.{si['layer']}"] = si["score"].numpy().copy()
            if cfg["attention_skip"] is not None:
                # The evaluation forward (the same rule; the C++ side runs training = false).
                with torch.no_grad():
                    eval_logits, _, _, _, _ = forward(cfg, P, inputs, targets, states)
                out0["eval_logits"] = eval_logits.detach().numpy().copy()
        if steps == 0:
            break
        losses.append(float(loss.detach()))
        margins.append(min([info["margin"] for info in infos] +
                           [float(si["margin"].min()) for si in skip_infos], default=math.inf))
        for si in skip_infos:
            route[f"skip.{step}.{si['layer']}"] = si["kept"].numpy().astype(np.float64)
            route[f"skip_margin.{step}.{si['layer']}"] = si["margin"].numpy().copy()
        for i, info in enumerate(infos):
            route[f"route.{step}.{i}"] = info["kept"].numpy().astype(np.float64)
            route[f"route_margin.{step}.{i}"] = info["margin_tokens"].numpy().copy()
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        norms.append(norm)
        scale = opt["grad_clip"] / norm if opt["grad_clip"] > 0 and norm > opt["grad_clip"] else 1.0
        lr = learning_rate(step, opt["lr"], opt["warmup"], opt["total_steps"], opt["min_lr_ratio"])
        lrs.append(lr)
        t = step + 1
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(tensors, grads)):
                if names[i] in frozen:
                    continue
                g = g * scale
                m[i].mul_(b1).add_((1 - b1) * g)
                v[i].mul_(b2).add_((1 - b2) * g * g)
                mhat = m[i] / (1 - b1 ** t)
                vhat = v[i] / (1 - b2 ** t)
                update = mhat / (torch.sqrt(vhat) + eps)
                if p.dim() >= 2 and names[i] not in decay_free:
                    update = update + opt["weight_decay"] * p
                p.sub_(lr * update)
        update_router_state(cfg, P, states, infos)
    arrays = {"losses": np.array(losses, dtype=np.float64), "lrs": np.array(lrs, dtype=np.float64),
              "grad_norms": np.array(norms, dtype=np.float64),
              "route_margin": np.array(margins, dtype=np.float64), **route}
    return out0, arrays


def load_tokens(path):
    tensors, _ = safetensors_io.load(path)
    if "tokens" not in tensors:
        raise ModelError(f"{path}: no tensor 'tokens'")
    tok = tensors["tokens"]
    if tok.dtype.kind not in "iu" or tok.ndim != 2 or tok.shape[1] < 2:
        raise ModelError(f"{path}: tokens must be (B, T+1) integers, got {tok.dtype} {tok.shape}")
    tok = torch.tensor(tok.astype(np.int64))
    return tok[:, :-1].contiguous(), tok[:, 1:].contiguous()


# ----------------------------------------------------------------------------------------------
# Self-test: finite differences and the loss at init
# ----------------------------------------------------------------------------------------------

def self_test():
    ok = True
    configs = [
        ("moe_every=1 tied mixtral", {"vocab_size": 256, "d_model": 32, "n_layers": 2,
                                       "n_heads": 4, "seq_len": 16, "experts": 4, "d_ff": 24,
                                       "router": {"router": "mixtral", "k": 2,
                                                  "losses": {"balance": 0.01, "z": 0.001}}}),
        ("moe_every=2 untied shared", {"vocab_size": 256, "d_model": 32, "n_layers": 2,
                                        "n_heads": 4, "seq_len": 16, "experts": 4, "d_ff": 24,
                                        "moe_every": 2, "dense_d_ff": 40, "shared_d_ff": 16,
                                        "tied_head": False,
                                        "router": {"router": "mixtral", "k": 2,
                                                   "losses": {"balance": 0.01, "z": 0.001}}}),
        ("gelu expert_choice", {"vocab_size": 64, "d_model": 16, "n_layers": 2, "n_heads": 2,
                                "seq_len": 8, "experts": 4, "d_ff": 12, "activation": "gelu",
                                "router": {"router": "expert_choice"}}),
        ("remoe", {"vocab_size": 64, "d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 8,
                   "experts": 4, "d_ff": 12, "router": {"router": "remoe", "lambda": 0.1}}),
        ("cartesian sub-layers shared", {"vocab_size": 64, "d_model": 16, "n_layers": 2,
                                         "n_heads": 2, "seq_len": 8, "experts": 4, "d_ff": 6,
                                         "shared_d_ff": 4, "moe_sublayers": 2,
                                         "router": {"router": "topk", "k": 2,
                                                    "losses": {"balance": 0.01}}}),
    ]
    for label, j in configs:
        cfg = parse_model_config(j)
        B, T, V = 3, 16 if j["seq_len"] == 16 else 8, cfg["vocab_size"]
        gen = torch.Generator().manual_seed(1)
        tok = torch.randint(0, V, (B, T + 1), generator=gen)
        inputs, targets = tok[:, :-1], tok[:, 1:]
        # Loss at init (init_std 0.02): close to ln V.
        P = init_params(cfg, 0)
        states = initial_states(cfg)
        _, ce, aux, _, _ = forward(cfg, P, inputs, targets, states)
        lnV = math.log(V)
        good = abs(float(ce) - lnV) < 0.1
        ok &= good
        print(f"[{label}] init ce {float(ce):.5f} vs ln V {lnV:.5f}, aux {float(aux):.3e}: "
              f"{'ok' if good else 'FAIL'}")
        # Finite differences on a larger init (so the gradients are not tiny) for a few entries
        # of several parameters. Routing must not flip under the perturbation (h = 1e-6).
        P = init_params(cfg, 3)
        with torch.no_grad():
            for t in P.values():
                if t.dim() >= 2:
                    t.mul_(10.0)
        names = [n for n, t in P.items() if t.requires_grad]

        def objective():
            _, ce_, aux_, _, _ = forward(cfg, P, inputs, targets, initial_states(cfg))
            return ce_ + aux_
        loss = objective()
        grads = dict(zip(names, torch.autograd.grad(loss, [P[n] for n in names],
                                                    allow_unused=True)))
        rng = np.random.default_rng(5)
        worst = 0.0
        for name in names:
            g = grads[name]
            g = torch.zeros_like(P[name]) if g is None else g
            flat = P[name].detach().view(-1)
            picks = list(rng.choice(flat.numel(), size=min(3, flat.numel()), replace=False))
            picks.append(int(g.abs().view(-1).argmax()))
            for i in picks:
                h = 1e-6
                with torch.no_grad():
                    old = float(flat[i])
                    flat[i] = old + h
                    lp = float(objective())
                    flat[i] = old - h
                    lm = float(objective())
                    flat[i] = old
                fd = (lp - lm) / (2 * h)
                an = float(g.view(-1)[i])
                scale = max(float(g.abs().max()), 1e-12)
                err = abs(fd - an) / scale
                worst = max(worst, err)
                if err > 1e-5:
                    ok = False
                    print(f"  FAIL {name}[{i}]: autograd {an:.8e} finite difference {fd:.8e}")
        print(f"[{label}] finite differences on every parameter: worst error / max|grad| "
              f"{worst:.2e}: {'ok' if worst <= 1e-5 else 'FAIL'}")
    # moe_forward (autograd through x) against torch_layer.run_layer (the layer golden).
    layer_cases = [
        {"router": "mixtral", "k": 2, "losses": {"balance": 0.01, "z": 0.001, "entropy": 0.01}},
        {"router": "topk", "k": 2, "capacity_factor": 1.0, "routing_groups": "sequence"},
        {"router": "deepseek_v3", "k": 2, "groups": 2, "topk_groups": 1},
        {"router": "expert_choice"}, {"router": "top_p"}, {"router": "soft"},
        {"router": "remoe", "lambda": 0.1}, {"router": "smear"}, {"router": "hash"},
        {"router": "base"},
    ]
    rng = np.random.default_rng(11)
    T, d, E, Fe, Fs = 24, 16, 4, 12, 8
    for case in layer_cases:
        layer = TL.parse_config(dict(case, activation="swiglu"))
        tin = {"x": rng.normal(size=(T, d)), "gate.weight": rng.normal(size=(E, d)) * 0.5,
               "experts.w1": rng.normal(size=(E, Fe, d)) * 0.3,
               "experts.w3": rng.normal(size=(E, Fe, d)) * 0.3,
               "experts.w2": rng.normal(size=(E, d, Fe)) * 0.3,
               "shared.w1": rng.normal(size=(Fs, d)) * 0.3,
               "shared.w3": rng.normal(size=(Fs, d)) * 0.3,
               "shared.w2": rng.normal(size=(d, Fs)) * 0.3,
               "gate.bias": rng.normal(size=(E,)) * 0.05,
               "token_ids": rng.integers(0, 50, size=T), "seq_lens": np.array([8, 8, 8]),
               "dy": rng.normal(size=(T, d))}
        ref, _ = TL.run_layer(layer, tin)
        P = {k[:]: torch.tensor(v, dtype=DTYPE).requires_grad_(k not in ("gate.bias",))
             for k, v in tin.items() if k not in ("x", "token_ids", "seq_lens", "dy")}
        x = torch.tensor(tin["x"], dtype=DTYPE, requires_grad=True)
        st = {"lambda": float(layer["params"].get("lambda", 0.0))}
        y, aux, _ = moe_forward(layer, x, P, "", E, [8, 8, 8], tin["token_ids"].tolist(), st)
        obj = (y * torch.tensor(tin["dy"], dtype=DTYPE)).sum() + aux
        names = ["gate.weight", "experts.w1", "experts.w3", "experts.w2", "shared.w1",
                 "shared.w3", "shared.w2"]
        grads = torch.autograd.grad(obj, [x] + [P[n] for n in names], allow_unused=True)
        errs = [float(np.abs(y.detach().numpy() - ref["y"]).max()),
                abs(float(aux) - float(ref["aux_loss"]))]
        for n, g in zip(["dx"] + ["d_" + n for n in names], grads):
            if n in ref:
                gv = np.zeros_like(ref[n]) if g is None else g.numpy()
                errs.append(float(np.abs(gv - ref[n]).max()))
        worst = max(errs)
        ok &= worst < 1e-12
        print(f"[layer {case['router']}] moe_forward vs torch_layer.run_layer: max error "
              f"{worst:.1e}: {'ok' if worst < 1e-12 else 'FAIL'}")
    # RoPE: a rotation (norm preserved), q.k depends only on the position difference.
    x = torch.randn(1, 1, 6, 8, dtype=DTYPE)
    r = rope(x, 10000.0)
    good = torch.allclose(r.norm(dim=-1), x.norm(dim=-1))
    qv, kv = torch.randn(8, dtype=DTYPE), torch.randn(8, dtype=DTYPE)
    rq = rope(qv.expand(1, 1, 6, 8), 10000.0)[0, 0]
    rk = rope(kv.expand(1, 1, 6, 8), 10000.0)[0, 0]
    good &= abs(float(rq[3] @ rk[1]) - float(rq[4] @ rk[2])) < 1e-12
    ok &= bool(good)
    print(f"[rope] rotation and relative-position checks: {'ok' if good else 'FAIL'}")
    print("self-test", "passed" if ok else "FAILED")
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--config")
    ap.add_argument("--weights")
    ap.add_argument("--tokens")
    ap.add_argument("--out")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--total-steps", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--eps", type=float, default=1e-8)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.self_test:
        return self_test()
    for req in ("config", "weights", "tokens", "out"):
        if getattr(args, req) is None:
            ap.error(f"--{req.replace('_', '-')} is required")
    try:
        with open(args.config) as f:
            cfg = parse_model_config(json.load(f))
        tensors, _ = safetensors_io.load(args.weights)
        P = load_params(cfg, tensors)
        inputs, targets = load_tokens(args.tokens)
        V = cfg["vocab_size"]
        if int(inputs.min()) < 0 or int(torch.cat([inputs, targets]).max()) >= V:
            raise ModelError(f"tokens must lie in [0, {V})")
        if inputs.shape[1] > cfg["seq_len"]:
            raise ModelError(f"T = {inputs.shape[1]} exceeds seq_len = {cfg['seq_len']}")
        opt = {"lr": args.lr, "warmup": args.warmup, "total_steps": args.total_steps,
               "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
               "min_lr_ratio": args.min_lr_ratio, "eps": args.eps}
        out0, arrays = train(cfg, P, inputs, targets, args.steps, opt)
    except (ModelError, TL.ConfigError) as exc:
        print(f"torch_model: error: {exc}", file=sys.stderr)
        return 2
    out = dict(out0)
    out.update(arrays)
    for name, t in P.items():
        out["final." + name] = t.detach().numpy().copy()
    safetensors_io.save(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
