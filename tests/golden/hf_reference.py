#!/usr/bin/python3
"""Independent float64 PyTorch reference of Hugging Face causal-LM architectures.

    hf_reference.py forward  --model DIR --in in.safetensors --out out.safetensors
    hf_reference.py generate --model DIR --ids 1,2,3 --max-new-tokens 8 [--temperature 0]
                             [--format json]

Mirrors `switchyard forward` / `switchyard generate`: `in` holds input_ids int64 (B, T); `out`
gets logits float32 (B, T, V) and router_logits.<i> float32 (B*T, E) for the i-th MoE layer
(counting MoE layers only, from 0); generate prints {"ids": [prompt ids, then greedy ids]}.
As a module: `HFModel.from_dir(DIR)`, `.forward(ids) -> (logits, [router_logits])`,
`.generate(prompt, max_new_tokens)`.

A model folder is what transformers' save_pretrained writes: config.json, and model.safetensors or
shards listed in model.safetensors.index.json; weights may be F32, F16, BF16 (or F64), every
computation here is float64 (weights are widened exactly). Plain tensor code, no autograd, no
KV cache (generate recomputes the whole sequence each step).

Architectures (config.json "architectures"[0], or model_type): MixtralForCausalLM,
Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM, DeepseekV3ForCausalLM,
LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM.

Semantics, written from the published modelling code of transformers (src/transformers/models/
<family>/modeling_<family>.py or modular_<family>.py, 4.5x and 5.x) and read point by point;
what was verified where:

Common (all families)
  - Pre-norm decoder: h = x + attn(rms(x)); h = h + mlp(rms(h)); final model.norm; lm_head
    (LlamaDecoderLayer.forward, MixtralDecoderLayer.forward, DeepseekV3DecoderLayer).
  - RMSNorm: w * x / sqrt(mean(x^2) + eps) (LlamaRMSNorm.forward; Mixtral/Qwen*/Olmoe/DeepseekV3
    RMSNorm are the same class). eps = rms_norm_eps.
  - RoPE: inv_freq_i = theta^(-2i/dim), cos/sin of cat(freqs, freqs) times the rope type's
    attention_factor, q*cos + rotate_half(q)*sin with rotate_half(x) = cat(-x2, x1)
    (LlamaRotaryEmbedding.forward, rotate_half, apply_rotary_pos_emb). dim = head_dim.
    Positions 0..T-1 (cache_position).
  - rope types (modeling_rope_utils.py: _compute_default_rope_parameters,
    _compute_linear_scaling_rope_parameters (inv_freq / factor), _compute_dynamic_ntk_parameters
    (base * (factor*L/max_pos - (factor-1))^(dim/(dim-2)) with L = max(T, max_pos): equals the
    default for T <= max_position_embeddings), _compute_llama3_parameters (wavelen thresholds
    old_len/low_freq_factor, old_len/high_freq_factor, smooth interpolation in between),
    _compute_yarn_parameters (see DeepSeek-V3 below)).
  - config forms: transformers 4.x writes rope_theta at the top level and rope_scaling
    {"rope_type" or legacy "type", ...} (or null); 5.x writes rope_parameters
    {"rope_type", "rope_theta", ...} (PreTrainedConfig.standardize_rope_params). Both accepted;
    rope_parameters wins when both are present.
  - Attention: scores = q k^T * head_dim^-0.5 + causal mask, softmax in float, GQA by repeat_kv
    (query head h reads kv head h // (H / Hkv)) (eager_attention_forward, repeat_kv).
    head_dim = config.head_dim, or hidden_size // num_attention_heads when absent/null
    (LlamaAttention.__init__: getattr(config, "head_dim", None) or ...).
  - SwiGLU MLP: down(act(gate(x)) * up(x)) (LlamaMLP, Qwen2MoeMLP, MixtralBlockSparseTop2MLP with
    w1 = gate, w3 = up, w2 = down). act = hidden_act (silu in every real config).
  - tie_word_embeddings: lm_head.weight = model.embed_tokens.weight (PreTrainedModel.tie_weights).
  - sliding_window: applied only for Mistral/Mixtral (every layer, key j visible from query i
    iff i - j < window: masking_utils.sliding_window_overlay). IGNORED for the Qwen families
    (their use_sliding_window/max_window_layers/layer_types rule changed between versions and is
    off in every released config); the generated test sequences (<= 16 tokens) are shorter than
    any window anyway.
  - router logits: the gate's pre-activation logits, (B*T, E) per MoE layer, MoE layers only
    (MoeCausalLMOutputWithPast.router_logits; 5.x OutputRecorder on the router / gate Linear).

Mixtral (modular_mixtral.py: MixtralSparseMoeBlock.forward, MixtralBlockSparseTop2MLP)
  - gate = block_sparse_moe.gate (Linear, no bias); p = softmax(logits); top-k of p; weights
    renormalised to sum 1 (always); experts w1/w3/w2. Attention = MistralAttention (no biases).
  - num_local_experts, num_experts_per_tok; router_jitter_noise only in training (ignored).
  CHECKED NUMERICALLY against the transformers 5.17 golden (test_hf_reference.py).

Qwen3-MoE (modular_qwen3_moe.py: Qwen3MoeSparseMoeBlock, Qwen3MoeTopKRouter = Qwen2MoeTopKRouter;
  modeling_qwen3.py: Qwen3Attention.forward)
  - q_norm / k_norm: RMSNorm over head_dim applied per head to q_proj(x).view(..., H, head_dim)
    and k_proj(x).view(..., Hkv, head_dim), BEFORE RoPE; attention_bias on q/k/v/o.
  - softmax, top-k, renormalise iff norm_topk_prob; no shared expert.
  - MoE layer iff i not in mlp_only_layers and num_experts > 0 and (i+1) % decoder_sparse_step
    == 0, else dense MLP with intermediate_size (Qwen2MoeDecoderLayer.__init__).
  - num_experts (4.x) or num_local_experts (5.x: attribute_map in configuration_qwen3_moe.py).
  CHECKED NUMERICALLY against the transformers 5.17 golden (test_hf_reference.py).

Qwen2-MoE (modular_qwen2_moe.py: Qwen2MoeTopKRouter.forward, Qwen2MoeSparseMoeBlock.forward,
  Qwen2MoeAttention.__init__, Qwen2MoeDecoderLayer.__init__; configuration_qwen2_moe.py)
  - q/k/v bias iff qkv_bias (default True; 4.x hard-codes bias=True), o_proj no bias; no q/k norm.
  - softmax over experts, top-k, renormalise iff norm_topk_prob (default False).
  - shared expert: out += sigmoid(shared_expert_gate(x)) * shared_expert(x), shared_expert a
    SwiGLU of shared_expert_intermediate_size, shared_expert_gate Linear(hidden, 1, no bias).
  - MoE layer rule as Qwen3-MoE (mlp_only_layers, decoder_sparse_step).
  The routed part is also checked numerically by transplanting the Mixtral golden into the
  Qwen2-MoE layout (zero q/k/v biases, zero shared-expert down_proj, norm_topk_prob=true).

OLMoE (modular_olmoe.py: OlmoeAttention.__init__/forward, OlmoeSparseMoeBlock, OlmoeExperts)
  - q_norm = RMSNorm(hidden_size) over the WHOLE q projection, k_norm = RMSNorm((hidden_size //
    H) * Hkv) over the whole k projection, applied before the head split and before RoPE.
  - clip_qkv (if not null): q, k, v clamped to [-clip, clip] AFTER q_norm/k_norm, before RoPE.
  - softmax, top-k, renormalise iff norm_topk_prob (default False); every layer is MoE; experts
    use intermediate_size; attention_bias on q/k/v/o (LlamaAttention).

DeepSeek-V3 (modeling_deepseek_v3.py / modular_deepseek_v3.py: DeepseekV3Attention,
  apply_rotary_pos_emb_interleave, yarn_get_mscale, DeepseekV3TopkRouter /
  DeepseekV3MoE.route_tokens_to_experts, DeepseekV3MoE.forward, DeepseekV3DecoderLayer;
  configuration_deepseek_v3.py)
  - MLA: q = q_b_proj(q_a_layernorm(q_a_proj(x))) (or q_proj(x) when q_lora_rank is null),
    viewed (B, T, H, qk_nope + qk_rope) and split [nope, rope]; kv_a_proj_with_mqa(x) split
    [kv_lora_rank, qk_rope]; k_nope, v = split(kv_b_proj(kv_a_layernorm(c)).view(B, T, H,
    qk_nope + v_head_dim)); the rope part of k is ONE head shared by all heads.
    q_a_layernorm / kv_a_layernorm use eps 1e-6 (DeepseekV3RMSNorm default), not rms_norm_eps.
    attention_bias applies to q_a_proj, kv_a_proj_with_mqa, o_proj (not q_b/kv_b/q_proj).
  - rope_interleave (default True): the rope slices are de-interleaved (x.view(d/2, 2)
    .transpose -> [x0, x2, ..., x1, x3, ...]) and then rotated with rotate_half, i.e. pairs
    (x_{2i}, x_{2i+1}) rotate by angle_i as in DeepSeek's own code; rope dim = qk_rope_head_dim.
    k = cat(k_nope, k_rot), q = cat(q_nope, q_rot): both permuted the same way, q.k unchanged.
  - softmax scale = (qk_nope + qk_rope)^-0.5, times yarn_get_mscale(factor, mscale_all_dim)^2
    when the rope type is not default and mscale_all_dim is non-zero; yarn_get_mscale(s, m) =
    1 if s <= 1 else 0.1 m ln(s) + 1.
  - yarn (modeling_rope_utils._compute_yarn_parameters): attention_factor (applied to cos and
    sin) = attention_factor if given, else get_mscale(f, mscale)/get_mscale(f, mscale_all_dim) if
    both set, else get_mscale(f); correction range from beta_fast (32) / beta_slow (1) against
    original_max_position_embeddings, floor/ceil unless truncate is false, clamped to
    [0, dim-1]; linear ramp over dim/2; inv = inv/f * ramp + inv * (1 - ramp).
    factor = rope "factor", or max_position_embeddings / original_max_position_embeddings when
    absent (5.x). (4.5x recomputes factor from that ratio whenever original_max_position_embeddings
    is present; the generated checkpoints make both equal.)
  - router: logits = x W^T (float32 in transformers), s = sigmoid(logits); selection scores
    s + e_score_correction_bias; group score = sum of each group's top-2 selection scores over
    n_group groups; keep the topk_group best groups, mask the others' scores to 0.0 (transformers
    masked_fill(..., 0.0); DeepSeek's own inference code uses -inf: the same whenever the kept
    scores are positive, as they are in the generated checkpoints); top-k of the masked scores;
    weights = s (WITHOUT the bias) gathered at the chosen experts, divided by their sum + 1e-20
    iff norm_topk_prob, times routed_scaling_factor (always). router logits reported = the
    pre-sigmoid logits.
  - shared experts: one SwiGLU of moe_intermediate_size * n_shared_experts added unweighted
    (none when n_shared_experts is null or 0).
  - MoE layer iff n_routed_experts and i >= first_k_dense_replace and i % moe_layer_freq == 0
    (DeepSeek's modeling_deepseek.py; transformers checks only first_k_dense_replace, the same for
    moe_layer_freq = 1, the only value released configs use); dense layers use intermediate_size.
  - num_key_value_heads is irrelevant to MLA (kv_b_proj yields H heads); it must equal H.

Llama (modeling_llama.py: LlamaAttention, LlamaMLP): attention_bias on q/k/v/o, mlp_bias on
  gate/up/down; rope default or llama3 (Llama 3.1+) / linear / dynamic.
Mistral (modeling_mistral.py): as Llama without biases, head_dim may differ from hidden/H.
Qwen2 (modeling_qwen2.py: Qwen2Attention.__init__): q/k/v bias=True always, o_proj no bias.
Qwen3 (modeling_qwen3.py: Qwen3Attention.forward): per-head q_norm/k_norm before RoPE,
  attention_bias on q/k/v/o, explicit head_dim.

Precision notes: transformers runs these in float32 (routers and RoPE tables forced to float32);
this file is float64 throughout, so its logits differ from a float32 run by float32 rounding
(~1e-6 relative), and a routing decision flips only when two selection scores are closer than
that. HFModel.route_margins / greedy_margins record the smallest such gaps of the last call.
"""
import argparse
import json
import math
import os
import struct
import sys

try:
    import torch
    _IMPORT_ERROR = None
except Exception as _exc:  # reported by the callers (exit 77 in the test)
    torch = None
    _IMPORT_ERROR = _exc

F64 = torch.float64 if torch is not None else None

# ----------------------------------------------------------------------------------------------
# safetensors reading (F64/F32/F16/BF16 widened to float64; integer tensors kept as int64)
# ----------------------------------------------------------------------------------------------


def read_safetensors(path):
    """Returns dict name -> torch tensor (float64 for float dtypes, int64 for integers)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    int_types = {"I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                 "U8": torch.uint8, "BOOL": torch.bool}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(v) for v in info["data_offsets"])
        buf = bytearray(data[begin:end])  # writable copy for frombuffer
        count = 1
        for s in shape:
            count *= s
        if count == 0:
            t = torch.zeros(shape, dtype=F64)
        elif dt == "F64":
            t = torch.frombuffer(buf, dtype=torch.float64).clone()
        elif dt == "F32":
            t = torch.frombuffer(buf, dtype=torch.float32).to(F64)
        elif dt == "F16":
            t = torch.frombuffer(buf, dtype=torch.float16).to(F64)
        elif dt == "BF16":
            # bfloat16 = the high 16 bits of a float32: widen the bit pattern exactly
            bits = torch.frombuffer(buf, dtype=torch.int16).to(torch.int32) & 0xFFFF
            t = (bits << 16).view(torch.float32).to(F64)
        elif dt in int_types:
            t = torch.frombuffer(buf, dtype=int_types[dt]).to(torch.int64)
        else:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {dt}")
        if t.numel() != count:
            raise ValueError(f"{path}: tensor {name!r}: {t.numel()} values for shape {shape}")
        out[name] = t.reshape(shape)
    return out


def bf16_tensor_names(model_dir):
    """Names of the tensors stored as BF16 (in model.safetensors or the shards)."""
    files = [os.path.join(model_dir, "model.safetensors")]
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = [os.path.join(model_dir, s) for s in sorted(set(json.load(f)["weight_map"].values()))]
    names = set()
    for path in files:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n).decode("utf-8"))
        names |= {k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"}
    return names


def round_to_bf16(x):
    """x rounded to the nearest bfloat16 (ties to even), through float32 as the engine holds it."""
    return x.to(torch.float32).to(torch.bfloat16).to(x.dtype)


def load_weights(model_dir):
    """All tensors of model.safetensors, or of the shards listed in model.safetensors.index.json."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        weights = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(model_dir, shard))
            for name, t in part.items():
                if weight_map.get(name) != shard:
                    raise ValueError(f"{shard}: tensor {name!r} is not mapped to this shard")
                weights[name] = t
        missing = sorted(set(weight_map) - set(weights))
        if missing:
            raise ValueError(f"{model_dir}: index lists tensors absent from the shards: {missing[:5]}")
        return weights
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------

ARCHITECTURES = {
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "OlmoeForCausalLM": "olmoe",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
# transformers' defaults for keys a config.json may leave out
DEFAULT_THETA = {"mixtral": 1e6}
DEFAULT_EPS = {"mixtral": 1e-5, "olmoe": 1e-5, "llama": 1e-6, "mistral": 1e-6}


def family_of(cfg):
    for arch in cfg.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    mt = cfg.get("model_type")
    if mt in ARCHITECTURES.values():
        return mt
    raise ValueError(f"unsupported architecture {cfg.get('architectures')} / {mt}")


def _get(cfg, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


def rope_parameters(cfg, family):
    """The rope dict in 5.x form: {"rope_type", "rope_theta", type-specific keys}."""
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and rp:
        if "rope_type" not in rp and "rope_theta" not in rp and "type" not in rp:
            raise ValueError("per-layer-type rope_parameters are not supported")
        params = dict(rp)
    else:
        params = dict(cfg.get("rope_scaling") or {})
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    params.pop("type", None)
    if params.get("rope_theta") is None:
        params["rope_theta"] = _get(cfg, "rope_theta", default=DEFAULT_THETA.get(family, 10000.0))
    prf = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if prf not in (None, 1, 1.0):
        raise ValueError("partial_rotary_factor != 1 is not used by these families")
    return params


def _yarn_get_mscale(scale, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(rope, dim, max_pos, seq_len):
    """-> (inv_freq (dim/2,) float64, attention_factor) for the rope dict of rope_parameters()."""
    base = float(rope["rope_theta"])
    rtype = rope["rope_type"]
    exps = torch.arange(0, dim, 2, dtype=F64) / dim  # (dim/2,)
    inv = 1.0 / base ** exps
    attention_factor = 1.0
    if rtype == "default":
        pass
    elif rtype == "linear":
        inv = inv / float(rope["factor"])
    elif rtype == "dynamic":
        factor = float(rope["factor"])
        length = max(seq_len, max_pos)
        base = base * ((factor * length / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        inv = 1.0 / base ** exps
    elif rtype == "llama3":
        factor = float(rope["factor"])
        low_ff = float(rope["low_freq_factor"])
        high_ff = float(rope["high_freq_factor"])
        old_len = float(rope["original_max_position_embeddings"])
        low_freq_wavelen = old_len / low_ff
        high_freq_wavelen = old_len / high_ff
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    elif rtype == "yarn":
        orig = rope.get("original_max_position_embeddings") or max_pos
        factor = rope.get("factor")
        factor = float(factor) if factor is not None else max_pos / orig
        attention_factor = rope.get("attention_factor")
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        if attention_factor is None:
            if mscale and mscale_all_dim:
                attention_factor = (_yarn_get_mscale(factor, mscale)
                                    / _yarn_get_mscale(factor, mscale_all_dim))
            else:
                attention_factor = _yarn_get_mscale(factor)
        beta_fast = rope.get("beta_fast") or 32
        beta_slow = rope.get("beta_slow") or 1

        def correction_dim(rotations):
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if rope.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=F64) - low) / (high - low)).clamp(0, 1)
        extrapolation = 1 - ramp  # 1: keep the original frequency, 0: interpolate (divide)
        inv = (inv / factor) * (1 - extrapolation) + inv * extrapolation
    else:
        raise ValueError(f"unsupported rope_type {rtype!r}")
    return inv, float(attention_factor)


def rope_cos_sin(rope, dim, max_pos, seq_len):
    """cos, sin (T, dim) for positions 0..T-1, already times attention_factor."""
    inv, attention_factor = rope_inv_freq(rope, dim, max_pos, seq_len)
    pos = torch.arange(seq_len, dtype=F64)
    freqs = pos[:, None] * inv[None, :]  # (T, dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, dim)
    return emb.cos() * attention_factor, emb.sin() * attention_factor


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------


def linear(x, w, b=None):
    y = x @ w.t()
    return y + b if b is not None else y


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps))


def activation(name):
    if name in ("silu", "swish"):
        return lambda x: x * torch.sigmoid(x)
    if name == "gelu":
        return lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return torch.relu
    raise ValueError(f"unsupported hidden_act {name!r}")


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x (B, H, T, D); cos, sin (T, D)."""
    return x * cos + rotate_half(x) * sin


def deinterleave(x):
    """(..., D) [x0, x1, x2, x3, ...] -> [x0, x2, ..., x1, x3, ...] (DeepSeek rope_interleave)."""
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], d // 2, 2).transpose(-1, -2).reshape(*x.shape[:-1], d)


def causal_attention(q, k, v, scale, window=None):
    """q (B, H, T, Dk), k (B, Hkv, T, Dk), v (B, Hkv, T, Dv) -> (B, H, T, Dv)."""
    H, Hkv, T = q.shape[1], k.shape[1], q.shape[2]
    if H % Hkv:
        raise ValueError(f"{H} query heads are not a multiple of {Hkv} kv heads")
    k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, T, Dk): head h reads kv head h // rep
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T, T)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & ((i - j) < window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def topk_gap(scores, k):
    """Smallest gap between the k-th and (k+1)-th largest entry of each row (inf if k >= n)."""
    if k >= scores.shape[-1]:
        return float("inf")
    s = scores.sort(dim=-1, descending=True).values
    return float((s[:, k - 1] - s[:, k]).min())


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


class HFModel:
    def __init__(self, cfg, weights, generation_config=None, bf16_inputs=None):
        """bf16_inputs: names of BF16 weight matrices whose products take their input rounded to
        BF16 first (llama.cpp's and switchyard's default arithmetic for BF16 weights); None keeps
        every input exact. The router gates are never rounded (switchyard reads them as float32)."""
        self.cfg = cfg
        self.bf16_inputs = set(bf16_inputs or ())
        self.family = fam = family_of(cfg)
        self.w = weights
        self.V = int(cfg["vocab_size"])
        self.d = int(cfg["hidden_size"])
        self.L = int(cfg["num_hidden_layers"])
        self.H = int(cfg["num_attention_heads"])
        self.Hkv = int(_get(cfg, "num_key_value_heads", default=self.H))
        self.head_dim = int(_get(cfg, "head_dim", default=self.d // self.H))
        self.eps = float(_get(cfg, "rms_norm_eps", default=DEFAULT_EPS.get(fam, 1e-6)))
        self.act = activation(_get(cfg, "hidden_act", default="silu"))
        self.max_pos = int(_get(cfg, "max_position_embeddings", default=4096))
        self.rope = rope_parameters(cfg, fam)
        self.tie = bool(cfg.get("tie_word_embeddings", False))
        gen = generation_config or {}
        eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
        self.eos = set([eos] if isinstance(eos, int) else (eos or []))

        # attention flavour
        attention_bias = bool(cfg.get("attention_bias", False))
        self.qkv_bias = self.o_bias = False
        self.qk_norm = None  # None | "head" (Qwen3) | "full" (OLMoE)
        self.clip_qkv = None
        self.window = None
        if fam == "llama":
            self.qkv_bias = self.o_bias = attention_bias
        elif fam in ("mistral", "mixtral"):
            self.window = cfg.get("sliding_window")
        elif fam == "qwen2":
            self.qkv_bias = True
        elif fam == "qwen2_moe":
            self.qkv_bias = bool(cfg.get("qkv_bias", True))
        elif fam in ("qwen3", "qwen3_moe"):
            self.qkv_bias = self.o_bias = attention_bias
            self.qk_norm = "head"
        elif fam == "olmoe":
            self.qkv_bias = self.o_bias = attention_bias
            self.qk_norm = "full"
            self.clip_qkv = cfg.get("clip_qkv")
        elif fam == "deepseek_v3":
            self.attention_bias = attention_bias
            self.q_lora_rank = cfg.get("q_lora_rank")
            self.kv_lora_rank = int(cfg["kv_lora_rank"])
            self.qk_nope = int(cfg["qk_nope_head_dim"])
            self.qk_rope = int(cfg["qk_rope_head_dim"])
            self.v_head_dim = int(cfg["v_head_dim"])
            self.rope_interleave = bool(cfg.get("rope_interleave", True))
            if self.Hkv != self.H:
                raise ValueError("DeepSeek-V3 MLA: num_key_value_heads must equal num_attention_heads")
            self.mla_scale = (self.qk_nope + self.qk_rope) ** -0.5
            if self.rope["rope_type"] != "default":
                mscale_all_dim = self.rope.get("mscale_all_dim") or 0
                if mscale_all_dim:
                    factor = self.rope.get("factor")
                    if factor is None:
                        factor = self.max_pos / self.rope["original_max_position_embeddings"]
                    m = _yarn_get_mscale(float(factor), float(mscale_all_dim))
                    self.mla_scale *= m * m
        self.mlp_bias = fam == "llama" and bool(cfg.get("mlp_bias", False))

        # which layers are MoE
        self.is_moe = [self._layer_is_moe(i) for i in range(self.L)]
        self.top_k = int(_get(cfg, "num_experts_per_tok", default=2))
        self.norm_topk_prob = {"mixtral": True}.get(fam, bool(cfg.get("norm_topk_prob", False)))
        if fam == "deepseek_v3":
            self.n_group = int(_get(cfg, "n_group", default=1))
            self.topk_group = int(_get(cfg, "topk_group", default=1))
            self.routed_scaling_factor = float(_get(cfg, "routed_scaling_factor", default=1.0))
            self.n_shared = int(_get(cfg, "n_shared_experts", default=0))
            self.norm_topk_prob = bool(cfg.get("norm_topk_prob", True))
        self.route_margins = []  # (layer, gap) of the last forward
        self.greedy_margins = []  # top-1 minus top-2 logit at each step of the last generate
        self._check_weights()

    @classmethod
    def from_dir(cls, model_dir, round_bf16_inputs=False):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        gen = None
        gpath = os.path.join(model_dir, "generation_config.json")
        if os.path.exists(gpath):
            with open(gpath) as f:
                gen = json.load(f)
        rounded = bf16_tensor_names(model_dir) if round_bf16_inputs else None
        return cls(cfg, load_weights(model_dir), gen, rounded)

    def lin(self, x, name, b=None):
        """linear(x, w[name], b), the input rounded to BF16 where w[name] is a rounded matrix."""
        if name in self.bf16_inputs:
            x = round_to_bf16(x)
        return linear(x, self.w[name], b)

    # ---- structure ---------------------------------------------------------------------------

    def num_experts(self):
        c = self.cfg
        if self.family == "deepseek_v3":
            return int(_get(c, "n_routed_experts", "num_local_experts", default=0))
        return int(_get(c, "num_local_experts", "num_experts", default=0))

    def _layer_is_moe(self, i):
        fam, c = self.family, self.cfg
        if fam in ("mixtral", "olmoe"):
            return True
        if fam in ("qwen2_moe", "qwen3_moe"):
            step = int(_get(c, "decoder_sparse_step", default=1))
            return (i not in (c.get("mlp_only_layers") or [])) and self.num_experts() > 0 \
                and (i + 1) % step == 0
        if fam == "deepseek_v3":
            freq = int(_get(c, "moe_layer_freq", default=1))
            return self.num_experts() > 0 and i >= int(_get(c, "first_k_dense_replace", default=0)) \
                and i % freq == 0
        return False

    def expected_weight_names(self):
        """Every tensor name this configuration reads (lm_head only when untied)."""
        names = ["model.embed_tokens.weight", "model.norm.weight"]
        if not self.tie:
            names.append("lm_head.weight")
        E = self.num_experts()
        for i in range(self.L):
            p = f"model.layers.{i}."
            names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
            a = p + "self_attn."
            if self.family == "deepseek_v3":
                if self.q_lora_rank:
                    names += [a + "q_a_proj.weight", a + "q_a_layernorm.weight", a + "q_b_proj.weight"]
                    if self.attention_bias:
                        names.append(a + "q_a_proj.bias")
                else:
                    names.append(a + "q_proj.weight")
                names += [a + "kv_a_proj_with_mqa.weight", a + "kv_a_layernorm.weight",
                          a + "kv_b_proj.weight", a + "o_proj.weight"]
                if self.attention_bias:
                    names += [a + "kv_a_proj_with_mqa.bias", a + "o_proj.bias"]
            else:
                for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    names.append(a + proj + ".weight")
                    if (self.qkv_bias and proj != "o_proj") or (self.o_bias and proj == "o_proj"):
                        names.append(a + proj + ".bias")
                if self.qk_norm:
                    names += [a + "q_norm.weight", a + "k_norm.weight"]
            if not self.is_moe[i]:
                for proj in ("gate_proj", "up_proj", "down_proj"):
                    names.append(p + "mlp." + proj + ".weight")
                    if self.mlp_bias:
                        names.append(p + "mlp." + proj + ".bias")
                continue
            if self.family == "mixtral":
                m = p + "block_sparse_moe."
                names.append(m + "gate.weight")
                names += [m + f"experts.{e}.{w}.weight" for e in range(E) for w in ("w1", "w2", "w3")]
                continue
            m = p + "mlp."
            names.append(m + "gate.weight")
            names += [m + f"experts.{e}.{w}.weight" for e in range(E)
                      for w in ("gate_proj", "up_proj", "down_proj")]
            if self.family == "qwen2_moe":
                names += [m + f"shared_expert.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
                names.append(m + "shared_expert_gate.weight")
            if self.family == "deepseek_v3":
                names.append(m + "gate.e_score_correction_bias")
                if self.n_shared:
                    names += [m + f"shared_experts.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
        return names

    def _check_weights(self):
        missing = [n for n in self.expected_weight_names() if n not in self.w]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:4]}")

    # ---- attention ---------------------------------------------------------------------------

    def _attention(self, i, x, cos, sin):
        """x (B, T, d) -> (B, T, d)."""
        if self.family == "deepseek_v3":
            return self._mla(i, x, cos, sin)
        w, a = self.w, f"model.layers.{i}.self_attn."
        B, T, _ = x.shape
        H, Hkv, D = self.H, self.Hkv, self.head_dim
        b = (lambda n: w[a + n + ".bias"]) if self.qkv_bias else (lambda n: None)
        q = self.lin(x, a + "q_proj.weight", b("q_proj"))  # (B, T, H*D)
        k = self.lin(x, a + "k_proj.weight", b("k_proj"))  # (B, T, Hkv*D)
        v = self.lin(x, a + "v_proj.weight", b("v_proj"))  # (B, T, Hkv*D)
        if self.qk_norm == "full":  # OLMoE: over the whole projection, before the head split
            q = rms_norm(q, w[a + "q_norm.weight"], self.eps)
            k = rms_norm(k, w[a + "k_norm.weight"], self.eps)
        if self.clip_qkv is not None:
            c = float(self.clip_qkv)
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.view(B, T, H, D)
        k = k.view(B, T, Hkv, D)
        v = v.view(B, T, Hkv, D)
        if self.qk_norm == "head":  # Qwen3: per head over head_dim
            q = rms_norm(q, w[a + "q_norm.weight"], self.eps)
            k = rms_norm(k, w[a + "k_norm.weight"], self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = causal_attention(q, k, v, D ** -0.5, self.window)  # (B, H, T, D)
        o = o.transpose(1, 2).reshape(B, T, H * D)
        return self.lin(o, a + "o_proj.weight", w[a + "o_proj.bias"] if self.o_bias else None)

    def _mla(self, i, x, cos, sin):
        """DeepSeek-V3 multi-head latent attention; x (B, T, d) -> (B, T, d)."""
        w, a = self.w, f"model.layers.{i}.self_attn."
        B, T, _ = x.shape
        H, nope, rope, dv = self.H, self.qk_nope, self.qk_rope, self.v_head_dim
        bias = (lambda n: w[a + n + ".bias"]) if self.attention_bias else (lambda n: None)
        if self.q_lora_rank:
            cq = self.lin(x, a + "q_a_proj.weight", bias("q_a_proj"))  # (B, T, q_lora_rank)
            cq = rms_norm(cq, w[a + "q_a_layernorm.weight"], 1e-6)
            q = self.lin(cq, a + "q_b_proj.weight")  # (B, T, H*(nope+rope))
        else:
            q = self.lin(x, a + "q_proj.weight")
        q = q.view(B, T, H, nope + rope).transpose(1, 2)  # (B, H, T, nope+rope)
        q_nope, q_rot = q[..., :nope], q[..., nope:]
        ckv = self.lin(x, a + "kv_a_proj_with_mqa.weight", bias("kv_a_proj_with_mqa"))
        c, k_rot = ckv[..., :self.kv_lora_rank], ckv[..., self.kv_lora_rank:]  # (B,T,r), (B,T,rope)
        c = rms_norm(c, w[a + "kv_a_layernorm.weight"], 1e-6)
        kv = self.lin(c, a + "kv_b_proj.weight").view(B, T, H, nope + dv).transpose(1, 2)
        k_nope, v = kv[..., :nope], kv[..., nope:]  # (B, H, T, nope), (B, H, T, dv)
        k_rot = k_rot.view(B, 1, T, rope)  # one rope key shared by all heads
        if self.rope_interleave:
            q_rot, k_rot = deinterleave(q_rot), deinterleave(k_rot)
        q_rot, k_rot = apply_rope(q_rot, cos, sin), apply_rope(k_rot, cos, sin)
        k_rot = k_rot.expand(B, H, T, rope)
        q = torch.cat([q_nope, q_rot], dim=-1)  # (B, H, T, nope+rope)
        k = torch.cat([k_nope, k_rot], dim=-1)
        o = causal_attention(q, k, v, self.mla_scale)  # (B, H, T, dv)
        o = o.transpose(1, 2).reshape(B, T, H * dv)
        return self.lin(o, a + "o_proj.weight", bias("o_proj"))

    # ---- feed-forward ------------------------------------------------------------------------

    def _swiglu(self, x, prefix, names=("gate_proj", "up_proj", "down_proj"), bias=False):
        w = self.w
        g, u, dn = (prefix + n for n in names)
        bb = (lambda n: w[n + ".bias"]) if bias else (lambda n: None)
        h = self.act(self.lin(x, g + ".weight", bb(g))) * self.lin(x, u + ".weight", bb(u))
        return self.lin(h, dn + ".weight", bb(dn))

    def _experts(self, x, idx, weight, prefix, names):
        """x (N, d), idx/weight (N, k): sum_j weight[:, j] * expert_{idx[:, j]}(x)."""
        out = torch.zeros_like(x)
        for e in range(self.num_experts()):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            y = self._swiglu(x[tok], f"{prefix}experts.{e}.", names)
            out.index_add_(0, tok, y * weight[tok, slot, None])
        return out

    def _moe(self, i, x):
        """x (B, T, d) -> (y (B, T, d), router_logits (B*T, E))."""
        B, T, d = x.shape
        xf = x.reshape(B * T, d)  # token n = b*T + t
        fam, w, k = self.family, self.w, self.top_k
        if fam == "mixtral":
            p = f"model.layers.{i}.block_sparse_moe."
            names = ("w1", "w3", "w2")
        else:
            p = f"model.layers.{i}.mlp."
            names = ("gate_proj", "up_proj", "down_proj")
        logits = linear(xf, w[p + "gate.weight"])  # (N, E); a gate is never rounded
        if fam == "deepseek_v3":
            idx, weight = self._deepseek_route(i, logits, w[p + "gate.e_score_correction_bias"])
        else:
            probs = torch.softmax(logits, dim=-1)  # (N, E)
            self.route_margins.append((i, topk_gap(probs, k)))
            weight, idx = probs.topk(k, dim=-1)  # (N, k)
            if self.norm_topk_prob:
                weight = weight / weight.sum(dim=-1, keepdim=True)
        y = self._experts(xf, idx, weight, p, names)
        if fam == "qwen2_moe":
            gate = torch.sigmoid(linear(xf, w[p + "shared_expert_gate.weight"]))  # (N, 1), exact
            y = y + gate * self._swiglu(xf, p + "shared_expert.")
        if fam == "deepseek_v3" and self.n_shared:
            y = y + self._swiglu(xf, p + "shared_experts.")
        return y.reshape(B, T, d), logits

    def _deepseek_route(self, i, logits, bias):
        """noaux_tc routing: logits (N, E) -> idx (N, k), weights (N, k)."""
        N, E = logits.shape
        G, k = self.n_group, self.top_k
        scores = torch.sigmoid(logits)  # (N, E)
        choice = scores + bias[None, :]  # selection scores only
        group_scores = choice.view(N, G, E // G).topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
        self.route_margins.append((i, topk_gap(group_scores, self.topk_group)))
        group_idx = group_scores.topk(self.topk_group, dim=-1).indices  # (N, topk_group)
        group_mask = torch.zeros(N, G, dtype=torch.bool)
        group_mask[torch.arange(N)[:, None], group_idx] = True
        expert_mask = group_mask[:, :, None].expand(N, G, E // G).reshape(N, E)
        masked = choice.masked_fill(~expert_mask, 0.0)
        self.route_margins.append((i, topk_gap(masked, k)))
        idx = masked.topk(k, dim=-1).indices  # (N, k)
        weight = scores.gather(1, idx)
        if self.norm_topk_prob:
            weight = weight / (weight.sum(dim=-1, keepdim=True) + 1e-20)
        return idx, weight * self.routed_scaling_factor

    # ---- full model --------------------------------------------------------------------------

    def forward(self, input_ids):
        """input_ids (B, T) int -> (logits (B, T, V) float64, [router_logits (B*T, E)] per MoE layer)."""
        ids = torch.as_tensor(input_ids, dtype=torch.int64)
        if ids.dim() == 1:
            ids = ids[None, :]
        B, T = ids.shape
        w = self.w
        self.route_margins = []
        rope_dim = self.qk_rope if self.family == "deepseek_v3" else self.head_dim
        cos, sin = rope_cos_sin(self.rope, rope_dim, self.max_pos, T)  # (T, rope_dim)
        x = w["model.embed_tokens.weight"][ids]  # (B, T, d)
        router_logits = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            x = x + self._attention(i, rms_norm(x, w[p + "input_layernorm.weight"], self.eps), cos, sin)
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            if self.is_moe[i]:
                y, logits = self._moe(i, h)
                router_logits.append(logits)
            else:
                y = self._swiglu(h, p + "mlp.", bias=self.mlp_bias)
            x = x + y
        x = rms_norm(x, w["model.norm.weight"], self.eps)
        head = "model.embed_tokens.weight" if self.tie else "lm_head.weight"
        return self.lin(x, head), router_logits

    def generate(self, prompt, max_new_tokens, stop_at_eos=True):
        """Greedy decoding, recomputing the whole sequence each step; prompt ids then new ids.
        Stops after an eos token (generation_config.json / config.json eos_token_id) like
        transformers' generate, unless stop_at_eos is False."""
        ids = [int(t) for t in prompt]
        self.greedy_margins = []
        route_margins = []
        for _ in range(max_new_tokens):
            logits, _ = self.forward([ids])
            route_margins += self.route_margins
            last = logits[0, -1]
            top2 = last.topk(2).values
            self.greedy_margins.append(float(top2[0] - top2[1]))
            nxt = int(last.argmax())
            ids.append(nxt)
            if stop_at_eos and nxt in self.eos:
                break
        self.route_margins = route_margins
        return ids


# ----------------------------------------------------------------------------------------------
# command line (mirrors `switchyard forward` / `switchyard generate`)
# ----------------------------------------------------------------------------------------------


def _write_f32_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].to(torch.float32).contiguous()
        buf = struct.pack(f"<{t.numel()}f", *t.reshape(-1).tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(buf)]}
        chunks.append(buf)
        offset += len(buf)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward")
    f.add_argument("--model", required=True)
    f.add_argument("--in", dest="inp", required=True)
    f.add_argument("--out", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--ids", required=True)
    g.add_argument("--max-new-tokens", type=int, default=8)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--format", default="json", choices=["json", "text"])
    args = ap.parse_args(argv)
    if torch is None:
        print(f"hf_reference.py: torch unavailable ({_IMPORT_ERROR})", file=sys.stderr)
        return 77
    model = HFModel.from_dir(args.model)
    if args.cmd == "forward":
        ids = read_safetensors(args.inp)["input_ids"]
        logits, routers = model.forward(ids)
        out = {"logits": logits}
        for i, r in enumerate(routers):
            out[f"router_logits.{i}"] = r
        _write_f32_safetensors(args.out, out)
        return 0
    if args.temperature != 0:
        print("hf_reference.py: only greedy decoding (--temperature 0)", file=sys.stderr)
        return 2
    ids = model.generate([int(t) for t in args.ids.split(",") if t.strip()], args.max_new_tokens)
    print(json.dumps({"ids": ids}) if args.format == "json" else " ".join(map(str, ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
