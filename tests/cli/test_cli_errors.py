#!/usr/bin/python3
"""Bad inputs to `switchyard layer` (docs/layer-config.md) fail cleanly.

For every bad input the CLI must exit with status 1 (not crash on a signal, not report an internal
error with status 2), print an "error" line on stderr that names the offending thing (field,
tensor, value or file path), and leave an existing output file byte-identical (no partial write,
no stray temporary file). A valid small case (mixtral, T=5, d=6, E=4, F=3, SwiGLU) must succeed.

The same holds for `switchyard llm eval | train | route` (docs/llm-routing.md): bad data files,
formats, router kinds, parameters, capacities and router folders exit non-zero with a message that
names them (status 1 for switchyard's own checks; CLI11's usage errors keep their own status),
never a crash or an internal error. A happy path trains a kNN router on a tiny RouterBench CSV and
routes prompts with it (one JSON line per prompt, naming a model of the data).

Usage: /usr/bin/python3 test_cli_errors.py --switchyard build/release/switchyard
Prints one line per case and "N passed, M failed"; exit 1 on any failure, 77 when numpy is missing.
"""
import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"SKIPPED: numpy is not available ({exc})")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
import safetensors_io  # noqa: E402

T, D, E, F = 5, 6, 4, 3
VALID_CONFIG = {"router": "mixtral", "k": 2, "activation": "swiglu"}
SENTINEL = b"pre-existing output: must survive a failed run byte for byte\n"
TIMEOUT_S = 60


def valid_tensors():
    rng = np.random.default_rng(1234)
    f32 = np.float32
    return {
        "x": rng.standard_normal((T, D)).astype(f32),
        "gate.weight": rng.standard_normal((E, D)).astype(f32),
        "experts.w1": (0.3 * rng.standard_normal((E, F, D))).astype(f32),
        "experts.w3": (0.3 * rng.standard_normal((E, F, D))).astype(f32),
        "experts.w2": (0.3 * rng.standard_normal((E, D, F))).astype(f32),
    }


def safetensors_bytes(tensors):
    """The bytes safetensors_io.save writes (via a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        safetensors_io.save(path, tensors)
        with open(path, "rb") as f:
            return f.read()


def raw_safetensors(header, data=b"", header_len=None):
    """A safetensors file from an explicit header (dict or raw bytes) and data buffer."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data


class Case:
    """One bad input. `config` is a dict (written as JSON), str (written verbatim) or None (the
    valid config); `tensors` a dict, raw bytes for the input file, or None (the valid tensors).
    `names` are regular expressions that must all match stderr (case-insensitive)."""

    def __init__(self, name, names, config=None, tensors=None, in_path=None, config_path=None,
                 out_path=None, check_output=True):
        self.name = name
        self.names = names
        self.config = config
        self.tensors = tensors
        self.in_path = in_path
        self.config_path = config_path
        self.out_path = out_path
        self.check_output = check_output


def with_tensors(**changes):
    """The valid tensors with some replaced (value) or removed (None). Names use '__' for '.'."""
    t = valid_tensors()
    for key, value in changes.items():
        name = key.replace("__", ".")
        if value is None:
            t.pop(name, None)
        else:
            t[name] = value
    return t


def poke(name, index, value):
    t = valid_tensors()
    t[name] = t[name].copy()
    t[name][index] = value
    return t


def cases(root):
    v = valid_tensors()
    f32 = np.float32
    valid_bytes = safetensors_bytes(v)
    x_entry = {"dtype": "F32", "shape": [T, D], "data_offsets": [0, T * D * 4]}
    no_gate = {k: a for k, a in v.items() if k != "gate.weight"}  # hash routers have no gate
    hash_tensors = dict(no_gate, token_ids=np.arange(T, dtype=np.int64))
    mask_tensors = dict(v, token_ids=np.arange(T, dtype=np.int64))  # maskmoe without token_counts
    missing = os.path.join(root, "does_not_exist", "in.safetensors")
    no_dir = os.path.join(root, "no_such_dir", "out.safetensors")
    global_config = dict(VALID_CONFIG, losses={"balance": 0.01, "balance_mode": "global_batch"})
    stable_config = {"router": "stablemoe", "vocab_size": 8}  # StableMoE's, D = 50 default
    stable_tensors = no_gate | {"router.centroids": np.ones((E, D), f32),
                                "router.token_embedding": np.ones((8, 50), f32),
                                "router.token_centroids": np.ones((E, 50), f32),
                                "token_ids": np.array([0, 7, 3, 3, 1], np.int64)}
    vq_tensors = no_gate | {"router.gate": np.ones((E, D), f32),  # VQMoE's three tensors
                            "router.codebook": np.ones((E, D), f32),
                            "router.mix": np.ones((2, D), f32)}
    cosine_tensors = {"router.projection": np.ones((16, D), f32),  # X-MoE's, D = 16 default
                      "router.expert_embeddings": np.ones((E, 16), f32),
                      "router.log_scale": np.array([2.0], f32)}
    speech_tensors = {"router.gate": np.ones((E, D + 16), f32),  # SpeechMoE2's, D = 16 default
                      "router.global_projection": np.ones((16, D), f32)}
    duo_tensors = {"x": v["x"], "gate.weight": np.ones((2, D), f32),  # Duo-LLM: E = 2 experts
                   "experts.w1": v["experts.w1"][:2], "experts.w3": v["experts.w3"][:2],
                   "experts.w2": v["experts.w2"][:2]}
    flex_tensors = dict(v, **{"gate.weight": np.ones((E + 4, D), f32)})  # E + 4 width columns
    return [
        Case("x wrong rank", [r"'x'", re.escape("(5, 6, 1)")],
             tensors=with_tensors(x=v["x"].reshape(T, D, 1))),
        Case("x with NaN", [r"\bx\b", r"\bnan\b"], tensors=poke("x", (2, 3), np.nan)),
        Case("x with Inf", [r"\bx\b", r"\binf\b"], tensors=poke("x", (4, 0), np.inf)),
        Case("experts.w1 with NaN", [re.escape("experts.w1"), r"\bnan\b"],
             tensors=poke("experts.w1", (1, 2, 3), np.nan)),
        Case("gate.weight wrong shape", [re.escape("gate.weight"), re.escape("(3, 6)")],
             tensors=with_tensors(gate__weight=v["gate.weight"][:3].copy())),
        Case("experts.w2 wrong shape", [re.escape("experts.w2"), re.escape("(4, 3, 6)")],
             tensors=with_tensors(experts__w2=np.zeros((E, F, D), f32))),
        Case("missing experts.w3 for swiglu", [re.escape("experts.w3")],
             tensors=with_tensors(experts__w3=None)),
        Case("unknown tensor name", [re.escape("experts.w4")],
             tensors=dict(v, **{"experts.w4": np.zeros((E, F, D), f32)})),
        Case("seq_lens not summing to T", [r"seq_lens", r"\b4\b"],
             tensors=dict(v, seq_lens=np.array([2, 2], np.int64))),
        Case("seq_lens with 0", [r"seq_lens", r"\b0\b"],
             tensors=dict(v, seq_lens=np.array([5, 0], np.int64))),
        Case("token_ids missing for hash", [r"token_ids"], config={"router": "hash"},
             tensors=no_gate),
        Case("gate.weight given to hash (no gate)", [r"gate\.weight", r"hash"],
             config={"router": "hash"}, tensors=hash_tensors | {"gate.weight": v["gate.weight"]}),
        Case("gate.weight given to xmoe (its logits come from router.*)",
             [r"gate\.weight", r"xmoe", r"router\."], config={"router": "xmoe"},
             tensors=v | cosine_tensors),
        Case("router.projection missing for xmoe", [re.escape("router.projection")],
             config={"router": "xmoe"},
             tensors=no_gate | {k: a for k, a in cosine_tensors.items() if k != "router.projection"}),
        Case("router.expert_embeddings wrong shape", [re.escape("router.expert_embeddings"),
                                                       re.escape("(3, 16)")],
             config={"router": "xmoe"},
             tensors=no_gate | cosine_tensors | {"router.expert_embeddings": np.zeros((3, 16), f32)}),
        Case("router.log_scale with NaN", [re.escape("router.log_scale"), r"\bnan\b"],
             config={"router": "xmoe"},
             tensors=no_gate | cosine_tensors | {"router.log_scale": np.array([np.nan], f32)}),
        Case("cosine parameter without logits = cosine", [r"cosine_dim", r"logits"],
             config={"router": "mixtral", "cosine_dim": 8}),
        Case("router.gate not (E, d + global_dim) for speechmoe2",
             [re.escape("router.gate"), re.escape("(4, 22)")], config={"router": "speechmoe2"},
             tensors=no_gate | speech_tensors | {"router.gate": np.ones((E, D), f32)}),
        Case("router.global_projection missing for speechmoe2",
             [re.escape("router.global_projection")], config={"router": "speechmoe2"},
             tensors=no_gate | {"router.gate": speech_tensors["router.gate"]}),
        Case("speechmoe2 global_dim 0", [r"global_dim", r"\b0\b", r"speechmoe2"],
             config={"router": "speechmoe2", "global_dim": 0}, tensors=no_gate | speech_tensors),
        Case("global parameter without logits = global", [r"global_dim", r"logits"],
             config={"router": "mixtral", "global_dim": 8}),
        Case("speechmoe2 losses with sigmoid scores",
             [r"sparsity_loss", r"importance_loss", r"softmax", r"sigmoid", r"speechmoe2"],
             config={"router": "speechmoe2", "score": "sigmoid"}, tensors=no_gate | speech_tensors),
        Case("speechmoe2 negative sparsity_loss", [r"sparsity_loss", r"-0\.5"],
             config={"router": "speechmoe2", "sparsity_loss": -0.5},
             tensors=no_gate | speech_tensors),
        Case("aoe: experts.w1 reading x (E, F, d) instead of (E, F, aoe_rank)",
             [re.escape("experts.w1"), re.escape("(E, F, 2)"), r"aoe", re.escape("(4, 3, 6)")],
             config={"router": "aoe", "aoe_rank": 2},
             tensors=no_gate | {"router.down": np.ones((E * 2, D), f32)}),
        Case("aoe: aoe_rank = 0", [r"aoe_rank", r"\b0\b"], config={"router": "aoe", "aoe_rank": 0},
             tensors=no_gate),
        Case("aoe: router.down wrong shape", [re.escape("router.down"), re.escape("(8, 6)")],
             config={"router": "aoe", "aoe_rank": 2},
             tensors=no_gate | {"router.down": np.ones((E * 2 - 1, D), f32),
                                "experts.w1": np.ones((E, F, 2), f32)}),
        Case("aoe_rank without logits = aoe", [r"aoe_rank", r"logits"],
             config={"router": "mixtral", "aoe_rank": 8}),
        Case("aoe: aoe_down_std negative", [r"aoe_down_std", r"-0\.5"],
             config={"router": "aoe", "aoe_rank": 2, "aoe_down_std": -0.5}, tensors=no_gate),
        Case("router.qkv given to mixtral", [re.escape("router.qkv")],
             tensors=v | {"router.qkv": np.zeros((3 * E, D), f32)}),
        Case("token_ids given to a router that ignores them", [r"token_ids", r"mixtral"],
             tensors=dict(v, token_ids=np.arange(T, dtype=np.int64))),
        Case("token_counts missing for maskmoe", [r"in\.safetensors", r"token_counts", r"maskmoe"],
             config={"router": "maskmoe"}, tensors=mask_tensors),
        Case("token_counts not 1-D (maskmoe)", [r"token_counts", re.escape("(2, 3)")],
             config={"router": "maskmoe"},
             tensors=mask_tensors | {"token_counts": np.ones((2, 3), np.int64)}),
        Case("negative token count (maskmoe)", [r"token_counts", r"-2"], config={"router": "maskmoe"},
             tensors=mask_tensors | {"token_counts": np.array([3, 1, -2, 4, 0, 1], np.int64)}),
        Case("token id outside token_counts (maskmoe)",
             [r"in\.safetensors", r"maskmoe", r"token id 4", r"vocabulary of 4"],
             config={"router": "maskmoe"},
             tensors=mask_tensors | {"token_counts": np.array([3, 0, 5, 1], np.int64)}),
        Case("token_counts given to a router that ignores them", [r"token_counts", r"mixtral"],
             tensors=dict(v, token_counts=np.ones(8, np.int64))),
        Case("vocab_size missing for stablemoe", [r"vocab_size", r"stablemoe"],
             config={"router": "stablemoe"}, tensors=stable_tensors),
        Case("vocab_size given to a router whose logits read no ids", [r"vocab_size", r"mixtral"],
             config=dict(VALID_CONFIG, vocab_size=8)),
        Case("token id outside the vocabulary (stablemoe)",
             [r"in\.safetensors", r"token_ids\[1\] = 9", re.escape("[0, 8)")],
             config=stable_config,
             tensors=stable_tensors | {"token_ids": np.array([0, 9, 3, 3, 1], np.int64)}),
        Case("gate.weight given to stablemoe (its logits come from router.*)",
             [r"gate\.weight", r"stablemoe", r"router\."], config=stable_config,
             tensors=stable_tensors | {"gate.weight": v["gate.weight"]}),
        Case("stablemoe stage 3", [r"stage", r"\b3\b"], config=dict(stable_config, stage=3),
             tensors=stable_tensors),
        Case("token_ids missing for stablemoe", [r"token_ids", r"stablemoe"], config=stable_config,
             tensors={k: a for k, a in stable_tensors.items() if k != "token_ids"}),
        Case("token_importance missing for damoe", [r"token_importance", r"damoe"],
             config={"router": "damoe"}, tensors=v),
        Case("negative token_importance (damoe)",
             [r"in\.safetensors", r"token_importance\[2\] = -0\.5", r">= 0"],
             config={"router": "damoe"},
             tensors=dict(v, token_importance=np.array([1, 2, -0.5, 1, 1][:T], f32))),
        Case("token_importance given to a router that reads none", [r"token_importance", r"mixtral"],
             tensors=dict(v, token_importance=np.ones(T, f32))),
        Case("damoe k_min above the budget k", [r"k_min", r"\b3\b", r"k = 2"],
             config={"router": "damoe", "k_min": 3}, tensors=dict(v, token_importance=np.ones(T, f32))),
        Case("damoe k_max below the budget k", [r"k_max", r"\b1\b", r"k = 2"],
             config={"router": "damoe", "k_max": 1}, tensors=dict(v, token_importance=np.ones(T, f32))),
        Case("damoe unknown budget", [r"budget", r"monthly", r"prefix"],
             config={"router": "damoe", "budget": "monthly"}, tensors=dict(v, token_importance=np.ones(T, f32))),
        Case("damoe token_importance of the wrong shape", [r"token_importance", r"shape|\(|\["],
             config={"router": "damoe"}, tensors=dict(v, token_importance=np.ones(T + 1, f32))),
        Case("router.token_embedding not (vocab_size, D)",
             [re.escape("router.token_embedding"), re.escape("(9, 50)")], config=stable_config,
             tensors=stable_tensors | {"router.token_embedding": np.ones((9, 50), f32)}),
        Case("vqmoe mode not pretrain or finetune", [r"mode", r"distill", r"vqmoe"],
             config={"router": "vqmoe", "mode": "distill"}, tensors=vq_tensors),
        Case("vqmoe negative commitment", [r"commitment", r"-0\.5", r"vqmoe"],
             config={"router": "vqmoe", "commitment": -0.5}, tensors=vq_tensors),
        Case("competesmoe k above E", [r"\bk = 5\b", r"4 experts", r"competesmoe"],
             config={"router": "competesmoe", "k": 5}),
        Case("competesmoe competition above 1", [r"competition", r"1\.5", r"competesmoe"],
             config={"router": "competesmoe", "competition": 1.5}),
        Case("competesmoe negative diversity_loss", [r"diversity_loss", r"-0\.1"],
             config={"router": "competesmoe", "diversity_loss": -0.1}),
        Case("competesmoe warmup_steps below -1", [r"warmup_steps", r"-2"],
             config={"router": "competesmoe", "warmup_steps": -2}),
        Case("competesmoe unknown parameter", [r"rate_flip", r"competesmoe"],
             config={"router": "competesmoe", "rate_flip": 0.05}),
        Case("vqmoe k above E", [r"\bk = 5\b", r"E = 4", r"vqmoe"],
             config={"router": "vqmoe", "k": 5}, tensors=vq_tensors),
        Case("vqmoe losses refused", [r"losses", r"vqmoe"],
             config={"router": "vqmoe", "losses": {"balance": 0.01}}, tensors=vq_tensors),
        Case("router.codebook missing for vqmoe", [re.escape("router.codebook")],
             config={"router": "vqmoe"},
             tensors={k: a for k, a in vq_tensors.items() if k != "router.codebook"}),
        Case("router.mix wrong shape (vqmoe)", [re.escape("router.mix"), re.escape("(3, 6)")],
             config={"router": "vqmoe"}, tensors=vq_tensors | {"router.mix": np.ones((3, D), f32)}),
        Case("gate.weight given to vqmoe (its logits come from router.*)",
             [r"gate\.weight", r"vqmoe", r"router\."], config={"router": "vqmoe"},
             tensors=vq_tensors | {"gate.weight": v["gate.weight"]}),
        Case("duollm with E = 4 experts", [r"duollm", r"E = 2", r"E = 4"],
             config={"router": "duollm"}),
        Case("duollm small_width 0", [r"small_width", r"= 0\b", re.escape("(0, 1]")],
             config={"router": "duollm", "small_width": 0.0}, tensors=duo_tensors),
        Case("duollm small_width above 1", [r"small_width", r"1\.5"],
             config={"router": "duollm", "small_width": 1.5}, tensors=duo_tensors),
        Case("duollm p_skip without skip", [r"p_skip", r"0\.2", r"skip"],
             config={"router": "duollm", "p_skip": 0.2}, tensors=duo_tensors),
        Case("duollm p_big + p_skip above 1", [r"p_big", r"0\.8", r"p_skip", r"0\.5"],
             config={"router": "duollm", "skip": True, "p_big": 0.8, "p_skip": 0.5},
             tensors=duo_tensors),
        Case("duollm negative compute_loss", [r"compute_loss", r"-1"],
             config={"router": "duollm", "compute_loss": -1.0}, tensors=duo_tensors),
        Case("duollm unknown parameter", [r"tiny_width", r"duollm"],
             config={"router": "duollm", "tiny_width": 0.1}, tensors=duo_tensors),
        Case("duollm gate.weight without the skip row", [r"gate\.weight", re.escape("(3, 6)")],
             config={"router": "duollm", "skip": True}, tensors=duo_tensors),
        Case("flextron widths not increasing", [r"widths", r"increasing"],
             config={"router": "flextron", "widths": [0.5, 0.25, 1.0]}, tensors=flex_tensors),
        Case("flextron width 0", [r"widths", re.escape("(0, 1]"), r"\b0\b"],
             config={"router": "flextron", "widths": [0, 1.0]}, tensors=flex_tensors),
        Case("flextron widths not a list", [r"widths", r"half"],
             config={"router": "flextron", "widths": "half"}, tensors=flex_tensors),
        Case("flextron k above E", [r"\bk = 5\b", r"E = 4", r"flextron"],
             config={"router": "flextron", "k": 5}, tensors=flex_tensors),
        Case("flextron losses refused", [r"losses", r"flextron"],
             config={"router": "flextron", "losses": {"balance": 0.01}}, tensors=flex_tensors),
        Case("flextron compute_target above 1", [r"compute_target", r"1\.2"],
             config={"router": "flextron", "compute_target": 1.2}, tensors=flex_tensors),
        Case("flextron gate.weight without the width block", [r"gate\.weight", re.escape("(8, 6)")],
             config={"router": "flextron"}, tensors=v),
        Case("global_counts without global_batch mode", [r"global_counts", r"global_batch"],
             tensors=dict(v, global_counts=np.ones(E, np.float32))),
        Case("empty seq_lens", [r"seq_lens", r"empty"],
             tensors=dict(v, seq_lens=np.zeros(0, np.int64))),
        Case("duplicate key in layer.json", [r"'k'", r"more than once"],
             config='{"router": "mixtral", "k": 2, "k": 3}'),
        Case("k > E (k=5, E=4)", [r"\bk\b", r"\b5\b"], config=dict(VALID_CONFIG, k=5)),
        Case("capacity_factor < 0", [r"capacity_factor", r"-1"],
             config=dict(VALID_CONFIG, capacity_factor=-1.0)),
        Case("unknown router name", [r"no_such_router"], config={"router": "no_such_router"}),
        Case("unknown parameter name", [r"'kk'"], config=dict(VALID_CONFIG, kk=2)),
        Case("wrong type (k: \"two\")", [r"\bk\b", r"two"], config=dict(VALID_CONFIG, k="two")),
        Case("unknown activation", [r"activation", r"relu"],
             config=dict(VALID_CONFIG, activation="relu")),
        # gpt-oss's clamped SwiGLU: its parameters are checked and belong to it alone.
        Case("swiglu_clamped: unknown parameter name (swiglu_limt)", [r"'swiglu_limt'"],
             config=dict(VALID_CONFIG, activation="swiglu_clamped", swiglu_limt=1.0)),
        Case("swiglu_clamped: swiglu_limit = 0", [r"swiglu_limit", r"= 0\b", r"positive"],
             config=dict(VALID_CONFIG, activation="swiglu_clamped", swiglu_limit=0)),
        Case("swiglu_clamped: swiglu_limit < 0", [r"swiglu_limit", r"-2\.5", r"positive"],
             config=dict(VALID_CONFIG, activation="swiglu_clamped", swiglu_limit=-2.5)),
        Case("swiglu_clamped: swiglu_alpha = 0", [r"swiglu_alpha", r"= 0\b", r"positive"],
             config=dict(VALID_CONFIG, activation="swiglu_clamped", swiglu_alpha=0.0)),
        Case("swiglu_clamped: swiglu_limit not a number", [r"swiglu_limit", r"seven"],
             config=dict(VALID_CONFIG, activation="swiglu_clamped", swiglu_limit="seven")),
        Case("swiglu_alpha with gelu", [r"swiglu_alpha", r"1\.702", r"swiglu_clamped", r"gelu"],
             config=dict(VALID_CONFIG, activation="gelu", swiglu_alpha=1.702),
             tensors=with_tensors(experts__w3=None)),
        Case("swiglu_limit with swiglu (the default activation)",
             [r"swiglu_limit", r"7\.0", r"not 'swiglu'"],
             config={"router": "mixtral", "swiglu_limit": 7.0}),
        Case("invalid JSON text", [r"layer\.json", r"json"], config='{"router": "mixtral", "k": '),
        Case("JSON not an object", [r"layer\.json", r"object"], config="[1, 2, 3]"),
        Case("normalize true with k=1 on topk", [r"normalize"],
             config={"router": "topk", "k": 1, "normalize": True}),
        Case("losses on a router without losses (hash)", [r"hash", r"balance"],
             config={"router": "hash", "losses": {"balance": 0.01}}, tensors=hash_tensors),
        Case("unknown loss name", [r"losses", r"'aux'"],
             config=dict(VALID_CONFIG, losses={"aux": 0.01})),
        Case("x with integer dtype", [r"\bx\b", r"I64"],
             tensors=with_tensors(x=np.zeros((T, D), np.int64))),
        Case("negative token_ids", [r"token_ids", r"-3"], config={"router": "hash"},
             tensors=dict(no_gate, token_ids=np.array([0, 1, -3, 2, 4], np.int64))),
        Case("dy wrong shape", [r"'dy'", re.escape("(5, 5)")],
             tensors=dict(v, dy=np.zeros((T, D - 1), f32))),
        Case("malformed safetensors: truncated file", [r"in\.safetensors"],
             tensors=valid_bytes[: len(valid_bytes) // 2]),
        Case("malformed safetensors: shorter than 8 bytes", [r"in\.safetensors"],
             tensors=b"\x10\x00\x00"),
        Case("malformed safetensors: garbage header length", [r"in\.safetensors"],
             tensors=struct.pack("<Q", 0xFFFFFFFFFFFF0000) + valid_bytes[8:]),
        Case("malformed safetensors: header not JSON", [r"in\.safetensors", r"json"],
             tensors=raw_safetensors(b"this is not json at all!", b"\0" * 16)),
        Case("malformed safetensors: data_offsets beyond file",
             [r"in\.safetensors", r"data_offsets", r"'x'"],
             tensors=raw_safetensors({"x": x_entry}, b"\0" * (T * D * 4 - 8))),
        Case("missing input file", [re.escape(missing)], in_path=missing),
        Case("missing config file", [re.escape(os.path.join(root, "nope.json"))],
             config_path=os.path.join(root, "nope.json")),
        Case("output directory does not exist", [re.escape(no_dir)], out_path=no_dir,
             check_output=False),
        # Gaps found while writing this test; they fail until the CLI/layer rejects them.
        # A float k beyond int64 is converted with undefined behaviour and the message shows
        # k = -9223372036854775808 instead of the value in the file.
        Case("k = 1e30 (float beyond int64) names the value", [r"\bk\b", r"1e\+?30"],
             config=dict(VALID_CONFIG, k=1e30)),
        Case("dy with NaN", [r"\bdy\b", r"\bnan\b"],
             tensors=dict(v, dy=np.full((T, D), np.nan, f32))),
        Case("global_counts with NaN", [r"global_counts", r"\bnan\b"], config=global_config,
             tensors=dict(v, global_counts=np.array([np.nan, 0, 0, 0], f32))),
        Case("global_counts with Inf", [r"global_counts", r"\binf\b"], config=global_config,
             tensors=dict(v, global_counts=np.array([np.inf, 0, 0, 0], f32))),
        Case("global_counts negative", [r"global_counts", r"-100"], config=global_config,
             tensors=dict(v, global_counts=np.array([-100, 0, 0, 0], f32))),
        # Finite inputs whose gate logits overflow: NaN scores route tokens nowhere.
        Case("gate.weight overflowing the logits (3e38)", [r"non-finite|nan|inf|overflow"],
             tensors=with_tensors(gate__weight=np.full((E, D), 3e38, f32))),
    ]


def run(binary, config_path, in_path, out_path):
    return subprocess.run([binary, "layer", "--config", config_path, "--in", in_path, "--out",
                           out_path], capture_output=True, text=True, errors="replace",
                          timeout=TIMEOUT_S)


def describe_rc(rc):
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def rejection_problems(p, names, usage=False):
    """What is wrong with how the finished process `p` rejected a bad input: its status (1, or
    CLI11's 100-127 for a `usage` error), no 'error' on stderr (switchyard's own errors), or
    stderr not matching every regular expression in `names` (case-insensitive)."""
    problems = []
    if not (100 <= p.returncode <= 127 if usage else p.returncode == 1):
        what = describe_rc(p.returncode)
        if p.returncode == 0:
            what += " (the bad input was accepted)"
        elif p.returncode == 2:
            what += " (internal error, not a validation error)"
        elif p.returncode < 0 or p.returncode >= 128:
            what += " (crash)"
        expected = "a CLI11 usage status (100-127)" if usage else "exit status 1"
        problems.append(f"{what}, expected {expected}")
    if not usage and "error" not in p.stderr.lower():
        problems.append("stderr has no 'error'")
    missing_names = [n for n in names if not re.search(n, p.stderr, re.IGNORECASE)]
    if missing_names:
        problems.append(f"stderr does not name {missing_names}")
    return problems


def write_case_files(directory, config, tensors):
    config_path = os.path.join(directory, "layer.json")
    with open(config_path, "w") as f:
        f.write(config if isinstance(config, str) else json.dumps(config))
    in_path = os.path.join(directory, "in.safetensors")
    if isinstance(tensors, bytes):
        with open(in_path, "wb") as f:
            f.write(tensors)
    else:
        safetensors_io.save(in_path, tensors)
    return config_path, in_path


def check_valid(binary, root):
    directory = os.path.join(root, "valid")
    os.makedirs(directory)
    config_path, in_path = write_case_files(directory, VALID_CONFIG, valid_tensors())
    out_path = os.path.join(directory, "out.safetensors")
    p = run(binary, config_path, in_path, out_path)
    if p.returncode != 0:
        return f"{describe_rc(p.returncode)}; stderr: {p.stderr.strip()!r}"
    if not os.path.isfile(out_path):
        return "exit 0 but out.safetensors was not written"
    tensors, _ = safetensors_io.load(out_path)
    for name, shape in (("y", (T, D)), ("combine", (T, E)), ("tokens_per_expert", (E,))):
        if name not in tensors or tensors[name].shape != shape:
            return f"out.safetensors lacks {name} {shape}: has {sorted(tensors)}"
    if not np.all(np.isfinite(tensors["y"])):
        return "y is not finite"
    if int(tensors["tokens_per_expert"].sum()) != T * 2:
        return f"tokens_per_expert sums to {tensors['tokens_per_expert'].sum()}, expected {T * 2}"
    return None


def check_case(binary, root, index, case):
    directory = os.path.join(root, f"case{index:02d}")
    os.makedirs(directory)
    config = VALID_CONFIG if case.config is None else case.config
    tensors = valid_tensors() if case.tensors is None else case.tensors
    config_path, in_path = write_case_files(directory, config, tensors)
    config_path = case.config_path or config_path
    in_path = case.in_path or in_path
    out_path = case.out_path or os.path.join(directory, "out.safetensors")
    if case.check_output:
        with open(out_path, "wb") as f:
            f.write(SENTINEL)
    before = sorted(os.listdir(directory))
    try:
        p = run(binary, config_path, in_path, out_path)
    except subprocess.TimeoutExpired:
        return f"no exit within {TIMEOUT_S} s"
    problems = rejection_problems(p, case.names)
    if case.check_output:
        with open(out_path, "rb") as f:
            if f.read() != SENTINEL:
                problems.append("the existing out.safetensors was changed")
        after = sorted(os.listdir(directory))
        if after != before:
            problems.append(f"files changed in the output directory: {before} -> {after}")
    elif os.path.exists(out_path):
        problems.append(f"{out_path} was created")
    if problems:
        return "; ".join(problems) + f"; stderr: {p.stderr.strip()!r}"
    return None


# ---- `switchyard llm eval | train | route` ----

LLM_MODELS = ("cheap-model", "dear-model")


def write_routerbench(path, rows=24):
    """A tiny RouterBench CSV: the dear model is right exactly on the prompts that say "hard",
    the cheap one on the others; costs per call 0.001 and 0.01."""
    words = ["alpha", "river", "stone", "cloud", "seven", "blue", "quick", "lamp"]
    lines = ["prompt,cheap-model,cheap-model|total_cost,dear-model,dear-model|total_cost"]
    for i in range(rows):
        hard = i % 2 == 0
        prompt = f"{'hard ' if hard else ''}question {i}: {words[i % 8]}, {words[(3 * i) % 8]}"
        lines.append(f'"{prompt}",{0 if hard else 1},0.001,{1 if hard else 0},0.01')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class LlmCase:
    """One bad `switchyard llm ...` command line. `args` may use {data}, {router} (a trained
    router folder) and {root}; `names` are regular expressions that must all match stderr
    (case-insensitive). `usage`: rejected by CLI11's option checks (any status from 100 to 127)
    instead of switchyard's own (status 1)."""

    def __init__(self, name, args, names, usage=False):
        self.name = name
        self.args = args
        self.names = names
        self.usage = usage


def llm_cases(root):
    missing = os.path.join(root, "no_such_data.csv")
    no_router = os.path.join(root, "no_such_router")
    empty_dir = os.path.join(root, "empty_folder")
    os.makedirs(empty_dir)
    bad_config = os.path.join(root, "bad_eval.json")
    with open(bad_config, "w") as f:
        json.dump({"routers": [{"quality": "knn", "parmas": {"k": 3}}]}, f)
    garbled = os.path.join(root, "garbled_router")
    os.makedirs(garbled)
    with open(os.path.join(garbled, "router.json"), "w") as f:
        f.write('{"format": "switchyard-llm-router", "version": ')
    train = ["llm", "train", "--data", "{data}", "--out", os.path.join(root, "unused_router")]
    route = ["llm", "route", "--router", "{router}", "--prompt", "a", "--prompt", "b"]
    return [
        LlmCase("llm eval: missing data file", ["llm", "eval", "--data", missing],
                [re.escape(missing)]),
        LlmCase("llm train: missing data file",
                ["llm", "train", "--data", missing, "--out", os.path.join(root, "r")],
                [re.escape(missing)]),
        LlmCase("llm eval: data folder without .csv files", ["llm", "eval", "--data", empty_dir],
                [re.escape(empty_dir), r"\.csv"]),
        LlmCase("llm eval: bad --format", ["llm", "eval", "--data", "{data}", "--format", "xml"],
                [r"--format", r"xml"], usage=True),
        LlmCase("llm eval: unknown router kind", ["llm", "eval", "--data", "{data}", "--routers",
                                                 "knn,svm"], [r"--routers", r"svm"]),
        LlmCase("llm eval: --config with a misspelt key",
                ["llm", "eval", "--data", "{data}", "--config", bad_config],
                [re.escape(bad_config), r"parmas"]),
        LlmCase("llm eval: --strong not in the data",
                ["llm", "eval", "--data", "{data}", "--strong", "gpt-9"], [r"gpt-9"]),
        LlmCase("llm train: unknown router kind", train + ["--router", "svm"],
                [r"--router", r"svm"], usage=True),
        LlmCase("llm train: --params not JSON", train + ["--router", "knn", "--params", '{"k": '],
                [r"--params"]),
        LlmCase("llm train: --params not an object", train + ["--router", "knn", "--params", "[3]"],
                [r"param"]),
        LlmCase("llm train: unknown params key", train + ["--router", "knn", "--params",
                                                          '{"kk": 3}'], [r"'kk'"]),
        LlmCase("llm train: params value out of range",
                train + ["--router", "logistic", "--params", '{"epochs": 0}'], [r"epochs"]),
        LlmCase("llm train: --features hash_bits out of range",
                train + ["--router", "knn", "--features", '{"hash_bits": 40}'], [r"hash_bits"]),
        LlmCase("llm train: --strong not in the data",
                train + ["--router", "knn", "--strong", "gpt-9"], [r"gpt-9"]),
        LlmCase("llm train: missing embeddings file",
                train + ["--router", "knn", "--embeddings", os.path.join(root, "no.jsonl")],
                [re.escape(os.path.join(root, "no.jsonl"))]),
        # A number beyond double range is a JSON error like any other (nlohmann reports it as
        # out_of_range, not parse_error): it must not surface as an internal error.
        LlmCase("llm train: --params number beyond double range",
                train + ["--router", "knn", "--params", '{"k": 1e999}'], [r"--params"]),
        LlmCase("llm route: router folder missing",
                ["llm", "route", "--router", no_router, "--prompt", "x"],
                [re.escape(no_router), r"router\.json"]),
        LlmCase("llm route: router.json not JSON",
                ["llm", "route", "--router", garbled, "--prompt", "x"],
                [re.escape(os.path.join(garbled, "router.json"))]),
        LlmCase("llm route: no prompts", ["llm", "route", "--router", "{router}"], [r"--prompt"]),
        LlmCase("llm route: missing prompts file",
                ["llm", "route", "--router", "{router}", "--prompts-file",
                 os.path.join(root, "no_prompts.txt")],
                [re.escape(os.path.join(root, "no_prompts.txt"))]),
        LlmCase("llm route: --capacity without '='", route + ["--capacity", "dear-model"],
                [r"--capacity", r"dear-model"]),
        LlmCase("llm route: --capacity count not an integer", route + ["--capacity", "dear-model=x"],
                [r"--capacity", r"dear-model=x"]),
        LlmCase("llm route: --capacity count negative", route + ["--capacity", "dear-model=-1"],
                [r"--capacity", r"dear-model=-1"]),
        LlmCase("llm route: --capacity unknown model", route + ["--capacity", "gpt-9=3"],
                [r"--capacity", r"gpt-9"]),
        LlmCase("llm route: capacities below the prompt count",
                route + ["--capacity", "cheap-model=0,dear-model=1"], [r"capacit", r"\b1\b"]),
        LlmCase("llm route: --lambda out of range", route + ["--lambda", "2"], [r"--lambda"],
                usage=True),
        LlmCase("llm route: unknown --rule", route + ["--rule", "coin_flip"], [r"--rule"],
                usage=True),
        LlmCase("llm calibrate: missing prompts file",
                ["llm", "calibrate", "--router", "{router}", "--prompts-file",
                 os.path.join(root, "no_traffic.txt")],
                [re.escape(os.path.join(root, "no_traffic.txt"))]),
        LlmCase("llm calibrate: --strong-share out of range",
                ["llm", "calibrate", "--router", "{router}", "--prompts-file",
                 os.path.join(root, "no_traffic.txt"), "--strong-share", "1.5"],
                [r"--strong-share"], usage=True),
    ]


def run_llm(binary, args, timeout=TIMEOUT_S):
    return subprocess.run([binary] + args, capture_output=True, text=True, errors="replace",
                          timeout=timeout)


def check_llm_case(binary, root, data, router, case):
    args = [a.replace("{data}", data).replace("{router}", router).replace("{root}", root)
            for a in case.args]
    try:
        p = run_llm(binary, args)
    except subprocess.TimeoutExpired:
        return f"no exit within {TIMEOUT_S} s"
    problems = rejection_problems(p, case.names, case.usage)
    if problems:
        return "; ".join(problems) + f"; stderr: {p.stderr.strip()!r}"
    return None


def train_router(binary, root, data):
    """Trains the happy path's kNN router; returns (folder, problem or None)."""
    router = os.path.join(root, "llm_router")
    p = run_llm(binary, ["llm", "train", "--data", data, "--router", "knn", "--params",
                         '{"k": 3}', "--out", router])
    if p.returncode != 0:
        return router, f"llm train: {describe_rc(p.returncode)}; stderr: {p.stderr.strip()!r}"
    for name in ("router.json", "router.safetensors"):
        if not os.path.isfile(os.path.join(router, name)):
            return router, f"llm train exited 0 but wrote no {name}"
    return router, None


def check_llm_route(binary, root, router):
    """`llm route` prints one JSON line per prompt naming a model of the data."""
    prompts = ["hard question: how many stones?", "question: what colour is the river?"]
    prompts_file = os.path.join(root, "prompts.txt")
    with open(prompts_file, "w") as f:
        f.write(prompts[0] + "\n\n" + prompts[1] + "\n")  # the empty line is skipped
    runs = [
        ["--prompt", prompts[0], "--prompt", prompts[1]],
        ["--prompts-file", prompts_file],
        ["--prompts-file", prompts_file, "--rule", "threshold", "--threshold", "0"],
        ["--prompts-file", prompts_file, "--rule", "cascade", "--tau", "0.5"],
        ["--prompts-file", prompts_file, "--capacity", "dear-model=1", "--lambda", "0"],
    ]
    for extra in runs:
        p = run_llm(binary, ["llm", "route", "--router", router] + extra)
        if p.returncode != 0:
            return f"llm route {extra}: {describe_rc(p.returncode)}; stderr: {p.stderr.strip()!r}"
        lines = [line for line in p.stdout.splitlines() if line.strip()]
        if len(lines) != len(prompts):
            return f"llm route {extra}: {len(lines)} output lines for {len(prompts)} prompts"
        chosen = []
        for prompt, line in zip(prompts, lines):
            try:
                out = json.loads(line)
            except ValueError:
                return f"llm route {extra}: not a JSON line: {line!r}"
            if out.get("model") not in LLM_MODELS:
                return f"llm route {extra}: model {out.get('model')!r} is not one of {LLM_MODELS}"
            if out.get("prompt") != prompt:
                return f"llm route {extra}: prompt {out.get('prompt')!r}, expected {prompt!r}"
            if sorted(out.get("predicted_quality", {})) != sorted(LLM_MODELS):
                return f"llm route {extra}: predicted_quality {out.get('predicted_quality')!r}"
            chosen.append(out["model"])
        if "--capacity" in extra and chosen.count("dear-model") > 1:
            return f"llm route {extra}: dear-model took {chosen.count('dear-model')} > 1 prompts"
    return None


def check_llm_calibrate(binary, root, router):
    """`llm calibrate` returns a threshold that sends the requested share of the prompts to the
    strong model, and the gateway model name that uses it."""
    prompts_file = os.path.join(root, "traffic.txt")
    with open(prompts_file, "w") as f:
        f.write("\n".join(f"{'hard ' if i % 3 == 0 else ''}question {i}: how many stones?"
                           for i in range(30)) + "\n")
    for share in (0.0, 0.3, 1.0):
        p = run_llm(binary, ["llm", "calibrate", "--router", router, "--prompts-file",
                             prompts_file, "--strong-share", str(share)])
        if p.returncode != 0:
            return f"llm calibrate {share}: {describe_rc(p.returncode)}; {p.stderr.strip()!r}"
        out = json.loads(p.stdout)
        if out["prompts"] != 30 or not out["gateway_model"].startswith("router-"):
            return f"llm calibrate {share}: {out}"
        # Ties among the gains may send more than the target; never fewer, never all at 0.
        if share == 0.0 and out["share_on_these_prompts"] != 0.0:
            return f"llm calibrate 0: share {out['share_on_these_prompts']}"
        if out["share_on_these_prompts"] < share:
            return f"llm calibrate {share}: share {out['share_on_these_prompts']} below target"
    return None


def check_llm_eval(binary, root, data):
    """`llm eval --out` writes eval.json with the oracle and the requested routers."""
    out = os.path.join(root, "llm_eval")
    p = run_llm(binary, ["llm", "eval", "--data", data, "--routers", "knn,best_single",
                         "--out", out])
    if p.returncode != 0:
        return f"llm eval: {describe_rc(p.returncode)}; stderr: {p.stderr.strip()!r}"
    with open(os.path.join(out, "eval.json")) as f:
        result = json.load(f)
    names = [r["name"] for r in result["routers"]]
    if names != ["oracle", "knn", "best_single"]:
        return f"eval.json routers {names}"
    if result["models"] != list(LLM_MODELS) or result["train_rows"] + result["test_rows"] != 24:
        return f"eval.json models {result['models']}, rows {result['train_rows']}+" \
               f"{result['test_rows']}"
    for name in ("summary.txt", "report.html", "split.json"):
        if not os.path.isfile(os.path.join(out, name)):
            return f"llm eval --out wrote no {name}"
    return None


def check_skipped_rows_report(binary, root, data):
    """Skipped rows are reported with file:line for CSV and file (record N) for the LLMRouter
    JSON, which has no line per record (no ":0")."""
    with open(data) as f:
        lines = f.read().splitlines()
    bad_csv = os.path.join(root, "bad_rows.csv")
    # data line 3 (record 1) loses its cheap-model score
    lines[2] = lines[2].replace('",1,0.001,', '",,0.001,').replace('",0,0.001,', '",,0.001,')
    with open(bad_csv, "w") as f:
        f.write("\n".join(lines) + "\n")
    records = [{"question": f"question {i} {'hard' if i % 2 == 0 else 'easy'}",
                "scores": {"cheap-model": float(i % 2), "dear-model": float(1 - i % 2)}}
               for i in range(24)]
    records[5]["scores"]["dear-model"] = "oops"
    bad_json = os.path.join(root, "bad_rows.json")
    prices = os.path.join(root, "prices.json")
    with open(bad_json, "w") as f:
        json.dump(records, f)
    with open(prices, "w") as f:
        json.dump({m: {"input_price": 1.0, "output_price": 2.0} for m in LLM_MODELS}, f)
    expected = [(["--data", bad_csv], f"{bad_csv}:3 (record 1) cheap-model:"),
                (["--data", bad_json, "--prices", prices], f"{bad_json} (record 5) dear-model:")]
    for args, want in expected:
        p = run_llm(binary, ["llm", "eval", *args, "--routers", "best_single"])
        if p.returncode != 0:
            return f"llm eval {args}: {describe_rc(p.returncode)}; stderr: {p.stderr.strip()!r}"
        if want not in p.stderr or ":0 (record" in p.stderr:
            return f"llm eval {args}: expected {want!r} in stderr, got {p.stderr.strip()!r}"
    return None


def llm_results(binary, root):
    """(name, problem or None) for the happy paths and every bad command line."""
    llm_root = os.path.join(root, "llm")
    os.makedirs(llm_root)
    data = write_routerbench(os.path.join(llm_root, "tiny_bench.csv"))
    router, problem = train_router(binary, llm_root, data)
    results = [("llm train on a tiny RouterBench CSV writes a router folder", problem)]
    if problem is None:
        results.append(("llm route prints one JSON line per prompt with a model of the data",
                        check_llm_route(binary, llm_root, router)))
        results.append(("llm calibrate reaches the requested strong share",
                        check_llm_calibrate(binary, llm_root, router)))
    results.append(("llm eval --out writes eval.json", check_llm_eval(binary, llm_root, data)))
    results.append(("skipped rows are reported as file:line or file (record N)",
                    check_skipped_rows_report(binary, llm_root, data)))
    for case in llm_cases(llm_root):
        results.append((case.name, check_llm_case(binary, llm_root, data, router, case)))
    return results


def compare_results(binary, root):
    """`switchyard compare`: a router that does not fit the model fails before anything trains;
    --all-routers trains every registered router (one step each) and reports them all."""
    results = []
    out = os.path.join(root, "compare_bad")
    cfg = os.path.join(root, "compare_bad.json")
    with open(cfg, "w") as f:  # deepseek_v3's paper defaults (top-8 of 8 groups) need E >= 16
        json.dump({"steps": 1, "model": {"experts": 8},
                   "routers": [{"name": "fine", "router": {"router": "switch"}},
                               {"name": "too_big", "router": {"router": "deepseek_v3"}}]}, f)
    p = subprocess.run([binary, "compare", "--config", cfg, "--out", out], capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    problem = "; ".join(rejection_problems(p, ["too_big", "k = 8"])) or None
    if problem is None and os.path.exists(os.path.join(out, "runs")):
        problem = "a run was trained before the bad entry was rejected"
    results.append(("compare rejects a router that does not fit the model before training",
                    problem))
    # An entry's own model fields (docs/training.md) are checked before anything trains too.
    for label, model, needles in (
            ("moe_sublayers 0", {"moe_sublayers": 0}, ["cartesian", "moe_sublayers", "0"]),
            ("moe_sublayers 'two'", {"moe_sublayers": "two"}, ["cartesian", "moe_sublayers"]),
            ("a model that is not an object", "wide", ["cartesian", "'model'", "wide"]),
            ("a model that sets the router", {"router": {"router": "switch"}},
             ["cartesian", "'router'"])):
        out = os.path.join(root, "compare_bad_model")
        with open(cfg, "w") as f:
            json.dump({"steps": 1, "model": {"experts": 8},
                       "routers": [{"name": "fine", "router": {"router": "switch"}},
                                   {"name": "cartesian", "model": model,
                                    "router": {"router": "topk", "k": 2}}]}, f)
        p = subprocess.run([binary, "compare", "--config", cfg, "--out", out],
                           capture_output=True, text=True, timeout=TIMEOUT_S)
        problem = "; ".join(rejection_problems(p, needles + [re.escape(cfg)])) or None
        if problem is None and os.path.exists(os.path.join(out, "runs")):
            problem = "a run was trained before the bad entry was rejected"
        results.append((f"compare rejects an entry with {label} before training", problem))
    p = subprocess.run([binary, "compare", "--all-routers", "--routers", "switch"],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    results.append(("compare --all-routers excludes --routers",
                    "; ".join(rejection_problems(p, ["excludes"], usage=True)) or None))
    out = os.path.join(root, "compare_all")
    p = subprocess.run([binary, "compare", "--all-routers", "--steps", "1", "--out", out],
                       capture_output=True, text=True, timeout=10 * TIMEOUT_S)
    listing = subprocess.run([binary, "routers"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in listing.splitlines() if line and not line[0].isspace()}
    runs = set(os.listdir(os.path.join(out, "runs"))) if os.path.isdir(os.path.join(out, "runs")) \
        else set()
    problem = None
    if p.returncode != 0:
        problem = f"rc {p.returncode}: {p.stderr.strip()[-300:]}"
    elif runs != names:
        problem = f"runs {sorted(runs)} != registered routers {sorted(names)}"
    elif not os.path.exists(os.path.join(out, "report", "index.html")):
        problem = "no report"
    results.append((f"compare --all-routers trains and reports all {len(names)} routers", problem))
    return results


def attention_skip_results(binary, root):
    """`switchyard train` with a bad MindSkip option (model attention_skip, train router_tuning):
    rejected before anything trains, naming the config, the field and its value."""
    results = []
    cfg = os.path.join(root, "skip_bad.json")
    tiny = {"d_model": 16, "n_layers": 3, "n_heads": 2, "seq_len": 8, "experts": 4, "d_ff": 8,
            "dense_d_ff": 8}
    for label, skip, extra, needles in (
            ("an unknown attention_skip field", {"treshold": 0.5}, {},
             ["attention_skip", "treshold"]),
            ("threshold 1.5", {"threshold": 1.5}, {}, ["attention_skip", "threshold", "1.5"]),
            ("threshold -0.2", {"threshold": -0.2}, {}, ["attention_skip", "threshold", "-0.2"]),
            ("a skip layer out of range", {"layers": [0, 7]}, {},
             ["attention_skip", "layers", "7", r"\[0, 3\)"]),
            ("a skip layer listed twice", {"layers": [1, 1]}, {}, ["attention_skip", "twice"]),
            ("gate 'soft'", {"gate": "soft"}, {}, ["attention_skip", "gate", "soft"]),
            ("a negative skip loss", {"loss": -1}, {}, ["attention_skip", "loss"]),
            ("router_tuning without attention_skip", None, {"router_tuning": True},
             ["router_tuning", "attention_skip"])):
        model = dict(tiny)
        if skip is not None:
            model["attention_skip"] = skip
        out = os.path.join(root, "skip_bad_run")
        with open(cfg, "w") as f:
            json.dump({"steps": 1, "model": model, "data": {"synthetic": True}, "out": out,
                       **extra}, f)
        p = subprocess.run([binary, "train", "--config", cfg], capture_output=True, text=True,
                           timeout=TIMEOUT_S)
        problem = "; ".join(rejection_problems(p, needles + [re.escape(cfg)])) or None
        if problem is None and os.path.exists(os.path.join(out, "metrics.jsonl")):
            problem = "a run was started before the bad config was rejected"
        results.append((f"train rejects {label}", problem))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switchyard", required=True, help="the switchyard binary")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    binary = os.path.abspath(args.switchyard)
    if not os.access(binary, os.X_OK):
        print(f"FAIL: {binary} is not an executable")
        print("0 passed, 1 failed")
        return 1

    root = tempfile.mkdtemp(prefix="switchyard_cli_errors_")
    passed = failed = 0
    try:
        results = [("valid case exits 0 and writes out.safetensors", check_valid(binary, root))]
        for i, case in enumerate(cases(root)):
            results.append((case.name, check_case(binary, root, i, case)))
        results.extend(llm_results(binary, root))
        results.extend(compare_results(binary, root))
        results.extend(attention_skip_results(binary, root))
        for name, problem in results:
            if problem is None:
                passed += 1
                print(f"PASS {name}")
            else:
                failed += 1
                print(f"FAIL {name}: {problem}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
