#!/usr/bin/env bash
# Builds the seed index the held-out figures use: every seed-split record of routellm,
# routerbench-subset and arena-bench-v1 as two-tier outcome examples (data/eval.toml), with
# routerbench's pass/fail outcomes Rasch-smoothed (SMOOTH=none keeps them as recorded).
# Writes target/eval/seed_examples.jsonl. The held-out split is never ingested.
#
# Run: scripts/seed_index.sh   (reads ../shared/eval-data, or $EVAL_DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
cargo build --release --locked -q
BIN=./target/release/model-router
rm -f "$OUT/seed_examples.jsonl"
for f in routellm/routellm.jsonl routerbench-subset/routerbench_subset.jsonl arena-bench-v1/arena_bench_v1.jsonl; do
  "$BIN" --config data/eval.toml --examples "$OUT/seed_examples.jsonl" \
    ingest --outcomes "$DATA/$f" --ids "$DATA/splits/seed_ids.txt" --smooth "${SMOOTH:-rasch}"
done
