#!/usr/bin/env bash
# Training throughput in one run: `switchyard train` on the default model (docs/model.md) next to
# the same model in PyTorch (bench/torch_train.py), same machine, same data, batch 8 x 128 tokens.
# Prints ms/step and tokens/s for each and the ratio against the target of issue 3 (switchyard
# >= 2x PyTorch tokens/s on 2 cores).
#
#   bench/run_train_bench.sh
#
# switchyard (OMP_NUM_THREADS=THREADS): median of metrics.jsonl's per-step tokens_per_s over the
# steps after the first 5, without the last step (it always evaluates; eval_every is set beyond
# the step count so no other step does). torch: median step time over TORCH_STEPS steps after 5
# warm-up steps, in each of TORCH_VARIANTS (default "2 2p 1"): THREADS threads (the issue's
# setting), the same with OMP_WAIT_POLICY=PASSIVE, and 1 thread. The target verdict is taken
# against the fastest torch variant.
#
# Environment: SKIP_BUILD=1 skips the build; SY_STEPS (default 40), TORCH_STEPS (default 30),
# THREADS (default 2), TORCH_VARIANTS; KEEP_JSON=DIR copies train.json, metrics.jsonl, run.json
# and the torch results there. Run nothing else heavy meanwhile (2 cores): the table warns when
# other processes took CPU during any of the runs, and torch with 2 threads degrades badly then.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exe="$root/build/release/switchyard"
py=/usr/bin/python3
sy_steps="${SY_STEPS:-40}"
torch_steps="${TORCH_STEPS:-30}"
threads="${THREADS:-2}"
(( sy_steps >= 8 )) || { echo "error: SY_STEPS must be >= 8" >&2; exit 2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  [[ -f build/release/build.ninja ]] || cmake --preset release >&2
  cmake --build --preset release --target switchyard >&2
fi
[[ -x "$exe" ]] || { echo "error: $exe not built" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null ||
  { echo "error: $py cannot import torch (install Debian's python3-torch)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -f data/corpus/manifest.json && -f data/corpus/train.bytes ]]; then
  data_json="{\"corpus\": \"$root/data/corpus\"}"
  torch_corpus="$root/data/corpus/train.bytes"
else
  data_json='{"synthetic": true}'
  torch_corpus="/nonexistent"  # torch_train.py falls back to random bytes
fi

# The default model and batch (docs/model.md, docs/training.md); evaluation only at the last step.
cat > "$tmp/train.json" <<EOF
{
  "model": {
    "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128,
    "moe_every": 1, "experts": 8, "d_ff": 256, "shared_d_ff": 0, "activation": "swiglu",
    "tied_head": true, "rope_theta": 10000.0, "norm_eps": 1e-5, "init_std": 0.02,
    "router": {"router": "mixtral", "k": 2}
  },
  "data": $data_json,
  "batch": 8, "grad_accum": 1, "steps": $sy_steps, "lr": 0.003, "warmup_steps": 30,
  "min_lr_ratio": 0.1, "weight_decay": 0.1, "grad_clip": 1.0,
  "eval_every": $((sy_steps * 10)), "eval_batches": 1, "checkpoint_every": $((sy_steps * 10)),
  "log_every": 10, "seed": 1, "out": "$tmp/out", "name": "train-bench"
}
EOF

# Runs a command and records other processes' CPU use meanwhile (bench/checked.py).
checked() {
  local label="$1"
  shift
  "$py" "$root/bench/checked.py" "$label" "$tmp/contention.jsonl" "$@"
}

echo "== switchyard train ($sy_steps steps, OMP_NUM_THREADS=$threads) ==" >&2
OMP_NUM_THREADS="$threads" checked switchyard \
  "$exe" train --config "$tmp/train.json" --steps "$sy_steps" --out "$tmp/out" > "$tmp/sy.log"
tail -n 1 "$tmp/sy.log" >&2

# torch variants: "2" = THREADS threads (the issue's setting); "2p" = the same with
# OMP_WAIT_POLICY=PASSIVE; "1" = one thread. libgomp's default spin-then-sleep wait makes torch's
# many small parallel regions slow on small VMs (2 threads measured ~3x slower than 1 here), so the
# headline ratio is taken against the fastest torch variant, not the issue's setting alone.
torch_variants="${TORCH_VARIANTS:-2 2p 1}"
: > "$tmp/torch.jsonl"
for v in $torch_variants; do
  case "$v" in
    2) n="$threads"; policy="" ;;
    2p) n="$threads"; policy=PASSIVE ;;
    1) n=1; policy="" ;;
    *) echo "error: unknown torch variant $v (2, 2p, 1)" >&2; exit 2 ;;
  esac
  label="torch, $n thread$([[ $n == 1 ]] || echo s)${policy:+, OMP_WAIT_POLICY=$policy}"
  echo "== $label ($py bench/torch_train.py, 5 warm-up + $torch_steps timed steps) ==" >&2
  (
    export OMP_NUM_THREADS="$n"
    if [[ -n "$policy" ]]; then export OMP_WAIT_POLICY="$policy"; fi
    checked "torch-$v" "$py" bench/torch_train.py --steps "$torch_steps" --warmup 5 \
      --threads "$n" --corpus "$torch_corpus" > "$tmp/torch-$v.json"
  )
  "$py" -c 'import json, sys; r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); r["label"] = sys.argv[2]; print(json.dumps(r))' \
    "$tmp/torch-$v.json" "$label" >> "$tmp/torch.jsonl"
done

if [[ -n "${KEEP_JSON:-}" ]]; then
  mkdir -p "$KEEP_JSON"
  cp "$tmp/train.json" "$tmp/out/metrics.jsonl" "$tmp/out/run.json" "$tmp/torch.jsonl" \
     "$tmp/contention.jsonl" "$KEEP_JSON/"
fi

"$py" - "$tmp/out/metrics.jsonl" "$tmp/out/run.json" "$tmp/torch.jsonl" "$tmp/contention.jsonl" \
  "$sy_steps" "$threads" <<'EOF'
import json, os, statistics, sys

metrics_path, run_path, torch_path, contention_path, sy_steps, threads = sys.argv[1:7]
sy_steps = int(sy_steps)
rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
# Steps 5 .. steps-2: no warm-up, no evaluation (the last step evaluates; it is dropped as well).
timed = [r for r in rows if 5 <= r["step"] < sy_steps - 1 and "val_loss" not in r]
if not timed:
    sys.exit("error: no timed switchyard steps in metrics.jsonl")
tokens_per_step = 8 * 128
sy_tps = statistics.median(r["tokens_per_s"] for r in timed)
sy_mean_ms = statistics.mean(1e3 * tokens_per_step / r["tokens_per_s"] for r in timed)
sy = {"ms": 1e3 * tokens_per_step / sy_tps, "tps": sy_tps, "mean_ms": sy_mean_ms,
      "loss": rows[-1]["train_loss"], "n": len(timed)}
run = json.load(open(run_path))
torch_rs = [json.loads(l) for l in open(torch_path) if l.strip().startswith("{")]
if not torch_rs:
    sys.exit("error: bench/torch_train.py printed no result")
trs = [{"label": r["label"], "ms": r["ms_per_step"], "tps": r["tokens_per_s"],
        "mean_ms": r["mean_ms_per_step"], "loss": r["final_loss"], "n": r["timed_steps"]}
       for r in torch_rs]
torch_r = torch_rs[0]

print(f"\nswitchyard training throughput: default model (d_model 128, 4 layers, 4 heads, "
      f"8 experts d_ff 256 top-2 mixtral, tied head), batch 8 x 128 tokens; switchyard {threads} threads, "
      f"{os.cpu_count()} CPUs; data: {torch_r['data']}")
print(f"parameters: torch {torch_r['params']:,}; switchyard run.json: "
      + ", ".join(f"{k} {v}" for k, v in run.items() if "param" in k.lower()))
contention = [json.loads(l) for l in open(contention_path) if l.strip()]
print("contention: " + "; ".join(
    f"{c['label']}: other processes took {100 * c['other_share']:.1f}% of the machine"
    for c in contention))
busy = [c["label"] for c in contention if c["other_share"] > 0.05]
if busy:
    print("\n" + "!" * 78 + "\n!! WARNING: the machine was shared during this run; the numbers are skewed.")
    print("!! Other processes took > 5% of the CPU during: " + ", ".join(busy))
    print("!! Rerun on a quiet machine before quoting the ratio.\n" + "!" * 78)
print()
print(f"| {'implementation':<42} | {'ms/step':>8} | {'tokens/s':>9} | {'mean ms/step':>12} | "
      f"{'steps timed':>11} | {'final loss':>10} |")
print(f"|{'-' * 44}|{'-' * 9}:|{'-' * 10}:|{'-' * 13}:|{'-' * 12}:|{'-' * 11}:|")
for label, r in [("switchyard train", sy)] + [(f"{t['label']}", t) for t in trs]:
    print(f"| {label:<42} | {r['ms']:8.1f} | {r['tps']:9.0f} | {r['mean_ms']:12.1f} | "
          f"{r['n']:11d} | {r['loss']:10.4f} |")
print(f"\ntorch {torch_r['torch']} (autograd), float32; ratios are switchyard / torch tokens/s (medians)")
for t in trs:
    print(f"- vs {t['label']}: {sy['tps'] / t['tps']:.2f}x (of means {t['mean_ms'] / sy['mean_ms']:.2f}x)")
best = max(trs, key=lambda t: t["tps"])
ratio = sy["tps"] / best["tps"]
print(f"\nratio vs the fastest torch variant ({best['label']}): {ratio:.2f}x  "
      f"(target >= 2x: {'MET' if ratio >= 2.0 else 'MISSED'})")
EOF
