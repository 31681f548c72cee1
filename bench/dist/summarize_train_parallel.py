#!/usr/bin/env python3
"""Summary of bench/dist/run_train_parallel_bench.sh: tokens/s ratios against 1 process x 2
threads (best of the rounds), the all-to-all share of step time by phase, and the dispatch
volume of group-limited against plain top-2 routing."""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    folder = os.path.join(out, name)
    with open(os.path.join(folder, "run.json")) as f:
        run = json.load(f)
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return run, rows


def steady(rows):
    return rows[3:]  # the first steps fault in memory


def tokens_per_s(rows):
    rows = steady(rows)
    return sum(r["tokens_per_s"] for r in rows) / len(rows)


def traffic(rows):
    rows = steady(rows)
    keys = ("dispatch_bytes_sent", "combine_bytes_sent", "backward_bytes_sent")
    per = {k: sum(sum(rk[k] for rk in r["parallel"]["ranks"]) for r in rows) / len(rows)
           for k in keys}
    share = sum(r["parallel"]["all_to_all_share"] for r in rows) / len(rows)
    a2a_ms = sum(sum(rk["all_to_all_ms"] for rk in r["parallel"]["ranks"]) /
                 len(r["parallel"]["ranks"]) for r in rows) / len(rows)
    step_ms = sum(sum(rk["step_ms"] for rk in r["parallel"]["ranks"]) /
                  len(r["parallel"]["ranks"]) for r in rows) / len(rows)
    imbalance = sum(r["parallel"]["expert_rows_imbalance"] for r in rows) / len(rows)
    by_phase = {k: sum(r["parallel"]["all_to_all_share_by_phase"][k] for r in rows) / len(rows)
                for k in ("dispatch", "combine", "backward")}
    return per, (share, by_phase), a2a_ms, step_ms, imbalance


summary = {"rounds": []}
for rnd in (1, 2):
    base = tokens_per_s(load(f"r{rnd}-1x2")[1])
    ep = tokens_per_s(load(f"r{rnd}-2x1-ep2")[1])
    dp = tokens_per_s(load(f"r{rnd}-2x1-dp")[1])
    summary["rounds"].append({"one_process_2_threads": base, "two_ranks_expert_parallel": ep,
                              "two_ranks_data_parallel": dp, "ratio_ep": ep / base,
                              "ratio_dp": dp / base})
best = max(summary["rounds"], key=lambda r: r["ratio_ep"])
summary["ratio_ep_best"] = max(r["ratio_ep"] for r in summary["rounds"])
summary["ratio_dp_best"] = max(r["ratio_dp"] for r in summary["rounds"])
per, share, a2a, step, imb = traffic(load("r1-2x1-ep2")[1])
summary["topk"] = {"bytes_per_step": per, "all_to_all_share": share[0],
                   "all_to_all_share_by_phase": share[1], "all_to_all_ms": a2a,
                   "step_ms": step, "expert_rows_imbalance": imb,
                   "val_loss": load("r1-2x1-ep2")[1][-1]["val_loss"]}
per_g, share_g, a2a_g, step_g, imb_g = traffic(load("group-2x1-ep2")[1])
summary["group_limited"] = {"bytes_per_step": per_g, "all_to_all_share": share_g[0],
                            "all_to_all_share_by_phase": share_g[1],
                            "all_to_all_ms": a2a_g, "step_ms": step_g,
                            "expert_rows_imbalance": imb_g,
                            "val_loss": load("group-2x1-ep2")[1][-1]["val_loss"]}
summary["group_limited_dispatch_ratio"] = (per_g["dispatch_bytes_sent"] /
                                           per["dispatch_bytes_sent"])
def inter_node(rows):
    rows = steady(rows)
    sent = sum(sum(rk["inter_node_bytes_sent"] for rk in r["parallel"]["ranks"]) for r in rows)
    total = sum(sum(rk[k] for rk in r["parallel"]["ranks"]
                    for k in ("dispatch_bytes_sent", "combine_bytes_sent", "backward_bytes_sent"))
                for r in rows)
    return sent / len(rows), total / len(rows), rows[-1]["val_loss"] if "val_loss" in rows[-1] \
        else float("nan")


nodes = {}
for name in ("topk", "group_limited"):
    across, total, val = inter_node(load(f"{name}-4x1-nodes")[1])
    nodes[name] = {"inter_node_bytes_per_step": across, "all_bytes_per_step": total,
                   "val_loss": val}
nodes["group_limited_inter_node_ratio"] = (nodes["group_limited"]["inter_node_bytes_per_step"] /
                                           nodes["topk"]["inter_node_bytes_per_step"])
summary["two_nodes_x_two"] = nodes

# Locality-aware routing: bytes between ranks (2 ranks) and across nodes (2 nodes x 2) per step,
# against the same k without locality (top-1 for LocMoE and SMILE, top-2 for top-2 + bonus).
locality = {}
for name, base in (("top1", "top1"), ("locmoe", "top1"), ("locmoe_bonus", "top1"),
                   ("smile", "top1"), ("topk_bonus", None)):
    entry = {}
    _, rows = load(f"loc-{name}-2x1")
    per, share_l, _, _, imb_l = traffic(rows)
    entry["two_ranks"] = {"bytes_per_step": sum(per.values()), "all_to_all_share": share_l[0],
                          "expert_rows_imbalance": imb_l, "val_loss": rows[-1]["val_loss"]}
    across, total, val = inter_node(load(f"loc-{name}-4x1-nodes")[1])
    entry["two_nodes_x_two"] = {"inter_node_bytes_per_step": across, "all_bytes_per_step": total,
                                "val_loss": val}
    entry["baseline"] = base or "topk (top-2, the first runs)"
    locality[name] = entry
top2_bytes = sum(summary["topk"]["bytes_per_step"].values())
for name, entry in locality.items():
    if entry["baseline"] == "top1":
        b2 = locality["top1"]["two_ranks"]["bytes_per_step"]
        bn = locality["top1"]["two_nodes_x_two"]["inter_node_bytes_per_step"]
    else:
        b2, bn = top2_bytes, nodes["topk"]["inter_node_bytes_per_step"]
    entry["two_ranks"]["bytes_ratio"] = entry["two_ranks"]["bytes_per_step"] / b2
    entry["two_nodes_x_two"]["inter_node_ratio"] = (
        entry["two_nodes_x_two"]["inter_node_bytes_per_step"] / bn)
summary["locality"] = locality
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
for r in summary["rounds"]:
    print(f"1x2 threads {r['one_process_2_threads']:.0f} tok/s | 2 ranks EP2 "
          f"{r['two_ranks_expert_parallel']:.0f} ({r['ratio_ep']:.2f}x) | 2 ranks DP "
          f"{r['two_ranks_data_parallel']:.0f} ({r['ratio_dp']:.2f}x)")
for name in ("topk", "group_limited"):
    s = summary[name]
    b = s["bytes_per_step"]
    print(f"{name}: dispatch {b['dispatch_bytes_sent'] / 1e6:.2f} MB/step, combine "
          f"{b['combine_bytes_sent'] / 1e6:.2f}, backward {b['backward_bytes_sent'] / 1e6:.2f}; "
          f"all-to-all {s['all_to_all_ms']:.1f} of {s['step_ms']:.1f} ms per rank-step "
          f"({100 * s['all_to_all_share']:.1f}%: dispatch "
          f"{100 * s['all_to_all_share_by_phase']['dispatch']:.1f}, combine "
          f"{100 * s['all_to_all_share_by_phase']['combine']:.1f}, backward "
          f"{100 * s['all_to_all_share_by_phase']['backward']:.1f}), expert-rows imbalance "
          f"{s['expert_rows_imbalance']:.3f}, val loss {s['val_loss']:.4f}")
print(f"group-limited / top-2 dispatch bytes: {summary['group_limited_dispatch_ratio']:.3f}")
for name in ("topk", "group_limited"):
    n = nodes[name]
    print(f"4 ranks as 2 nodes x 2, {name}: across nodes {n['inter_node_bytes_per_step'] / 1e6:.2f}"
          f" MB/step of {n['all_bytes_per_step'] / 1e6:.2f} MB, val loss {n['val_loss']:.4f}")
print(f"group-limited / top-2 bytes across nodes: {nodes['group_limited_inter_node_ratio']:.3f}")
print("locality-aware routing (ratios against the same k without locality):")
for name, entry in locality.items():
    two, four = entry["two_ranks"], entry["two_nodes_x_two"]
    print(f"  {name:13s} 2 ranks: {two['bytes_per_step'] / 1e6:6.2f} MB/step "
          f"({two['bytes_ratio']:.3f}x), imbalance {two['expert_rows_imbalance']:.2f}, val loss "
          f"{two['val_loss']:.4f} | 2 nodes x 2: across nodes "
          f"{four['inter_node_bytes_per_step'] / 1e6:6.2f} MB/step ({four['inter_node_ratio']:.3f}x)"
          f", val loss {four['val_loss']:.4f}")
