#!/usr/bin/env bash
# Compare candle (the criterion bench `embed/*` in benches/router.rs) with onnxruntime
# (scripts/bench_onnx.py) on benches/texts.json, and print a markdown table of median ms per call.
#
# Run:  scripts/bench_compare.sh
# Env:  CARGO_TARGET_DIR  where criterion results are read (default: target)
#       MODEL_DIR         model folder for bench_onnx.py (default: it downloads the package)
#       PYTHON            interpreter to use (default: .venv/bin/python, created if missing)
#       SKIP_CARGO=1      reuse existing criterion results instead of running cargo bench
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PYTHON=.venv/bin/python
fi
"$PYTHON" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt

if [ -z "${SKIP_CARGO:-}" ]; then
  cargo bench --bench router -- embed >&2
fi
onnx_json=$("$PYTHON" scripts/bench_onnx.py ${MODEL_DIR:+--model-dir "$MODEL_DIR"} | tail -n 1)

"$PYTHON" - "${CARGO_TARGET_DIR:-target}/criterion/embed" "$onnx_json" <<'PY'
import json, sys
from pathlib import Path

crit, onnx = Path(sys.argv[1]), json.loads(sys.argv[2])
cases = [("batch1_short", "onnx_short_ms"), ("batch1_medium", "onnx_medium_ms"), ("batch32", "onnx_batch32_ms")]
missing = []
print("| case | candle ms | onnxruntime ms | candle/onnx |")
print("| --- | ---: | ---: | ---: |")
for case, key in cases:
    est = crit / case / "new" / "estimates.json"
    o = onnx[key]
    if est.exists():
        c = json.loads(est.read_text())["median"]["point_estimate"] / 1e6  # ns -> ms
        print(f"| {case} | {c:.3f} | {o:.3f} | {c / o:.2f} |")
    else:
        missing.append(str(est))
        print(f"| {case} | n/a | {o:.3f} | n/a |")
print(f"\nonnxruntime batch32: {onnx['onnx_batch32_sentences_per_s']:.0f} sentences/s")
if missing:
    sys.exit("missing criterion results: " + ", ".join(missing))
PY
