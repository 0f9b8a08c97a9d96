#!/usr/bin/env bash
# Out of the box: routes the held-out prompts of ../shared/eval-data with an index of the
# default example set only (data/examples.jsonl, no eval data ingested) and reports how well
# its "needs the strong model" score Q(large) - Q(small) separates the prompts where GPT-4
# beats Mixtral from those where it does not (APGR; random = 0.5). The table in data/README.md.
#
# Run: scripts/eval_default_set.sh        (writes target/eval/default_set.json and .svg)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
cargo build --release --locked -q
./target/release/model-router --config data/router.toml eval \
  "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
  "$DATA/alpacaeval2/alpacaeval2.jsonl" \
  --ids "$DATA/splits/eval_ids.txt" \
  --map small=mistralai/Mixtral-8x7B-Instruct-v0.1,mistralai/mixtral-8x7b-chat,Mixtral-8x7B-Instruct-v0.1_concise \
  --map large=gpt-4-1106-preview,gpt4_1106_preview \
  --plot "$OUT/default_set.svg" > "$OUT/default_set.json"
echo "metrics: $OUT/default_set.json, plot: $OUT/default_set.svg" >&2
