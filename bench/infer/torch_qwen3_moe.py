#!/usr/bin/python3
"""PyTorch eager Qwen3-MoE for bench/infer/run_infer_bench.sh (/usr/bin/python3: Debian's torch).

Reads a Hugging Face Qwen3MoeForCausalLM folder (config.json in the 4.x or 5.x form, one
model.safetensors or shards with an index; F32, BF16 or F16 tensors) and runs it the way
transformers' modelling code does, written out here because Debian has no transformers:
  - Qwen3MoeRMSNorm (float32 inside, back to the compute dtype, times the weight), per-head q/k
    RMSNorm, default RoPE (cos/sin in float32, cast to the compute dtype), eager attention
    (transformers' eager_attention_forward: repeat_kv, q k^T * head_dim^-0.5 + causal mask,
    softmax in float32, @ v; torch 1.13 has no scaled_dot_product_attention), a DynamicCache-style
    KV cache (torch.cat per step);
  - the sparse MoE block as transformers 5.x writes it (Qwen3MoeTopKRouter + Qwen3MoeExperts):
    softmax over the router logits in float32, top-k, renormalised (norm_topk_prob), then the loop
    over the experts that got tokens (one_hot mask, torch.where, a fused gate_up_proj (E, 2F, d)
    and down_proj (E, d, F) indexed per expert, index_add_);
  - the LM head on the last position only (generate's logits_to_keep=1), greedy argmax in float32.

Compute dtype (--dtypes, comma separated, measured one after the other):
  bf16  weights and activations in bfloat16: what transformers 5.x does by default on a CPU with a
        BF16 checkpoint (from_pretrained's dtype="auto" keeps the checkpoint's dtype), so what a
        PyTorch user gets with this folder; the headline baseline;
  f32   weights upcast to float32 (transformers 4.x's default without torch_dtype, and the usual
        advice for CPUs where bf16 matmuls are slow); twice the memory.

Measures, per dtype, at batch 1 with torch.set_num_threads(--threads) and under
torch.inference_mode(): one warm-up generation (8-token prompt, 2 new tokens), then a
--prompt-len-token prompt (--ids, or random ids from --seed): prefill tokens/s = prompt tokens /
time of the prefill forward (which also yields the first token), decode tokens/s = (new tokens - 1)
/ time of the decode steps after it, as switchyard generate reports them.

Prints one JSON line per dtype on stdout. --check-golden FOLDER compares logits and greedy
generation with a transformers golden.json (../shared/data/hf-tiny/qwen3_moe) and exits.
"""
import argparse
import json
import math
import mmap
import os
import resource
import struct
import sys
import time

import torch
import torch.nn.functional as Fn

ST_DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2)}
COMPUTE = {"bf16": torch.bfloat16, "f32": torch.float32}


class Folder:
    """The tensors of a safetensors folder, memory-mapped; get(name) -> a tensor in its dtype."""

    def __init__(self, path):
        self.path = path
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.where, self.maps = {}, []
        for fname in files:
            with open(os.path.join(path, fname), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable: frombuffer
            (n,) = struct.unpack("<Q", mm[:8])
            header = json.loads(mm[8:8 + n])
            header.pop("__metadata__", None)
            for name, info in header.items():
                if info["dtype"] not in ST_DTYPES:
                    raise ValueError(f"{fname}: tensor {name} has dtype {info['dtype']}")
                self.where[name] = (len(self.maps), 8 + n + info["data_offsets"][0], info)
            self.maps.append(mm)

    def get(self, name):
        i, offset, info = self.where[name]
        dtype, size = ST_DTYPES[info["dtype"]]
        count = math.prod(info["shape"])
        raw = torch.frombuffer(self.maps[i], dtype=torch.int16 if size == 2 else torch.int32,
                               count=count, offset=offset)
        return raw.view(dtype).reshape(info["shape"])

    def close(self):
        for mm in self.maps:
            mm.close()


def read_config(path):
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    if c.get("architectures", [None])[0] != "Qwen3MoeForCausalLM":
        raise ValueError(f"{path}: not a Qwen3MoeForCausalLM folder")
    rope = c.get("rope_parameters") or {}
    c["theta"] = float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))
    if (rope.get("rope_type") or (c.get("rope_scaling") or {}).get("rope_type") or "default") != "default":
        raise ValueError("only the default RoPE is implemented here")
    c["E"] = c.get("num_experts") or c["num_local_experts"]
    c["head_dim"] = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    step = c.get("decoder_sparse_step", 1)
    only = set(c.get("mlp_only_layers") or [])
    c["moe_layers"] = [l not in only and c["E"] > 0 and (l + 1) % step == 0
                       for l in range(c["num_hidden_layers"])]
    return c


class Qwen3Moe:
    def __init__(self, path, dtype):
        self.c = c = read_config(path)
        self.dtype = dtype
        folder = Folder(path)
        get = lambda name: folder.get(name).to(dtype, copy=True).contiguous()  # noqa: E731
        self.embed = get("model.embed_tokens.weight")
        self.norm = get("model.norm.weight")
        self.head = self.embed if c.get("tie_word_embeddings") else get("lm_head.weight")
        self.layers = []
        d, F, E = c["hidden_size"], c["moe_intermediate_size"], c["E"]
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}."
            L = {k: get(p + n) for k, n in (
                ("ln1", "input_layernorm.weight"), ("ln2", "post_attention_layernorm.weight"),
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("qn", "self_attn.q_norm.weight"), ("kn", "self_attn.k_norm.weight"))}
            if c["moe_layers"][l]:
                L["gate"] = get(p + "mlp.gate.weight")
                gate_up = torch.empty(E, 2 * F, d, dtype=dtype)  # transformers 5.x's fused layout
                down = torch.empty(E, d, F, dtype=dtype)
                for e in range(E):
                    q = f"{p}mlp.experts.{e}."
                    gate_up[e, :F] = folder.get(q + "gate_proj.weight")
                    gate_up[e, F:] = folder.get(q + "up_proj.weight")
                    down[e] = folder.get(q + "down_proj.weight")
                L["gate_up"], L["down"] = gate_up, down
            else:
                L["mlp"] = [get(p + f"mlp.{n}.weight") for n in ("gate_proj", "up_proj", "down_proj")]
            self.layers.append(L)
        folder.close()
        D = c["head_dim"]
        self.inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))

    def params(self):
        n = self.embed.numel() + self.norm.numel()
        if self.head is not self.embed:
            n += self.head.numel()
        return n + sum(t.numel() for L in self.layers for t in L.values() if torch.is_tensor(t)) + \
            sum(t.numel() for L in self.layers for t in L.get("mlp", []))

    def rmsnorm(self, x, w):
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"])
        return w * xf.to(x.dtype)

    @staticmethod
    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def moe(self, L, x):  # x (T, d)
        c = self.c
        probs = Fn.softmax(Fn.linear(x, L["gate"]), dim=-1, dtype=torch.float32)
        weights, chosen = torch.topk(probs, c["num_experts_per_tok"], dim=-1)
        if c.get("norm_topk_prob"):
            weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = Fn.one_hot(chosen, num_classes=c["E"]).permute(2, 1, 0)  # (E, k, T)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit:
            e = e[0]
            slot, tok = torch.where(mask[e])
            h = x[tok]
            gate, up = Fn.linear(h, L["gate_up"][e]).chunk(2, dim=-1)
            h = Fn.linear(Fn.silu(gate) * up, L["down"][e]) * weights[tok, slot, None]
            out.index_add_(0, tok, h.to(out.dtype))
        return out

    def forward(self, ids, cache):
        """ids: list of ints (one sequence); cache: list of (k, v) per layer or None entries.
        Returns float32 logits of the last position."""
        c = self.c
        H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        T = len(ids)
        past = 0 if cache[0] is None else cache[0][0].shape[2]
        x = Fn.embedding(torch.tensor(ids), self.embed)  # (T, d)
        pos = torch.arange(past, past + T, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)  # (T, D)
        mask = None
        if T > 1:
            mask = torch.full((T, past + T), torch.finfo(self.dtype).min, dtype=self.dtype)
            mask = torch.triu(mask, diagonal=past + 1)
        for l, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["ln1"])
            q = self.rmsnorm(Fn.linear(h, L["q"]).view(T, H, D), L["qn"]).transpose(0, 1)
            k = self.rmsnorm(Fn.linear(h, L["k"]).view(T, Hkv, D), L["kn"]).transpose(0, 1)
            v = Fn.linear(h, L["v"]).view(T, Hkv, D).transpose(0, 1)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            k, v = k[None], v[None]  # (1, Hkv, T, D)
            if cache[l] is not None:
                k = torch.cat([cache[l][0], k], dim=-2)
                v = torch.cat([cache[l][1], v], dim=-2)
            cache[l] = (k, v)
            rep = H // Hkv
            kr = k[:, :, None].expand(1, Hkv, rep, past + T, D).reshape(H, past + T, D)
            vr = v[:, :, None].expand(1, Hkv, rep, past + T, D).reshape(H, past + T, D)
            s = torch.matmul(q, kr.transpose(1, 2)) * D ** -0.5
            if mask is not None:
                s = s + mask
            p = Fn.softmax(s, dim=-1, dtype=torch.float32).to(self.dtype)
            a = torch.matmul(p, vr).transpose(0, 1).reshape(T, H * D)
            x = x + Fn.linear(a, L["o"])
            h = self.rmsnorm(x, L["ln2"])
            if "mlp" in L:
                w1, w3, w2 = L["mlp"]
                x = x + Fn.linear(Fn.silu(Fn.linear(h, w1)) * Fn.linear(h, w3), w2)
            else:
                x = x + self.moe(L, h)
        x = self.rmsnorm(x[-1:], self.norm)
        return Fn.linear(x, self.head).to(torch.float32)[0]

    def all_logits(self, ids):  # for the golden check: every position
        out, cache = [], [None] * len(self.layers)
        for i in range(len(ids)):
            out.append(self.forward(ids[i:i + 1], cache))
        return torch.stack(out)

    def generate(self, ids, new_tokens):
        """Greedy; returns (generated ids, prefill seconds, decode seconds)."""
        cache = [None] * len(self.layers)
        t0 = time.perf_counter()
        nxt = int(torch.argmax(self.forward(list(ids), cache)))
        t1 = time.perf_counter()
        out = [nxt]
        while len(out) < new_tokens:
            nxt = int(torch.argmax(self.forward([nxt], cache)))
            out.append(nxt)
        return out, t1 - t0, time.perf_counter() - t1


def check_golden(path):
    with open(os.path.join(path, "golden.json")) as f:
        g = json.load(f)
    model = Qwen3Moe(path, torch.float32)
    worst = 0.0
    with torch.inference_mode():
        for b, ids in enumerate(g["input_ids"]):
            ref = torch.tensor(g["logits"][b])
            got = model.all_logits(ids)
            worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
        ok = worst < 1e-4
        for prefix, full in zip(g["generate_prefix"], g["generate"]):
            gen, _, _ = model.generate(prefix, len(full) - len(prefix))
            ok = ok and prefix + gen == full
            print(f"greedy: {prefix + gen == full}", file=sys.stderr)
    print(f"logits max relative error {worst:.2e}; {'OK' if ok else 'MISMATCH'}", file=sys.stderr)
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the Hugging Face folder")
    ap.add_argument("--dtypes", default="bf16", help="comma separated: bf16, f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--ids", default="", help="the prompt's token ids, comma separated (else random)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-golden", metavar="FOLDER")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.check_golden:
        return check_golden(a.check_golden)
    if not a.model:
        ap.error("--model is required")
    c = read_config(a.model)
    if a.ids:
        prompt = [int(v) for v in a.ids.split(",")]
    else:
        prompt = torch.randint(0, c["vocab_size"], (a.prompt_len,),
                               generator=torch.Generator().manual_seed(a.seed)).tolist()
    for name in a.dtypes.split(","):
        dtype = COMPUTE[name]
        t0 = time.perf_counter()
        model = Qwen3Moe(a.model, dtype)
        load_s = time.perf_counter() - t0
        with torch.inference_mode():
            model.generate(prompt[:8], 2)  # warm-up: oneDNN primitives, allocator
            ids, prefill_s, decode_s = model.generate(prompt, a.new_tokens)
        finite = True  # argmax of NaN logits would still give an id: check the last step's logits
        with torch.inference_mode():
            finite = bool(torch.isfinite(model.forward(prompt[:4], [None] * len(model.layers))).all())
        row = dict(impl="torch_eager", dtype=name, threads=torch.get_num_threads(),
                   torch=torch.__version__, prompt_tokens=len(prompt), new_tokens=len(ids),
                   prefill_s=round(prefill_s, 4), decode_s=round(decode_s, 4),
                   prefill_tps=round(len(prompt) / prefill_s, 3),
                   decode_tps=round((len(ids) - 1) / decode_s, 4) if len(ids) > 1 else None,
                   load_s=round(load_s, 2), params=model.params(), finite_logits=finite,
                   max_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                   generated=ids)
        print(json.dumps(row), flush=True)
        print(f"torch {name}: prefill {row['prefill_tps']:.1f} tokens/s, decode "
              f"{row['decode_tps']} tokens/s (load {load_s:.0f} s)", file=sys.stderr, flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
