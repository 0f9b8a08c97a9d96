#!/usr/bin/env bash
# The cost budget held live on held-out prompts (README "A cost budget, held live"): for each
# share, the held-out prompts of every benchmark are shuffled into a stream of 5,000 decisions
# and routed one by one as `serve` would with `[routing.budget] large = SHARE, window = 1000`
# against the seed index. Printed per share: the share after the first window, the worst
# rolling-window miss, and the PGR bought (scored with the held-out outcomes) against the
# router's offline curve at the same share. Nothing is tuned on the held-out split.
#
# Run: scripts/eval_budget.sh   (reads ../shared/eval-data; writes target/eval/budget-*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
[ -s "$OUT/seed_examples.jsonl" ] || scripts/seed_index.sh
cargo build --release --locked -q
for share in ${SHARES:-0.2 0.3 0.5}; do
  ./target/release/model-router --config data/eval.toml --examples "$OUT/seed_examples.jsonl" eval \
    "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
    "$DATA/alpacaeval2/alpacaeval2.jsonl" --ids "$DATA/splits/eval_ids.txt" \
    --budget "large=$share" --window 1000 --stream 5000 > "$OUT/budget-$share.json"
done
