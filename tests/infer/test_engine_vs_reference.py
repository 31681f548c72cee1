#!/usr/bin/env python3
"""The engine against the independent float64 PyTorch reference on every architecture.

For each case of the table, tests/golden/make_hf_tiny.py writes a tiny random checkpoint in the
Hub layout (the dtype, shard count, config.json form and RoPE type of the case) with golden.json
from tests/golden/hf_reference.py; then `switchyard forward` must give its logits and router
logits (1e-4 relative to the largest) and `switchyard generate` its greedy ids exactly. BF16
checkpoints are checked twice: exact (--float32-activations) so, and in the default arithmetic
(the input of every BF16 product rounded to BF16, which the reference then does too) within
ROUNDED_TOL (see there).
Exit 0 pass, 1 fail, 77 skipped (no torch/numpy), printing why. SWITCHYARD_TEST_SEED replays.
"""
import argparse, json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")
sys.path.insert(0, GOLDEN)
try:
    import numpy as np
    import torch  # noqa: F401  (the generator needs it)
except ImportError as e:
    print(f"SKIPPED: {e} (needs Debian's python3-numpy and python3-torch)")
    sys.exit(77)
from safetensors_io import load, save  # noqa: E402

# (architecture, dtype, shards, config form, rope override or DeepSeek's no-q-lora)
CASES = [
    ("mixtral", "f32", 1, "5", None),
    ("mixtral", "bf16", 3, "4", None),
    ("qwen2_moe", "f32", 1, "5", None),
    ("qwen2_moe", "f16", 2, "4", None),
    ("qwen3_moe", "bf16", 1, "5", None),
    ("olmoe", "f32", 1, "5", None),
    ("olmoe", "bf16", 2, "4", None),
    ("deepseek_v3", "f32", 1, "5", None),
    ("deepseek_v3", "bf16", 3, "4", None),
    ("deepseek_v3", "f16", 1, "5", "no-q-lora"),
    ("llama", "f32", 1, "5", None),
    ("llama", "bf16", 2, "4", "linear"),
    ("mistral", "f32", 1, "5", None),
    ("qwen2", "f16", 1, "5", None),
    ("qwen3", "f32", 2, "4", "yarn"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--only", default="", help="comma-separated architectures")
    args = ap.parse_args()
    seed = int(os.environ.get("SWITCHYARD_TEST_SEED", "7"))
    print(f"seed {seed} (SWITCHYARD_TEST_SEED replays)")
    only = set(filter(None, args.only.split(",")))
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (arch, dtype, shards, form, rope) in enumerate(CASES):
            if only and arch not in only:
                continue
            name = f"{arch}-{dtype}-{shards}shards-form{form}" + (f"-{rope}" if rope else "")
            out = os.path.join(tmp, name)
            cmd = [sys.executable, os.path.join(GOLDEN, "make_hf_tiny.py"), "--arch", arch,
                   "--out", out, "--seed", str(seed + i), "--dtype", dtype,
                   "--shards", str(shards), "--config-form", form]
            if rope == "no-q-lora":
                cmd += ["--no-q-lora"]
            elif rope:
                cmd += ["--rope", rope]
            subprocess.run(cmd, check=True, capture_output=True)
            folder = os.path.join(out, arch) if os.path.isdir(os.path.join(out, arch)) else out
            g = json.load(open(os.path.join(folder, "golden.json")))
            errors = check(args.switchyard, folder, g, tmp)
            if errors:
                failed += 1
                print(f"FAIL {name}: " + "; ".join(errors))
            else:
                passed += 1
                print(f"PASS {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# Rounding inputs to BF16 makes these 64-wide models sensitive: perturbing the float64
# reference's inputs by 1e-7 relative before rounding moves its logits by 3e-3 (an input near a
# rounding midpoint goes the other way). The rounded arithmetic is held to BF16 tolerance, its
# greedy ids are not compared (a near tie may go either way); the exact arithmetic to 1e-4.
ROUNDED_TOL = 1e-2


def check(binary, folder, g, tmp):
    """BF16 checkpoints: the default arithmetic (inputs of BF16 products rounded to BF16) against
    the golden's bf16_rounded, and --float32-activations against the exact golden."""
    if "bf16_rounded" not in g:
        return check_mode(binary, folder, g, tmp, [], 1e-4, True)
    rounded = dict(g, **g["bf16_rounded"])
    return ([f"[rounded] {e}" for e in check_mode(binary, folder, rounded, tmp, [], ROUNDED_TOL,
                                                   False)] +
            [f"[--float32-activations] {e}"
             for e in check_mode(binary, folder, g, tmp, ["--float32-activations"], 1e-4, True)])


def check_mode(binary, folder, g, tmp, flags, tol, compare_ids):
    errors = []
    ids = np.array(g["input_ids"], dtype=np.int64)
    fin, fout = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    save(fin, {"input_ids": ids})
    r = subprocess.run([binary, "forward", "--model", folder, "--in", fin, "--out", fout] + flags,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return [f"forward exited {r.returncode}: {r.stderr.strip()}"]
    out = load(fout)[0]
    want = np.array(g["logits"])
    rel = np.abs(out["logits"] - want).max() / np.abs(want).max()
    if not rel < tol:
        errors.append(f"logits relative error {rel:.2e} (tolerance {tol:g})")
    if len(g["router_logits"]) != sum(k.startswith("router_logits.") for k in out):
        errors.append("number of MoE layers differs")
    for i, rl in enumerate(g["router_logits"]):
        rl = np.array(rl)
        got = out.get(f"router_logits.{i}")
        if got is None or got.shape != rl.shape:
            errors.append(f"router_logits.{i} missing or shaped {None if got is None else got.shape}")
            continue
        rel = np.abs(got - rl).max() / max(np.abs(rl).max(), 1e-30)
        if not rel < tol:
            errors.append(f"router_logits.{i} relative error {rel:.2e} (tolerance {tol:g})")
    prefix = g["generate_prefix"][0]
    n_new = len(g["generate"][0]) - len(prefix)
    r = subprocess.run([binary, "generate", "--model", folder, "--ids", ",".join(map(str, prefix)),
                        "--max-new-tokens", str(n_new), "--temperature", "0", "--format", "json"]
                       + flags,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return errors + [f"generate exited {r.returncode}: {r.stderr.strip()}"]
    got = json.loads(r.stdout)["ids"]
    if compare_ids and got != g["generate"][0]:
        errors.append(f"generate {got} != {g['generate'][0]}")
    return errors


if __name__ == "__main__":
    sys.exit(main())
