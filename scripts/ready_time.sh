#!/usr/bin/env bash
# Seconds from starting `model-router serve` to its first `200` on /readyz (model loaded,
# examples indexed), for the config given. Give a config whose server.bind is 127.0.0.1:0.
# With [store], export the variable its url_env names first.
#
# Usage: cargo build --release && scripts/ready_time.sh CONFIG
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cfg=$1
out=$(mktemp)
start=$(date +%s.%N)
"$root/target/release/model-router" --config "$cfg" serve > "$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
url=""
until [ -n "$url" ]; do url=$(sed -n 's/^listening on //p' "$out"); sleep 0.02; done
until curl -sf "$url/readyz" >/dev/null; do
    kill -0 $pid 2>/dev/null || { echo "the server stopped before it was ready" >&2; exit 1; }
    sleep 0.02
done
end=$(date +%s.%N)
python3 -c "print(f'ready in {$end - $start:.2f} s')"
