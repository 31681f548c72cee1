#!/usr/bin/env python3
"""`switchyard routing-report` on traces of the tiny Qwen3-MoE (../shared/data/hf-tiny), two
labels: summary.json's loads, affinity mutual information and label mutual information must
equal an independent numpy computation from the trace files, and the page must render in
headless Chromium (tests/report/test_report_browser.py; screenshot kept as --screenshot).
Exit 0 pass, 1 fail, 77 skipped (no numpy, no hf-tiny data, no Chromium), printing why.
"""
import argparse, json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "golden"))
try:
    import numpy as np
except ImportError as e:
    print(f"SKIPPED: {e} (needs Debian's python3-numpy)")
    sys.exit(77)
from safetensors_io import load  # noqa: E402

MODEL = os.path.join(SRC, "..", "shared", "data", "hf-tiny", "qwen3_moe")


def mi(counts):
    p = counts / counts.sum()
    pr, pc = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pr @ pc)[nz])).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--screenshot", required=True)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(MODEL, "config.json")):
        print(f"SKIPPED: {MODEL} absent (expected ../shared/data/hf-tiny)")
        return 77
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        traces = []
        for label, ids, temp in (("prose", "1,2,3,4,5,6,7,8", "0"), ("code", "300,301,302", "1")):
            path = os.path.join(tmp, f"{label}.safetensors")
            subprocess.run([args.switchyard, "generate", "--model", MODEL, "--ids", ids,
                            "--max-new-tokens", "24", "--ignore-eos", "--temperature", temp,
                            "--seed", "5", "--trace", path, "--label", label, "--format", "json"],
                           check=True, capture_output=True)
            traces.append(path)
        out = os.path.join(tmp, "report")
        cmd = [args.switchyard, "routing-report", "--out", out]
        for t in traces:
            cmd += ["--trace", t]
        subprocess.run(cmd, check=True, capture_output=True)
        summary = json.load(open(os.path.join(out, "summary.json")))
        E, L = summary["experts"], summary["moe_layers"]
        labels = sorted(["prose", "code"])
        load_counts = np.zeros((L, E))
        pair = np.zeros((max(L - 1, 0), E, E))
        by_label = np.zeros((L, len(labels), E))
        for path, label in zip(traces, ("prose", "code")):
            t = load(path)[0]
            ids = t["experts"]  # (N, L, K)
            for n in range(ids.shape[0]):
                for l in range(L):
                    chosen = [e for e in ids[n, l] if e >= 0]
                    for e in chosen:
                        load_counts[l, e] += 1
                        by_label[l, labels.index(label), e] += 1
                    if l + 1 < L:
                        for i in chosen:
                            for j in [e for e in ids[n, l + 1] if e >= 0]:
                                pair[l, i, j] += 1
        for l in range(L):
            got = np.array(summary["layers"][l]["load"], dtype=float)
            want = load_counts[l] / load_counts[l].sum()
            if not np.allclose(got, want, atol=1e-12):
                failures.append(f"layer {l} load")
            if abs(summary["layers"][l]["label_expert_mi_bits"] - mi(by_label[l])) > 1e-9:
                failures.append(f"layer {l} label MI")
            if l + 1 < L and abs(summary["layers"][l]["affinity_mi_bits_to_next"] - mi(pair[l])) > 1e-9:
                failures.append(f"layer {l} affinity MI")
        print("summary.json matches numpy" if not failures else "FAIL " + ", ".join(failures))
        expect = os.path.join(tmp, "expect.json")
        svgs = 1 + (L - 1) + L  # load, affinity pairs, label maps (L <= 6 here)
        json.dump({"runs": L, "svgs": svgs, "polylines_min": 0, "colours": ["#440154"]},
                  open(expect, "w"))
        r = subprocess.run([sys.executable, os.path.join(SRC, "tests", "report",
                                                         "test_report_browser.py"),
                            "--report", out, "--expect", expect, "--screenshot", args.screenshot])
        if r.returncode == 77:
            return 77 if not failures else 1
        if r.returncode != 0:
            failures.append("browser checks")
    print(f"{0 if failures else 2} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
