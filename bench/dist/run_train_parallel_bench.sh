#!/usr/bin/env bash
# Training across ranks on one machine: 2 ranks x 1 thread (expert parallel 2, and data parallel
# only) against 1 process x 2 threads, same model, batch and steps, in one run; then the
# all-to-all volume of group-limited routing (DeepSeek-V3's node-limited routing, one group per
# rank, and on 4 ranks as 2 nodes x 2 one group per node) against plain top-2, from the byte
# counters; then locality-aware routing (LocMoE, SMILE, a local-expert bonus) against the same k
# without it. Writes OUT/summary.json.
# Usage: bench/dist/run_train_parallel_bench.sh [OUT]   (SKIP_BUILD=1 reuses build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build/bench-dist}
S=build/release/switchyard
[ "${SKIP_BUILD:-0}" = 1 ] || cmake --build --preset release -j"$(nproc)" >/dev/null
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
STEPS=${STEPS:-30}
config() {  # $1 = file, $2 = router JSON
  cat >"$1" <<JSON
{"model": {"d_model": 256, "n_layers": 4, "n_heads": 4, "seq_len": 128, "experts": 8,
           "d_ff": 512, "dense_d_ff": 1024, "router": $2},
 "data": {"synthetic": true}, "batch": 16, "steps": $STEPS, "eval_every": $STEPS,
 "eval_batches": 4, "checkpoint_every": 100000, "log_every": 100000, "seed": 3}
JSON
}
config "$OUT/topk.json" '{"router": "topk", "k": 2, "losses": {"balance": 0.01}}'
config "$OUT/group_limited.json" \
  '{"router": "deepseek_v3", "k": 2, "groups": 2, "topk_groups": 1, "score": "softmax", "losses": {"balance": 0.01}}'
MPI="mpirun --oversubscribe --bind-to core -np 2 -x OMP_NUM_THREADS=1"
for round in 1 2; do  # two rounds, alternating, so drift on a shared machine hits all alike
  OMP_NUM_THREADS=2 $S train --config "$OUT/topk.json" --out "$OUT/r$round-1x2" >/dev/null 2>&1
  $MPI $S train --config "$OUT/topk.json" --out "$OUT/r$round-2x1-ep2" --expert-parallel 2 \
    >/dev/null 2>&1
  $MPI $S train --config "$OUT/topk.json" --out "$OUT/r$round-2x1-dp" --expert-parallel 1 \
    >/dev/null 2>&1
done
$MPI $S train --config "$OUT/group_limited.json" --out "$OUT/group-2x1-ep2" --expert-parallel 2 \
  >/dev/null 2>&1
# 4 ranks as 2 nodes x 2 (hierarchical all-to-all): bytes across nodes, top-2 against
# group-limited routing with one group per node (oversubscribed here: bytes, not speed).
MPI4="mpirun --oversubscribe -np 4 -x OMP_NUM_THREADS=1"
for r in topk group_limited; do
  $MPI4 $S train --config "$OUT/$r.json" --out "$OUT/$r-4x1-nodes" --expert-parallel 4 \
    --ranks-per-node 2 >/dev/null 2>&1
done
# Locality-aware routing against the same k without it (LocMoE is top-1): the paper's LocMoE
# (locality loss only), LocMoE with a selection bonus for local experts, SMILE's bi-level routing,
# and top-2 with the bonus. Local = the token's rank on 2 ranks, its node on 2 nodes x 2.
for level in rank node; do
  config "$OUT/top1-$level.json" \
    '{"router": "topk", "k": 1, "normalize": false, "losses": {"balance": 0.01, "balance_top1_only": true}}'
  config "$OUT/locmoe-$level.json" "{\"router\": \"locmoe\", \"locality\": \"$level\"}"
  config "$OUT/locmoe_bonus-$level.json" \
    "{\"router\": \"locmoe\", \"locality\": \"$level\", \"local_bonus\": ${BONUS:-0.05}}"
  config "$OUT/smile-$level.json" '{"router": "smile", "nodes": 2}'
  config "$OUT/topk_bonus-$level.json" \
    "{\"router\": \"topk\", \"k\": 2, \"locality\": \"$level\", \"local_bonus\": ${BONUS:-0.05}, \"losses\": {\"balance\": 0.01}}"
done
for r in top1 locmoe locmoe_bonus smile topk_bonus; do
  $MPI $S train --config "$OUT/$r-rank.json" --out "$OUT/loc-$r-2x1" --expert-parallel 2 \
    >/dev/null 2>&1
  $MPI4 $S train --config "$OUT/$r-node.json" --out "$OUT/loc-$r-4x1-nodes" --expert-parallel 4 \
    --ranks-per-node 2 >/dev/null 2>&1
done
python3 bench/dist/summarize_train_parallel.py "$OUT"
