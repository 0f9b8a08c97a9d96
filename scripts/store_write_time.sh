#!/usr/bin/env bash
# How long `store import` takes to write N examples with their vectors (default 20,000 synthetic
# ones from scripts/synth_examples.py), each time into a new empty database of one throwaway
# PostgreSQL cluster. The embedding is not timed: the first import fills an embedding cache that
# the later ones reuse, and the figure printed is the import's own write time (one transaction).
# With OTHER_BIN set, the two binaries take turns (ROUNDS each), so their figures come from one
# run and can be divided.
#
# Usage: scripts/store_write_time.sh [N]
# Env: ROUTER_BIN (default target/release/model-router), OTHER_BIN, ROUNDS (default 2), PG_BIN,
# KEEP=1 keeps the temp folder.
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
n=${1:-20000}
rounds=${ROUNDS:-2}
bench_init
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
pg_start
base_url=${ROUTER_STORE_URL%/*}
python3 "$root/scripts/synth_examples.py" -n "$n" > "$work/examples.jsonl"
write_config "$work/router.toml" "$work/examples.jsonl" auto
fresh_cache "$work/cache"

bins=("$bin")
[ -n "${OTHER_BIN:-}" ] && bins+=("$OTHER_BIN")
import() { # BIN DB -> prints the write seconds (runs in $(...): no state kept here)
    local db=$2
    pg_sql "CREATE DATABASE import_$db" >/dev/null
    ROUTER_STORE_URL="$base_url/import_$db" MODEL_ROUTER_CACHE="$work/cache" \
        "$1" --config "$work/router.toml" store import "$work/examples.jsonl" \
        > "$work/import.out" 2> "$work/import.err" || { cat "$work/import.err" >&2; exit 1; }
    grep -o 'in [0-9.]*s$' "$work/import.out" | tr -dc '0-9.'
}
echo "embedding $n examples into the cache (not timed)"
import "$bin" 0 >/dev/null
db=0
for ((r = 1; r <= rounds; r++)); do
    for b in "${bins[@]}"; do
        db=$((db + 1))
        secs=$(import "$b" "$db")
        [ -n "$secs" ] || { echo "no write time in the import's output" >&2; exit 1; }
        echo "round $r  $b  wrote $n examples in $secs s"
    done
done
