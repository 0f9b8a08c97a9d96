#!/usr/bin/env bash
# Propagation p50/p99 between two replicas, in one command: a throwaway PostgreSQL cluster,
# `store import data/examples.jsonl`, two `serve` replicas on it (client keys on), then
# scripts/store_propagation.py: N examples added on A (timed from the 201) until each is the
# nearest neighbour of its own text on B; it also prints what a route on B takes by itself.
#
# Usage: scripts/propagation.sh [N]    (default 200)
# Env: ROUTER_BIN (default target/release/model-router), PG_BIN, KEEP=1 keeps the temp folder.
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
n=${1:-200}
bench_init
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
pg_start
write_config "$work/router.toml" "$root/data/examples.jsonl" auto
# The usual cache: the import takes the default examples' vectors from it when they are there.
export MODEL_ROUTER_CACHE=$model_cache
"$bin" --config "$work/router.toml" store import "$root/data/examples.jsonl" 2> "$work/import.err" \
    || { cat "$work/import.err" >&2; exit 1; }
export ROUTER_API_KEYS="bench-$RANDOM$RANDOM"
serve_start a "$work/router.toml"
a_pid=$serve_pid a_url=$serve_url
serve_start b "$work/router.toml"
b_pid=$serve_pid b_url=$serve_url
wait_ready "$a_url" "$a_pid"
wait_ready "$b_url" "$b_pid"
python3 "$root/scripts/store_propagation.py" --a "$a_url" --b "$b_url" --key "$ROUTER_API_KEYS" -n "$n"
