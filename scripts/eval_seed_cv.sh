#!/usr/bin/env bash
# Tuning on the seed split only, two checks over a grid of k, temperature, the category
# baseline (off = the plain vote, on = each example's quality relative to its source benchmark's
# mean) and the smoothing of the index's outcomes (none, or rasch: pass/fail outcomes of records
# with many models' results replaced by a Rasch model's pass probabilities):
#   - 5-fold cross-validation, folds by prompt-text hash (in-domain: every benchmark in every fold);
#   - leave one group out (`--cv group`): each benchmark, and each MMLU subject, routed by an index
#     without any of it, a stand-in for out-of-domain traffic (GSM8K is never in the seed).
# A setting is chosen by the mean of the two macro APGRs. The held-out split is never read.
#
# Run: scripts/eval_seed_cv.sh    (writes target/eval/seed_cv.json, seed_group.json and .svg)
# Narrower grids: K=40,160 TEMPERATURE=0.05 BASELINE=true SMOOTH=none scripts/eval_seed_cv.sh
# Each setting after the first also gets a paired bootstrap interval of its APGR minus the first
# setting's (stderr and the JSON's apgr_minus_first_ci95).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${EVAL_DATA:-../shared/eval-data}"
OUT=target/eval
mkdir -p "$OUT"
cargo build --release --locked -q
for cv in 5 group; do
  name=$([ "$cv" = 5 ] && echo seed_cv || echo seed_group)
  ./target/release/model-router --config data/eval.toml eval \
    "$DATA/routellm/routellm.jsonl" "$DATA/routerbench-subset/routerbench_subset.jsonl" \
    "$DATA/arena-bench-v1/arena_bench_v1.jsonl" \
    --ids "$DATA/splits/seed_ids.txt" --cv "$cv" \
    --k "${K:-5,10,20,40,80,160}" --temperature "${TEMPERATURE:-0.02,0.05,0.1,1000}" \
    --category-baseline "${BASELINE:-true,false}" --smooth "${SMOOTH:-none,rasch}" \
    --plot "$OUT/$name.svg" > "$OUT/$name.json"
done
# One line per setting: macro-average APGR over the five benchmarks in each check, and the
# per-benchmark figures of the 5-fold check; best mean first.
python3 - "$OUT/seed_cv.json" "$OUT/seed_group.json" <<'PY' >&2 || true
import json, sys
def macro(path):
    out = {}
    for x in json.load(open(path))["settings"]:
        r = {b["benchmark"]: b["router"]["apgr"] for b in x["reports"] if b["benchmark"] != "all"}
        out[(x["k"], x["temperature"], x["category_baseline"], x["smooth"])] = (sum(r.values()) / len(r), r)
    return out
cv, group = macro(sys.argv[1]), macro(sys.argv[2])
rows = sorted(cv, key=lambda s: -(cv[s][0] + group[s][0]))
print("mean   5-fold group  k    temperature  category_baseline  smooth  per benchmark (5-fold | group)")
for s in rows:
    (m, r), (g, rg) = cv[s], group[s]
    print(f"{(m + g) / 2:.3f}  {m:.3f}  {g:.3f}  {s[0]:<4} {s[1]:<12g} {str(s[2]):<18} {s[3]:<7} "
          + " ".join(f"{b.split(' ')[0]} {v:.3f}|{rg[b]:.3f}" for b, v in r.items()))
PY
