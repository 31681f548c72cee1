#!/usr/bin/env bash
# Gateway overhead in one run: wrk posting a chat completion to a fast fake upstream
# (bench_fake_upstream) directly, then through `switchyard llm serve` naming the model directly,
# then through a trained kNN router (router-knn; skipped with a reason when the RouteLLM GSM8K
# file is missing), with the same wrk threads, connections and duration. Two phases: one
# connection (the added latency of a lone request) and CONNECTIONS connections (throughput).
# Prints requests/s, p50 and p99 per run, the gateway's added p50 and its throughput ratio
# against the direct baseline of the same phase, and the targets (< 1 ms added p50, >= 5,000
# requests/s through the gateway on 2 cores).
#
#   bash bench/gateway/run_gateway_bench.sh
#
# Environment: SKIP_BUILD=1 uses build/release as it is; DURATION (default 10s), CONNECTIONS
# (default 32), WRK_THREADS (default 1), DATA (default ../shared/data/llm-routing); the run waits
# (LOAD_WAIT_S, default 600) until the 1-minute load average is below MAX_LOAD (default 2), and
# FORCE=1 runs anyway. bench/gateway/busy_check.py records the CPU other processes took during
# each run (besides wrk, the gateway and the fake upstream).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py=/usr/bin/python3
exe="$root/build/release/switchyard"
upstream_exe="$root/build/release/bench/bench_fake_upstream"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-32}"
wrk_threads="${WRK_THREADS:-1}"
data="${DATA:-../shared/data/llm-routing}"
max_load="${MAX_LOAD:-2}"
load_wait_s="${LOAD_WAIT_S:-600}"

command -v wrk > /dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  [[ -f build/release/build.ninja ]] || cmake --preset release >&2
  cmake --build --preset release --target switchyard_cli bench_fake_upstream -j2 >&2
fi
[[ -x "$exe" && -x "$upstream_exe" ]] || { echo "error: build/release is not built" >&2; exit 1; }

# Another engineer builds on the same 2 cores: measure only on a quiet machine.
waited=0
while :; do
  load=$(cut -d' ' -f1 /proc/loadavg)
  if "$py" -c "import sys; sys.exit(0 if $load < $max_load else 1)"; then break; fi
  if [[ "${FORCE:-0}" == 1 ]]; then
    echo "warning: load average $load >= $max_load, running anyway (FORCE=1)" >&2
    break
  fi
  if (( waited >= load_wait_s )); then
    echo "error: load average $load >= $max_load for ${load_wait_s} s; retry later or FORCE=1" >&2
    exit 3
  fi
  echo "load average $load >= $max_load: waiting 15 s" >&2
  sleep 15
  waited=$((waited + 15))
done

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Waits for "listening on PORT" or "listening on http://HOST:PORT" in file $1; prints PORT.
wait_port() {
  local pattern='listening on (http://[0-9.]+:)?[0-9]+'
  for _ in $(seq 1 100); do
    if grep -qE "$pattern" "$1" 2> /dev/null; then
      grep -oE "$pattern" "$1" | head -1 | grep -oE '[0-9]+$'
      return
    fi
    sleep 0.1
  done
  echo "error: no 'listening on' in $1:" >&2
  cat "$1" >&2
  exit 1
}

"$upstream_exe" --port 0 --threads $((2 * connections + 16)) > "$tmp/upstream.out" 2>&1 &
pids+=($!)
upstream_port=$(wait_port "$tmp/upstream.out")

strong="gpt-4-1106-preview"
weak="mistralai/Mixtral-8x7B-Instruct-v0.1"
routers="{}"
router_note=""
gsm8k="$data/routellm/gsm8k_responses.csv"
if [[ -f "$gsm8k" ]]; then
  if "$exe" llm train --data "$gsm8k" --router knn --name knn --out "$tmp/knn" > "$tmp/train.log" 2>&1
  then
    routers="{\"knn\": {\"path\": \"$tmp/knn\", \"default\": 0.1}}"
  else
    router_note="router run skipped: \`switchyard llm train\` failed (see below)"
    cat "$tmp/train.log" >&2
  fi
else
  router_note="router run skipped: $gsm8k is missing (set DATA)"
fi

model() {
  cat << EOF
"$1": {"upstream": "http://127.0.0.1:$upstream_port", "retries": 1, "max_concurrency": 4096,
       "timeout_ms": 10000, "input_price_per_mtok": $2, "output_price_per_mtok": $3}
EOF
}
cat > "$tmp/gateway.json" << EOF
{
  "listen": {"host": "127.0.0.1", "port": 0},
  "threads": $((connections + 16)),
  "client_api_keys_env": "SWITCHYARD_BENCH_KEYS",
  "keep_alive_max_requests": 100000000,
  "routers": $routers,
  "models": {$(model "$strong" 10 30), $(model "$weak" 0.6 0.6)}
}
EOF
SWITCHYARD_BENCH_KEYS=bench-key "$exe" llm serve --config "$tmp/gateway.json" > "$tmp/gateway.out" 2>&1 &
pids+=($!)
gateway_port=$(wait_port "$tmp/gateway.out")

# The request: a GSM8K-sized prompt; the key is sent to both (the fake upstream ignores it).
cat > "$tmp/chat.lua" << 'EOF'
local model = os.getenv("SY_MODEL")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
wrk.body = '{"model": "' .. model .. '", "max_tokens": 256, "temperature": 0, "messages": [' ..
  '{"role": "system", "content": "You are a careful math tutor."}, ' ..
  '{"role": "user", "content": "Janet\'s ducks lay 16 eggs per day. She eats three for ' ..
  'breakfast every morning and bakes muffins for her friends every day with four. She sells ' ..
  'the remainder at the farmers\' market daily for $2 per fresh duck egg. How much in ' ..
  'dollars does she make every day at the farmers\' market?"}]}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"socket_errors\": %d, \"non2xx\": %d, " ..
    "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"mean_us\": %.1f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
EOF

results="$tmp/results.jsonl"
: > "$results"
# run LABEL PORT MODEL CONNECTIONS
run() {
  local threads=$wrk_threads
  (( threads > $4 )) && threads=$4
  SY_MODEL="$3" wrk -t"$threads" -c"$4" -d2s -s "$tmp/chat.lua" \
    "http://127.0.0.1:$2/v1/chat/completions" > /dev/null  # warm-up: connections, pools, caches
  SY_MODEL="$3" "$py" bench/gateway/busy_check.py "$1 c=$4" "$tmp/contention.jsonl" "$(IFS=,; echo "${pids[*]}")" \
    wrk -t"$threads" -c"$4" -d"$duration" -s "$tmp/chat.lua" \
    "http://127.0.0.1:$2/v1/chat/completions" > "$tmp/wrk.out"
  local line
  line=$(grep '^RESULT ' "$tmp/wrk.out" | sed 's/^RESULT //')
  [[ -n "$line" ]] || { cat "$tmp/wrk.out" >&2; exit 1; }
  echo "{\"label\": \"$1\", \"connections\": $4, \"wrk\": $line}" >> "$results"
}
for c in 1 "$connections"; do
  run direct "$upstream_port" "$strong" "$c"
  run "gateway, model" "$gateway_port" "$strong" "$c"
  if [[ "$routers" != "{}" ]]; then run "gateway, router-knn" "$gateway_port" "router-knn" "$c"; fi
done

"$py" - "$results" "$tmp/contention.jsonl" "$gateway_port" "$duration" "$wrk_threads" "$router_note" << 'EOF'
import json, sys, urllib.request
rows = [json.loads(l) for l in open(sys.argv[1])]
contention = [json.loads(l) for l in open(sys.argv[2])]
port, duration, wrk_threads, note = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
print(f"\nwrk -t{wrk_threads} -d{duration} (-c as listed), POST /v1/chat/completions, 2 cores shared "
      "by wrk, the gateway and the fake upstream\n")
print("| run | connections | requests/s | p50 ms | p99 ms | added p50 ms | throughput vs direct | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
direct = {}
for r in rows:
    w = r["wrk"]
    rps = w["requests"] / (w["duration_us"] / 1e6)
    p50, p99 = w["p50_us"] / 1e3, w["p99_us"] / 1e3
    c = r["connections"]
    if r["label"] == "direct":
        direct[c] = (rps, p50)
        added, ratio = "", ""
    else:
        added = f"{p50 - direct[c][1]:+.3f}"
        ratio = f"{rps / direct[c][0]:.2f}x"
    r.update(rps=rps, p50=p50)
    print(f"| {r['label']} | {c} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {added} | {ratio} | "
          f"{w['socket_errors'] + w['non2xx']} |")
if note:
    print(f"\n{note}")
busy = [c for c in contention if c["other_share"] > 0.05]
for c in busy:
    print(f"warning: other processes took {100 * c['other_share']:.0f}% of the machine during "
          f"'{c['label']}': its numbers are skewed")
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
errors = sum(float(l.split()[-1]) for l in metrics.splitlines()
             if l.startswith("switchyard_upstream_errors_total"))
print(f"\ngateway upstream errors during the whole run: {errors:.0f}")
lone = [r for r in rows if r["connections"] == 1 and r["label"] == "gateway, model"]
loaded = [r for r in rows if r["connections"] != 1 and r["label"] == "gateway, model"]
if lone and loaded:
    added = lone[0]["p50"] - direct[1][1]
    print(f"target added p50 < 1 ms (one connection): {added:.3f} ms "
          f"{'met' if added < 1 else 'NOT met'}")
    print(f"target >= 5,000 requests/s through the gateway: {loaded[0]['rps']:,.0f} "
          f"{'met' if loaded[0]['rps'] >= 5000 else 'NOT met'}")
EOF
