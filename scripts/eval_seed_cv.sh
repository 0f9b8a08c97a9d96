#!/usr/bin/env bash
# Tuning on the seed split only: 5-fold cross-validation (folds by prompt-text hash) over a grid
# of k and temperature. The held-out split is never read.
#
# Run: scripts/eval_seed_cv.sh            (writes target/eval/seed_cv.json and seed_cv.svg)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
cargo build --release --locked -q
./target/release/model-router --config data/eval.toml eval \
  "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
  "$DATA/arena-bench-v1/arena_bench_v1.jsonl" \
  --ids "$DATA/splits/seed_ids.txt" --cv 5 \
  --k "${K:-5,10,20,40,80}" --temperature "${TEMPERATURE:-0.02,0.05,0.1,1000}" \
  --plot "$OUT/seed_cv.svg" > "$OUT/seed_cv.json"
