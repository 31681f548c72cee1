#!/usr/bin/env bash
# The main job: installs what is missing, builds, checks the inference engine against the
# transformers goldens of ../shared/data/hf-tiny (and runs one short generation), builds the
# multi-domain corpus from Debian packages, and compares the default set of routers at matched active compute (writes
# runs/compare/report/index.html and summary.md). Then, when ../shared/data/llm-routing is
# present, evaluates the prompt routers on RouteLLM's GSM8K and MMLU and on LLMRouter's 9 models
# (runs/llm/<data>/report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release switchyard_cli  # the CLI only: tests and benchmarks are not needed
python3 scripts/check-hf-tiny.py --switchyard ./build/release/switchyard
bash scripts/build-corpus.sh
./build/release/switchyard compare --config configs/compare.json "$@"
echo "report: $(pwd)/runs/compare/report/index.html"
D=../shared/data/llm-routing
if [ -d "$D" ]; then
  ./build/release/switchyard llm eval --data "$D/routellm/gsm8k_responses.csv" --name gsm8k --out runs/llm/gsm8k
  ./build/release/switchyard llm eval --data "$D/routellm/mmlu_responses" --name mmlu --out runs/llm/mmlu
  ./build/release/switchyard llm eval --data "$D/llmrouter/train.json" --data "$D/llmrouter/test.json" \
    --prices "$D/llmrouter/default_llm.json" --name llmrouter --out runs/llm/llmrouter
  echo "prompt-routing reports: $(pwd)/runs/llm/{gsm8k,mmlu,llmrouter}/report.html"
else
  echo "main-job: $D is absent; prompt-routing evaluation skipped"
fi
