#!/usr/bin/env bash
# The inference benchmark in one run, on a Qwen3-30B-A3B-shaped model with random BF16 weights
# (bench/infer/make_bench_model.py, default 4 layers, 3.1 B parameters): switchyard generate's
# decode tokens/s at batch 1 against the memory-bandwidth roofline and its prefill tokens/s for a
# 512-token prompt against the dense-GEMM floor of the same FLOPs (both ceilings measured by
# bench/infer/bandwidth.cpp in the same run), next to PyTorch eager (bench/infer/torch_qwen3_moe.py,
# bf16 and f32) and, where available, llama.cpp through node-llama-cpp on the GGUF that
# `switchyard export-gguf` writes. Formulas: docs/performance.md, "Inference on a
# Qwen3-30B-A3B-shaped model".
#
#   bench/infer/run_infer_bench.sh
#
# Environment:
#   SKIP_BUILD=1      use the existing build (BUILD_DIR) as it is
#   BUILD_DIR=DIR     the CMake build to use or make (default build/release)
#   MODEL_DIR=DIR     the model folder (default build/bench-model; made once, then cached)
#   OUT_DIR=DIR       results (default build/bench-infer: results.json, raw/)
#   LAYERS=4 PROMPT_LEN=512 NEW_TOKENS=32 THREADS=$(nproc)
#   TORCH_DTYPES=bf16,f32   which PyTorch variants to run ("" skips PyTorch)
#   SKIP_LLAMA=1      skip llama.cpp;  NPM_DIR=build/npm  where node-llama-cpp is installed
#   LLAMA_GGUF=FILE   run llama.cpp on this GGUF instead of exporting one (it must hold the model)
#   EXPORT_GGUF_ARGS  extra flags for `switchyard export-gguf` (default: --dtype <the engine's>
#                     when its --help lists --dtype)
#   ENGINE_WEIGHT_BYTES=2|4  bytes per weight the engine keeps (default: from its peak RSS)
#   ENGINE_KV_BYTES=4  bytes per KV-cache element the engine keeps (float32 today)
#   WAIT_QUIET=SECONDS wait up to that long for the machine to be quiet before measuring
#   REPORT_ONLY=1     re-render OUT_DIR/raw without measuring anything
# Run nothing else heavy meanwhile (2 cores, the model is several GB): the table warns when other
# processes took CPU during a measurement.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py=/usr/bin/python3
build_dir="${BUILD_DIR:-build/release}"
model_dir="${MODEL_DIR:-build/bench-model}"
out_dir="${OUT_DIR:-build/bench-infer}"
layers="${LAYERS:-4}"
prompt_len="${PROMPT_LEN:-512}"
new_tokens="${NEW_TOKENS:-32}"
threads="${THREADS:-$(nproc)}"
torch_dtypes="${TORCH_DTYPES-bf16,f32}"
npm_dir="${NPM_DIR:-build/npm}"
raw="$out_dir/raw"
bin="$build_dir/switchyard"

note() { echo "== $* ==" >&2; }
mem_avail_gb() { awk '/MemAvailable/ {printf "%.1f", $2 / 1048576}' /proc/meminfo; }

if [[ "${REPORT_ONLY:-0}" != 1 ]]; then
  # ---- build ------------------------------------------------------------------------------
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ ! -f "$build_dir/build.ninja" ]]; then
      if [[ "$build_dir" == build/release ]]; then
        cmake --preset release >&2
      else
        cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
          -DCMAKE_CXX_FLAGS_RELEASE="-O3 -march=native -DNDEBUG" -DSWITCHYARD_WERROR=ON >&2
      fi
    fi
    targets=(switchyard_cli)
    if ninja -C "$build_dir" -t targets all 2>/dev/null | grep -q '^bench_infer_bandwidth: '; then
      targets+=(bench_infer_bandwidth)
    fi
    cmake --build "$build_dir" --target "${targets[@]}" >&2
  fi
  [[ -x "$bin" ]] || { echo "error: $bin is not built (unset SKIP_BUILD or set BUILD_DIR)" >&2; exit 1; }
  mkdir -p "$out_dir"
  bw="$build_dir/bench/infer/bench_infer_bandwidth"
  if [[ ! -x "$bw" ]]; then
    # bench/CMakeLists.txt does not add bench/infer (yet): compile it alone with the same flags.
    bw="$out_dir/bandwidth"
    if [[ ! -x "$bw" || bench/infer/bandwidth.cpp -nt "$bw" ]]; then
      inc=""
      for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas; do
        [[ -f "$d/cblas.h" ]] && { inc="$d"; break; }
      done
      c++ -std=c++20 -O3 -march=native -DNDEBUG -fopenmp -Wall -Wextra ${inc:+-I"$inc"} \
        bench/infer/bandwidth.cpp -lopenblas -o "$bw"
    fi
  fi

  # ---- the model -------------------------------------------------------------------------
  note "model: $model_dir ($layers layers)"
  "$py" bench/infer/make_bench_model.py --out "$model_dir" --layers "$layers"

  rm -rf "$raw"
  mkdir -p "$raw"
  "$py" - "$model_dir" "$prompt_len" > "$raw/prompt_ids.txt" <<'EOF'
import json, random, sys
vocab = json.load(open(sys.argv[1] + "/config.json"))["vocab_size"]
r = random.Random(0)
print(",".join(str(r.randrange(vocab)) for _ in range(int(sys.argv[2]))))
EOF
  ids="$(cat "$raw/prompt_ids.txt")"
  sync  # the model's dirty pages: written back before anything is timed

  # ---- wait for a quiet machine (optional) -----------------------------------------------
  if [[ -n "${WAIT_QUIET:-}" ]]; then
    "$py" - "$WAIT_QUIET" <<'EOF' >&2
import os, sys, time
def busy():
    f = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)
deadline = time.time() + float(sys.argv[1])
while True:
    b0, t0 = busy(); time.sleep(5); b1, t1 = busy()
    share = (b1 - b0) / max(1, t1 - t0)
    if share < 0.05:
        print(f"quiet: other processes used {100 * share:.1f}% of the machine over 5 s"); break
    if time.time() > deadline:
        print(f"still busy ({100 * share:.1f}%) after {sys.argv[1]} s: measuring anyway"); break
    time.sleep(10)
EOF
  fi

  # Runs a command and records other processes' CPU use meanwhile (bench/checked.py), and its
  # peak resident memory (/usr/bin/time) in $raw/LABEL.rss_kb.
  checked() {
    local label="$1"
    shift
    "$py" bench/checked.py "$label" "$raw/contention.jsonl" \
      /usr/bin/time -f "%M" -o "$raw/$label.rss_kb" "$@"
  }

  # ---- ceilings --------------------------------------------------------------------------
  note "read bandwidth and the dense-GEMM floor ($bw, $threads threads)"
  OMP_NUM_THREADS="$threads" checked bandwidth "$bw" --tokens "$prompt_len" > "$raw/bandwidth.json"
  # The BF16 floor of the same shapes: torch.matmul in bfloat16 (oneDNN), where torch imports.
  rm -f "$raw/torch_gemm.json"
  if "$py" -c 'import torch' 2>/dev/null; then
    note "BF16 GEMM floor (torch.matmul bf16, $threads threads)"
    checked torch_gemm "$py" bench/infer/torch_gemm_rates.py --shapes "$raw/bandwidth.json" \
      --threads "$threads" > "$raw/torch_gemm.json" || rm -f "$raw/torch_gemm.json"
  fi

  # ---- switchyard ------------------------------------------------------------------------
  note "switchyard generate: $prompt_len-token prompt, $new_tokens new tokens ($(mem_avail_gb) GB available)"
  # --profile (where the binary has it) puts each phase's time in switchyard.err.
  profile_flag=()
  "$bin" generate --help 2>/dev/null | grep -q -- '--profile' && profile_flag=(--profile)
  OMP_NUM_THREADS="$threads" checked switchyard "$bin" generate --model "$model_dir" --ids "$ids" \
    --max-new-tokens "$new_tokens" --ignore-eos --temperature 0 --format json "${profile_flag[@]}" \
    > "$raw/switchyard.out" 2> "$raw/switchyard.err" || { cat "$raw/switchyard.err" >&2; exit 1; }
  cat "$raw/switchyard.err" >&2
  # The VM's read bandwidth drifts (measured 31 to 55 GB/s within minutes): once more right after
  # the decode, and the roofline takes the higher of the two.
  note "read bandwidth again, right after switchyard's decode"
  OMP_NUM_THREADS="$threads" checked bandwidth_after "$bw" --skip-gemm > "$raw/bandwidth_after.json"
  # The dtype the engine keeps its weights in: peak RSS / parameters (4: float32, 2: BF16).
  engine_dtype="$("$py" - "$raw" <<'EOF'
import os, re, sys
raw = sys.argv[1]
line = open(f"{raw}/switchyard.err").read()
params = int(re.search(r"(\d+) parameters", line).group(1))
rss = int(open(f"{raw}/switchyard.rss_kb").read().split()[-1]) * 1024
wb = int(os.environ.get("ENGINE_WEIGHT_BYTES") or (4 if rss / params >= 3.0 else 2))
print({4: "f32", 2: "bf16"}.get(wb, "f32"))
EOF
)"

  # ---- PyTorch eager ---------------------------------------------------------------------
  params_b="$("$py" -c "import json,sys; c=json.load(open(sys.argv[1]+'/model.safetensors.index.json')); print(c['metadata']['total_size']/2/1e9)" "$model_dir")"
  : > "$raw/torch.jsonl"
  : > "$raw/notes.txt"
  if [[ -z "$torch_dtypes" ]]; then
    echo "torch: skipped (TORCH_DTYPES empty)" >> "$raw/notes.txt"
  elif ! "$py" -c 'import torch' 2>/dev/null; then
    echo "torch: skipped ($py cannot import torch; install Debian's python3-torch)" >> "$raw/notes.txt"
  else
    for dt in ${torch_dtypes//,/ }; do
      need="$("$py" -c "import sys; print(round(float(sys.argv[1]) * {'bf16': 2, 'f32': 4}[sys.argv[2]] + 1.5, 1))" "$params_b" "$dt")"
      have="$(mem_avail_gb)"
      if "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$have" "$need"; then
        note "PyTorch eager $dt ($have GB available, needs about $need)"
        checked "torch_$dt" "$py" bench/infer/torch_qwen3_moe.py --model "$model_dir" --dtypes "$dt" \
          --threads "$threads" --ids "$ids" --new-tokens "$new_tokens" >> "$raw/torch.jsonl" \
          || echo "torch $dt: failed (see the log above)" >> "$raw/notes.txt"
      else
        echo "torch $dt: skipped (needs about $need GB, $have GB available)" >> "$raw/notes.txt"
      fi
    done
  fi

  # ---- llama.cpp through node-llama-cpp --------------------------------------------------
  : > "$raw/llama.jsonl"
  if [[ "${SKIP_LLAMA:-0}" == 1 ]]; then
    echo "llama.cpp: skipped (SKIP_LLAMA=1)" >> "$raw/notes.txt"
  elif [[ -z "${LLAMA_GGUF:-}" ]] && ! "$bin" --help 2>/dev/null | grep -qE '^ +export-gguf( |$)'; then
    echo "llama.cpp: skipped ($bin has no export-gguf command yet, so there is no GGUF of the model)" >> "$raw/notes.txt"
  elif [[ ! -f "$npm_dir/node_modules/node-llama-cpp/package.json" ]]; then
    echo "llama.cpp: skipped (node-llama-cpp is not installed under $npm_dir/node_modules)" >> "$raw/notes.txt"
  elif ! command -v node > /dev/null; then
    echo "llama.cpp: skipped (no node)" >> "$raw/notes.txt"
  else
    gguf="${LLAMA_GGUF:-$out_dir/model-$engine_dtype.gguf}"
    "$bin" export-gguf --help > "$raw/export-gguf.help" 2>&1 || :
    extra="${EXPORT_GGUF_ARGS-}"
    if [[ -z "${EXPORT_GGUF_ARGS+set}" ]] && grep -q -- '--dtype' "$raw/export-gguf.help"; then
      extra="--dtype $engine_dtype"
    fi
    if [[ -n "${LLAMA_GGUF:-}" ]]; then
      note "GGUF: $gguf (LLAMA_GGUF, not exported by this run)"
    elif [[ -s "$gguf" && "$gguf" -nt "$model_dir/bench_model.json" && "$gguf" -nt "$bin" ]]; then
      note "GGUF: $gguf is up to date"
    else
      note "switchyard export-gguf -> $gguf ($extra)"
      rm -f "$gguf"
      # shellcheck disable=SC2086
      "$bin" export-gguf --model "$model_dir" --out "$gguf" $extra >&2 \
        || { rm -f "$gguf"; echo "llama.cpp: skipped (switchyard export-gguf failed, see above)" >> "$raw/notes.txt"; }
    fi
    if [[ -s "$gguf" ]]; then
      echo "$gguf${LLAMA_GGUF:+ (LLAMA_GGUF)}" > "$raw/llama_gguf.txt"
      note "llama.cpp via node-llama-cpp on $gguf ($(mem_avail_gb) GB available)"
      checked llama node bench/infer/llama_cpp_bench.mjs --npm "$npm_dir" --model "$gguf" \
        --ids "$ids" --new-tokens "$new_tokens" --threads "$threads" >> "$raw/llama.jsonl" \
        || echo "llama.cpp: failed (see the log above)" >> "$raw/notes.txt"
    fi
  fi

  # ---- context of the run ----------------------------------------------------------------
  "$py" - "$raw/context.json" "$build_dir" "$model_dir" "$threads" "$new_tokens" <<'EOF'
import datetime, json, os, platform, subprocess, sys
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
status = sh("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
changed = sh("git", "--no-optional-locks", "diff", "--name-only", "HEAD", "--", "src", "include",
             "CMakeLists.txt")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
json.dump(dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               commit=sh("git", "rev-parse", "HEAD"),
               tracked_changes=None if status is None else len(status.splitlines()),
               engine_files_changed_since_commit=None if changed is None else changed.splitlines(),
               cpu=cpu, cores=os.cpu_count(), kernel=platform.release(),
               mem_total_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               build_dir=sys.argv[2], model_dir=sys.argv[3], threads=int(sys.argv[4]),
               new_tokens=int(sys.argv[5])),
          open(sys.argv[1], "w"), indent=2)
EOF
fi

[[ -d "$raw" ]] || { echo "error: no measurements in $raw" >&2; exit 1; }

# ---- the table and results.json --------------------------------------------------------------
"$py" - "$raw" "$out_dir/results.json" <<'EOF'
import json, os, re, sys

raw, results_path = sys.argv[1:3]
ctx = json.load(open(f"{raw}/context.json"))
cfg = json.load(open(os.path.join(ctx["model_dir"], "config.json")))
bw = json.load(open(f"{raw}/bandwidth.json"))
rss = lambda label: (int(open(f"{raw}/{label}.rss_kb").read().split()[-1]) * 1024
                     if os.path.exists(f"{raw}/{label}.rss_kb") else None)
jsonl = lambda name: [json.loads(l) for l in open(f"{raw}/{name}") if l.strip().startswith("{")]
contention = jsonl("contention.jsonl")
notes = [l.strip() for l in open(f"{raw}/notes.txt") if l.strip()]

# -- switchyard's own report line
err = open(f"{raw}/switchyard.err").read()
m = re.search(r"switchyard: (\d+) prompt tokens in ([\d.]+) s \(([\d.]+) tokens/s\), (\d+) generated, "
              r"decode ([\d.]+) tokens/s; (\d+) parameters, (\d+) active per token", err)
if not m:
    sys.exit(f"error: no report line in {raw}/switchyard.err")
P, prefill_s, sy_prefill, N, sy_decode, params, active = (
    int(m[1]), float(m[2]), float(m[3]), int(m[4]), float(m[5]), int(m[6]), int(m[7]))
sy_ids = json.loads(open(f"{raw}/switchyard.out").read().strip().splitlines()[-1])["ids"][P:]
sy_rss = rss("switchyard")
wb = int(os.environ.get("ENGINE_WEIGHT_BYTES") or (4 if sy_rss / params >= 3.0 else 2))
kvb = int(os.environ.get("ENGINE_KV_BYTES") or 4)
engine_dtype = {4: "float32", 2: "bf16"}[wb]

# -- the model's shapes
d, V, H, Hkv = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
D = cfg.get("head_dim") or d // H
E = cfg.get("num_experts") or cfg.get("num_local_experts")
k, F, L = cfg["num_experts_per_tok"], cfg["moe_intermediate_size"], cfg["num_hidden_layers"]
only = set(cfg.get("mlp_only_layers") or [])
step = cfg.get("decoder_sparse_step", 1)
moe = [l not in only and (l + 1) % step == 0 for l in range(L)]
Fd = cfg.get("intermediate_size", 0)

# -- decode: bytes a token reads (weights in the engine's dtype + the KV cache)
attn_w = d * H * D + 2 * d * Hkv * D + H * D * d            # q, k, v, o
norms_l = 2 * d + 2 * D                                     # two RMSNorms, q_norm, k_norm
per_layer = [attn_w + norms_l + (E * d + k * 3 * d * F if moe[l] else 3 * d * Fd) for l in range(L)]
head = V * d
weights_read = sum(per_layer) + d + head + d                # + final norm + LM head + embedding row
kv_ctx = P + N / 2                                          # mean keys per decode step
kv_read = L * 2 * Hkv * D * kvb * kv_ctx
bytes_tok = wb * weights_read + kv_read
read_gbs_before = bw["read_gbs"]
bw_after = (json.load(open(f"{raw}/bandwidth_after.json"))
            if os.path.exists(f"{raw}/bandwidth_after.json") else None)
read_gbs_after = bw_after["read_gbs"] if bw_after else None
read_gbs = max(read_gbs_before, read_gbs_after or 0.0)
roofline = read_gbs * 1e9 / bytes_tok

# -- prefill: FLOPs per prompt token and the dense-GEMM floor of the same FLOPs
rate = {g["name"]: g["gflops"] * 1e9 for g in bw["gemm"]}
n_moe = sum(moe)
classes = {  # name: (FLOPs per prompt token, the GEMM shape whose rate it is charged at)
    "q_proj": (2 * L * d * H * D, "q_proj"),
    "k/v_proj": (2 * L * 2 * d * Hkv * D, "kv_proj"),
    "o_proj": (2 * L * H * D * d, "o_proj"),
    "router": (2 * n_moe * E * d, "router"),
    "experts gate+up": (2 * n_moe * k * 2 * d * F, "expert_gate_up"),
    "experts down": (2 * n_moe * k * F * d, "expert_down"),
    "dense FFN": (2 * (L - n_moe) * 3 * d * Fd, "expert_gate_up"),
    "attention": (L * 4 * H * D * (P + 1) / 2, "attn_scores"),  # q k^T and p v, causal mean
    "LM head (last position)": (2 * V * d / P, "q_proj"),
}
flops_tok = sum(f for f, _ in classes.values())
floor_s_tok = sum(f / rate[r] for f, r in classes.values() if f)
floor_tps = 1.0 / floor_s_tok
floor_gflops = flops_tok / floor_s_tok * 1e-9
# The same FLOPs at torch.matmul's bfloat16 rates (the BF16 floor), where they were measured.
bf16_gemm = json.load(open(f"{raw}/torch_gemm.json")) if os.path.exists(f"{raw}/torch_gemm.json") else None
if bf16_gemm:
    rate16 = {g["name"]: g["gflops"] * 1e9 for g in bf16_gemm["gemm"]}
    floor16_s_tok = sum(f / rate16[r] for f, r in classes.values() if f)
    floor16_tps = 1.0 / floor16_s_tok
    floor16_gflops = flops_tok / floor16_s_tok * 1e-9

torch_rows = {r["dtype"]: r for r in jsonl("torch.jsonl")}
llama_rows = jsonl("llama.jsonl")

def agree(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n

def verdict(ok):
    return "MET" if ok else "MISSED"

print(f"\nswitchyard inference benchmark: {ctx['date']}, commit {ctx['commit']}"
      f"{' (+ uncommitted changes to tracked files)' if ctx.get('tracked_changes') else ''}")
if ctx.get("engine_files_changed_since_commit"):
    print("uncommitted changes to the engine at that commit: " +
          ", ".join(ctx["engine_files_changed_since_commit"]))
print(f"{ctx['cpu']}, {ctx['cores']} cores, {ctx['mem_total_gb']} GiB; {ctx['threads']} threads everywhere")
print(f"model: Qwen3-30B-A3B shapes, {L} layers, {params / 1e9:.2f} B parameters "
      f"({active / 1e9:.3f} B active per token), BF16 folder {ctx['model_dir']}")
print("contention: " + "; ".join(f"{c['label']}: {100 * c['other_share']:.1f}%" for c in contention))
busy = [c["label"] for c in contention if c["other_share"] > 0.05]
if busy:
    print("\n" + "!" * 78 + "\n!! WARNING: other processes took > 5% of the CPU during: " + ", ".join(busy) +
          "\n!! The numbers are skewed; rerun on a quiet machine (WAIT_QUIET=600).\n" + "!" * 78)

print(f"\n| {'measure':<44} | {'switchyard':>10} | {'ceiling':>9} | {'ratio':>5} | target |")
print(f"|{'-' * 46}|{'-' * 11}:|{'-' * 10}:|{'-' * 6}:|--------|")
r_dec, r_pre = sy_decode / roofline, sy_prefill / floor_tps
print(f"| {f'decode tokens/s, batch 1, context {P}..{P + N - 1}':<44} | {sy_decode:10.2f} | {roofline:9.2f} | "
      f"{r_dec:5.2f} | >= 0.7 {verdict(r_dec >= 0.7)} |")
print(f"| {f'prefill tokens/s, {P}-token prompt':<44} | {sy_prefill:10.1f} | {floor_tps:9.1f} | "
      f"{r_pre:5.2f} | >= 0.7 {verdict(r_pre >= 0.7)} |")
if bf16_gemm:
    r16 = sy_prefill / floor16_tps
    print(f"| {f'prefill vs the BF16 floor (torch.matmul bf16)':<44} | {sy_prefill:10.1f} | "
          f"{floor16_tps:9.1f} | {r16:5.2f} | (info) |")
if read_gbs_after is not None and abs(read_gbs_after - read_gbs_before) > 0.15 * read_gbs:
    notes.append(f"the read bandwidth moved from {read_gbs_before:.1f} GB/s (before) to "
                 f"{read_gbs_after:.1f} GB/s (right after switchyard's decode): the decode ratio "
                 f"is against the higher; the machine's memory bandwidth is not steady")
print(f"\n- roofline = read bandwidth / bytes per decode token = {read_gbs:.2f} GB/s / "
      f"{bytes_tok / 1e9:.4f} GB: weights {weights_read / 1e6:.1f} M x {wb} B ({engine_dtype}, "
      f"from the engine's peak RSS {sy_rss / 1e9:.2f} GB = {sy_rss / params:.2f} B/parameter) "
      f"+ KV cache {kv_read / 1e6:.2f} MB ({kvb} B, mean context {kv_ctx:.0f})")
print(f"- GEMM floor = 1 / sum(FLOPs per token of each GEMM class / cblas_sgemm rate of its M={P} shape): "
      f"{flops_tok / 1e9:.4f} GFLOP per token at {floor_gflops:.1f} GFLOP/s; switchyard's prefill "
      f"runs {flops_tok * sy_prefill * 1e-9:.1f} GFLOP/s")
print("  sgemm GFLOP/s (engine threading): " + ", ".join(
    f"{g['name']} {g['gflops']:.1f}" for g in bw["gemm"]) +
    f"; read {read_gbs:.2f} GB/s ({ctx['threads']} threads, best of {len(bw['read_gbs_passes'])}; "
    f"{read_gbs_before:.2f} before the runs, "
    f"{'n/a' if read_gbs_after is None else f'{read_gbs_after:.2f}'} right after switchyard's), "
    f"{bw['read_gbs_1thread']:.2f} GB/s one thread")
if bf16_gemm:
    print(f"- BF16 floor = the same sum at torch {bf16_gemm['torch']} matmul's bfloat16 rates: "
          f"{floor16_gflops:.1f} GFLOP/s; " + ", ".join(
              f"{g['name']} {g['gflops']:.1f}" for g in bf16_gemm["gemm"]))

print(f"\n| {'implementation':<46} | {'decode tok/s':>12} | {'prefill tok/s':>13} | "
      f"{'switchyard x':>20} | {'peak RSS':>8} | {'same greedy ids':>15} |")
print(f"|{'-' * 48}|{'-' * 13}:|{'-' * 14}:|{'-' * 21}:|{'-' * 9}:|{'-' * 16}:|")
print(f"| {f'switchyard generate ({engine_dtype} weights)':<46} | {sy_decode:12.2f} | {sy_prefill:13.1f} | "
      f"{'':>20} | {sy_rss / 1e9:6.1f} GB | {f'{N} tokens':>15} |")
others = []
for dt in ("bf16", "f32"):
    if dt in torch_rows:
        r = torch_rows[dt]
        others.append((f"PyTorch {r['torch']} eager, {dt}" + (" (headline)" if dt == "bf16" else ""),
                       r, rss(f"torch_{dt}")))
gguf_desc = (open(f"{raw}/llama_gguf.txt").read().strip() if os.path.exists(f"{raw}/llama_gguf.txt")
             else "")
for r in llama_rows:
    what = "LLAMA_GGUF" if "(LLAMA_GGUF)" in gguf_desc else f"exported, {engine_dtype}"
    others.append((f"llama.cpp ({r['via']}, GGUF {what})", r, rss("llama")))
ratios = {}
for label, r, peak in others:
    xd, xp = sy_decode / r["decode_tps"], sy_prefill / r["prefill_tps"]
    ratios[label] = dict(decode=xd, prefill=xp)
    peak_s = f"{peak / 1e9:6.1f} GB" if peak else f"{'n/a':>9}"
    same = f"{agree(sy_ids, r.get('generated', []))} of {N}"
    x = f"{xd:.2f} / {xp:.2f}"
    print(f"| {label:<46} | {r['decode_tps']:12.2f} | {r['prefill_tps']:13.1f} | "
          f"{x:>20} | {peak_s} | {same:>15} |")
print("\n(switchyard x = switchyard's tokens/s / theirs, decode / prefill; same greedy ids = the "
      "length of the common prefix of the generated ids with switchyard's)")
for n in notes:
    print("- " + n)

results = dict(
    context=ctx, config={k_: cfg[k_] for k_ in sorted(cfg)},
    machine=dict(read_gbs=read_gbs, read_gbs_before=read_gbs_before, read_gbs_after=read_gbs_after,
                 read_gbs_median=bw["read_gbs_median"],
                 read_gbs_passes=bw["read_gbs_passes"], read_gbs_1thread=bw["read_gbs_1thread"],
                 buffer_bytes=bw["buffer_bytes"], openblas=bw["openblas_config"], gemm=bw["gemm"]),
    switchyard=dict(prompt_tokens=P, generated=N, prefill_s=prefill_s, prefill_tps=sy_prefill,
                    decode_tps=sy_decode, parameters=params, active_parameters=active,
                    peak_rss_bytes=sy_rss, weight_bytes=wb, kv_bytes=kvb, ids=sy_ids),
    roofline=dict(weights_read_per_token=weights_read, weight_bytes_per_token=wb * weights_read,
                  kv_bytes_per_token=kv_read, mean_context=kv_ctx, bytes_per_token=bytes_tok,
                  tokens_per_s=roofline, ratio=r_dec, target=0.7, met=r_dec >= 0.7),
    gemm_floor=dict(flops_per_token=flops_tok, classes={n_: dict(flops=f, charged_at=c)
                                                        for n_, (f, c) in classes.items()},
                    gflops=floor_gflops, tokens_per_s=floor_tps, ratio=r_pre, target=0.7,
                    met=r_pre >= 0.7),
    gemm_floor_bf16=(dict(gflops=floor16_gflops, tokens_per_s=floor16_tps,
                          ratio=sy_prefill / floor16_tps, rates=bf16_gemm) if bf16_gemm else None),
    torch=list(torch_rows.values()), llama_cpp=llama_rows, llama_gguf=gguf_desc or None,
    ratios=ratios, notes=notes,
    contention=contention,
    peak_rss_bytes={lbl: rss(lbl) for lbl in ("switchyard", "torch_bf16", "torch_f32", "llama", "bandwidth")})
with open(results_path, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
print(f"\nraw numbers: {results_path}")
EOF
