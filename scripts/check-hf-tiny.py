#!/usr/bin/env python3
"""The main job's inference check: the transformers goldens of ../shared/data/hf-tiny (tiny Mixtral
and Qwen3-MoE checkpoints, transformers 5.17) through `switchyard forward` (logits and router
logits within 1e-4 relative to the largest) and `switchyard generate` (greedy ids exactly), then
one short generation with the profile. Python's standard library only.

  scripts/check-hf-tiny.py [--switchyard build/release/switchyard] [--data ../shared/data/hf-tiny]

Exit 0 when every folder matches, 1 otherwise; a missing data folder is reported and skipped (0).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile


def write_ids(path, ids):
    """A safetensors file with input_ids int64 (B, T)."""
    B, T = len(ids), len(ids[0])
    data = struct.pack(f"<{B * T}q", *[t for row in ids for t in row])
    header = json.dumps({"input_ids": {"dtype": "I64", "shape": [B, T],
                                       "data_offsets": [0, len(data)]}}).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)
    os.replace(tmp, path)


def read_f32(path):
    """name -> flat list of floats for the F32 tensors of a safetensors file."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        b, e = info["data_offsets"]
        out[name] = struct.unpack(f"<{(e - b) // 4}f", raw[8 + n + b:8 + n + e])
    return out


def flat(x):
    return [v for row in x for v in flat(row)] if isinstance(x, list) else [x]


def rel_error(got, want):
    scale = max(abs(v) for v in want) or 1.0
    if len(got) != len(want):
        return float("inf")
    return max(abs(a - b) for a, b in zip(got, want)) / scale


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", default=os.path.join(root, "build/release/switchyard"))
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "hf-tiny"))
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        print(f"check-hf-tiny: {args.data} is absent; skipped")
        return 0
    failed = 0
    folders = sorted(d for d in os.listdir(args.data)
                     if os.path.exists(os.path.join(args.data, d, "golden.json")))
    with tempfile.TemporaryDirectory() as tmp:
        for name in folders:
            folder = os.path.join(args.data, name)
            g = json.load(open(os.path.join(folder, "golden.json")))
            fin, fout = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
            write_ids(fin, g["input_ids"])
            r = subprocess.run([args.switchyard, "forward", "--model", folder, "--in", fin,
                                "--out", fout], capture_output=True, text=True)
            if r.returncode:
                print(f"FAIL {name}: forward exited {r.returncode}: {r.stderr.strip()}")
                failed += 1
                continue
            out = read_f32(fout)
            errors = {"logits": rel_error(out.get("logits", ()), flat(g["logits"]))}
            for i, rl in enumerate(g["router_logits"]):
                errors[f"router_logits.{i}"] = rel_error(out.get(f"router_logits.{i}", ()), flat(rl))
            prefix = g["generate_prefix"][0]
            r = subprocess.run([args.switchyard, "generate", "--model", folder, "--ids",
                                ",".join(map(str, prefix)), "--max-new-tokens",
                                str(len(g["generate"][0]) - len(prefix)), "--temperature", "0",
                                "--format", "json"], capture_output=True, text=True)
            ids = json.loads(r.stdout)["ids"] if r.returncode == 0 else None
            ok = all(e < 1e-4 for e in errors.values()) and ids == g["generate"][0]
            failed += not ok
            worst = max(errors, key=errors.get)
            want = g["generate"][0]
            same = "equal" if ids == want else f"{ids} != {want}"
            print(f"{'PASS' if ok else 'FAIL'} {name}: logits {errors['logits']:.1e}, worst "
                  f"{worst} {errors[worst]:.1e} relative (tolerance 1e-4); greedy ids {same}")
        if folders:
            # One short generation, streamed, with where its time went.
            folder = os.path.join(args.data, folders[0])
            r = subprocess.run([args.switchyard, "generate", "--model", folder, "--ids",
                                "1,2,3,4,5,6,7,8", "--max-new-tokens", "16", "--temperature", "0.8",
                                "--top-p", "0.9", "--seed", "1", "--profile"],
                               capture_output=True, text=True)
            print(f"generate ({folders[0]}, 16 sampled tokens): {r.stdout.strip()}")
            print(r.stderr.strip())
            failed += r.returncode != 0
    print(f"check-hf-tiny: {len(folders) - min(failed, len(folders))} of {len(folders)} folders match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
