#!/usr/bin/env bash
# Reproduces the held-out results table of the README from a clean checkout.
#
# Run: scripts/eval_heldout.sh            (reads ../shared/eval-data; writes target/eval/)
#
# Index: every seed-split record of routellm, routerbench-subset and arena-bench-v1 as two-tier
# outcome examples (small = Mixtral-8x7B, large = GPT-4-1106; data/eval.toml). Held out: the
# eval-split records of routellm (MMLU 20%, GSM8K, MT-Bench turn 1), routerbench-subset test rows
# (ARC-Challenge, Winogrande, MBPP) and AlpacaEval. Nothing is tuned on the held-out split: k,
# the temperature and category_baseline in data/eval.toml were chosen on the seed split alone
# (`--cv 5` in scripts/eval_seed_cv.sh, plus a leave-one-source-out check; see README "Results").
# ingest --outcomes stores each record's source_benchmark as the example's category, which the
# category baseline groups by, and with `--smooth rasch` replaces the pass/fail outcomes of the
# routerbench records (eleven models each) by a Rasch model's pass probabilities; routellm
# (two models) and arena (judge grades) records are stored as recorded. SMOOTH=none reproduces
# the previous figures.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
scripts/seed_index.sh
BIN=./target/release/model-router
CONFIG=data/eval.toml

"$BIN" --config "$CONFIG" --examples "$OUT/seed_examples.jsonl" eval \
  "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
  "$DATA/alpacaeval2/alpacaeval2.jsonl" \
  --ids "$DATA/splits/eval_ids.txt" --plot "$OUT/heldout.svg" > "$OUT/heldout.json"
echo "metrics: $OUT/heldout.json, plot: $OUT/heldout.svg" >&2
