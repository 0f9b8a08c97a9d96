#!/usr/bin/env bash
# A new replica's time to ready with N stored examples (default 20,000), in one run:
#   1. a throwaway PostgreSQL cluster; N synthetic examples (scripts/synth_examples.py);
#      `store import` of them, timed (it embeds all N: minutes on 2 cores);
#   2. (a) a new replica loading the N stored vectors: seconds from starting `serve` to its first
#      200 on /readyz, with routing.index = "auto" (HNSW at this size: `serve` is ready on an
#      exact index and builds the graph after, so the time until the graph is in use, from its
#      log, is printed too), twice, and once with index = "flat";
#   3. the stored vectors deleted (DELETE FROM router_vectors), then (b) the same replica
#      embedding all N (and storing the vectors again);
#   and prints the times, b / a, and each replica's RSS once ready (VmRSS) and its peak (VmHWM,
#   once any graph is built).
# Every replica gets an embedding cache holding only the model, so it cannot take vectors from
# the local cache; the serve log's "loaded from the store" line (stored_vectors, embedded) shows
# which path ran and is checked.
#
# Usage: scripts/ready_time_20k.sh [N]
# Env: ROUTER_BIN (default target/release/model-router), PG_BIN, KEEP=1 keeps the temp folder.
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
n=${1:-20000}
bench_init

now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss_mb() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
echo "binary: $bin"
pg_start

t0=$(now)
python3 "$root/scripts/synth_examples.py" -n "$n" > "$work/examples.jsonl"
echo "generated $(wc -l < "$work/examples.jsonl") distinct synthetic examples in $(secs "$t0" "$(now)") s"

for index in auto flat; do write_config "$work/router-$index.toml" "$work/examples.jsonl" "$index"; done

fresh_cache "$work/cache-import"
t0=$(now)
MODEL_ROUTER_CACHE="$work/cache-import" "$bin" --config "$work/router-auto.toml" \
    store import "$work/examples.jsonl" > "$work/import.out" 2> "$work/import.err" \
    || { cat "$work/import.err" >&2; exit 1; }
import_s=$(secs "$t0" "$(now)")
echo "store import: $import_s s wall (embedding all $n, then writing); its own line: $(cat "$work/import.out")"
echo "store: $(pg_sql 'select count(*) from router_examples') examples, $(pg_sql 'select count(*) from router_vectors') vectors, $(pg_sql "select pg_size_pretty(pg_database_size('postgres'))")"

# measure NAME INDEX EXPECT_STORED EXPECT_EMBEDDED: one new replica, start to ready.
declare -A ready rss hwm server_s kind graph
measure() {
    local name=$1 index=$2 want_stored=$3 want_embedded=$4
    local cache="$work/cache-$name"
    fresh_cache "$cache"
    local t0 t1
    t0=$(now)
    MODEL_ROUTER_CACHE="$cache" serve_start "$name" "$work/router-$index.toml"
    wait_ready "$serve_url" "$serve_pid"
    t1=$(now)
    ready[$name]=$(secs "$t0" "$t1")
    rss[$name]=$(rss_mb "$serve_pid" VmRSS)
    local loaded ready_line
    loaded=$(grep 'loaded from the store' "$work/$name.err" | grep -o 'examples=[0-9]* stored_vectors=[0-9]* embedded=[0-9]*' || true)
    ready_line=$(grep ' ready ' "$work/$name.err" || true)
    kind[$name]=$(echo "$ready_line" | grep -o 'index="[a-z]*"\|index=[a-z]*' | head -n 1 | tr -d '"' | cut -d= -f2)
    server_s[$name]=$(echo "$ready_line" | grep -o 'secs=[0-9.]*' | cut -d= -f2 | xargs printf '%.2f')
    # A graph put off at start (HNSW; searches exact meanwhile): until it is in use.
    graph[$name]="-"
    if grep -q 'building the HNSW graph' "$work/$name.err"; then
        local waited=0
        until grep -q 'HNSW graph built and in use' "$work/$name.err"; do
            sleep 0.05
            waited=$((waited + 1))
            [ "$waited" -lt 6000 ] || { echo "$name: no HNSW graph after 300 s" >&2; exit 1; }
        done
        graph[$name]="$(secs "$t0" "$(now)") s"
    fi
    hwm[$name]=$(rss_mb "$serve_pid" VmHWM)
    stop_pid "$serve_pid"
    echo "$name: ready in ${ready[$name]} s (index ${kind[$name]}; the server's own load time ${server_s[$name]} s; HNSW graph in use from ${graph[$name]}), RSS ${rss[$name]} MB (peak ${hwm[$name]} MB); log: $loaded; embeddings cached locally: $(find "$cache/embeddings" -type f 2>/dev/null | wc -l) files"
    [ "$loaded" = "examples=$n stored_vectors=$want_stored embedded=$want_embedded" ] \
        || { echo "$name: expected stored_vectors=$want_stored embedded=$want_embedded" >&2; exit 1; }
}

measure stored1 auto "$n" 0
measure stored2 auto "$n" 0
measure stored-flat flat "$n" 0
pg_sql 'delete from router_vectors'
echo "deleted the stored vectors: $(pg_sql 'select count(*) from router_vectors') left"
measure embedding auto 0 "$n"
echo "vectors stored again by that replica: $(pg_sql 'select count(*) from router_vectors')"

a=$(awk -v x="${ready[stored1]}" -v y="${ready[stored2]}" 'BEGIN { printf "%.2f", (x < y ? x : y) }')
echo
echo "## new replica, $n stored examples ($(nproc) cores; load after: $(uptime | sed 's/.*load average: //'))"
echo "| replica | index when ready | ready | HNSW graph in use | RSS once ready (peak, graph included) |"
echo "|---|---|---:|---:|---:|"
echo "| (a) from stored vectors, auto, run 1 | ${kind[stored1]} | ${ready[stored1]} s | ${graph[stored1]} | ${rss[stored1]} MB (${hwm[stored1]} MB) |"
echo "| (a) from stored vectors, auto, run 2 | ${kind[stored2]} | ${ready[stored2]} s | ${graph[stored2]} | ${rss[stored2]} MB (${hwm[stored2]} MB) |"
echo "| (a) from stored vectors, flat | ${kind[stored-flat]} | ${ready[stored-flat]} s | ${graph[stored-flat]} | ${rss[stored-flat]} MB (${hwm[stored-flat]} MB) |"
echo "| (b) embedding all $n (vectors deleted), auto | ${kind[embedding]} | ${ready[embedding]} s | ${graph[embedding]} | ${rss[embedding]} MB (${hwm[embedding]} MB) |"
awk -v a="$a" -v b="${ready[embedding]}" 'BEGIN { printf "(b) / (a, the better run): %.1fx\n", b / a }'
echo "store import of $n: $import_s s wall"
