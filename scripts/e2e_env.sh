# Sourced by the end-to-end scripts (scripts/e2e_sdk.sh, scripts/api_fuzz.sh): starts the local
# fake upstream (scripts/fake_upstream.py, both kinds) and `model-router serve` with a config
# whose tiers forward to it (a copy of the fixture examples in a temporary folder, client keys
# on, bind 127.0.0.1:0; each tier on the fake as an OpenAI upstream, and small and large also as
# `claude-e2e-*` on it as an Anthropic upstream), waits for /readyz, and leaves $url, $fake_url,
# $work, $E2E_ROUTER_KEYS and $FAKE_UPSTREAM_KEY set. `stop_router` sends SIGTERM and fails
# unless the router exits 0 (graceful shutdown); everything is cleaned up on exit.
#
# Expects $root and $who (the caller's name, for messages) to be set. Builds nothing: it runs
# target/release/model-router (or $MODEL_ROUTER_BIN).

bin=${MODEL_ROUTER_BIN:-$root/target/release/model-router}
python=${python:-${PYTHON:-python3}}
[ -x "$bin" ] || { echo "$who: $bin is missing: run cargo build --release first" >&2; exit 1; }

work=$(mktemp -d)
fake_pid=""
router_pid=""
cleanup() {
    [ -n "$router_pid" ] && kill "$router_pid" 2>/dev/null || true
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cp "$root/tests/fixtures/examples.jsonl" "$work/examples.jsonl"
export FAKE_UPSTREAM_KEY="sk-e2e-upstream-$$"
export E2E_ROUTER_KEYS="e2e-router-key-$$"

"$python" "$root/scripts/fake_upstream.py" --port-file "$work/fake.port" &
fake_pid=$!
for _ in $(seq 1 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
[ -s "$work/fake.port" ] || { echo "$who: the fake upstream did not start" >&2; exit 1; }
fake_url="http://127.0.0.1:$(cat "$work/fake.port")"

cat > "$work/router.toml" <<EOF
[server]
bind = "127.0.0.1:0"
api_keys_env = "E2E_ROUTER_KEYS"

[embedding]
device = "cpu"

[routing]
examples = "$work/examples.jsonl"
k = 5
quality_target = 0.9
fallback_tier = "large"

[[tiers]]
name = "small"
model = "e2e-small"
upstream = "fake"
alternates = [{ model = "claude-e2e-small", upstream = "fake-anthropic" }]

[[tiers]]
name = "medium"
model = "e2e-medium"
upstream = "fake"

[[tiers]]
name = "large"
model = "e2e-large"
upstream = "fake"
alternates = [{ model = "claude-e2e-large", upstream = "fake-anthropic" }]

[upstreams.fake]
base_url = "$fake_url/v1"
api_key_env = "FAKE_UPSTREAM_KEY"
timeout_secs = 30

[upstreams.fake-anthropic]
kind = "anthropic"
base_url = "$fake_url/v1"
api_key_env = "FAKE_UPSTREAM_KEY"
timeout_secs = 30
EOF

RUST_LOG=${RUST_LOG:-model_router=info,warn} "$bin" --config "$work/router.toml" serve \
    > "$work/router.out" 2> "$work/router.err" &
router_pid=$!
url=""
for _ in $(seq 1 100); do
    url=$(sed -n 's/^listening on //p' "$work/router.out")
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "$who: the router did not start:" >&2; cat "$work/router.err" >&2; exit 1; }
ready=""
for _ in $(seq 1 600); do
    if "$python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1])" "$url/readyz" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$router_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$ready" ] || { echo "$who: the router never became ready:" >&2; cat "$work/router.err" >&2; exit 1; }
echo "$who: router at $url, fake upstream at $fake_url"


# Stops the router with SIGTERM; returns non-zero (and shows its log) unless it exits 0.
stop_router() {
    kill -TERM "$router_pid"
    local code=0
    wait "$router_pid" || code=$?
    router_pid=""
    if [ "$code" -ne 0 ]; then
        echo "$who: the router exited with $code after SIGTERM:" >&2
        tail -n 40 "$work/router.err" >&2
        return 1
    fi
}
