#!/usr/bin/python3
"""Writes a Qwen3-30B-A3B-shaped Hugging Face folder with random BF16 weights (bench/infer).

    make_bench_model.py --out build/bench-model [--layers 4] [--seed 0] [--threads 2]

Qwen3-30B-A3B's layer shapes (hidden 2048, 32 query heads and 4 KV heads of 128, per-head q/k
RMSNorm, 128 experts of moe_intermediate_size 768, top-8 renormalised, vocabulary 151936,
untied LM head, rope_theta 1e6, rms_norm_eps 1e-6) with fewer layers (48 in the real model):
4 layers are 3.1 B parameters, 6.2 GB in BF16.

The folder is what transformers 5.x writes for Qwen3MoeForCausalLM: config.json (5.x form:
rope_parameters, dtype, num_local_experts), generation_config.json, model.safetensors.index.json
and one shard per decoder layer plus one for the embedding and one for the final norm and LM head,
with the Hugging Face tensor names (model.layers.N.mlp.experts.E.gate_proj.weight, ...).

Weights: every matrix N(0, 0.02) (the config's initializer_range, the scale of a trained model's
projections), every RMSNorm weight 1. Drawn in float32 with torch (one generator per tensor, seeded
from --seed and the tensor's name, so the folder does not depend on the thread count) and rounded to
BF16 to nearest even (torch's float32 -> bfloat16 conversion; equal to the usual bit trick
(u + 0x7FFF + ((u >> 16) & 1)) >> 16 for finite values). Generation streams tensor by tensor into
the shards (memory stays at a few hundred MB) with --threads worker threads.

Cached: bench_model.json in the folder records the generator's version, the config and the seed;
when it matches and every shard has its size, nothing is written. A folder that exists without that
file (or with another config) is replaced only if it holds nothing but what this script writes.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import struct
import sys
import time
import zlib

import torch

GENERATOR_VERSION = 1
OUR_FILES_PREFIXES = ("model", "config.json", "generation_config.json", "bench_model.json")


def make_config(layers):
    """config.json as transformers 5.x writes Qwen3MoeForCausalLM (Qwen3-30B-A3B's values)."""
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "decoder_sparse_step": 1,
        "dtype": "bfloat16",
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": 48,
        "mlp_only_layers": [],
        "model_type": "qwen3_moe",
        "moe_intermediate_size": 768,
        "norm_topk_prob": True,
        "num_attention_heads": 32,
        "num_experts_per_tok": 8,
        "num_hidden_layers": layers,
        "num_key_value_heads": 4,
        "num_local_experts": 128,
        "output_router_logits": False,
        "pad_token_id": None,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "router_aux_loss_coef": 0.001,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "transformers_version": "5.17.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


def shard_plan(c):
    """[(file name, [(tensor name, shape, kind)])]: embedding, one shard per layer, norm + head."""
    d, V, H, Hkv, D = (c["hidden_size"], c["vocab_size"], c["num_attention_heads"],
                       c["num_key_value_heads"], c["head_dim"])
    E, F, L = c["num_local_experts"], c["moe_intermediate_size"], c["num_hidden_layers"]
    groups = [[("model.embed_tokens.weight", (V, d), "linear")]]
    for l in range(L):
        p = f"model.layers.{l}."
        g = [(p + "input_layernorm.weight", (d,), "norm"),
             (p + "post_attention_layernorm.weight", (d,), "norm"),
             (p + "self_attn.q_proj.weight", (H * D, d), "linear"),
             (p + "self_attn.k_proj.weight", (Hkv * D, d), "linear"),
             (p + "self_attn.v_proj.weight", (Hkv * D, d), "linear"),
             (p + "self_attn.o_proj.weight", (d, H * D), "linear"),
             (p + "self_attn.q_norm.weight", (D,), "norm"),
             (p + "self_attn.k_norm.weight", (D,), "norm"),
             (p + "mlp.gate.weight", (E, d), "linear")]
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            g += [(q + "gate_proj.weight", (F, d), "linear"),
                  (q + "up_proj.weight", (F, d), "linear"),
                  (q + "down_proj.weight", (d, F), "linear")]
        groups.append(g)
    groups.append([("model.norm.weight", (d,), "norm"), ("lm_head.weight", (V, d), "linear")])
    n = len(groups)
    # Within a shard, tensors sorted by name (as safetensors' save_file writes them).
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", sorted(g)) for i, g in enumerate(groups)]


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def header_bytes(tensors):
    header, offset = {}, 0
    for name, shape, _ in tensors:
        size = 2 * numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text, offset


def draw(name, shape, kind, seed, std):
    """One tensor as BF16 bytes (a numpy int16 view, no copy)."""
    if kind == "norm":
        t = torch.ones(shape, dtype=torch.bfloat16)
    else:
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63))
        t = torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=g).to(torch.bfloat16)
    return t.view(torch.int16).numpy()


def stamp_of(config, seed, std):
    return {"generator": "bench/infer/make_bench_model.py", "version": GENERATOR_VERSION,
            "seed": seed, "std": std, "config": config}


def cached(out, stamp, plan):
    try:
        with open(os.path.join(out, "bench_model.json")) as f:
            if json.load(f) != stamp:
                return False
        for fname, tensors in plan:
            head, data = header_bytes(tensors)
            if os.path.getsize(os.path.join(out, fname)) != len(head) + data:
                return False
        return True
    except (OSError, ValueError):
        return False


def only_ours(folder):
    return all(n.startswith(OUR_FILES_PREFIXES) for n in os.listdir(folder))


def write(out, config, seed, std, threads, quiet):
    plan = shard_plan(config)
    tmp = out.rstrip("/") + ".partial"
    if os.path.exists(tmp):
        if not (os.path.isdir(tmp) and only_ours(tmp)):
            sys.exit(f"error: {tmp} exists and holds files this script did not write; remove it")
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    torch.set_num_threads(1)  # parallel over tensors instead: torch's RNG is one thread per call
    weight_map, total, t0 = {}, 0, time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for si, (fname, tensors) in enumerate(plan):
            head, size = header_bytes(tensors)
            with open(os.path.join(tmp, fname), "wb") as f:
                f.write(head)
                window = 2 * max(1, threads) + 2  # tensors in flight: bounded memory
                futures = []
                for i, (name, shape, kind) in enumerate(tensors):
                    futures.append(pool.submit(draw, name, shape, kind, seed, std))
                    if len(futures) >= window:
                        f.write(futures.pop(0).result())
                for fut in futures:
                    f.write(fut.result())
            for name, _, _ in tensors:
                weight_map[name] = fname
            total += size
            if not quiet:
                print(f"make_bench_model: {fname} ({size / 1e9:.2f} GB, {time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                  sort_keys=True)
        f.write("\n")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                   "transformers_version": config["transformers_version"]}, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp, "bench_model.json"), "w") as f:  # last: marks the folder complete
        json.dump(stamp_of(config, seed, std), f, indent=2, sort_keys=True)
        f.write("\n")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    return total, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--layers", type=int, default=4, help="decoder layers (Qwen3-30B-A3B has 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--std", type=float, default=0.02, help="standard deviation of the matrices")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.layers < 1:
        p.error("--layers must be at least 1")
    config = make_config(a.layers)
    stamp = stamp_of(config, a.seed, a.std)
    plan = shard_plan(config)
    params = sum(numel(s) for _, ts in plan for _, s, _ in ts)
    if cached(a.out, stamp, plan):
        print(f"make_bench_model: {a.out} is up to date ({params / 1e9:.2f} B parameters, "
              f"{2 * params / 1e9:.2f} GB BF16)", file=sys.stderr)
        return 0
    if os.path.exists(a.out) and not (os.path.isdir(a.out) and only_ours(a.out)):
        sys.exit(f"error: {a.out} exists and holds files this script did not write; "
                 "remove it or choose another --out")
    total, secs = write(a.out, config, a.seed, a.std, a.threads, a.quiet)
    print(f"make_bench_model: wrote {a.out}: {a.layers} layers, {params / 1e9:.2f} B parameters, "
          f"{total / 1e9:.2f} GB BF16 in {secs:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
