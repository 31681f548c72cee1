#!/usr/bin/env python3
"""The BF16 dense-GEMM floor: torch.matmul in bfloat16 (oneDNN's AVX-512 BF16 kernels where the CPU
has them) on the GEMM shapes bench_infer_bandwidth times in float32, y = x · Wᵀ as Hugging Face
stores W, best time over 0.5 s after a warm-up, at the given thread count.

  torch_gemm_rates.py --shapes bandwidth.json --threads 2 > torch_gemm.json
"""
import argparse
import json
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", required=True, help="bench_infer_bandwidth's JSON (its 'gemm' list)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    shapes = json.load(open(args.shapes))["gemm"]
    gen = torch.Generator().manual_seed(0)
    out = []
    with torch.inference_mode():
        for g in shapes:
            M, N, K = int(g["M"]), int(g["N"]), int(g["K"])
            x = torch.randn(M, K, generator=gen).to(torch.bfloat16)
            w = (torch.randn(N, K, generator=gen) * 0.02).to(torch.bfloat16)
            y = x @ w.t()  # warm-up (oneDNN's primitive cache)
            best, spent = float("inf"), 0.0
            while spent < args.seconds or best == float("inf"):
                t0 = time.perf_counter()
                y = x @ w.t()
                dt = time.perf_counter() - t0
                best, spent = min(best, dt), spent + dt
            if not torch.isfinite(y.float()).all():
                sys.exit(f"error: non-finite product for {g['name']}")
            out.append(dict(name=g["name"], M=M, N=N, K=K, gflops=2.0 * M * N * K / best * 1e-9,
                            ms=best * 1e3))
    json.dump(dict(torch=torch.__version__, threads=args.threads, dtype="bf16", gemm=out), sys.stdout)
    print()


if __name__ == "__main__":
    main()
