#!/usr/bin/python3
"""Independent PyTorch implementation of switchyard's layer file interface (docs/layer-config.md).

    torch_layer.py --config layer.json --in in.safetensors --out out.safetensors [--dtype float64]

Computes one MoE layer in float64 (by default) the way a PyTorch user writes it: router logits,
discrete choices with torch.topk / torch.sort (inputs are assumed tie-free), combine weights that
carry autograd, a per-expert loop over the tokens routed to each expert with index_add back, the
shared expert, and the auxiliary losses. With `dy` in the inputs, torch.autograd gives the
gradients of sum(y * dy) + aux_loss.

Writes y, combine (T, E), aux_loss (scalar), tokens_per_expert (E, int64) and, with dy, dx,
d_gate.weight, d_experts.w1/w2[/w3], d_shared.w1/w2[/w3]. Floating outputs are written in the
computation dtype (float64 by default) so that a comparison sees the reference at full precision.

Routers: topk and its presets switch, gshard, mixtral, deepseek_v3, adamoe (evaluation mode:
training=true is accepted only when the configuration has no random element), expert_choice,
top_p, damoe (token_importance), soft, remoe, smear, smile, prototype, hash, base (evaluation: greedy argmax), sparsemixer
(training too: the layer's seeded draws are replayed, layer_noise), rectify, moec (training too),
maskmoe (token_ids and token_counts), stablemoe (token_ids, both stages, training too), vqmoe
(both modes; the VQ stop-gradients by .detach()), competesmoe (training too: the competition's
draw is replayed).
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


class ConfigError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

LAYER_KEYS = {"router", "activation", "swiglu_alpha", "swiglu_limit", "routing_groups", "losses",
              "training", "seed", "placement", "vocab_size"}
ACTIVATIONS = ("swiglu", "gelu", "swiglu_clamped")
# gpt-oss's clamped SwiGLU (transformers' GptOssExperts): alpha 1.702, limit 7.0.
SWIGLU_CLAMP_DEFAULTS = {"swiglu_alpha": 1.702, "swiglu_limit": 7.0}
LOSS_KEYS = {"balance", "balance_mode", "balance_top1_only", "z", "entropy"}

TOPK_DEFAULTS = {
    "k": 2, "score": "softmax", "normalize": True, "capacity_factor": 0.0,
    "drop_order": "position", "second_expert": "all", "groups": 1, "topk_groups": None,
    "route_scale": 1.0, "null_experts": 0, "jitter": 0.0, "bias_update_rate": 0.0,
    "locality": "node", "local_bonus": 0.0, "locality_loss": 0.0, "locality_smoothing": 0.1,
    "adaptive_threshold": 0.1, "selection": "score", "sinkhorn_tolerance": 1e-4,
    "eval_capacity_factor": -1.0, "min_capacity": 0, "broadcast_threshold": 0.0,
    "logits": "linear", "cosine_dim": 16, "cosine_temperature": 0.07,
    "cosine_min_temperature": 0.01, "cosine_normalize_input": True,
    "hyper_hidden": 256, "hyper_embedding_dim": 0, "recurrent_dim": 256, "global_dim": 16,
    "sparsity_loss": 0.0, "importance_loss": 0.0, "aoe_rank": 16,
    "aoe_down_std": 0.0,
}
NO_LOSSES = {"balance": 0.0, "balance_mode": "micro_batch", "balance_top1_only": False,
             "z": 0.0, "entropy": 0.0}

# name -> (family, parameter defaults, loss defaults used when the config has no `losses`)
ROUTERS = {
    "topk": ("topk", {}, {}),
    "switch": ("topk", {"k": 1, "normalize": False, "capacity_factor": 1.25, "jitter": 0.01},
               {"balance": 0.01}),
    "gshard": ("topk", {"k": 2, "capacity_factor": 2.0, "second_expert": "random"},
               {"balance": 0.01, "balance_top1_only": True}),
    "mixtral": ("topk", {"k": 2, "normalize": True}, {"balance": 0.001}),
    "deepseek_v3": ("topk", {"score": "sigmoid", "k": 8, "groups": 8, "topk_groups": 4,
                             "route_scale": 2.5, "bias_update_rate": 0.001},
                    {"balance": 0.0001, "balance_mode": "sequence"}),
    "adamoe": ("topk", {"k": 4, "null_experts": 16}, {"balance": 1e-4}),
    "locmoe": ("topk", {"k": 1, "normalize": False, "locality": "node", "locality_loss": 0.01},
               {"balance": 0.01, "balance_top1_only": True}),
    "sinkhorn": ("topk", {"k": 1, "score": "sigmoid", "normalize": False,
                          "selection": "sinkhorn"}, {}),
    "adaptive_gating": ("topk", {"k": 2, "second_expert": "adaptive"}, {"balance": 0.01}),
    "gw_moe": ("topk", {"k": 2, "broadcast_threshold": 0.9}, {"balance": 0.01}),
    "xmoe": ("topk", {"k": 1, "normalize": False, "logits": "cosine"}, {"balance": 0.01}),
    "hyperrouter": ("topk", {"k": 2, "normalize": True, "logits": "hyper"}, {}),
    "yuan": ("topk", {"k": 2, "normalize": True, "logits": "attention"}, {"balance": 0.01}),
    "rmoe": ("topk", {"k": 2, "normalize": True, "logits": "recurrent"}, {"balance": 0.01}),
    "speechmoe2": ("topk", {"k": 1, "normalize": False, "logits": "global",
                            "sparsity_loss": 0.1, "importance_loss": 0.1}, {}),
    "aoe": ("topk", {"k": 2, "normalize": True, "logits": "aoe"}, {"balance": 0.01}),
    "expert_choice": ("expert_choice", {"capacity_factor": 2.0}, {}),
    "top_p": ("top_p", {"threshold": 0.4}, {}),
    "damoe": ("damoe", {"k": 2.0, "k_min": 1, "k_max": 4, "budget": "none"}, {"balance": 0.01}),
    "soft": ("soft", {}, {}),
    "remoe": ("remoe", {"k": 1, "lambda": 1e-8, "lambda_rate": 1.2, "gate_lr_scale": 1.0,
                        "gate_init_std": 0.02, "bias_update_rate": 0.0}, {}),
    "smear": ("smear", {}, {}),
    "smile": ("smile", {"nodes": 2, "capacity_factor": 0.0, "node_balance": 0.01,
                        "expert_balance": 0.01}, {}),
    "prototype": ("prototype", {"prototypes": 2, "capacity_factor": 0.0,
                                "prototype_balance": 0.01}, {}),
    "hash": ("hash", {"table": "random", "hash_seed": 0}, {}),
    "maskmoe": ("maskmoe", {"k": 1, "visible_experts": 8, "frequent_fraction": 0.4,
                            "mask_seed": 0}, {}),
    "thor": ("thor", {"consistency": 1.0, "train_draw": "group"}, {}),
    "stablemoe": ("stablemoe", {"stage1_fraction": 0.1, "stage1_steps": -1, "stage": 1,
                                "balance_loss": 0.3, "distill_loss": 0.3, "distill_dim": 50,
                                "capacity_factor": 2.0}, {}),
    "competesmoe": ("competesmoe", {"k": 2, "competition": 0.05, "warmup_fraction": 0.05,
                                    "warmup_steps": -1, "router_loss": 0.01,
                                    "diversity_loss": 0.01}, {"balance": 0.01, "z": 0.001}),
    "vqmoe": ("vqmoe", {"mode": "pretrain", "k": 1, "commitment": 0.25, "vq_loss": 1.0,
                        "balance_loss": 0.01}, {}),
    "base": ("base", {}, {}),
    "duollm": ("duollm", {"small_width": 0.25, "skip": False, "random_routes": False,
                          "p_big": 0.5, "p_skip": 0.0, "compute_target": 0.5,
                          "compute_loss": 0.0}, {}),
    "flextron": ("flextron", {"k": 1, "normalize": False, "widths": [0.25, 0.5, 0.75, 1.0],
                              "compute_target": 0.5, "compute_loss": 0.1,
                              "balance_loss": 0.01}, {}),
    "sparsemixer": ("sparsemixer", {"jitter_eps": 0.01, "jitter": 0.0},
                    {"balance": 0.001, "balance_mode": "global_batch"}),
    "moec": ("moec", {"cluster_size": 8, "cluster_dropout": 0.5, "cluster_loss": 1.0,
                      "capacity_factor": 0.0}, {"balance": 0.01}),
    "rectify": ("rectify", {"k": 2, "capacity_factor": 1.0, "normalize": None,
                            "intra_rank": True, "fill_in": True},
                {"balance": 0.01, "balance_top1_only": True}),
}
NO_LOSS_FAMILIES = {"hash", "thor", "base", "smear", "smile", "prototype", "stablemoe", "vqmoe",
                    "flextron"}
# Routers whose logits read token ids through tensors of one row per id: layer.json's vocab_size.
VOCAB_FAMILIES = {"stablemoe"}


def parse_placement(pl):
    """layer.json's placement: ranks N, expert_parallel P (divides N), ranks_per_node G."""
    if pl is None:
        return None
    N = int(pl.get("ranks", 1))
    P = int(pl.get("expert_parallel", N))
    G = int(pl.get("ranks_per_node", P))
    if N % P or P % G:
        raise ConfigError(f"layer.json: bad placement {pl!r}")
    return {"ranks": N, "expert_parallel": P, "ranks_per_node": G}


def locality_domains(placement, p, seq_lens, E):
    """LocMoE: (token domain (T), expert domain (E), domain count) by node or by rank."""
    if placement is None:
        raise ConfigError("layer.json: a locality-aware router needs a placement")
    N, P, G = placement["ranks"], placement["expert_parallel"], placement["ranks_per_node"]
    per = G if p["locality"] == "node" else 1
    S = len(seq_lens)
    tok = []
    for b, n in enumerate(seq_lens):
        tok += [((b * N // S) % P) // per] * n
    exp = [(e // (E // P)) // per for e in range(E)]
    return torch.tensor(tok), torch.tensor(exp), P // per


def locality_loss(z, E, p, tok, exp, domains):
    """μ KL(D_c || D_l) over (domain, expert): D_c from softmax(z[:, :E]) summed per domain / T,
    D_l = T_v/T ((1-η) [local] / |local| + η/E)."""
    T = z.shape[0]
    prob = torch.softmax(z[:, :E], dim=-1)
    dc = torch.zeros(domains, E, dtype=z.dtype).index_add(0, tok, prob) / T
    tv = torch.zeros(domains, dtype=z.dtype).index_add(0, tok, torch.ones(T, dtype=z.dtype)) / T
    local = (exp[None, :] == torch.arange(domains)[:, None]).to(z.dtype)          # (D, E)
    eta = float(p["locality_smoothing"])
    dl = tv[:, None] * ((1 - eta) * local / local.sum(1, keepdim=True) + eta / E)
    present = tv > 0
    return float(p["locality_loss"]) * (dc[present] * torch.log(dc[present] / dl[present])).sum()


def parse_config(cfg):
    if not isinstance(cfg, dict):
        raise ConfigError("layer.json: top level must be an object")
    name = cfg.get("router", "mixtral")
    if name not in ROUTERS:
        raise ConfigError(f"layer.json: unknown router {name!r}")
    family, preset, preset_losses = ROUTERS[name]
    params = dict(TOPK_DEFAULTS) if family == "topk" else {}
    params.update(preset)
    for key, value in cfg.items():
        if key in LAYER_KEYS:
            continue
        if key not in params:
            raise ConfigError(f"layer.json: unknown parameter {key!r} for router {name!r}")
        params[key] = value
    if "losses" in cfg:
        losses = dict(NO_LOSSES)
        for key, value in cfg["losses"].items():
            if key not in LOSS_KEYS:
                raise ConfigError(f"layer.json: unknown loss key {key!r}")
            losses[key] = value
    else:
        losses = dict(NO_LOSSES)
        losses.update(preset_losses)
    if losses["balance_mode"] not in ("micro_batch", "sequence", "global_batch"):
        raise ConfigError(f"layer.json: bad balance_mode {losses['balance_mode']!r}")
    if family in NO_LOSS_FAMILIES and (losses["balance"] or losses["z"] or losses["entropy"]):
        raise ConfigError(f"layer.json: losses are not allowed for router {name!r}")
    layer = {
        "router": name, "family": family, "params": params, "losses": losses,
        "activation": cfg.get("activation", "swiglu"),
        "routing_groups": cfg.get("routing_groups", "batch"),
        "training": bool(cfg.get("training", False)), "seed": int(cfg.get("seed", 0)),
        "placement": parse_placement(cfg.get("placement")),
        "vocab_size": cfg.get("vocab_size"),
    }
    if (layer["vocab_size"] is not None) != (family in VOCAB_FAMILIES):
        raise ConfigError(f"layer.json: vocab_size is required for, and only for, routers "
                          f"{sorted(VOCAB_FAMILIES)} (router {name!r})")
    if family == "vqmoe" and params["mode"] not in ("pretrain", "finetune"):
        raise ConfigError(f"layer.json: mode = {params['mode']!r} must be pretrain or finetune")
    if family == "stablemoe" and int(params["stage"]) not in (1, 2):
        raise ConfigError(f"layer.json: stage = {params['stage']!r} must be 1 or 2")
    if layer["activation"] not in ACTIVATIONS:
        raise ConfigError(f"layer.json: bad activation {layer['activation']!r}")
    for key, default in SWIGLU_CLAMP_DEFAULTS.items():
        if key in cfg and layer["activation"] != "swiglu_clamped":
            raise ConfigError(f"layer.json: {key} is only for activation swiglu_clamped")
        value = cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"layer.json: {key} = {value!r} must be a positive number")
        layer[key] = float(value)
    if layer["routing_groups"] not in ("batch", "sequence"):
        raise ConfigError(f"layer.json: bad routing_groups {layer['routing_groups']!r}")
    if family == "topk":
        p = params
        if p["topk_groups"] is None:
            p["topk_groups"] = p["groups"]
        if p["eval_capacity_factor"] < 0:
            p["eval_capacity_factor"] = p["capacity_factor"]
        if p["score"] not in ("softmax", "sigmoid", "sqrtsoftplus"):
            raise ConfigError(f"layer.json: bad score {p['score']!r}")
        if p["drop_order"] not in ("position", "batch_priority"):
            raise ConfigError(f"layer.json: bad drop_order {p['drop_order']!r}")
        if p["normalize"] and p["k"] == 1:
            raise ConfigError("layer.json: normalize=true with k=1 gives the router no gradient")
        if (p["sparsity_loss"] or p["importance_loss"]) and p["score"] != "softmax":
            raise ConfigError("layer.json: sparsity_loss and importance_loss need score softmax")
        if layer["training"] and (p["jitter"] > 0 or p["second_expert"] == "random"):
            raise ConfigError("torch_layer: training-time random draws (jitter, random second "
                              "expert) are not replayed; use training=false")
    if family == "base" and layer["training"]:
        raise ConfigError("torch_layer: BASE's training auction is not implemented")
    return layer


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def has_up(activation):
    """The activation has an up projection w3."""
    return activation in ("swiglu", "swiglu_clamped")


def ffn(x, w1, w3, w2, layer, g=None):
    """x (n, d); w1 (F, d), or (F, r) reading g (n, r) instead of x (Autonomy-of-Experts: the
    expert's own low-rank activation); w3 (F, d); w2 (d, F); layer: parse_config's dict
    (activation, swiglu_alpha, swiglu_limit)."""
    activation = layer["activation"]
    g = x if g is None else g
    if activation == "swiglu_clamped":
        # As transformers' GptOssExperts.forward (without its biases): the gate clamped from
        # above, the up projection on both sides.
        alpha, limit = layer["swiglu_alpha"], layer["swiglu_limit"]
        gate = (g @ w1.t()).clamp(min=None, max=limit)
        up = (x @ w3.t()).clamp(min=-limit, max=limit)
        h = (up + 1) * (gate * torch.sigmoid(gate * alpha))
    elif activation == "swiglu":
        h = F.silu(g @ w1.t()) * (x @ w3.t())
    else:
        h = F.gelu(g @ w1.t())  # exact erf form (torch's default)
    return h @ w2.t()


def group_ranges(mode, seq_lens, T):
    if mode == "batch":
        return [(0, T)]
    out, start = [], 0
    for n in seq_lens:
        out.append((start, start + int(n)))
        start += int(n)
    return out


def seq_ranges(seq_lens, T):
    return group_ranges("sequence", seq_lens, T)


def topk_indices(values, k):
    """Indices of the k largest entries of each row, best first (inputs are tie-free)."""
    return torch.topk(values, k, dim=-1, largest=True, sorted=True).indices


class Routing:
    """What a router hands to the layer.

    weights  (T, E) combine weights with autograd, 0 where not routed or dropped
    kept     (T, E) bool, the (token, expert) pairs that run an expert
    choices  (T, R) float 0/1, the router's choices before any drop (balance-loss counts)
    bal_prob (T, R) the balance / entropy probability (softmax, or s / sum s for sigmoid)
    own_loss scalar tensor or None (ReMoE)
    assigned number of (token, true expert) pairs chosen before any drop
    """

    def __init__(self, weights, kept, choices=None, bal_prob=None, own_loss=None, assigned=None):
        self.weights, self.kept, self.choices = weights, kept, choices
        self.bal_prob, self.own_loss = bal_prob, own_loss
        self.assigned = int(kept.sum()) if assigned is None else int(assigned)


# ----------------------------------------------------------------------------------------------
# Routers
# ----------------------------------------------------------------------------------------------

def sinkhorn_balance(z, E, tol):
    """Megatron-Core's Sinkhorn balancing of one group's exp(logits), each token's row divided by
    its largest entry first (the row scalings absorb it): (n, E), float64, no gradient."""
    with torch.no_grad():
        c = torch.exp(z[:, :E].double() - z[:, :E].double().max(-1, keepdim=True).values)
        n = c.shape[0]
        d1 = torch.ones(E, dtype=torch.float64)
        for _ in range(10000):
            d0 = 1.0 / (n * ((c * d1).sum(-1) + 1e-8))
            nxt = 1.0 / (E * ((c * d0[:, None]).sum(0) + 1e-8))
            change = (nxt - d1).abs().mean()
            d1 = nxt
            if change <= tol:
                break
        return d0[:, None] * c * d1


def route_topk(z, bias, E, p, groups, top1_only, local=None, training=False):
    T, R = z.shape
    k, G, m = int(p["k"]), int(p["groups"]), int(p["null_experts"])
    if R != E + m:
        raise ConfigError(f"gate.weight has {R} rows, expected E + null_experts = {E + m}")
    if p["score"] == "softmax":
        s = torch.softmax(z, dim=-1)
    elif p["score"] == "sigmoid":
        s = torch.sigmoid(z)
    else:                                              # DeepSeek-V4: sqrt(softplus(z))
        s = torch.sqrt(torch.logaddexp(z, torch.zeros_like(z)))
    sel = s.detach().clone()
    if bias is not None:
        sel[:, :E] = sel[:, :E] + bias
    if float(p["local_bonus"]) > 0:                   # LocMoE: the token's own node's experts
        tok, exp, _ = local
        sel[:, :E] = sel[:, :E] + float(p["local_bonus"]) * (tok[:, None] == exp[None, :])
    if p["selection"] == "sinkhorn" and training:      # selection by the balanced scores
        sel = torch.zeros(T, R, dtype=torch.float64)
        for (a, b) in groups:  # a one-token group balances against nothing: its scores
            if b - a > 1:
                sel[a:b, :E] = sinkhorn_balance(z[a:b], E, float(p["sinkhorn_tolerance"]))
            else:
                sel[a:b] = s.detach()[a:b].double()
    if G > 1:
        if E % G != 0:
            raise ConfigError(f"groups={G} does not divide E={E}")
        gsize = E // G
        kg = int(p["topk_groups"])
        grouped = sel[:, :E].reshape(T, G, gsize)
        gscore = torch.topk(grouped, min(2, gsize), dim=-1).values.sum(-1)  # (T, G)
        keep_g = torch.zeros(T, G, dtype=torch.bool)
        keep_g.scatter_(1, topk_indices(gscore, kg), True)
        excluded = (~keep_g).unsqueeze(-1).expand(T, G, gsize).reshape(T, E)
        sel[:, :E] = sel[:, :E].masked_fill(excluded, float("-inf"))
        if k > kg * gsize + m:
            raise ConfigError(f"k={k} exceeds the experts left by group selection")
    # GW-MoE (training): tokens whose normalised entropy reaches the threshold take every expert
    kk, within = k, torch.ones(T, k, dtype=torch.bool)
    if float(p["broadcast_threshold"]) > 0 and training and R > 1:
        sd = s.detach()
        q = sd if p["score"] == "softmax" else sd / sd.sum(-1, keepdim=True)
        ent = -torch.where(q > 0, q * torch.log(torch.where(q > 0, q, torch.ones_like(q))),
                           torch.zeros_like(q)).sum(-1) / math.log(R)
        uncertain = ent >= float(p["broadcast_threshold"])
        kk = max(k, E)
        within = torch.arange(kk)[None, :] < torch.where(uncertain, kk, k)[:, None]
    idx = topk_indices(sel, kk)                        # (T, kk), rank order
    g = s.gather(1, idx)                               # (T, kk), unbiased scores, autograd
    true = (idx < E) & within
    if p["normalize"]:
        denom = (g * true).sum(-1, keepdim=True)
        # a token whose choices are all null experts has no weights (and no gradient) at all
        g = g / torch.where(denom > 0, denom, torch.ones_like(denom))
    g = g * float(p["route_scale"])
    g = g * true                                       # chosen null experts are removed

    keep = true.clone()
    if p["second_expert"] == "adaptive" and k >= 2:   # confident tokens keep their first only
        sd = s.detach()
        confident = true[:, 0] & true[:, 1] & (
            sd.gather(1, idx[:, :1])[:, 0] - sd.gather(1, idx[:, 1:2])[:, 0]
            >= float(p["adaptive_threshold"]))
        keep[:, 1:] &= ~confident[:, None]
    cf = float(p["capacity_factor"] if training else p["eval_capacity_factor"])
    if cf > 0:
        gd = g.detach()
        for (a, b) in groups:
            Tg = b - a
            C = max(math.ceil(Tg * k * cf / E), int(p["min_capacity"]))
            if p["drop_order"] == "batch_priority":
                C = int(math.ceil(C / 4) * 4)
                # descending weight of the first choice, ties -> lower token (stable sort)
                order = torch.sort(-gd[a:b, 0], stable=True).indices + a
            else:
                order = torch.arange(a, b)
            used = [0] * E
            for r in range(kk):                        # rank-major
                for t in order.tolist():
                    e = int(idx[t, r])
                    if e >= E or not keep[t, r]:
                        continue
                    if used[e] < C:
                        used[e] += 1
                    else:
                        keep[t, r] = False
    w_full = torch.zeros(T, R, dtype=z.dtype).scatter(1, idx, g * keep)
    kept = torch.zeros(T, R, dtype=torch.bool).scatter(1, idx, keep)[:, :E]
    if top1_only:
        choices = torch.zeros(T, R, dtype=z.dtype).scatter(1, idx[:, :1], 1.0)
    else:
        choices = torch.zeros(T, R, dtype=z.dtype).scatter(1, idx, within.to(z.dtype))
    if p["score"] == "softmax":
        bal = s
    else:
        bal = s / s.sum(-1, keepdim=True)
    return Routing(w_full[:, :E], kept, choices, bal, assigned=int(true.sum()))


def route_expert_choice(z, E, p, groups):
    T, R = z.shape
    s = torch.softmax(z, dim=-1)
    kept = torch.zeros(T, E, dtype=torch.bool)
    c = float(p["capacity_factor"])
    for (a, b) in groups:
        Tg = b - a
        C = min(Tg, math.ceil(Tg * c / E))
        top = torch.topk(s.detach()[a:b].t(), C, dim=-1).indices + a  # (E, C)
        for e in range(E):
            kept[top[e], e] = True
    w = s * kept
    return Routing(w, kept, kept.to(z.dtype), s)


def route_top_p(z, E, p):
    s = torch.softmax(z, dim=-1)
    sd = s.detach()
    vals, order = torch.sort(sd, dim=-1, descending=True)
    before = torch.cumsum(vals, dim=-1) - vals       # running sum before each sorted entry
    keep_sorted = before <= float(p["threshold"])    # up to and including the first that exceeds
    kept = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    return Routing(s * kept, kept, kept.to(z.dtype), s)


def damoe_experts(importance, seq_lens, E, p):
    """DA-MoE's K_t per token: round(k s_t / mean(s over the sequence up to t)), clamped to
    [k_min, k_max] (both at most E); ratio 1 where that mean is 0; budget "prefix" caps it. Python floats (float64), the
    same operations in the same order as the C++ (so that dyadic importances agree exactly)."""
    lo, hi = min(int(p["k_min"]), E), min(int(p["k_max"]), E)
    K = [max(lo, min(hi, min(int(math.floor(w + 0.5)), E)))
         for w in damoe_wanted(importance, seq_lens, p)]
    if p["budget"] == "prefix":  # no n-token prefix of a sequence takes more than floor(k n)
        a = 0
        for n in seq_lens:
            spent = 0
            for i in range(n):
                K[a + i] = min(K[a + i], int(math.floor(float(p["k"]) * float(i + 1))) - spent)
                spent += K[a + i]
            a += n
    return K


def damoe_wanted(importance, seq_lens, p):
    """k s_t / mean(s over the sequence up to t) per token, before rounding (ratio 1 at mean 0)."""
    k = float(p["k"])
    s = [float(v) for v in importance]
    out, a = [], 0
    for n in seq_lens:
        total = 0.0
        for i in range(n):
            total += s[a + i]
            mean = total / float(i + 1)
            out.append(k * (s[a + i] / mean if mean > 0.0 else 1.0))
        a += n
    return out


def route_damoe(z, E, p, importance, seq_lens):
    """The K_t largest softmax scores of each token, raw weights; K_t from the importance, which
    carries no gradient (damoe_experts)."""
    s = torch.softmax(z, dim=-1)
    K = damoe_experts(importance, seq_lens, E, p)
    order = torch.argsort(-s.detach(), dim=-1, stable=True)
    kept = torch.zeros(z.shape, dtype=torch.bool)
    for t, k in enumerate(K):
        kept[t, order[t, :k]] = True
    return Routing(s * kept, kept, kept.to(z.dtype), s)


def route_soft(z, E):
    s = torch.softmax(z, dim=-1)
    kept = torch.ones(z.shape, dtype=torch.bool)
    return Routing(s, kept, kept.to(z.dtype), s)


def keep_in_position_order(e, groups, E, cf):
    """Top-1 capacity: per group, each expert keeps its first C = ceil(n cf / E) tokens in
    position order (cf 0: all). e (T,) expert per token; returns keep (T,) bool."""
    keep = torch.ones(e.shape[0], dtype=torch.bool)
    if cf > 0:
        for (a, b) in groups:
            C = math.ceil((b - a) * cf / E)
            used = [0] * E
            for t in range(a, b):
                if used[int(e[t])] < C:
                    used[int(e[t])] += 1
                else:
                    keep[t] = False
    return keep


def route_smile(z, E, p, groups):
    """SMILE (reconstruction, docs/routers/smile.md): node n = argmax softmax(z[:, :N]), in-node
    expert j = argmax softmax(z[:, N:]), expert n M + j, weight q_n r_j; two balance losses."""
    T, R = z.shape
    N = int(p["nodes"])
    M = E // N
    if R != N + M:
        raise ConfigError(f"gate.weight has {R} rows, expected nodes + E/nodes = {N + M}")
    q = torch.softmax(z[:, :N], dim=-1)
    r = torch.softmax(z[:, N:], dim=-1)
    n = topk_indices(q.detach(), 1)[:, 0]
    j = topk_indices(r.detach(), 1)[:, 0]
    e = n * M + j
    w = q.gather(1, n[:, None])[:, 0] * r.gather(1, j[:, None])[:, 0]
    keep = keep_in_position_order(e, groups, E, float(p["capacity_factor"]))
    W = torch.zeros(T, E, dtype=z.dtype).index_put((torch.arange(T), e), w * keep)
    kept = torch.zeros(T, E, dtype=torch.bool).index_put((torch.arange(T), e), keep)
    f_node = torch.zeros(N, dtype=z.dtype).index_add(0, n, torch.ones(T, dtype=z.dtype)) / T
    f_in = torch.zeros(M, dtype=z.dtype).index_add(0, j, torch.ones(T, dtype=z.dtype)) / T
    loss = (float(p["node_balance"]) * N * (f_node * q.mean(0)).sum()
            + float(p["expert_balance"]) * M * (f_in * r.mean(0)).sum())
    return Routing(W, kept, own_loss=loss, assigned=T)


def route_prototype(z, E, p, groups):
    """M6-T expert prototyping: the experts reshaped (K, E/K); per token and prototype, a softmax
    over the prototype's logits and its argmax; weight = that probability. The balance loss is the
    mean over prototypes of (E/K) * sum(f * P)."""
    T, R = z.shape
    K = int(p["prototypes"])
    if R != E:
        raise ConfigError(f"gate.weight has {R} rows, expected E={E}")
    if E % K:
        raise ConfigError(f"prototypes={K} does not divide E={E}")
    M = E // K
    s = torch.softmax(z.reshape(T, K, M), dim=-1)                  # (T, K, M)
    j = s.detach().argmax(-1)                                       # (T, K); inputs are tie-free
    e = j + torch.arange(K)[None, :] * M                           # (T, K) expert ids
    w = s.gather(2, j[:, :, None])[:, :, 0]                        # (T, K)
    keep = torch.ones(T, K, dtype=torch.bool)
    cf = float(p["capacity_factor"])
    if cf > 0:
        for (a, b) in groups:
            C = math.ceil((b - a) * K * cf / E)
            used = [0] * E
            for t in range(a, b):
                for q in range(K):
                    ex = int(e[t, q])
                    if used[ex] < C:
                        used[ex] += 1
                    else:
                        keep[t, q] = False
    rows = torch.arange(T)[:, None].expand(T, K)
    W = torch.zeros(T, E, dtype=z.dtype).index_put((rows, e), w * keep)
    kept = torch.zeros(T, E, dtype=torch.bool).index_put((rows, e), keep)
    chosen = torch.zeros(T, E, dtype=z.dtype).index_put((rows, e), torch.ones(T, K, dtype=z.dtype))
    f = chosen.sum(0).reshape(K, M) / T                             # no gradient
    P = s.mean(0)                                                   # (K, M)
    loss = float(p["prototype_balance"]) * (M * (f * P).sum(-1)).mean()
    return Routing(W, kept, own_loss=loss, assigned=T * K)


def route_rectify(z, E, p, groups, top1_only, placement, seq_lens):
    """Rectify-Router: softmax top-k with capacity C = ceil(n k cf / E) per group (rank-major,
    position order); fill_in: an expert's free slots to the tokens whose (k+1)-th choice it is,
    best score first; intra_rank: a token short of k experts by D goes to its rank's best expert
    not serving it, counted D times. Weights count * s, renormalised per token (normalize)."""
    T, R = z.shape
    if R != E:
        raise ConfigError(f"gate.weight has {R} rows, expected E={E}")
    k, cf = int(p["k"]), float(p["capacity_factor"])
    normalize = k > 1 if p["normalize"] is None else bool(p["normalize"])
    if normalize and k == 1:
        raise ConfigError("layer.json: normalize=true with k=1 gives the router no gradient")
    if not cf > 0 or k > E:
        raise ConfigError(f"rectify: needs capacity_factor > 0 and k <= E, got {cf}, {k}")
    fill = bool(p["fill_in"]) and k < E
    s = torch.softmax(z, dim=-1)
    sd = s.detach()
    idx = topk_indices(sd, k + 1 if fill else k)
    count = torch.zeros(T, E, dtype=z.dtype)              # how often e serves t, no gradient
    home, per_rank = [0] * T, E
    if p["intra_rank"]:
        if placement is None:
            raise ConfigError("layer.json: rectify's intra_rank needs a placement")
        N, P, S = placement["ranks"], placement["expert_parallel"], len(seq_lens)
        home = sum(([(q * N // S) % P] * n for q, n in enumerate(seq_lens)), [])
        per_rank = E // P
    dropped = filled = rectified = 0
    for (a, b) in groups:
        C = math.ceil((b - a) * k * cf / E)
        load = [0] * E
        for r in range(k):
            for t in range(a, b):
                e = int(idx[t, r])
                if load[e] < C:
                    load[e] += 1
                    count[t, e] = 1.0
                else:
                    dropped += 1
        if fill:
            for e in range(E):
                want = sorted((t for t in range(a, b) if int(idx[t, k]) == e),
                              key=lambda t: (-float(sd[t, e]), t))
                for t in want[:max(C - load[e], 0)]:
                    count[t, e] = 1.0
                    filled += 1
        if p["intra_rank"]:
            for t in range(a, b):
                short = k - int(count[t].sum())
                mine = [e for e in range(home[t] * per_rank, (home[t] + 1) * per_rank)
                        if count[t, e] == 0]
                if short > 0 and mine:
                    count[t, max(mine, key=lambda e: (float(sd[t, e]), -e))] = float(short)
                    rectified += 1
    W = count * s
    if normalize:
        total = W.sum(-1, keepdim=True)
        W = W / torch.where(total > 0, total, torch.ones_like(total))
    kept = count > 0
    choices = torch.zeros(T, E, dtype=z.dtype).scatter(1, idx[:, :1 if top1_only else k], 1.0)
    routing = Routing(W, kept, choices, s, assigned=int(kept.sum()) + dropped)
    routing.extra_stats = {"rectified": {"fill_in": filled, "intra_rank": rectified}}
    if not fill:
        del routing.extra_stats["rectified"]["fill_in"]
    if not p["intra_rank"]:
        del routing.extra_stats["rectified"]["intra_rank"]
    return routing


# SparseMixer-v2 (GRIN) replays the layer's random draws: make_router_noise's std::mt19937_64 and
# its float conversion, written out here.
class MT19937_64:
    """std::mt19937_64 seeded with one integer (the standard's seed(value))."""
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = [seed & self.MASK]
        for i in range(1, 312):
            prev = self.state[-1]
            self.state.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.index = 312

    def _twist(self):
        s = self.state
        for i in range(312):
            y = (s[i] & 0xFFFFFFFF80000000) | (s[(i + 1) % 312] & 0x7FFFFFFF)
            s[i] = s[(i + 156) % 312] ^ (y >> 1) ^ (0xB5026F5AA96619E9 if y & 1 else 0)
        self.index = 0

    def __call__(self):
        if self.index >= 312:
            self._twist()
        y = self.state[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def layer_noise(seed, T, d, per_token, jitter, call_index=0):
    """The draws of the layer's call `call_index` (docs/layer-config.md `seed`): (T, per_token)
    uniforms, then (T, d) jitter multipliers when jitter > 0 (else None); float32 values held in
    float64 arrays."""
    rng = MT19937_64((int(seed) * 0x9E3779B97F4A7C15 + call_index) & MT19937_64.MASK)
    u = np.array([np.float32((rng() >> 11) * 2.0 ** -53) for _ in range(T * per_token)],
                 dtype=np.float64).reshape(T, per_token)
    jit = None
    if jitter > 0:
        jit = np.array([np.float32(1.0 - jitter + 2.0 * jitter * float(np.float32(
            (rng() >> 11) * 2.0 ** -53))) for _ in range(T * d)], dtype=np.float64).reshape(T, d)
    return u, jit


def sparsemixer_noise(layer, T, d, E):
    """(uniforms (T, 2E + 2) or None, jitter (T, d) or None) of a sparsemixer layer's call."""
    if not layer["training"]:
        return None, None
    return layer_noise(layer["seed"], T, d, 2 * E + 2, float(layer["params"]["jitter"]))


class HeunMultiplier(torch.autograd.Function):
    """GRIN's estimator for one slot: forward pi_D * omega; backward g * pi_D * (onehot_D - pi)
    into the logits, omega left out."""

    @staticmethod
    def forward(ctx, z, pi, D, omega):
        pD = pi.gather(1, D[:, None])[:, 0]
        ctx.save_for_backward(pi, D, pD)
        return pD * omega

    @staticmethod
    def backward(ctx, g):
        pi, D, pD = ctx.saved_tensors
        gz = -pi * (g * pD)[:, None]
        gz[torch.arange(pi.shape[0]), D] += g * pD
        return gz, None, None, None


def route_sparsemixer(z, E, p, training, u, top1_only):
    """SparseMixer-v2: per slot, the logits within 2*jitter_eps (relative) of the slot's largest,
    their softmax pi, D = argmax (eval) or Gumbel-max with -log(-log U) (training); weight pi_D,
    times omega = 1 if D is the argmax or the coin > 0.75, else 1/3, in training (HeunMultiplier).
    Slot 2 repeats without slot 1's expert. Balance probability softmax(z) over all experts."""
    T, R = z.shape
    if R != E:
        raise ConfigError(f"gate.weight has {R} rows, expected E={E}")
    if E < 2:
        raise ConfigError("sparsemixer needs E >= 2")
    eps = float(p["jitter_eps"])
    rows = torch.arange(T)
    zd = z.detach()
    gone = torch.zeros(T, E, dtype=torch.bool)
    W = torch.zeros(T, E, dtype=z.dtype)
    choices = torch.zeros(T, E, dtype=z.dtype)
    for slot in range(2):
        rest = zd.masked_fill(gone, float("-inf"))
        zmax, top = rest.max(dim=-1)                                   # inputs are tie-free
        ratio = (zmax[:, None] - zd) / torch.maximum(zd.abs(), zmax[:, None])
        out = gone | (ratio > 2 * eps)                                 # 0/0 stays in
        pi = torch.softmax(z.masked_fill(out, float("-inf")), dim=-1)  # autograd
        if training:
            us = torch.tensor(u[:, slot * E:(slot + 1) * E], dtype=z.dtype)
            noisy = zd.masked_fill(out, float("-inf")) - torch.log(-torch.log(us))
            D = noisy.argmax(dim=-1)
            coin = torch.tensor(u[:, 2 * E + slot], dtype=z.dtype)
            omega = torch.where((D == top) | (coin > 0.75), torch.ones(T, dtype=z.dtype),
                                torch.full((T,), 1.0 / 3.0, dtype=z.dtype))
            w = HeunMultiplier.apply(z, pi.detach(), D, omega)  # z's gradient: its backward
        else:
            D = top
            w = pi.gather(1, D[:, None])[:, 0]
        onehot = F.one_hot(D, E).to(z.dtype)
        W = W + onehot * w[:, None]
        if slot == 0 or not top1_only:
            choices = choices + onehot
        gone = gone | onehot.bool()
    kept = W.detach() != 0
    return Routing(W, kept, choices, torch.softmax(z, dim=-1), assigned=2 * T)


def moec_noise(layer, T, d):
    """(T, cluster_size) uniforms of a moec layer's call in training, else None."""
    if not layer["training"]:
        return None
    return layer_noise(layer["seed"], T, d, int(layer["params"]["cluster_size"]), 0.0)[0]


def thor_experts(layer, T, d, E, groups, call_index=0):
    """THOR's expert per token: floor(u E) of the layer's draws (of its call `call_index`); in
    training one draw per routing group (its first token's) unless train_draw is "token"; at
    inference the fixed stream (call index 2^64 - 1) and every token its own draw."""
    training = layer["training"]
    u = layer_noise(layer["seed"], T, d, 1, 0.0, call_index if training else (1 << 64) - 1)[0][:, 0]
    per_group = training and layer["params"]["train_draw"] == "group"
    experts = []
    for (a, b) in groups:
        for t in range(a, b):
            experts.append(min(int(u[a if per_group else t] * E), E - 1))
    return experts


def route_moec(z, E, p, groups, training, u):
    """MoEC: softmax over E, the clusters (E/M, M) of consecutive experts; top-1 by argmax. In
    training each member of the argmax's cluster is dropped when its draw u < cluster_dropout and
    the token goes to the kept member of largest probability (none kept: the argmax). Weight = that
    probability; optional capacity ceil(n cf / E), position order. Own loss: cluster_loss times the
    mean over tokens and clusters of the (population) variance of the probabilities in a cluster."""
    T, R = z.shape
    M = int(p["cluster_size"])
    if R != E:
        raise ConfigError(f"gate.weight has {R} rows, expected E={E}")
    if E % M:
        raise ConfigError(f"cluster_size={M} does not divide E={E}")
    s = torch.softmax(z, dim=-1)                                    # (T, E)
    sd = s.detach()
    e = sd.argmax(-1)                                               # (T,) inputs are tie-free
    rate = float(p["cluster_dropout"])
    if training and rate > 0:
        members = (e // M)[:, None] * M + torch.arange(M)[None, :]  # (T, M)
        alive = torch.tensor(u) >= rate                             # (T, M)
        best = sd.gather(1, members).masked_fill(~alive, float("-inf")).argmax(-1)
        e = torch.where(alive.any(-1), members.gather(1, best[:, None])[:, 0], e)
    keep = keep_in_position_order(e, groups, E, float(p["capacity_factor"]))
    onehot = F.one_hot(e, E).to(z.dtype)                            # (T, E)
    W = s * onehot * keep[:, None].to(z.dtype)
    kept = onehot.bool() & keep[:, None]
    clusters = s.reshape(T, E // M, M)
    var = ((clusters - clusters.mean(-1, keepdim=True)) ** 2).mean(-1)  # (T, E/M)
    loss = float(p["cluster_loss"]) * var.mean()
    return Routing(W, kept, onehot, s, own_loss=loss, assigned=T)


def route_remoe(z, E, p, bias=None):
    """R = ReLU(z), or ReLU(z + b) with b = gate.bias where bias_update_rate > 0 (beyond the
    paper); the softmax scores for the balance and entropy losses stay those of z."""
    T = z.shape[0]
    zb = z + bias if (float(p["bias_update_rate"]) > 0 and bias is not None) else z
    r = torch.relu(zb)
    kept = zb.detach() > 0
    c = kept.sum(0).to(z.dtype)                      # detached counts
    lam, k = float(p["lambda"]), float(p["k"])
    own = lam * E / (k * T * T) * (r.sum(0) * c).sum()
    return Routing(r, kept, kept.to(z.dtype), torch.softmax(z, dim=-1), own)


def splitmix64(v):
    mask = (1 << 64) - 1
    v = (v + 0x9E3779B97F4A7C15) & mask
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & mask
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & mask
    return v ^ (v >> 31)


def hash_table(ids, E, p):
    ids = [int(v) for v in ids]
    if p["table"] == "random":
        seed = int(p["hash_seed"]) & ((1 << 64) - 1)
        return [splitmix64((i & ((1 << 64) - 1)) ^ seed) % E for i in ids]
    if p["table"] != "balanced":
        raise ConfigError(f"bad hash table {p['table']!r}")
    freq = {}
    for i in ids:
        freq[i] = freq.get(i, 0) + 1
    load = [0] * E
    table = {}
    for i in sorted(freq, key=lambda v: (-freq[v], v)):
        e = min(range(E), key=lambda j: (load[j], j))
        table[i] = e
        load[e] += freq[i]
    return [table[i] for i in ids]


def maskmoe_visible(ids, counts, E, p):
    """MaskMoE's masks (docs/routers/maskmoe.md): (T, E) bool, True where expert e is visible to
    token t's id. The frequent ids are the first floor(P n) of the n ids that occur, by count
    descending then id; they see min(V, E) experts, the others one: the first m entries of
    0..E-1 after m Fisher-Yates steps, step i swapping entries i and i + r_i % (E - i) with
    r_i = splitmix64(splitmix64(seed ^ splitmix64(id)) + i)."""
    mask = (1 << 64) - 1
    counts = [int(c) for c in counts]
    occurring = sorted((v for v in range(len(counts)) if counts[v] > 0),
                       key=lambda v: (-counts[v], v))
    frequent = set(occurring[:math.floor(float(p["frequent_fraction"]) * len(occurring))])
    seed = int(p["mask_seed"]) & mask
    visible = np.zeros((len(ids), E), dtype=bool)
    for t, v in enumerate(int(i) for i in ids):
        if not 0 <= v < len(counts):
            raise ConfigError(f"input: token id {v} is outside the {len(counts)} token_counts")
        m = min(int(p["visible_experts"]), E) if v in frequent else 1
        base = splitmix64(seed ^ splitmix64(v))
        perm = list(range(E))
        for i in range(m):
            j = i + splitmix64((base + i) & mask) % (E - i)
            perm[i], perm[j] = perm[j], perm[i]
        visible[t, perm[:m]] = True
    return visible


def route_maskmoe(z, E, p, ids, counts):
    """MaskMoE: softmax over each token's visible experts (-inf on the others), its min(k,
    #visible) best visible experts, weight p (not renormalised); the balance probability is the
    unmasked softmax, as for every router."""
    visible = torch.from_numpy(maskmoe_visible(ids, counts, E, p))
    s = torch.softmax(z.masked_fill(~visible, float("-inf")), dim=-1)
    order = torch.sort(s.detach().masked_fill(~visible, -1.0), dim=-1, descending=True,
                       stable=True).indices
    kept = torch.zeros_like(visible)
    for t in range(z.shape[0]):
        kept[t, order[t, :min(int(p["k"]), int(visible[t].sum()))]] = True
    return Routing(s * kept, kept, kept.to(z.dtype), torch.softmax(z, dim=-1))


def competesmoe_competes(layer, T, d, steps=0, warmup=None, call_index=0):
    """CompeteSMoE (docs/routers/competesmoe.md): whether the layer's training call `call_index`
    competes: steps >= the warm-up and the call's first draw below `competition`. A layer on its
    own has taken no steps and has no schedule: its warm-up is warmup_steps (0 when negative)."""
    p = layer["params"]
    if warmup is None:
        warmup = max(int(p["warmup_steps"]), 0)
    if not layer["training"] or steps < warmup:
        return False
    u, _ = layer_noise(layer["seed"], T, d, 1, 0.0, call_index)
    return float(u[0, 0]) < float(p["competition"])


def route_competesmoe(z, x, w1, w3, w2, E, p, layer, compete):
    """Competing: every expert on every token, s = mean softplus of the outputs, top-k of s
    weighted s / sum s (autograd into the experts), own loss router_loss * MSE(softmax z,
    softmax s detached) + diversity_loss * the mean masked cosine similarity of the chosen
    outputs. Otherwise top-k of softmax z, renormalised. routing.score: what chose."""
    T, d = x.shape
    k = int(p["k"])
    prob = torch.softmax(z, dim=-1)
    if compete:
        o = torch.stack([ffn(x, w1[e], w3[e] if w3 is not None else None, w2[e], layer)
                         for e in range(E)], dim=1)                     # (T, E, d)
        score = F.softplus(o).mean(-1)                                  # (T, E)
    else:
        score = prob
    top = topk_indices(score.detach(), k)                               # (T, k)
    vals = score.gather(1, top)
    weights = torch.zeros(T, E, dtype=z.dtype).scatter(1, top, vals / vals.sum(1, keepdim=True))
    kept = torch.zeros(T, E, dtype=torch.bool).scatter(1, top, True)
    routing = Routing(weights, kept, kept.to(z.dtype), prob)
    routing.score = score.detach()
    if compete:
        mse = F.mse_loss(prob, torch.softmax(score, dim=-1).detach())
        chosen = F.normalize(o.gather(1, top[:, :, None].expand(T, k, d)), p=2, dim=-1)
        sim = torch.bmm(chosen, chosen.transpose(1, 2)) * (1 - torch.eye(k, dtype=z.dtype))
        routing.own_loss = float(p["router_loss"]) * mse + float(p["diversity_loss"]) * sim.mean()
    return routing


def route_stablemoe(s, shat, E, p, groups, training):
    """StableMoE (docs/routers/stablemoe.md): s = W x, shat = K Q[id], both (T, E). The expert is
    argmax s in stage-1 training, argmax shat in stage 2 and in evaluation (torch.argmax: the
    first maximum, the tie rule); the gate sigmoid(s) of that expert; capacity ceil(n cf / E) per
    group in position order. Own loss in stage-1 training only: the balance loss
    alpha/T sum_t coef[a_t] sigmoid(s_t,a_t), coef = (c - T/E) / (T/E) from the counts before
    drops, detached; and beta times the cross-entropy of shat against argmax s (an index)."""
    T = s.shape[0]
    stage1 = training and int(p["stage"]) == 1
    a = (s if stage1 else shat).detach().argmax(-1)                # (T,)
    keep = keep_in_position_order(a, groups, E, float(p["capacity_factor"]))
    onehot = F.one_hot(a, E).to(s.dtype)                           # (T, E)
    gate = torch.sigmoid(s)
    kept = onehot.bool() & keep[:, None]
    own = torch.zeros((), dtype=s.dtype)
    if stage1:
        c = onehot.sum(0)
        coef = ((c - T / E) / (T / E)).detach()
        l_bal = float(p["balance_loss"]) / T * (coef[a] * gate.gather(1, a[:, None])[:, 0]).sum()
        l_dis = float(p["distill_loss"]) * F.cross_entropy(shat, s.argmax(1))
        own = l_bal + l_dis
    return Routing(gate * onehot * keep[:, None].to(s.dtype), kept, own_loss=own, assigned=T)


def route_vqmoe(x, tensors, E, p):
    """VQMoE (docs/routers/vqmoe.md). The VQ expert is the nearest code of router.codebook C
    (torch.argmax: the first maximum); the mean squared distances appear twice, with VQ-VAE's
    stop-gradients: ||sg[x] - C||^2 / d (reaches C) and ||x - sg[C]||^2 / d (reaches x).
    pretrain: weights g_c p_e on the top-k of p = softmax(x W^T), plus g_d on the VQ expert,
    (g_c, g_d) = softmax(x M^T); finetune: the VQ expert alone, weight 1. Own loss:
    vq_loss / T sum_t (codebook + commitment * commit distance of the VQ expert), and in pretrain
    balance_loss * E * sum_e f_e P_e (f: top-k counts / (T k), detached; P: mean p)."""
    for name in ("gate", "codebook", "mix"):
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    W, C, M = tensors["gate"], tensors["codebook"], tensors["mix"]
    if C.shape[0] != E or W.shape[0] != E or M.shape[0] != 2:
        raise ConfigError(f"input: router.gate/codebook need E={E} rows and router.mix 2")
    T = x.shape[0]
    dist_codebook = ((x.detach()[:, None, :] - C[None, :, :]) ** 2).mean(-1)   # (T, E)
    dist_commit = ((x[:, None, :] - C.detach()[None, :, :]) ** 2).mean(-1)     # (T, E)
    vq = (-dist_codebook).detach().argmax(-1)                                  # (T,)
    onehot = F.one_hot(vq, E).to(x.dtype)
    own = float(p["vq_loss"]) / T * (
        dist_codebook.gather(1, vq[:, None]).sum()
        + float(p["commitment"]) * dist_commit.gather(1, vq[:, None]).sum())
    if p["mode"] == "finetune":
        return Routing(onehot, onehot.bool(), own_loss=own)
    k = int(p["k"])
    prob = torch.softmax(x @ W.t(), dim=-1)                                    # (T, E)
    top = topk_indices(prob.detach(), k)                                       # (T, k)
    mask = torch.zeros(T, E, dtype=x.dtype).scatter(1, top, 1.0)
    g = torch.softmax(x @ M.t(), dim=-1)                                       # (T, 2)
    weights = g[:, 0:1] * prob * mask + g[:, 1:2] * onehot
    f = mask.sum(0) / (T * k)
    own = own + float(p["balance_loss"]) * E * (f * prob.mean(0)).sum()
    return Routing(weights, (mask + onehot) > 0, own_loss=own)


def hidden_units(fraction, F):
    """round(fraction F), halves up, clamped to [1, F]: the hidden units a width fraction runs."""
    return int(min(max(math.floor(fraction * F + 0.5), 1), F))


def route_duollm(z, E, p, Fh, training, u):
    """Duo-LLM (docs/routers/duollm.md). Outputs (small, big[, skip]). Routed: c = argmax of
    softmax(z) (the first maximum), weight p_c; random routes in training: from the token's
    uniform u, skip below p_skip, big below p_skip + p_big, else small, weight 1. Expert 0 (small)
    runs its first round(small_width F) hidden units, expert 1 (big) all F; skip runs nothing.
    Own loss compute_loss (C - compute_target)^2, C = mean_t sum_j p_tj cost_j with costs
    (small / F, 1, 0)."""
    T, R = z.shape
    if E != 2 or R != (3 if p["skip"] else 2):
        raise ConfigError(f"duollm needs E=2 experts and {3 if p['skip'] else 2} gate rows")
    small = hidden_units(float(p["small_width"]), Fh)
    prob = torch.softmax(z, dim=-1)                                  # (T, R)
    if training and p["random_routes"]:
        uu = torch.tensor(u[:, 0])
        ps, pb = float(p["p_skip"]), float(p["p_big"])
        c = torch.where(uu < ps, 2, torch.where(uu < ps + pb, 1, 0)).long()
        w = torch.ones(T, dtype=z.dtype)
    else:
        c = prob.detach().argmax(-1)
        w = prob.gather(1, c[:, None])[:, 0]
    onehot = F.one_hot(c, R).to(z.dtype)                            # (T, R)
    mask = onehot[:, :E]                                            # skip: no expert
    weights = w[:, None] * mask
    widths = torch.tensor([[small, Fh]], dtype=torch.long).expand(T, E)
    own = torch.zeros((), dtype=z.dtype)
    lam = float(p["compute_loss"])
    if lam > 0:
        cost = torch.tensor([small / Fh, 1.0, 0.0][:R], dtype=z.dtype)
        C = (prob * cost).sum(1).mean()
        own = lam * (C - float(p["compute_target"])) ** 2
    r = Routing(weights, mask.bool(), choices=onehot, bal_prob=prob, own_loss=own)
    r.widths = widths
    return r


def route_flextron(z, E, p, Fh):
    """Flextron's elastic MLP (docs/routers/flextron.md). z = [s (E) | m (W)]: the top-k of
    p = softmax(s) (renormalised with normalize), each weighted by q_j of the argmax j of
    q = softmax(m) and run on its first round(widths[j] F) hidden units. Own loss: balance_loss E
    sum_e f_e P_e (f: top-k counts / (T k), detached) + compute_loss (C - compute_target)^2,
    C = mean_t sum_j q_tj round(widths[j] F) / F."""
    T, R = z.shape
    widths = [float(v) for v in p["widths"]]
    W = len(widths)
    if R != E + W:
        raise ConfigError(f"flextron needs E + {W} = {E + W} gate rows, got {R}")
    k = int(p["k"])
    prob = torch.softmax(z[:, :E], dim=-1)                           # (T, E)
    q = torch.softmax(z[:, E:], dim=-1)                              # (T, W)
    top = topk_indices(prob.detach(), k)
    mask = torch.zeros(T, E, dtype=z.dtype).scatter(1, top, 1.0)
    pe = prob * mask
    if p["normalize"]:
        pe = pe / pe.sum(1, keepdim=True)
    j = q.detach().argmax(-1)                                        # (T,)
    weights = pe * q.gather(1, j[:, None])
    units = torch.tensor([hidden_units(f, Fh) for f in widths], dtype=torch.long)
    f = mask.sum(0) / (T * k)
    cost = units.to(z.dtype) / Fh
    C = (q * cost).sum(1).mean()
    own = float(p["balance_loss"]) * E * (f * prob.mean(0)).sum() + \
        float(p["compute_loss"]) * (C - float(p["compute_target"])) ** 2
    r = Routing(weights, mask.bool(), own_loss=own)
    r.widths = units[j][:, None].expand(T, E)
    return r


def distilled_logits(x, tensors, ids, vocab):
    """StableMoE's two affinities: s = x W^T (T, E) and shat = Q[id] K^T (T, E)."""
    for name in ("centroids", "token_embedding", "token_centroids"):
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    if ids is None:
        raise ConfigError("input: token_ids is required for stablemoe")
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ConfigError(f"input: a token id is outside the vocabulary [0, {vocab})")
    Q = tensors["token_embedding"]
    if Q.shape[0] != vocab:
        raise ConfigError(f"input: router.token_embedding has {Q.shape[0]} rows, vocab_size {vocab}")
    return x @ tensors["centroids"].t(), Q[ids] @ tensors["token_centroids"].t()


def cosine_logits(x, p, tensors):
    """X-MoE: scale * cos(W x, e_r) with scale = exp(log_scale) clamped at 1/tau_min, the norms
    floored at 1e-4 as F.normalize does; W x unnormalised when cosine_normalize_input is false."""
    for name in ("projection", "expert_embeddings", "log_scale"):
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    u = x @ tensors["projection"].t()                                    # (T, D)
    if p["cosine_normalize_input"]:
        u = torch.nn.functional.normalize(u, dim=1, eps=1e-4)
    e = torch.nn.functional.normalize(tensors["expert_embeddings"], dim=1, eps=1e-4)  # (R, D)
    scale = torch.clamp(tensors["log_scale"][0], max=math.log(1.0 / p["cosine_min_temperature"]))
    return torch.exp(scale) * (u @ e.t())


def global_logits(x, tensors, seq_lens):
    """SpeechMoE2, causal: m = the running mean of x within each sequence (a cumulative sum over
    the positions so far), g = m P^T, z = [x, g] W^T."""
    for name in ("gate", "global_projection"):
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    means = []
    for (a, b) in seq_ranges(seq_lens, x.shape[0]):
        n = torch.arange(1, b - a + 1, dtype=x.dtype)[:, None]
        means.append(torch.cumsum(x[a:b], dim=0) / n)
    g = torch.cat(means, 0) @ tensors["global_projection"].t()          # (T, D)
    return torch.cat([x, g], dim=1) @ tensors["gate"].t()               # (T, R)


def speechmoe_losses(z, p):
    """SpeechMoE's sparsity L1 loss (the L1 norm of the L2-normalised gates) and mean importance
    loss (R times the squared mean gates), on softmax(z) over all R outputs."""
    prob = torch.softmax(z, dim=-1)
    unit = prob / torch.linalg.vector_norm(prob, dim=-1, keepdim=True)
    sparsity = unit.abs().sum(-1).mean()
    importance = z.shape[1] * (prob.mean(0) ** 2).sum()
    return float(p["sparsity_loss"]) * sparsity + float(p["importance_loss"]) * importance


def attention_logits(x, tensors):
    """Yuan 2.0-M32's attention router: q, k, v = chunks of x qkv^T, each (T, R); per token
    z = softmax(q k^T) v over the R outputs, unscaled."""
    if tensors.get("qkv") is None:
        raise ConfigError("input: router.qkv is required")
    q, k, v = torch.chunk(x @ tensors["qkv"].t(), 3, dim=-1)
    a = torch.softmax(q.unsqueeze(2) @ k.unsqueeze(1), dim=-1)          # (T, R, R)
    return (a @ v.unsqueeze(2)).squeeze(2)


def recurrent_state(x, tensors, carry):
    """RMoE: u = P x, then PyTorch's GRUCell over u from the previous MoE layer's state (zeros
    without a carry); the cell's weights are the router's gru_* tensors."""
    names = ("projection", "gate", "gru_weight_ih", "gru_weight_hh", "gru_bias_ih", "gru_bias_hh")
    for name in names:
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    P = tensors["projection"]
    h_prev = carry if carry is not None else torch.zeros(x.shape[0], P.shape[0], dtype=x.dtype)
    # The op nn.GRUCell.forward runs, with the router's tensors as its weights.
    return torch._VF.gru_cell(x @ P.t(), h_prev, tensors["gru_weight_ih"],
                              tensors["gru_weight_hh"], tensors["gru_bias_ih"],
                              tensors["gru_bias_hh"])  # (T, p)


def hyper_logits(x, p, tensors):
    """HyperRouter: the gate [W | b] (R, d + 1) generated as w2 relu(w1 e + b1) + b2 from the
    embedding e; logits = x W^T + b."""
    names = ("embedding", "hyper_w1", "hyper_b1", "hyper_w2", "hyper_b2")
    for name in names:
        if tensors.get(name) is None:
            raise ConfigError(f"input: router.{name} is required")
    e, w1, b1, w2, b2 = (tensors[n] for n in names)
    hidden = torch.relu(e[0] @ w1.t() + b1)
    gen = (hidden @ w2.t() + b2).reshape(-1, x.shape[1] + 1)           # (R, d + 1)
    return x @ gen[:, :-1].t() + gen[:, -1]


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------

def run_layer(layer, tin, dtype=torch.float64):
    """tin: dict of numpy arrays (the input file). Returns (dict of numpy outputs, stats dict)."""
    def tens(name, grad=False):
        if name not in tin:
            return None
        t = torch.tensor(np.asarray(tin[name], dtype=np.float64), dtype=dtype)
        return t.requires_grad_(grad)

    backward = "dy" in tin
    x = tens("x", backward)
    if x is None:
        raise ConfigError("input: x is required")
    T, d = x.shape
    w1, w2 = tens("experts.w1", backward), tens("experts.w2", backward)
    swiglu = has_up(layer["activation"])
    w3 = tens("experts.w3", backward) if swiglu else None
    if w1 is None or w2 is None or (swiglu and w3 is None):
        raise ConfigError("input: experts.w1, experts.w2 (and experts.w3 for swiglu) are required")
    E = w1.shape[0]
    sw1, sw2 = tens("shared.w1", backward), tens("shared.w2", backward)
    sw3 = tens("shared.w3", backward) if (swiglu and sw1 is not None) else None
    sgate = tens("shared.gate", backward)  # (1, d) Qwen2-MoE's sigmoid gate on the shared expert
    gate = tens("gate.weight", backward)
    router_tensors = {n[len("router."):]: tens(n, backward) for n in tin if n.startswith("router.")}
    carry_in = tens("router_carry", backward)  # (T, p) RMoE: the previous MoE layer's GRU state
    carry_out = None
    bias = tens("gate.bias")
    if bias is not None:
        bias = bias.detach()
    seq_lens = [int(v) for v in tin["seq_lens"]] if "seq_lens" in tin else [T]
    if sum(seq_lens) != T or any(n <= 0 for n in seq_lens):
        raise ConfigError(f"input: seq_lens {seq_lens} must be positive and sum to T={T}")
    groups = group_ranges(layer["routing_groups"], seq_lens, T)
    family, p, losses = layer["family"], layer["params"], layer["losses"]

    y = torch.zeros(T, d, dtype=dtype)
    z = None
    gate_in = None  # AoE: (T, R, r) the activations the experts' gates read instead of x
    routing = None
    passthrough = None

    if family == "smear":
        # per sequence: merged expert from the mean input
        combine = torch.zeros(T, E, dtype=dtype)
        ys, combs = [], []
        for (a, b) in seq_ranges(seq_lens, T):
            m = x[a:b].mean(0)
            pe = torch.softmax(gate @ m, dim=-1)                       # (E)
            mw1 = (pe[:, None, None] * w1).sum(0)
            mw2 = (pe[:, None, None] * w2).sum(0)
            mw3 = (pe[:, None, None] * w3).sum(0) if swiglu else None
            ys.append(ffn(x[a:b], mw1, mw3, mw2, layer))
            combs.append(pe.unsqueeze(0).expand(b - a, E))
        y = torch.cat(ys, 0)
        combine = torch.cat(combs, 0)
        kept = torch.ones(T, E, dtype=torch.bool)
        routing = Routing(combine, kept)
    else:
        if family == "hash":
            if "token_ids" not in tin:
                raise ConfigError("input: token_ids is required for hash routers")
            experts = hash_table(tin["token_ids"], E, p)
            kept = torch.zeros(T, E, dtype=torch.bool)
            kept[torch.arange(T), torch.tensor(experts, dtype=torch.long)] = True
            routing = Routing(kept.to(dtype), kept)
        elif family == "thor":
            experts = thor_experts(layer, T, d, E, groups)
            kept = torch.zeros(T, E, dtype=torch.bool)
            kept[torch.arange(T), torch.tensor(experts, dtype=torch.long)] = True
            routing = Routing(kept.to(dtype), kept)
        elif family == "vqmoe":
            routing = route_vqmoe(x, router_tensors, E, p)
        elif family == "stablemoe":
            s, shat = distilled_logits(x, router_tensors, tin.get("token_ids"),
                                       int(layer["vocab_size"]))
            routing = route_stablemoe(s, shat, E, p, groups, layer["training"])
        else:
            if family == "topk" and p["logits"] == "cosine":
                z = cosine_logits(x, p, router_tensors)                  # (T, R)
            elif family == "topk" and p["logits"] == "hyper":
                z = hyper_logits(x, p, router_tensors)                   # (T, R)
            elif family == "topk" and p["logits"] == "attention":
                z = attention_logits(x, router_tensors)                  # (T, R)
            elif family == "topk" and p["logits"] == "global":
                z = global_logits(x, router_tensors, seq_lens)           # (T, R)
            elif family == "topk" and p["logits"] == "aoe":
                # AoE: a_te = W_down,e x_t (T, R, r) from router.down (R r, d); z = ‖a_te‖₂
                r = int(p["aoe_rank"])
                gate_in = (x @ router_tensors["down"].t()).reshape(T, -1, r)
                z = torch.linalg.vector_norm(gate_in, dim=2)                # (T, R)
            elif family == "topk" and p["logits"] == "recurrent":
                carry_out = recurrent_state(x, router_tensors, carry_in)  # (T, p)
                z = carry_out @ router_tensors["gate"].t()               # (T, R)
            elif family == "remoe" and float(p["gate_lr_scale"]) != 1.0:
                # beyond the paper: z = s x router.gateᵀ (the gate's learning rate times s)
                if router_tensors.get("gate") is None:
                    raise ConfigError("input: router.gate is required")
                z = float(p["gate_lr_scale"]) * (x @ router_tensors["gate"].t())
            elif gate is None:
                raise ConfigError("input: gate.weight is required")
            elif family == "moec":                                      # replays the draws
                noise_u = moec_noise(layer, T, d)
                z = x @ gate.t()                                        # (T, R)
            elif family == "sparsemixer":                               # replays the draws
                noise_u, jit = sparsemixer_noise(layer, T, d, E)
                xr = x if jit is None else x * torch.tensor(jit, dtype=dtype)
                z = xr @ gate.t()                                       # (T, R)
            else:
                z = x @ gate.t()                                        # (T, R)
            if family == "topk":
                local = None
                if float(p["local_bonus"]) > 0 or float(p["locality_loss"]) > 0:
                    local = locality_domains(layer["placement"], p, seq_lens, E)
                routing = route_topk(z, bias, E, p, groups, losses["balance_top1_only"], local,
                                     training=layer["training"])
                if float(p["locality_loss"]) > 0:
                    routing.own_loss = locality_loss(z, E, p, *local)
                if float(p["sparsity_loss"]) > 0 or float(p["importance_loss"]) > 0:
                    own = speechmoe_losses(z, p)
                    routing.own_loss = own if routing.own_loss is None else routing.own_loss + own
            elif family == "expert_choice":
                routing = route_expert_choice(z, E, p, groups)
            elif family == "top_p":
                routing = route_top_p(z, E, p)
            elif family == "damoe":
                if "token_importance" not in tin:
                    raise ConfigError("input: damoe needs token_importance (T)")
                routing = route_damoe(z, E, p, tin["token_importance"], seq_lens)
            elif family == "soft":
                routing = route_soft(z, E)
            elif family == "remoe":
                routing = route_remoe(z, E, p, bias)
            elif family == "smile":
                routing = route_smile(z, E, p, groups)
            elif family == "prototype":
                routing = route_prototype(z, E, p, groups)
            elif family == "sparsemixer":
                routing = route_sparsemixer(z, E, p, layer["training"], noise_u,
                                            losses["balance_top1_only"])
            elif family == "moec":
                routing = route_moec(z, E, p, groups, layer["training"], noise_u)
            elif family == "maskmoe":
                if "token_ids" not in tin or "token_counts" not in tin:
                    raise ConfigError("input: maskmoe needs token_ids and token_counts")
                routing = route_maskmoe(z, E, p, tin["token_ids"], tin["token_counts"])
            elif family == "competesmoe":
                routing = route_competesmoe(z, x, w1, w3, w2, E, p, layer,
                                            competesmoe_competes(layer, T, d))
            elif family == "rectify":
                routing = route_rectify(z, E, p, groups, losses["balance_top1_only"],
                                        layer["placement"], seq_lens)
            elif family == "duollm":
                u = layer_noise(layer["seed"], T, d, 1, 0.0)[0] if layer["training"] else None
                routing = route_duollm(z, E, p, w1.shape[1], layer["training"], u)
            elif family == "flextron":
                routing = route_flextron(z, E, p, w1.shape[1])
            elif family == "base":
                best = topk_indices(z.detach(), 1)[:, 0]
                kept = torch.zeros(T, E, dtype=torch.bool)
                kept[torch.arange(T), best] = True
                alpha = torch.sigmoid(z)
                routing = Routing(alpha * kept, kept)
                passthrough = (1 - alpha.gather(1, best[:, None]))     # (T, 1)
            else:
                raise ConfigError(f"router family {family} not implemented")
            if family in ("expert_choice", "top_p", "damoe", "soft", "remoe", "base") and \
                    z.shape[1] != E:
                raise ConfigError(f"gate.weight has {z.shape[1]} rows, expected E={E}")
        # The usual per-expert loop: gather the tokens routed to e, run e, weight, add back.
        W = routing.weights
        widths = getattr(routing, "widths", None)  # (T, E) hidden units per pair, or None (all F)
        for e in range(E):
            tok = torch.nonzero(routing.kept[:, e], as_tuple=False).squeeze(1)
            if tok.numel() == 0:
                continue
            if widths is not None:
                # Elastic width: each token runs expert e's first w hidden units only (w1, w3
                # rows, w2 columns sliced), grouped by w.
                for w in sorted(set(int(v) for v in widths[tok, e])):
                    sub = tok[widths[tok, e] == w]
                    out = ffn(x[sub], w1[e][:w], w3[e][:w] if swiglu else None, w2[e][:, :w],
                              layer)
                    y = y.index_add(0, sub, out * W[sub, e:e + 1])
                continue
            out = ffn(x[tok], w1[e], w3[e] if swiglu else None, w2[e], layer,
                      None if gate_in is None else gate_in[tok, e])
            y = y.index_add(0, tok, out * W[tok, e:e + 1])
        if passthrough is not None:
            y = y + passthrough * x

    if sw1 is not None:
        shared = ffn(x, sw1, sw3, sw2, layer)
        if sgate is not None:
            shared = torch.sigmoid(x @ sgate.t()) * shared
        y = y + shared

    # Auxiliary losses
    loss_values = {}
    aux = torch.zeros((), dtype=dtype)
    if z is not None and routing.choices is not None:
        R = z.shape[1]
        if losses["balance"]:
            alpha = float(losses["balance"])
            P_all, C_all = routing.bal_prob, routing.choices.detach()
            if losses["balance_mode"] == "sequence":
                parts = []
                for (a, b) in seq_ranges(seq_lens, T):
                    c = C_all[a:b].sum(0)
                    parts.append(alpha * R * ((c / c.sum()) * P_all[a:b].mean(0)).sum())
                lb = torch.stack(parts).mean()
            else:
                c = C_all.sum(0)
                if losses["balance_mode"] == "global_batch":
                    if "global_counts" not in tin:
                        raise ConfigError("input: global_batch balance needs global_counts")
                    c = c + torch.tensor(np.asarray(tin["global_counts"], np.float64), dtype=dtype)
                lb = alpha * R * ((c / c.sum()) * P_all.mean(0)).sum()
            loss_values["balance"] = lb
        if losses["z"]:
            loss_values["z"] = float(losses["z"]) * (torch.logsumexp(z, dim=-1) ** 2).mean()
        if losses["entropy"]:
            pr = routing.bal_prob
            loss_values["entropy"] = float(losses["entropy"]) * (-(pr * torch.log(pr)).sum(-1)).mean()
    if routing.own_loss is not None:
        loss_values["router"] = routing.own_loss
    for v in loss_values.values():
        aux = aux + v

    combine = routing.weights.detach()
    tokens_per_expert = routing.kept.sum(0).to(torch.int64)
    out = {
        "y": y.detach().numpy(),
        "combine": combine.numpy().copy(),
        "aux_loss": aux.detach().numpy(),
        "tokens_per_expert": tokens_per_expert.numpy(),
    }
    if carry_out is not None:
        out["router_carry_out"] = carry_out.detach().numpy()
    if backward:
        dy = torch.tensor(np.asarray(tin["dy"], np.float64), dtype=dtype)
        objective = (y * dy).sum() + aux
        if carry_out is not None and "d_router_carry_out" in tin:
            dc = torch.tensor(np.asarray(tin["d_router_carry_out"], np.float64), dtype=dtype)
            objective = objective + (carry_out * dc).sum()
        named = [("dx", x), ("d_gate.weight", gate), ("d_experts.w1", w1), ("d_experts.w2", w2),
                 ("d_experts.w3", w3), ("d_shared.w1", sw1), ("d_shared.w2", sw2),
                 ("d_shared.w3", sw3), ("d_shared.gate", sgate)]
        named += [("d_router." + n, t) for n, t in router_tensors.items()]
        named += [("d_router_carry", carry_in)]
        named = [(n, t) for n, t in named if t is not None and t.requires_grad]
        grads = torch.autograd.grad(objective, [t for _, t in named], allow_unused=True)
        for (n, t), gr in zip(named, grads):
            out[n] = (gr if gr is not None else torch.zeros_like(t)).detach().numpy()
    stats = {
        "losses": {k: float(v.detach()) for k, v in loss_values.items()},
        "aux_loss": float(aux.detach()),
        "tokens_per_expert": [int(v) for v in tokens_per_expert],
        "assignments": routing.assigned,
        "dropped": routing.assigned - int(tokens_per_expert.sum()),
    }
    stats.update(getattr(routing, "extra_stats", {}))  # rectify: how often FR and IR acted
    return out, stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="computation dtype (float32 only to estimate rounding in self-tests)")
    args = ap.parse_args(argv)
    try:
        with open(args.config) as f:
            layer = parse_config(json.load(f))
        tin, _ = safetensors_io.load(args.inp)
        dtype = torch.float64 if args.dtype == "float64" else torch.float32
        out, stats = run_layer(layer, tin, dtype)
    except ConfigError as exc:
        print(f"torch_layer: error: {exc}", file=sys.stderr)
        return 2
    safetensors_io.save(args.out, out, {"stats": json.dumps(stats)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
