#!/usr/bin/env bash
# Tuning on the seed split only: 5-fold cross-validation (folds by prompt-text hash) over a grid
# of k, temperature and the category baseline (off = the plain vote, on = each example's quality
# relative to its source benchmark's mean). The held-out split is never read.
#
# Run: scripts/eval_seed_cv.sh            (writes target/eval/seed_cv.json and seed_cv.svg)
# Narrower grids: K=40,160 TEMPERATURE=0.05 BASELINE=true scripts/eval_seed_cv.sh
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
  --k "${K:-5,10,20,40,80,160}" --temperature "${TEMPERATURE:-0.02,0.05,0.1,1000}" \
  --category-baseline "${BASELINE:-true,false}" \
  --plot "$OUT/seed_cv.svg" > "$OUT/seed_cv.json"
# One line per setting: macro-average APGR over the five benchmarks, best first.
python3 - "$OUT/seed_cv.json" <<'PY' >&2 || true
import json, sys
s = json.load(open(sys.argv[1]))["settings"]
rows = []
for x in s:
    r = {b["benchmark"]: b["router"]["apgr"] for b in x["reports"] if b["benchmark"] != "all"}
    rows.append((sum(r.values()) / len(r), min(r.values()), x, r))
rows.sort(key=lambda t: -t[0])
print("macro  min    k    temperature  category_baseline  per benchmark")
for m, lo, x, r in rows:
    print(f"{m:.3f}  {lo:.3f}  {x['k']:<4} {x['temperature']:<12g} {str(x['category_baseline']):<18} "
          + " ".join(f"{b.split(' ')[0]} {v:.3f}" for b, v in r.items()))
PY
