# Shared by the measurement scripts that need a PostgreSQL store (scripts/ready_time_20k.sh,
# scripts/replicas_throughput.sh); source it, don't run it. It gives:
#   bench_init            a temp folder ($work), the binary ($bin), cleanup on exit
#   pg_start              a throwaway PostgreSQL cluster on a free loopback port, run as the
#                         postgres user when we are root (as tests/store.rs does); exports
#                         ROUTER_STORE_URL
#   pg_sql SQL            runs one statement in it (psql), prints the result unaligned
#   fresh_cache DIR       an embedding cache dir holding only the model (symlinked): nothing
#                         embedded before can be reused from it
#   write_config OUT EXAMPLES INDEX
#                         data/router.toml with bind 127.0.0.1:0, routing.examples and
#                         routing.index set, and [store] url_env = "ROUTER_STORE_URL"
#   serve_start NAME CFG  starts `serve` in the background: sets $serve_pid and $serve_url,
#                         logs to $work/NAME.err
#   wait_ready URL PID    polls /readyz every 20 ms until 200 (fails if PID dies), forking nothing
#   stop_pid PID          SIGTERM and wait
#   free_port             prints a free loopback TCP port
# Env: ROUTER_BIN (default $root/target/release/model-router), PG_BIN (folder with initdb,
# pg_ctl, psql; default: found on PATH or under /usr/lib/postgresql/*/bin).

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${ROUTER_BIN:-$root/target/release/model-router}
# Model files come from the usual cache; embeddings never do (see fresh_cache).
model_cache=${MODEL_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-router}
unset ROUTER_API_KEYS ROUTER_CONFIG ROUTER_EXAMPLES MODEL_ROUTER_CACHE

bench_pids=()
pg_dir=""
bench_cleanup() {
    local p
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    [ -n "$pg_dir" ] && rm -rf "$pg_dir"
    [ -n "${work:-}" ] && [ -z "${KEEP:-}" ] && rm -rf "$work"
    return 0
}

bench_init() {
    [ -x "$bin" ] || { echo "no binary at $bin: build it (cargo build --release) or set ROUTER_BIN" >&2; exit 1; }
    [ -d "$model_cache/models" ] || { echo "no model under $model_cache/models: run 'model-router model fetch' first" >&2; exit 1; }
    work=$(mktemp -d)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    local initdb
    if initdb=$(command -v initdb); then
        # Debian links initdb into PATH but keeps psql beside the real one.
        dirname "$(readlink -f "$initdb")"
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_start() {
    pg_bin=$(find_pg_bin)
    [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/psql" ] || { echo "PostgreSQL's initdb/psql not found (set PG_BIN)" >&2; exit 1; }
    pg_dir=$(mktemp -d)
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
    pg_port=$(free_port)
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U router --no-sync >/dev/null
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
        -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null
    export ROUTER_STORE_URL="postgres://router@127.0.0.1:$pg_port/postgres"
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port (throwaway cluster in $pg_dir)"
}

pg_sql() {
    as_pg "$pg_bin/psql" -X -q -A -t -h 127.0.0.1 -p "$pg_port" -U router -d postgres -c "$1"
}

fresh_cache() {
    mkdir -p "$1"
    ln -s "$model_cache/models" "$1/models"
}

write_config() {
    local out=$1 examples=$2 index=$3
    sed -e 's|^bind = .*|bind = "127.0.0.1:0"|' \
        -e "s|^examples = .*|examples = \"$examples\"|" \
        -e "s|^index = \"[a-z]*\"|index = \"$index\"|" \
        "$root/data/router.toml" > "$out"
    printf '\n[store]\nurl_env = "ROUTER_STORE_URL"\n' >> "$out"
    grep -q '^bind = "127.0.0.1:0"' "$out" && grep -q "^examples = \"$examples\"" "$out" \
        && grep -q "^index = \"$index\"" "$out" \
        || { echo "data/router.toml changed shape: could not set bind/examples/index" >&2; exit 1; }
}

serve_start() {
    local name=$1 cfg=$2
    : > "$work/$name.out"
    "$bin" --config "$cfg" serve > "$work/$name.out" 2> "$work/$name.err" &
    serve_pid=$!
    bench_pids+=("$serve_pid")
    serve_url=""
    until [ -n "$serve_url" ]; do
        kill -0 "$serve_pid" 2>/dev/null || { echo "$name stopped before binding:" >&2; cat "$work/$name.err" >&2; exit 1; }
        serve_url=$(sed -n 's/^listening on //p' "$work/$name.out")
        sleep 0.02
    done
}

# Polls without starting a process: curl plus sleep every 20 ms cost ~0.35 of a core here,
# which on 2 cores slowed the replica being timed. Bash's /dev/tcp and a read timeout on a
# private FIFO cost ~0.02 of a core.
wait_ready() {
    local url=$1 pid=$2 hostport line tick
    hostport=${url#http://}
    tick="$work/tick.$BASHPID"
    mkfifo "$tick"
    exec {tick_fd}<>"$tick"
    rm -f "$tick"
    while true; do
        if exec {conn}<>"/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null; then
            printf 'GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$hostport" >&"$conn"
            IFS= read -r line <&"$conn" || line=""
            exec {conn}<&-
            if [[ $line == "HTTP/1.1 200"* ]]; then
                exec {tick_fd}<&-
                return 0
            fi
        fi
        kill -0 "$pid" 2>/dev/null || { echo "the server stopped before it was ready" >&2; exit 1; }
        read -r -t 0.02 -u "$tick_fd" _ || true
    done
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local p rest=()
    for p in "${bench_pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
    bench_pids=("${rest[@]}")
}
