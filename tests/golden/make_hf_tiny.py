#!/usr/bin/python3
"""Writes tiny random Hugging Face causal-LM checkpoints (Hub layout) with hf_reference.py goldens.

    make_hf_tiny.py --arch deepseek_v3 --out /tmp/ds [--seed 0] [--dtype f32|bf16|f16]
                    [--shards 1] [--config-form 5|4] [--rope TYPE] [--tie | --no-tie]
                    [--no-q-lora] [--min-margin 1e-5]
    make_hf_tiny.py --arch all --out /tmp/hf-tiny ...   (one sub-folder per architecture)

Architectures: mixtral qwen2_moe qwen3_moe olmoe deepseek_v3 llama mistral qwen2 qwen3.
Each folder gets what transformers' save_pretrained writes:
  config.json            keys sorted, indent 2; --config-form 5 (default): transformers 5.x form
                         (rope_parameters {rope_type, rope_theta, ...}, "dtype"); 4: the 4.x form
                         (top-level rope_theta, rope_scaling or null, "torch_dtype";
                         Qwen3-MoE's expert count under num_experts instead of num_local_experts;
                         DeepSeek-V3's rope_scaling with the legacy "type" key as on the Hub).
  generation_config.json bos/eos ids.
  model.safetensors      or --shards N files model-0000i-of-0000N.safetensors plus
                         model.safetensors.index.json {"metadata": {"total_size"}, "weight_map"};
                         tensors in the Hugging Face names, dtype F32, BF16 (round to nearest
                         even from float32) or F16; DeepSeek-V3's e_score_correction_bias is
                         always F32 (transformers keeps it in float32). lm_head.weight only when
                         the embeddings are untied.
  golden.json            same format as ../shared/data/hf-tiny/*/golden.json: input_ids (2, 16),
                         logits (2, 16, V), generate_prefix (1, 8) = input_ids[0, :8], generate
                         (1, 16) (greedy, 8 new tokens), router_logits: one (32, E) list per MoE
                         layer; computed by hf_reference.py in float64 from the weights as stored
                         (read back from the written files, i.e. dtype-rounded). BF16
                         checkpoints add bf16_rounded {logits, router_logits, generate}: the same
                         with every BF16 matrix's product taking its input rounded to BF16.

Sizes: vocab 512, hidden 64, 2-3 layers, 4 heads. Weights ~N(0, 1/fan_in), norms 1 + 0.1 N(0,1),
biases 0.1 N(0,1), embeddings N(0, 1) (std 0.1 when tied). The draw is retried (attempt 1, 2, ... from the same seed,
printed) until every routing decision and every greedy step is at least --min-margin from a tie
(so a float32 engine takes the same routes and tokens), the generation is not constant and hits
no eos token.

Per architecture (defaults; the flags change the rope type, tying and DeepSeek's q_lora_rank):
  mixtral      2 layers, 8 experts top-2, GQA 4/2, rope default theta 1e6, untied
  qwen2_moe    3 layers, mlp_only_layers [1] (layers 0 and 2 MoE), 8 experts top-2,
               norm_topk_prob false, shared expert 64 + sigmoid gate, q/k/v bias, untied
  qwen3_moe    2 layers, 16 experts top-4, norm_topk_prob true, head_dim 32 (!= 64/4), q/k norm
  olmoe        2 layers, 8 experts top-2, norm_topk_prob false, full-width q/k norm, clip_qkv 1.5
  deepseek_v3  3 layers, first_k_dense_replace 1, 16 experts in 4 groups, topk_group 2, top-4,
               1 shared expert, routed_scaling_factor 2.5, q_lora_rank 32, kv_lora_rank 32,
               qk_nope 16, qk_rope 8, v_head_dim 16, yarn (factor 4, original 32, mscale 1,
               mscale_all_dim 0.8), rope_interleave true
  llama        2 layers, GQA 4/2, rope llama3 (theta 5e5, factor 8, original 64), tied
  mistral      2 layers, head_dim 32, rope default theta 1e6, untied
  qwen2        2 layers, q/k/v bias, rope default theta 1e6, tied
  qwen3        2 layers, head_dim 32, q/k norm, rope default theta 1e6, tied
"""
import argparse
import json
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import numpy as np
    import torch
    import hf_reference
    _IMPORT_ERROR = None
except Exception as _exc:
    np = torch = hf_reference = None
    _IMPORT_ERROR = _exc

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3",
         "llama", "mistral", "qwen2", "qwen3"]
ARCH_CLASS = {
    "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM", "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
}
DTYPE_NAMES = {"f32": ("F32", "float32"), "bf16": ("BF16", "bfloat16"), "f16": ("F16", "float16")}

# rope types: (theta, extra keys of rope_scaling / rope_parameters)
ROPES = {
    "default": {},
    "linear": {"factor": 2.0},
    "dynamic": {"factor": 2.0},
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32.0,
             "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.8},
}


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------


def base_config(arch):
    """Architecture hyper-parameters (form-independent); rope given as (type, theta)."""
    c = {"vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "intermediate_size": 96, "hidden_act": "silu",
         "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
         "attention_dropout": 0.0, "use_cache": True, "bos_token_id": 1, "eos_token_id": 2,
         "pad_token_id": None, "tie_word_embeddings": False}
    rope = ("default", 10000.0)
    if arch == "mixtral":
        c.update(num_local_experts=8, num_experts_per_tok=2, head_dim=None, sliding_window=None,
                 router_aux_loss_coef=0.001, router_jitter_noise=0.0, output_router_logits=False,
                 rms_norm_eps=1e-5)
        rope = ("default", 1e6)
    elif arch == "qwen2_moe":
        c.update(num_hidden_layers=3, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                 shared_expert_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[1],
                 norm_topk_prob=False, use_sliding_window=False, sliding_window=None,
                 max_window_layers=3, router_aux_loss_coef=0.001, output_router_logits=False)
        rope = ("default", 1e6)
    elif arch == "qwen3_moe":
        c.update(num_experts=16, num_experts_per_tok=4, moe_intermediate_size=32, head_dim=32,
                 decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, attention_bias=False,
                 use_sliding_window=False, sliding_window=None, router_aux_loss_coef=0.001,
                 output_router_logits=False)
    elif arch == "olmoe":
        c.update(num_experts=8, num_experts_per_tok=2, intermediate_size=32, norm_topk_prob=False,
                 clip_qkv=1.5, attention_bias=False, rms_norm_eps=1e-5, router_aux_loss_coef=0.01,
                 output_router_logits=False)
    elif arch == "deepseek_v3":
        c.update(num_hidden_layers=3, num_key_value_heads=4, n_routed_experts=16, n_group=4,
                 topk_group=2, num_experts_per_tok=4, n_shared_experts=1, moe_intermediate_size=32,
                 first_k_dense_replace=1, moe_layer_freq=1, routed_scaling_factor=2.5,
                 norm_topk_prob=True, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
                 qk_rope_head_dim=8, v_head_dim=16, head_dim=8, rope_interleave=True,
                 topk_method="noaux_tc", scoring_func="sigmoid", attention_bias=False,
                 bos_token_id=0, eos_token_id=1)
        rope = ("yarn", 10000.0)
    elif arch == "llama":
        c.update(head_dim=16, attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                 max_position_embeddings=256, pretraining_tp=1)
        rope = ("llama3", 500000.0)
    elif arch == "mistral":
        c.update(head_dim=32, sliding_window=None)
        rope = ("default", 1e6)
    elif arch == "qwen2":
        c.update(tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
                 max_window_layers=2)
        rope = ("default", 1e6)
    elif arch == "qwen3":
        c.update(head_dim=32, attention_bias=False, tie_word_embeddings=True, use_sliding_window=False,
                 sliding_window=None, max_window_layers=2)
        rope = ("default", 1e6)
    else:
        raise ValueError(arch)
    return c, rope


def make_config(arch, form, dtype, rope_type=None, tie=None, q_lora=True):
    c, (rtype, theta) = base_config(arch)
    if rope_type:
        rtype = rope_type
    if tie is not None:
        c["tie_word_embeddings"] = tie
    if arch == "deepseek_v3" and not q_lora:
        c["q_lora_rank"] = None
    extra = dict(ROPES[rtype])
    c["architectures"] = [ARCH_CLASS[arch]]
    c["model_type"] = arch
    if form == 5:
        c["rope_parameters"] = dict(rope_type=rtype, rope_theta=theta, **extra)
        c["dtype"] = DTYPE_NAMES[dtype][1]
        c["transformers_version"] = "5.17.0"
        if arch == "qwen3_moe":
            c["num_local_experts"] = c.pop("num_experts")
        if arch == "qwen2_moe":
            c["qkv_bias"] = True
    else:
        c["rope_theta"] = theta
        if rtype == "default":
            c["rope_scaling"] = None
        elif arch == "deepseek_v3":
            c["rope_scaling"] = dict(type=rtype, **extra)
        else:
            c["rope_scaling"] = dict(rope_type=rtype, **extra)
        c["torch_dtype"] = DTYPE_NAMES[dtype][1]
        c["transformers_version"] = "4.57.1"
    return c


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------


def weight_shapes(c):
    """name -> (shape, kind) with kind in {"embed", "linear", "norm", "bias", "router_bias"}."""
    arch = c["model_type"]
    d, V, H, Hkv = c["hidden_size"], c["vocab_size"], c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or d // H
    F = c["intermediate_size"]
    s = {"model.embed_tokens.weight": ((V, d), "embed"), "model.norm.weight": ((d,), "norm")}
    if not c["tie_word_embeddings"]:
        s["lm_head.weight"] = ((V, d), "linear")

    def lin(name, out_f, in_f, bias=False):
        s[name + ".weight"] = ((out_f, in_f), "linear")
        if bias:
            s[name + ".bias"] = ((out_f,), "bias")

    def swiglu(prefix, f, names=("gate_proj", "up_proj", "down_proj")):
        lin(prefix + names[0], f, d)
        lin(prefix + names[1], f, d)
        lin(prefix + names[2], d, f)

    E = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 0
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = ((d,), "norm")
        s[p + "post_attention_layernorm.weight"] = ((d,), "norm")
        a = p + "self_attn."
        if arch == "deepseek_v3":
            qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
            if c["q_lora_rank"]:
                lin(a + "q_a_proj", c["q_lora_rank"], d, c["attention_bias"])
                s[a + "q_a_layernorm.weight"] = ((c["q_lora_rank"],), "norm")
                lin(a + "q_b_proj", H * qk, c["q_lora_rank"])
            else:
                lin(a + "q_proj", H * qk, d)
            lin(a + "kv_a_proj_with_mqa", c["kv_lora_rank"] + c["qk_rope_head_dim"], d, c["attention_bias"])
            s[a + "kv_a_layernorm.weight"] = ((c["kv_lora_rank"],), "norm")
            lin(a + "kv_b_proj", H * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
            lin(a + "o_proj", d, H * c["v_head_dim"], c["attention_bias"])
        else:
            qkv_bias = arch in ("qwen2", "qwen2_moe") or bool(c.get("attention_bias"))
            o_bias = bool(c.get("attention_bias")) and arch not in ("qwen2", "qwen2_moe")
            lin(a + "q_proj", H * D, d, qkv_bias)
            lin(a + "k_proj", Hkv * D, d, qkv_bias)
            lin(a + "v_proj", Hkv * D, d, qkv_bias)
            lin(a + "o_proj", d, H * D, o_bias)
            if arch in ("qwen3", "qwen3_moe"):
                s[a + "q_norm.weight"] = ((D,), "norm")
                s[a + "k_norm.weight"] = ((D,), "norm")
            if arch == "olmoe":
                s[a + "q_norm.weight"] = ((H * D,), "norm")
                s[a + "k_norm.weight"] = ((Hkv * D,), "norm")
        moe = {
            "mixtral": True, "olmoe": True,
            "qwen2_moe": i not in c.get("mlp_only_layers", []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0,
            "qwen3_moe": i not in c.get("mlp_only_layers", []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0,
            "deepseek_v3": i >= c.get("first_k_dense_replace", 0) and i % c.get("moe_layer_freq", 1) == 0,
        }.get(arch, False)
        if not moe:
            swiglu(p + "mlp.", F)
            continue
        if arch == "mixtral":
            lin(p + "block_sparse_moe.gate", E, d)
            for e in range(E):
                swiglu(p + f"block_sparse_moe.experts.{e}.", F, ("w1", "w3", "w2"))
            continue
        m = p + "mlp."
        lin(m + "gate", E, d)
        fe = F if arch == "olmoe" else c["moe_intermediate_size"]
        for e in range(E):
            swiglu(m + f"experts.{e}.", fe)
        if arch == "qwen2_moe":
            swiglu(m + "shared_expert.", c["shared_expert_intermediate_size"])
            lin(m + "shared_expert_gate", 1, d)
        if arch == "deepseek_v3":
            s[m + "gate.e_score_correction_bias"] = ((E,), "router_bias")
            if c.get("n_shared_experts"):
                swiglu(m + "shared_experts.", c["moe_intermediate_size"] * c["n_shared_experts"])
    return s


def draw_weights(shapes, rng, embed_std=1.0):
    """name -> float32 numpy array."""
    out = {}
    for name in sorted(shapes):
        shape, kind = shapes[name]
        if kind == "embed":
            a = embed_std * rng.standard_normal(shape)
        elif kind == "linear":
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        elif kind == "norm":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif kind == "bias":
            a = 0.1 * rng.standard_normal(shape)
        elif kind == "router_bias":
            a = 0.05 * rng.standard_normal(shape)
        else:
            raise ValueError(kind)
        out[name] = a.astype(np.float32)
    return out


def to_dtype_bytes(a, st_dtype):
    """float32 array -> little-endian bytes in the safetensors dtype (BF16: round to nearest even)."""
    a = np.ascontiguousarray(a, dtype="<f4")
    if st_dtype == "F32":
        return a.tobytes()
    if st_dtype == "F16":
        return a.astype("<f2").tobytes()
    if st_dtype == "BF16":
        bits = a.view("<u4").astype(np.uint64)
        lsb = (bits >> 16) & 1
        rounded = ((bits + 0x7FFF + lsb) >> 16).astype("<u2")  # no NaNs/infs in these weights
        return rounded.tobytes()
    raise ValueError(st_dtype)


def write_safetensors(path, entries):
    """entries: list of (name, st_dtype, shape, bytes), written in that order."""
    header, offset = {}, 0
    for name, dt, shape, buf in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(buf)]}
        offset += len(buf)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, buf in entries:
            f.write(buf)


def write_checkpoint(out_dir, weights, dtype, shards):
    st = DTYPE_NAMES[dtype][0]
    entries = []
    for name in sorted(weights):
        dt = "F32" if name.endswith("e_score_correction_bias") else st
        entries.append((name, dt, weights[name].shape, to_dtype_bytes(weights[name], dt)))
    for old in os.listdir(out_dir):
        if old.startswith("model") and (old.endswith(".safetensors") or old.endswith(".index.json")):
            os.remove(os.path.join(out_dir, old))
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), entries)
        return
    total = sum(len(e[3]) for e in entries)
    groups, acc = [[] for _ in range(shards)], 0
    for e in entries:  # contiguous runs of about total/shards bytes each, none empty
        g = min(shards - 1, acc * shards // total)
        groups[g].append(e)
        acc += len(e[3])
    groups = [g for g in groups if g]
    n = len(groups)
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        write_safetensors(os.path.join(out_dir, fname), g)
        for e in g:
            weight_map[e[0]] = fname
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# golden
# ----------------------------------------------------------------------------------------------


def compute_golden(out_dir, input_ids, prefix_len=8, new_tokens=8, round_bf16_inputs=False):
    """-> (golden dict, diagnostics dict) from the checkpoint as written; round_bf16_inputs: the
    products of BF16 matrices take BF16-rounded inputs (switchyard's default arithmetic)."""
    model = hf_reference.HFModel.from_dir(out_dir, round_bf16_inputs)
    logits, routers = model.forward(input_ids)
    margins = [m for _, m in model.route_margins]
    prefix = input_ids[0][:prefix_len]
    gen = model.generate(prefix, new_tokens)
    margins += [m for _, m in model.route_margins]
    new = gen[prefix_len:]
    golden = {
        "input_ids": input_ids,
        "logits": logits.tolist(),
        "generate_prefix": [prefix],
        "generate": [gen],
        "router_logits": [r.tolist() for r in routers],
    }
    diag = {
        "route_margin": min(margins) if margins else float("inf"),
        "greedy_margin": min(model.greedy_margins),
        "distinct_new": len(set(new)),
        "hit_eos": len(new) < new_tokens or any(t in model.eos for t in new),
        "logit_std": float(logits.std()),
        "moe_layers": len(routers),
    }
    return golden, diag


def build(arch, out_dir, seed=0, dtype="f32", shards=1, form=5, rope_type=None, tie=None,
          q_lora=True, min_margin=1e-5, max_attempts=50, quiet=False):
    os.makedirs(out_dir, exist_ok=True)
    cfg = make_config(arch, form, dtype, rope_type, tie, q_lora)
    shapes = weight_shapes(cfg)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    gen_cfg = {"_from_model_config": True, "bos_token_id": cfg["bos_token_id"],
               "eos_token_id": cfg["eos_token_id"], "transformers_version": cfg["transformers_version"]}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen_cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    # the reference must read exactly the tensors written (names checked in both directions)
    expected = set(hf_reference.HFModel(cfg, {n: torch.zeros(s) for n, (s, _) in shapes.items()})
                   .expected_weight_names())
    if expected != set(shapes):
        raise AssertionError(f"name mismatch: {sorted(expected ^ set(shapes))[:6]}")
    for attempt in range(max_attempts):
        rng = np.random.default_rng([seed, attempt])
        # tied: a small embedding keeps the residual from being mostly the input token's own
        # embedding (whose logit would then win every step)
        weights = draw_weights(shapes, rng, 0.1 if cfg["tie_word_embeddings"] else 1.0)
        input_ids = rng.integers(3, cfg["vocab_size"], size=(2, 16)).tolist()
        write_checkpoint(out_dir, weights, dtype, shards)
        golden, diag = compute_golden(out_dir, input_ids)
        variants = [diag]
        if dtype == "bf16":
            # BF16 weights: also the arithmetic with BF16-rounded inputs, under "bf16_rounded"
            rounded, diag_r = compute_golden(out_dir, input_ids, round_bf16_inputs=True)
            golden["bf16_rounded"] = {k: rounded[k] for k in ("logits", "router_logits", "generate")}
            variants.append(diag_r)
        ok = all(v["route_margin"] >= min_margin and v["greedy_margin"] >= min_margin
                 and v["distinct_new"] >= 3 and not v["hit_eos"] and v["logit_std"] > 0.05
                 for v in variants)
        if ok:
            break
        if not quiet:
            print(f"  {arch}: attempt {attempt} rejected {diag}", file=sys.stderr)
    else:
        raise RuntimeError(f"{arch}: no draw met the margins in {max_attempts} attempts")
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f)
    if not quiet:
        print(f"{arch}: {out_dir} seed {seed} attempt {attempt} dtype {dtype} shards {shards} "
              f"form {form} rope {cfg.get('rope_parameters', cfg.get('rope_scaling'))} | "
              f"route margin {diag['route_margin']:.2e} greedy margin {diag['greedy_margin']:.2e} "
              f"logit std {diag['logit_std']:.3f} moe layers {diag['moe_layers']} "
              f"generate {golden['generate'][0][8:]}")
    return golden, diag


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=ARCHS + ["all"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPE_NAMES))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--config-form", type=int, default=5, choices=[4, 5])
    ap.add_argument("--rope", choices=sorted(ROPES), help="override the architecture's rope type")
    tie = ap.add_mutually_exclusive_group()
    tie.add_argument("--tie", dest="tie", action="store_true", default=None)
    tie.add_argument("--no-tie", dest="tie", action="store_false")
    ap.add_argument("--no-q-lora", action="store_true", help="DeepSeek-V3: q_lora_rank null (q_proj)")
    ap.add_argument("--min-margin", type=float, default=1e-5)
    args = ap.parse_args(argv)
    if _IMPORT_ERROR is not None:
        print(f"make_hf_tiny.py: torch/numpy unavailable ({_IMPORT_ERROR})", file=sys.stderr)
        return 77
    archs = ARCHS if args.arch == "all" else [args.arch]
    for arch in archs:
        out = os.path.join(args.out, arch) if args.arch == "all" else args.out
        build(arch, out, args.seed, args.dtype, args.shards, args.config_form, args.rope, args.tie,
              not args.no_q_lora, args.min_margin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
