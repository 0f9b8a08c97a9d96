#!/usr/bin/env bash
# The learning curve of the README ("How many labels you need"): held-out APGR against the
# number of in-domain outcome examples in the index. Per domain, the index holds every seed
# record of the other benchmarks plus N sampled from the domain's seed records (3 samples per
# size, nested), and routes the domain's held-out records. Arena has no held-out split, so its
# chat prompts are scored on the held-out chat benchmarks (AlpacaEval, MT-Bench). The held-out
# split is only routed and scored, never indexed; settings are data/eval.toml's.
#
# Run: scripts/eval_learning_curve.sh   (reads ../shared/eval-data; writes target/eval/)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
cargo build --release --locked -q
./target/release/model-router --config data/eval.toml eval \
  "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
  "$DATA/arena-bench-v1/arena_bench_v1.jsonl" "$DATA/alpacaeval2/alpacaeval2.jsonl" \
  --ids "$DATA/splits/eval_ids.txt" --seed-ids "$DATA/splits/seed_ids.txt" \
  --learning-curve "${SIZES:-0,100,300,1000,3000,all}" --seeds 3 --smooth rasch \
  --domain mmlu --domain arc-challenge --domain mbpp --domain winogrande \
  --domain "chat=arena-bench-v1:alpaca_eval+mt_bench" > "$OUT/learning_curve.json"
echo "curve: $OUT/learning_curve.json" >&2
