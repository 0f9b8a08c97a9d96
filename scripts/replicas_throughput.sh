#!/usr/bin/env bash
# routes/s of 3 replicas behind a load balancer against 1, in one run: a throwaway PostgreSQL
# store holding data/examples.jsonl (`store import`), three `serve` replicas on it, and nginx
# (round-robin, keep-alive to the replicas, 1 worker) with two fronts: one forwarding to
# replica 1 alone, one to all three. wrk (closed loop: each connection sends its next request
# when the last is answered; POST /v1/route with short synthetic queries, scripts/wrk_route.lua)
# drives, at each concurrency, for SECS seconds each:
#   1-direct     replica 1, no load balancer
#   1-behind-LB  nginx -> replica 1        (the load balancer's own cost)
#   3-behind-LB  nginx -> replicas 1, 2, 3
# and prints routes/s (200s only), p50, p99, the CPU each part used (in cores: CPU-seconds per
# second) and the ratios 3-behind-LB / 1-direct and 3-behind-LB / 1-behind-LB.
#
# On one machine the replicas share its cores, so this measures what replication and the load
# balancer cost, not scale-out; on separate machines each replica adds about the 1-direct figure.
#
# Usage: scripts/replicas_throughput.sh
# Env: ROUTER_BIN (default target/release/model-router), SECS (default 20), CONC (default
# "32 64"), NGINX_WORKERS (default 1), PG_BIN, KEEP=1 keeps the temp folder. Needs wrk and
# nginx (installed with apt-get when missing and we are root).
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
secs=${SECS:-20}
conc=${CONC:-32 64}
nginx_workers=${NGINX_WORKERS:-1}

for tool in wrk nginx; do
    if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
        [ "$(id -u)" = 0 ] || { echo "$tool is not installed" >&2; exit 1; }
        echo "installing $tool (apt-get)"
        apt-get install -y "$tool" >/dev/null
    fi
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)

bench_init
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uptime | sed 's/.*load average/load average/')"
echo "binary: $bin; $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $("$nginx" -v 2>&1)"
pg_start

# Import through a copy of the local embedding cache (only faster; the vectors are the same).
fresh_cache "$work/cache"
[ -d "$model_cache/embeddings" ] && cp -r "$model_cache/embeddings" "$work/cache/"
write_config "$work/router.toml" "$root/data/examples.jsonl" auto
MODEL_ROUTER_CACHE="$work/cache" "$bin" --config "$work/router.toml" store import "$root/data/examples.jsonl"

replica_pids=()
replica_ports=()
for r in 1 2 3; do
    MODEL_ROUTER_CACHE="$work/cache" serve_start "replica$r" "$work/router.toml"
    wait_ready "$serve_url" "$serve_pid"
    replica_pids+=("$serve_pid")
    replica_ports+=("${serve_url##*:}")
    echo "replica $r: $serve_url ($(grep -o 'stored_vectors=[0-9]* embedded=[0-9]*' "$work/replica$r.err"))"
done

mkdir -p "$work/nginx"
lb1=$(free_port)
lb3=$(free_port)
proxy='proxy_http_version 1.1; proxy_set_header Connection "";'
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes $nginx_workers;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream one { server 127.0.0.1:${replica_ports[0]}; keepalive 128; }
    upstream three {
        server 127.0.0.1:${replica_ports[0]};
        server 127.0.0.1:${replica_ports[1]};
        server 127.0.0.1:${replica_ports[2]};
        keepalive 128;
    }
    server { listen 127.0.0.1:$lb1; location / { proxy_pass http://one; $proxy } }
    server { listen 127.0.0.1:$lb3; location / { proxy_pass http://three; $proxy } }
}
EOF
"$nginx" -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
bench_pids+=("$nginx_pid")
until curl -sf "http://127.0.0.1:$lb3/readyz" >/dev/null; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/error.log" >&2; exit 1; }
    sleep 0.05
done
echo "nginx: 127.0.0.1:$lb1 -> replica 1, 127.0.0.1:$lb3 -> replicas 1-3 ($nginx_workers worker)"

python3 "$root/scripts/synth_examples.py" --queries -n 500 > "$work/queries.txt"

hz=$(getconf CLK_TCK)
# CPU ticks (user + system) of the given processes and, for nginx, its workers.
ticks() {
    local p sum=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        sum=$((sum + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$sum"
}
nginx_procs() { echo "$nginx_pid" $(ps -o pid= --ppid "$nginx_pid"); }

# run SETUP URL CONNECTIONS SECONDS: one wrk run; appends a result row unless SETUP is "warm-up".
run() {
    local setup=$1 url=$2 c=$3 d=$4 r0 n0 r1 n1 line
    r0=$(ticks "${replica_pids[@]}"); n0=$(ticks $(nginx_procs))
    local TIMEFORMAT='%U %S'
    { time wrk -t2 -c"$c" -d"${d}s" --timeout 10s -s "$root/scripts/wrk_route.lua" "$url" -- "$work/queries.txt" \
        > "$work/wrk.out" ; } 2> "$work/wrk.time"
    r1=$(ticks "${replica_pids[@]}"); n1=$(ticks $(nginx_procs))
    [ "$setup" = warm-up ] && return
    line=$(grep '^RESULT ' "$work/wrk.out") || { cat "$work/wrk.out" >&2; exit 1; }
    # setup c ok requests secs rps p50 p99 socket_errors replica_cores nginx_cores wrk_cores
    echo "$line" | awk -v s="$setup" -v c="$c" -v hz="$hz" -v d="$d" -v rt="$((r1 - r0))" -v nt="$((n1 - n0))" \
        -v wt="$(awk '{print $1 + $2}' "$work/wrk.time")" '{
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\n", s, c, v["ok"], v["requests"], v["secs"],
                v["rps"], v["p50_ms"], v["p99_ms"], v["socket_errors"], rt / hz / d, nt / hz / d, wt / d }' >> "$work/results.tsv"
}

direct="http://127.0.0.1:${replica_ports[0]}"
front1="http://127.0.0.1:$lb1"
front3="http://127.0.0.1:$lb3"
for url in "$direct" "$front1" "$front3"; do run warm-up "$url" 8 3; done
: > "$work/results.tsv"
echo "measuring: $secs s per point, concurrency $conc (load before: $(uptime | sed 's/.*load average: //'))"
for c in $conc; do
    run 1-direct "$direct" "$c" "$secs"
    run 1-behind-LB "$front1" "$c" "$secs"
    run 3-behind-LB "$front3" "$c" "$secs"
done

echo
echo "## routes/s, 1 replica vs 3 behind nginx ($(nproc) cores shared by everything; load after: $(uptime | sed 's/.*load average: //'))"
echo "| setup | concurrency | routes/s | p50 | p99 | non-200 | CPU: replicas | nginx | wrk |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{ printf "| %s | %s | %.0f | %.1f ms | %.1f ms | %d | %.2f | %.2f | %.2f |\n", $1, $2, $6, $7, $8, $4 - $3 + $9, $10, $11, $12 }' "$work/results.tsv"
echo
awk -F'\t' '{ rps[$1, $2] = $6; cs[$2] = 1 }
    END { for (c in cs) printf "concurrency %s: 3-behind-LB / 1-direct %.2f, 3-behind-LB / 1-behind-LB %.2f, 1-behind-LB / 1-direct %.2f\n",
        c, rps["3-behind-LB", c] / rps["1-direct", c], rps["3-behind-LB", c] / rps["1-behind-LB", c], rps["1-behind-LB", c] / rps["1-direct", c] }' \
    "$work/results.tsv" | sort -t' ' -k2n
echo "CPU columns are cores used on average (CPU-seconds per second, $(nproc) at most); replicas = the sum of all three."
echo "Caveat: the replicas, nginx and wrk share the same $(nproc) cores: this is the cost of replication and the load balancer, not scale-out."
