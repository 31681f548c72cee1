#!/usr/bin/env bash
# Prompt-routing benchmark, switchyard against the issue's baseline (scikit-learn TF-IDF +
# kNN(40), cosine) on exactly the same splits, in the same run:
#  1. APGR on RouteLLM's GSM8K and MMLU, 50/50 splits, seeds 0..SEEDS-1 (mean, sd, seed 0);
#  2. routing-decision latency (featurise + kNN, one prompt at a time) with ~15k training
#     prompts (GSM8K + MMLU, 95% split), p50 and p99, switchyard vs scikit-learn;
#  3. AIQ on LLMRouter's 9-model data with its price list.
# Writes runs/llm-bench/summary.md (and each eval's report.html).
#   bash bench/llm/run_llm_bench.sh            SEEDS=5 SKIP_BUILD=1 to reuse build/release
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-5}
DATA=${DATA:-../shared/data/llm-routing}
OUT=${OUT:-runs/llm-bench}
PY=/usr/bin/python3
[ -d "$DATA/routellm" ] || { echo "run_llm_bench: $DATA/routellm is missing" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then bash scripts/build.sh release; fi
BUILD=${BUILD:-build/release}
BIN=$BUILD/switchyard
BENCH=$BUILD/bench/bench_routing
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

results="$OUT/results.jsonl"
: > "$results"
for ds in gsm8k mmlu; do
  if [ $ds = gsm8k ]; then data="$DATA/routellm/gsm8k_responses.csv"; else data="$DATA/routellm/mmlu_responses"; fi
  for seed in $(seq 0 $((SEEDS - 1))); do
    dir="$OUT/$ds-seed$seed"
    "$BIN" llm eval --data "$data" --name "$ds" --seed "$seed" --out "$dir" > "$dir.log" 2>&1 \
      || { cat "$dir.log"; exit 1; }
    base=$("$PY" bench/llm/sklearn_knn_baseline.py "$dir/split.json")
    "$PY" - "$dir/eval.json" "$ds" "$seed" "$base" >> "$results" <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
row = {"dataset": sys.argv[2], "seed": int(sys.argv[3]), "sklearn": json.loads(sys.argv[4])}
row["routers"] = {r["name"]: {"apgr": r["apgr"], "apgr_deciles": r["apgr_deciles"],
                              "params": r.get("params", {})} for r in ev["routers"]}
print(json.dumps(row))
EOF
    echo "$ds seed $seed done"
  done
done

# Latency with ~15k training prompts: GSM8K + MMLU, 95% for training, 5% as queries.
lat="$OUT/latency"
"$BIN" llm eval --data "$DATA/routellm/gsm8k_responses.csv" --data "$DATA/routellm/mmlu_responses" \
  --name routellm-15k --train-fraction 0.95 --routers knn --out "$lat" > "$lat.log" 2>&1
"$BENCH" "$lat/split.json" knn 3 > "$OUT/latency_switchyard.json"
"$PY" bench/llm/sklearn_knn_baseline.py "$lat/split.json" > "$OUT/latency_sklearn.json"

# Many models with prices: LLMRouter (its own train/test files are merged, then split 50/50).
"$BIN" llm eval --data "$DATA/llmrouter/train.json" --data "$DATA/llmrouter/test.json" \
  --prices "$DATA/llmrouter/default_llm.json" --name llmrouter --out "$OUT/llmrouter" \
  > "$OUT/llmrouter.log" 2>&1

"$PY" - "$OUT" <<'EOF'
import json, statistics as st, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
lines = ["# Prompt-routing benchmark", "",
         "APGR (exact curve; RouteLLM's decile estimate in brackets) on 50/50 splits, the same "
         "split for every router and for the scikit-learn baseline in each seed.", ""]
for ds in ["gsm8k", "mmlu"]:
    rs = [r for r in rows if r["dataset"] == ds]
    names = list(rs[0]["routers"].keys())
    lines += [f"## {ds} ({len(rs)} seeds)", "",
              "| router | mean APGR | sd | seed 0 | mean ratio to sklearn |", "|---|---|---|---|---|"]
    def add(name, vals, dec, base):
        ratio = st.mean(v / b for v, b in zip(vals, base))
        lines.append(f"| {name} | {st.mean(vals):.3f} ({st.mean(dec):.3f}) | "
                     f"{st.stdev(vals) if len(vals) > 1 else 0:.3f} | {vals[0]:.3f} | {ratio:.3f} |")
    base = [r["sklearn"]["apgr"] for r in rs]
    add("sklearn TF-IDF kNN(40) (baseline)", base, [r["sklearn"]["apgr_deciles"] for r in rs], base)
    for n in names:
        add(n, [r["routers"][n]["apgr"] for r in rs], [r["routers"][n]["apgr_deciles"] for r in rs], base)
    ks = [r["routers"].get("knn", {}).get("params", {}).get("k") for r in rs]
    lines += ["", f"kNN's k chosen by leave-one-out per seed: {ks}", ""]
sw = json.load(open(f"{out}/latency_switchyard.json"))
sk = json.load(open(f"{out}/latency_sklearn.json"))
lines += ["## Routing-decision latency (featurise + kNN, one prompt at a time)", "",
          f"{sw['train_rows']} training prompts, {sw['queries']} timed decisions.", "",
          "| | p50 µs | p99 µs |", "|---|---|---|",
          f"| switchyard knn (k={sw['params']['k']}) | {sw['p50_us']:.0f} | {sw['p99_us']:.0f} |",
          f"| sklearn TF-IDF + kNN(40) | {sk['route_us_single_p50']:.0f} | {sk['route_us_single_p99']:.0f} |",
          f"| ratio (sklearn / switchyard) | {sk['route_us_single_p50'] / sw['p50_us']:.1f}x | "
          f"{sk['route_us_single_p99'] / sw['p99_us']:.1f}x |", ""]
ev = json.load(open(f"{out}/llmrouter/eval.json"))
lines += ["## LLMRouter, 9 models with prices (AIQ over the cheapest..dearest model's cost)", "",
          "| router | AIQ |", "|---|---|", f"| zero router (mixtures of single models) | {ev['zero_router']['aiq']:.4f} |"]
for r in ev["routers"]:
    lines.append(f"| {r['name']} | {r['aiq']:.4f} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
