#!/usr/bin/env bash
# The layer benchmark in one run: switchyard's layer, its dense floor and its routing overhead
# (bench_layer, Google Benchmark) next to the PyTorch per-expert loop and dense floor
# (bench/torch_moe_loop.py), one table per shape. Ratios are only meaningful within one run.
#
#   bench/run_layer_bench.sh [extra bench_layer flags, e.g. --benchmark_filter=fine/]
#
# Environment: SKIP_BUILD=1 skips the build; SKIP_TORCH=1 skips the torch baselines;
# KEEP_JSON=DIR copies the raw results there; REPORT_ONLY=DIR re-renders such a kept run (the files
# may come from two clean runs: the torch numbers do not depend on switchyard's code). Run nothing
# else heavy meanwhile (2 cores): the table warns when other processes took CPU.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bench="$root/build/release/bench/bench_layer"
py=/usr/bin/python3

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -n "${REPORT_ONLY:-}" ]]; then
  # Re-render the table of a kept run (KEEP_JSON=DIR) without running anything.
  cp "$REPORT_ONLY/switchyard.json" "$REPORT_ONLY/contention.jsonl" "$tmp/"
  cp "$REPORT_ONLY/torch.jsonl" "$tmp/" 2>/dev/null || :
elif [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  [[ -f build/release/build.ninja ]] || cmake --preset release >&2
  cmake --build --preset release --target bench_layer >&2
fi
[[ -n "${REPORT_ONLY:-}" || -x "$bench" ]] || { echo "error: $bench not built" >&2; exit 1; }

# Runs a command and records other processes' CPU use meanwhile (bench/checked.py).
checked() {
  local label="$1"
  shift
  "$py" "$root/bench/checked.py" "$label" "$tmp/contention.jsonl" "$@"
}

torch_note=""
if [[ -n "${REPORT_ONLY:-}" ]]; then
  [[ -s "$tmp/torch.jsonl" ]] || torch_note="no torch results in $REPORT_ONLY"
else
  echo "== bench_layer (Google Benchmark) ==" >&2
  checked bench_layer "$bench" --benchmark_out="$tmp/switchyard.json" \
    --benchmark_out_format=json "$@" >&2
  if [[ "${SKIP_TORCH:-0}" == 1 ]]; then
    torch_note="torch baselines skipped (SKIP_TORCH=1)"
  elif ! "$py" -c 'import torch' 2>/dev/null; then
    torch_note="$py cannot import torch (install Debian's python3-torch)"
  else
    echo "== torch per-expert loop and dense floor ($py) ==" >&2
    if ! checked torch "$py" bench/torch_moe_loop.py > "$tmp/torch.jsonl"; then
      torch_note="bench/torch_moe_loop.py failed (see above)"
    fi
  fi
fi
[[ -f "$tmp/torch.jsonl" ]] || : > "$tmp/torch.jsonl"

if [[ -n "${KEEP_JSON:-}" ]]; then
  mkdir -p "$KEEP_JSON"
  cp "$tmp/switchyard.json" "$tmp/torch.jsonl" "$tmp/contention.jsonl" "$KEEP_JSON/"
fi

"$py" - "$tmp/switchyard.json" "$tmp/torch.jsonl" "$torch_note" "$tmp/contention.jsonl" <<'EOF'
import json, sys

sy_path, torch_path, torch_note, contention_path = sys.argv[1:5]
report = json.load(open(sy_path))
ms = {}  # "fine/layer_fwd" -> ms (real time)
extra = {}
for b in report["benchmarks"]:
    if b.get("run_type", "iteration") != "iteration":
        continue
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    ms[b["name"].split("/real_time")[0].split("/min_time")[0]] = b["real_time"] * scale
    extra[b["name"].split("/")[0] + "/" + b["name"].split("/")[1]] = b
torch = {}
for line in open(torch_path):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        torch[(r["impl"], r["shape"])] = r

shapes = {"coarse": dict(E=8, k=2, F=1024), "fine": dict(E=64, k=8, F=256)}
T, d = 4096, 512
ctx = report.get("context", {})
print(f"\nswitchyard layer benchmark: {ctx.get('date', '')}, {ctx.get('num_cpus', '?')} CPUs, "
      f"{ctx.get('host_name', '')}; T = {T}, d = {d}, SwiGLU, softmax top-k renormalised")
contention = [json.loads(l) for l in open(contention_path) if l.strip()]
print("contention: " + "; ".join(
    f"{c['label']}: other processes took {100 * c['other_share']:.1f}% of the machine" for c in contention))
busy = [c["label"] for c in contention if c["other_share"] > 0.05]
noisy = [b["name"].split("/min_time")[0] for b in report["benchmarks"]
         if b.get("cpu_time") and b["real_time"] > 1.1 * b["cpu_time"]]
if busy or noisy:
    print("\n" + "!" * 78 + "\n!! WARNING: the machine was shared during this run; the numbers are skewed.")
    if busy:
        print("!! Other processes took > 5% of the CPU during: " + ", ".join(busy))
    if noisy:
        print("!! Main thread descheduled (real > 1.1 x CPU time): " + ", ".join(noisy))
    print("!! Rerun on a quiet machine before comparing ratios.\n" + "!" * 78)
if torch_note:
    print("\n" + "!" * 78 + f"\n!! NOTE: {torch_note}\n!! The torch columns are missing.\n" + "!" * 78)

def verdict(ok):
    return "MET" if ok else "MISSED"

def fmt(v, spec="8.1f"):
    return format(v, spec) if v is not None else " " * (int(spec.split(".")[0]) - 3) + "n/a"

for name, s in shapes.items():
    E, k, F = s["E"], s["k"], s["F"]
    gf = T * k * 6 * d * F * 1e-9
    get = lambda key: ms.get(f"{name}/{key}")
    lf, lb = get("layer_fwd"), get("layer_fwdbwd")
    df, db = get("dense_floor_fwd"), get("dense_floor_fwdbwd")
    rf, rb = get("routing_overhead_fwd"), get("routing_overhead_fwdbwd")
    xf, xb = get("expert_ffn_f8_fwd"), get("expert_ffn_f8_fwdbwd")
    tl, td = torch.get(("torch_loop", name)), torch.get(("torch_dense_floor", name))
    tm = torch.get(("torch_loop_modulelist", name))
    print(f"\n### {name}: E = {E}, k = {k}, F = {F}  ({gf:.1f} GFLOP fwd, {3 * gf:.1f} fwd+bwd)")
    print(f"| {'implementation':<34} | {'fwd ms':>8} | {'GFLOP/s':>7} | {'fwd+bwd ms':>10} | {'GFLOP/s':>7} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 8}:|{'-' * 11}:|{'-' * 8}:|")
    def row(label, f, b, rate=True):  # rate: GFLOP/s over the real shape's FLOPs
        print(f"| {label:<34} | {fmt(f)} | {fmt(gf / f * 1e3 if f and rate else None, '7.1f')} | "
              f"{fmt(b, '10.1f')} | {fmt(3 * gf / b * 1e3 if b and rate else None, '7.1f')} |")
    row("switchyard layer", lf, lb)
    row("switchyard dense floor (cpu::gemm)", df, db)
    row("routing overhead est. (layer, F=8)", rf, rb, rate=False)
    row("  of which F=8 expert FFNs", xf, xb, rate=False)
    row("torch per-expert loop (stacked)", tl and tl["fwd_ms"], tl and tl["fwdbwd_ms"])
    row("torch per-expert loop (ModuleList)", tm and tm["fwd_ms"], tm and tm["fwdbwd_ms"])
    row("torch dense floor", td and td["fwd_ms"], td and td["fwdbwd_ms"])
    lines = []
    if lf and df:
        r = df / lf
        lines.append(f"FLOP rate layer / dense floor, fwd:     {r:5.2f}  (target >= 0.80: {verdict(r >= 0.8)})")
    if lb and db:
        r = db / lb
        lines.append(f"FLOP rate layer / dense floor, fwd+bwd: {r:5.2f}  (target >= 0.70: {verdict(r >= 0.7)})")
    if rf and lf:
        r = rf / lf
        lines.append(f"routing+dispatch+combine overhead, fwd: {100 * r:5.1f}% of layer fwd ({rf:.1f} ms; target <= 10%: {verdict(r <= 0.10)})")
    if rf and xf and lf:
        r = (rf - xf) / lf
        lines.append(f"  net of the F=8 expert FFNs:            {100 * r:5.1f}% of layer fwd ({rf - xf:.1f} ms; target <= 10%: {verdict(r <= 0.10)})")
    if rb and lb:
        net = f", net of F=8 FFNs {100 * (rb - xb) / lb:.1f}%" if xb else ""
        lines.append(f"  fwd+bwd, for information:              {100 * rb / lb:5.1f}% of layer fwd+bwd{net}")
    if lf and df and lb and db:
        lines.append(f"  layer - dense floor (all overhead, a lower bound if grouped GEMMs beat the floor): "
                     f"fwd {lf - df:.1f} ms, fwd+bwd {lb - db:.1f} ms")
    for label, t in (("stacked", tl), ("ModuleList", tm)):
        if t and lf and lb:
            sf, sb = t["fwd_ms"] / lf, t["fwdbwd_ms"] / lb
            target = f" (target >= 4x: {verdict(sb >= 4.0)})" if name == "fine" else ""
            lines.append(f"speed-up vs torch loop ({label}): fwd {sf:5.2f}x, fwd+bwd {sb:5.2f}x{target}")
    if not tl:
        lines.append("speed-up vs torch loop: n/a (no torch results)")
    ph = extra.get(f"{name}/layer_fwd") or {}
    if "ms_experts" in ph:
        over = sum(ph.get("ms_" + p, 0.0) for p in ("route", "dispatch", "combine", "statistics"))
        total = over + ph.get("ms_experts", 0.0) + ph.get("ms_shared_expert", 0.0)
        lines.append(f"measured by the layer's phase timers, fwd: route {ph.get('ms_route', 0):.1f} ms, "
                     f"dispatch+gather {ph.get('ms_dispatch', 0):.1f} ms, combine {ph.get('ms_combine', 0):.1f} ms, "
                     f"statistics {ph.get('ms_statistics', 0):.1f} ms, experts {ph.get('ms_experts', 0):.1f} ms: "
                     f"routing+dispatch+combine {100 * over / total:.1f}% (target <= 10%: {verdict(over / total <= 0.10)})")
    lv = extra.get(f"{name}/layer_fwd")
    if lv and "max_vio" in lv:
        lines.append(f"routing: MaxVio {lv['max_vio']:.3f}, dropped {int(lv['dropped'])}, "
                     f"experts/token {lv['exp_per_tok']:.2f}")
    print()
    for l in lines:
        print("- " + l)
EOF
