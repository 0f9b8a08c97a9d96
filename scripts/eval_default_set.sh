#!/usr/bin/env bash
# Out of the box: routes outcome-labeled prompts of ../shared/eval-data with an index of the
# default example set only (data/examples.jsonl, no eval data ingested) and reports how well
# its "needs the strong model" score Q(large) - Q(small) separates the prompts where GPT-4
# beats Mixtral from those where it does not (APGR; random = 0.5). The table in data/README.md.
#
# Run: scripts/eval_default_set.sh          held-out split (target/eval/default_set.json, .svg)
#      scripts/eval_default_set.sh --seed   seed split, for judging edits to the set while writing
#                                           it (target/eval/default_set_seed.json, .svg)
#
# Per-benchmark APGR is printed to stderr. The seed split has no GSM8K, MT-Bench or AlpacaEval:
# its arena-bench-v1 rows (natural chat) stand in for MT-Bench/AlpacaEval and its MMLU math
# subjects for GSM8K (data/README.md, "Judging the set on the seed split").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
if [ "${1:-}" = "--seed" ]; then
  IDS="$DATA/splits/seed_ids.txt"
  NAME=default_set_seed
  FILES=("$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl"
    "$DATA/arena-bench-v1/arena_bench_v1.jsonl")
else
  IDS="$DATA/splits/eval_ids.txt"
  NAME=default_set
  FILES=("$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl"
    "$DATA/alpacaeval2/alpacaeval2.jsonl")
fi
cargo build --release --locked -q
./target/release/model-router --config data/router.toml eval "${FILES[@]}" \
  --ids "$IDS" \
  --map small=mistralai/Mixtral-8x7B-Instruct-v0.1,mistralai/mixtral-8x7b-chat,Mixtral-8x7B-Instruct-v0.1_concise \
  --map large=gpt-4-1106-preview,gpt4_1106_preview \
  --plot "$OUT/$NAME.svg" > "$OUT/$NAME.json"
echo "metrics: $OUT/$NAME.json, plot: $OUT/$NAME.svg" >&2
