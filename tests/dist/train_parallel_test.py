#!/usr/bin/env python3
"""`mpirun -np N switchyard train --expert-parallel P` against one process on the same global batch.

For each router family: routing identical at every step (per-layer digests of the kept
(token, expert) pairs), per-step losses within float tolerance, parameters close after 20 steps,
byte counters conserved and the experts' rows equal to the global loads. Then resume with another
rank count, a rank that dies and a rank that hangs (SWITCHYARD_FAULT), and layout errors.
Usage: train_parallel_test.py SWITCHYARD MPIRUN (stdlib only; seeds are the configs' fixed ones).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

SWITCHYARD, MPIRUN = sys.argv[1], sys.argv[2]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
ENV.pop("SWITCHYARD_FAULT", None)
FAILURES = []

BASE_CONFIG = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 32, "experts": 4,
              "d_ff": 32, "dense_d_ff": 64},
    "data": {"synthetic": True}, "batch": 8, "steps": 20, "eval_every": 10, "eval_batches": 2,
    "checkpoint_every": 10, "log_every": 10, "lr": 0.003, "seed": 7,
}
ROUTERS = {
    "topk_capacity_jitter": {"router": "topk", "k": 2, "jitter": 0.1, "capacity_factor": 1.25,
                             "losses": {"balance": 0.01, "z": 0.001, "balance_mode": "sequence"}},
    "switch_drops": {"router": "switch", "capacity_factor": 1.0},
    "expert_choice": {"router": "expert_choice", "capacity_factor": 1.5},
    "base": {"router": "base"},
    "deepseek_v3_bias": {"router": "deepseek_v3", "k": 2, "groups": 2, "topk_groups": 1,
                         "score": "sigmoid"},
    "hash": {"router": "hash"},
    "remoe": {"router": "remoe", "k": 2},
    "soft": {"router": "soft"},
    "smile_capacity": {"router": "smile", "nodes": 2, "capacity_factor": 1.25},
}


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def run(args, ranks=1, fault=None, expect_ok=True, timeout=120):
    cmd = [SWITCHYARD] + args
    if ranks > 1:
        cmd = [MPIRUN, "--oversubscribe", "-np", str(ranks)] + cmd
    env = dict(ENV)
    if fault:
        env["SWITCHYARD_FAULT"] = fault
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_ok and p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p, time.monotonic() - start


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def tensors(folder):
    """The float32 tensors of a safetensors checkpoint, as lists (stdlib only)."""
    with open(os.path.join(folder, "checkpoint", "model.safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        b, e = t["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        out[name] = struct.unpack(f"<{len(raw) // 4}f", raw)
    return out


def compare(one, many, label, loss_tol, exact_routing_steps=None):
    a, b = metrics(one), metrics(many)
    check(len(a) == len(b) == BASE_CONFIG["steps"], f"{label}: {len(b)} steps logged")
    steps = range(len(a)) if exact_routing_steps is None else range(exact_routing_steps)
    differ = [s for s in steps
              if [l["routing_digest"] for l in a[s]["layers"]] !=
              [l["routing_digest"] for l in b[s]["layers"]]]
    if steps:
        check(not differ, f"{label}: identical routing at steps {list(steps)[0]}..{list(steps)[-1]}"
              + (f" (differs at {differ})" if differ else ""))
    worst = max(abs(x["train_loss"] - y["train_loss"]) for x, y in zip(a, b))
    check(worst <= loss_tol, f"{label}: per-step train loss within {loss_tol:g} (worst {worst:.2e})")
    va = [x["val_loss"] for x in a if "val_loss" in x]
    vb = [x["val_loss"] for x in b if "val_loss" in x]
    check(len(va) == len(vb) and all(abs(x - y) <= loss_tol for x, y in zip(va, vb)),
          f"{label}: validation losses within {loss_tol:g}")
    return a, b


def params_close(one, many, label, tol):
    ta, tb = tensors(one), tensors(many)
    worst = 0.0
    for name, va in ta.items():
        vb = tb[name]
        scale = max(1e-3, max(abs(v) for v in va))
        worst = max(worst, max(abs(x - y) for x, y in zip(va, vb)) / scale)
    check(set(ta) == set(tb) and worst <= tol,
          f"{label}: parameters and AdamW moments after 20 steps within {tol:g} relative "
          f"(worst {worst:.2e})")


def params_near(one, many, label, tol):
    """Relative Frobenius distance of the model's parameters (not the moments)."""
    ta, tb = tensors(one), tensors(many)
    diff = sum((x - y) ** 2 for n in ta if not n.startswith("optim.") for x, y in zip(ta[n], tb[n]))
    norm = sum(x * x for n in ta if not n.startswith("optim.") for x in ta[n])
    rel = (diff / norm) ** 0.5
    check(rel <= tol, f"{label}: parameters after 20 steps within {tol:g} (relative Frobenius "
                      f"distance {rel:.2e})")


def counters_consistent(rows, label, ranks, P):
    ok = True
    for row in rows:
        par = row["parallel"]
        rk = par["ranks"]
        ok &= len(rk) == ranks
        for phase in ("dispatch", "combine", "backward", "inter_node"):
            sent = sum(r[f"{phase}_bytes_sent"] for r in rk)
            received = sum(r[f"{phase}_bytes_received"] for r in rk)
            ok &= sent == received
        # Every kept assignment of the global batch is one row at one expert's rank.
        loads = sum(sum(layer["load"]) for layer in row["layers"])
        ok &= sum(r["expert_rows"] for r in rk) == loads
        ok &= 0.0 <= par["all_to_all_share"] <= 1.0 and par["expert_rows_imbalance"] >= 1.0
        # The time by phase adds up to the all-to-all time, per rank and as a share of the step.
        for r in rk:
            ok &= abs(sum(r["all_to_all_ms_by_phase"].values()) - r["all_to_all_ms"]) <= 1e-6 * (
                1 + r["all_to_all_ms"])
            ok &= P == 1 or all(v > 0 for v in r["all_to_all_ms_by_phase"].values())
        ok &= abs(sum(par["all_to_all_share_by_phase"].values()) - par["all_to_all_share"]) <= 1e-9
        if P == 1:
            ok &= all(r["dispatch_bytes_sent"] == 0 for r in rk)
    check(ok, f"{label}: byte counters conserved (sent = received per phase), expert rows = "
              "global loads, all-to-all time by phase adds up")


def main():
    work = tempfile.mkdtemp(prefix="switchyard-train-parallel-")
    print(f"work folder {work}; seeds fixed in the configs (seed {BASE_CONFIG['seed']})")
    for name, router in ROUTERS.items():
        cfg = json.loads(json.dumps(BASE_CONFIG))
        cfg["model"]["router"] = router
        path = os.path.join(work, f"{name}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        one = os.path.join(work, name + "-1")
        run(["train", "--config", path, "--out", one])
        # (ranks, expert-parallel P, ranks per node: 0 = one node, 2 = hierarchical 2 x 2)
        layouts = [(2, 2, 0), (4, 2, 0)]
        if name in ("topk_capacity_jitter", "base", "deepseek_v3_bias", "expert_choice",
                    "smile_capacity"):
            layouts += [(4, 4, 0), (4, 4, 2)]
        for ranks, P, G in layouts:
            many = os.path.join(work, f"{name}-{ranks}x{P}-{G}")
            run(["train", "--config", path, "--out", many, "--expert-parallel", str(P)]
                + (["--ranks-per-node", str(G)] if G else []), ranks)
            label = f"{name}, {ranks} ranks, expert-parallel {P}" + (
                f", hierarchical {P // G} nodes x {G}" if G else "")
            if name == "base":
                # BASE's auction is an ε-optimal assignment: a logit moved by an ulp can break a
                # near-tie the other way. Whether the shards' logits are bitwise the whole batch's
                # depends on the CPU's GEMM kernels (on some, the rows of a smaller GEMM round
                # differently), so routing digests are not compared; the first step's loss must
                # agree to rounding and the run stay close.
                compare(one, many, label, 2e-3, exact_routing_steps=0)
                first = abs(metrics(one)[0]["train_loss"] - metrics(many)[0]["train_loss"])
                check(first <= 1e-6, f"{label}: step 0 train loss within 1e-06 ({first:.2e})")
                params_near(one, many, label, 5e-2)
            else:
                compare(one, many, label, 1e-6)
                params_close(one, many, label, 1e-4)
            counters_consistent(metrics(many), label, ranks, P)
            with open(os.path.join(one, "run.json")) as f:
                whole = json.load(f)
            with open(os.path.join(many, "run.json")) as f:
                part = json.load(f)
            # The buffer holds the trainable parameters, the selection bias (E per MoE layer)
            # and 1/P of the routed experts' three (F, d) matrices.
            held = part["parallel"]["parameter_floats_per_rank"]
            m = cfg["model"]
            L, E = m["n_layers"], m["experts"]
            experts = L * E * 3 * m["d_ff"] * m["d_model"]
            want = whole["params"] + L * E - experts * (P - 1) // P
            check(part["params"] == whole["params"] and held == want,
                  f"{label}: a rank holds {held} parameter floats (want {want}: its experts "
                  f"only) of the model's {whole['params']}")

    # LocMoE routes by where tokens and experts sit: the one-process run declares the layout of
    # the run across ranks (layer.json "placement") and must route exactly as that run does.
    for ranks, P, G, level in ((2, 2, 0, "rank"), (4, 2, 0, "rank"), (4, 4, 2, "node")):
        cfg = json.loads(json.dumps(BASE_CONFIG))
        cfg["model"]["router"] = {
            "router": "locmoe", "locality": level, "local_bonus": 0.3, "locality_loss": 0.05,
            "capacity_factor": 1.25,
            "placement": {"ranks": ranks, "expert_parallel": P, "ranks_per_node": G or P}}
        label = f"locmoe ({level}), {ranks} ranks, expert-parallel {P}" + (
            f", hierarchical {P // G} nodes x {G}" if G else "")
        path = os.path.join(work, f"locmoe-{ranks}x{P}-{G}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        one, many = path[:-5] + "-1", path[:-5] + "-many"
        run(["train", "--config", path, "--out", one])
        run(["train", "--config", path, "--out", many, "--expert-parallel", str(P)]
            + (["--ranks-per-node", str(G)] if G else []), ranks)
        compare(one, many, label, 1e-6)
        params_close(one, many, label, 1e-4)
        counters_consistent(metrics(many), label, ranks, P)
    p, _ = run(["train", "--config", os.path.join(work, "locmoe-4x4-2.json"), "--out",
                os.path.join(work, "bad"), "--expert-parallel", "2"], 4, expect_ok=False)
    check(p.returncode != 0 and "placement" in p.stderr and "differs from this run" in p.stderr,
          "a declared placement that differs from the run's layout is refused")

    # Resume with another rank count: 2 ranks for 10 steps, then 4 ranks (and 4 -> 1).
    path = os.path.join(work, "topk_capacity_jitter.json")
    one = os.path.join(work, "topk_capacity_jitter-1")
    for first, then in ((2, 4), (4, 1)):
        out = os.path.join(work, f"resume-{first}-{then}")
        run(["train", "--config", path, "--out", out, "--expert-parallel", "2", "--stop-after",
             "10"], first)
        args = ["train", "--config", path, "--out", out, "--resume"]
        run(args + (["--expert-parallel", "2"] if then > 1 else []), then)
        compare(one, out, f"resume {first} ranks -> {then}", 1e-6)
        params_close(one, out, f"resume {first} ranks -> {then}", 1e-4)

    # A rank that dies, a rank that hangs: the job ends, naming rank and step; checkpoint intact.
    cfg = json.loads(json.dumps(BASE_CONFIG))
    cfg["model"]["router"] = ROUTERS["topk_capacity_jitter"]
    cfg.update(steps=40, checkpoint_every=2)
    path = os.path.join(work, "fault.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    for kind in ("exit", "hang"):
        out = os.path.join(work, f"fault-{kind}")
        p, seconds = run(["train", "--config", path, "--out", out, "--expert-parallel", "2",
                          "--timeout", "3"], 2, fault=f"1:5:{kind}", expect_ok=False, timeout=60)
        named = ("rank 1" in p.stderr or "rank 0" in p.stderr) and "step 6" in p.stderr
        check(p.returncode != 0 and named and seconds < 30,
              f"rank 1 {kind}s at step 6: the job ends ({p.returncode}, {seconds:.1f} s) "
              "naming rank and step")
        with open(os.path.join(out, "checkpoint", "checkpoint.json")) as f:
            step = json.load(f)["step"]
        check(step == 4, f"fault {kind}: the last checkpoint (step {step}) is intact")
        p, _ = run(["train", "--config", path, "--out", out, "--resume", "--stop-after", "1"])
        check(p.returncode == 0, f"fault {kind}: one process resumes from it")

    # ep-plan on a traced step of a run across ranks predicts the bytes the counters measured:
    # deduplicated token rows (d floats) per phase, plus 12 bytes per row entry in dispatch.
    for ranks in (2, 4):
        cfg = json.loads(json.dumps(BASE_CONFIG))
        cfg["model"]["router"] = {"router": "topk", "k": 2, "losses": {"balance": 0.01}}
        cfg["model"]["experts"] = 8
        tpath = os.path.join(work, f"trace-{ranks}.json")
        with open(tpath, "w") as f:
            json.dump(cfg, f)
        out = os.path.join(work, f"trace-{ranks}")
        trace = out + ".safetensors"
        run(["train", "--config", tpath, "--out", out, "--expert-parallel", str(ranks), "--trace",
             trace, "--trace-step", "5"], ranks)
        plan = out + "-plan"
        run(["ep-plan", "--trace", trace, "--ranks", str(ranks), "--ranks-per-node", str(ranks),
             "--link", "intra=10", "--hidden", "32", "--expert-ff", "32", "--bytes-per-element",
             "4", "--gemm-gflops", "100", "--out", plan])
        with open(os.path.join(plan, "summary.json")) as f:
            contiguous = json.load(f)["placements"][0]
        row = metrics(out)[5]["parallel"]["ranks"]
        dedup = sum(layer["dispatch_bytes"]["dedup"]["intra"] for layer in contiguous["layers"])
        pair_rows = sum(layer["dispatch_rows"]["pair"]["intra"] for layer in contiguous["layers"])
        combine = sum(r["combine_bytes_sent"] for r in row)
        dispatch = sum(r["dispatch_bytes_sent"] for r in row)
        check(combine == dedup and dispatch == dedup + 12 * pair_rows,
              f"ep-plan, {ranks} ranks: predicted bytes = measured (combine {combine:.0f} vs "
              f"{dedup:.0f}, dispatch {dispatch:.0f} vs {dedup + 12 * pair_rows:.0f})")
        predicted_rows = [sum(layer["rank_rows"][q] for layer in contiguous["layers"])
                          for q in range(ranks)]
        measured_rows = [r["expert_rows"] for r in row]
        check(predicted_rows == measured_rows,
              f"ep-plan, {ranks} ranks: rows per rank {predicted_rows} = measured {measured_rows}")

    # THOR's two passes per step under data parallelism route the global batch as one process
    # does (the same draws on every rank); expert parallelism is refused, naming the router.
    cfg = json.loads(json.dumps(BASE_CONFIG))
    cfg["model"]["router"] = {"router": "thor", "consistency": 1.0}
    tpath = os.path.join(work, "thor.json")
    with open(tpath, "w") as f:
        json.dump(cfg, f)
    one, many = os.path.join(work, "thor-1"), os.path.join(work, "thor-2x1")
    run(["train", "--config", tpath, "--out", one])
    run(["train", "--config", tpath, "--out", many, "--expert-parallel", "1"], 2)
    compare(one, many, "thor, 2 ranks, data parallel", 1e-6)
    params_close(one, many, "thor, 2 ranks, data parallel", 1e-4)
    p, _ = run(["train", "--config", tpath, "--out", os.path.join(work, "thor-ep"),
                "--expert-parallel", "2"], 2, expect_ok=False)
    check(p.returncode != 0 and "router thor" in p.stderr and "expert parallelism" in p.stderr,
          "thor under expert parallelism is refused, naming the router")

    # Layout errors name the flag and the values.
    p, _ = run(["train", "--config", path, "--out", os.path.join(work, "bad"),
                "--expert-parallel", "3"], 2, expect_ok=False)
    check(p.returncode != 0 and "--expert-parallel 3 must divide the 2 ranks" in p.stderr,
          "--expert-parallel 3 on 2 ranks is refused")
    p, _ = run(["train", "--config", path, "--out", os.path.join(work, "bad"), "--steps", "1",
                "--expert-parallel", "2"], 1, expect_ok=False)
    check(p.returncode != 0 and "--expert-parallel 2 needs a job of several ranks" in p.stderr,
          "--expert-parallel without mpirun is refused")
    if FAILURES:
        print(f"{len(FAILURES)} failed")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
