#!/usr/bin/env bash
# End-to-end check of `model-router serve` with the official openai and anthropic Python SDKs.
#
# Builds nothing: it runs target/release/model-router (or $MODEL_ROUTER_BIN). It starts the
# local fake upstream (scripts/fake_upstream.py, both kinds), writes a config whose tiers
# forward to it (the fixture examples, bind 127.0.0.1:0; each tier on the fake as an OpenAI
# upstream, and small and large also as `claude-e2e-*` on it as an Anthropic upstream), starts
# the router, waits for /readyz, installs the `openai` and `anthropic` packages into a
# virtualenv (kept in target/e2e-venv between runs), runs scripts/openai_sdk_check.py and
# scripts/anthropic_sdk_check.py against it with only base_url changed, then stops the router
# with SIGTERM (it must exit 0: graceful shutdown) and the fake upstream.
#
# Usage: cargo build --release && scripts/e2e_sdk.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MODEL_ROUTER_BIN:-$root/target/release/model-router}
venv=${E2E_VENV:-$root/target/e2e-venv}
python=${PYTHON:-python3}
[ -x "$bin" ] || { echo "e2e: $bin is missing: run cargo build --release first" >&2; exit 1; }

work=$(mktemp -d)
fake_pid=""
router_pid=""
cleanup() {
    [ -n "$router_pid" ] && kill "$router_pid" 2>/dev/null || true
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, anthropic" 2>/dev/null; then
    echo "e2e: installing the openai and anthropic packages into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet openai anthropic
fi

export FAKE_UPSTREAM_KEY="sk-e2e-upstream-$$"
export E2E_ROUTER_KEYS="e2e-router-key-$$"

"$python" "$root/scripts/fake_upstream.py" --port-file "$work/fake.port" &
fake_pid=$!
for _ in $(seq 1 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
[ -s "$work/fake.port" ] || { echo "e2e: the fake upstream did not start" >&2; exit 1; }
fake_url="http://127.0.0.1:$(cat "$work/fake.port")"

cat > "$work/router.toml" <<EOF
[server]
bind = "127.0.0.1:0"
api_keys_env = "E2E_ROUTER_KEYS"

[embedding]
device = "cpu"

[routing]
examples = "$root/tests/fixtures/examples.jsonl"
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
[ -n "$url" ] || { echo "e2e: the router did not start:" >&2; cat "$work/router.err" >&2; exit 1; }
ready=""
for _ in $(seq 1 600); do
    if "$python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1])" "$url/readyz" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$router_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$ready" ] || { echo "e2e: the router never became ready:" >&2; cat "$work/router.err" >&2; exit 1; }
echo "e2e: router at $url, fake upstream at $fake_url"

status=0
"$venv/bin/python" "$root/scripts/openai_sdk_check.py" --base-url "$url/v1" \
    --api-key "$E2E_ROUTER_KEYS" --fake-url "$fake_url" --upstream-key "$FAKE_UPSTREAM_KEY" || status=$?
"$venv/bin/python" "$root/scripts/anthropic_sdk_check.py" --base-url "$url" \
    --api-key "$E2E_ROUTER_KEYS" --fake-url "$fake_url" --upstream-key "$FAKE_UPSTREAM_KEY" || status=$?

kill -TERM "$router_pid"
router_exit=0
wait "$router_pid" || router_exit=$?
router_pid=""
if [ "$router_exit" -ne 0 ]; then
    echo "e2e: the router exited with $router_exit after SIGTERM:" >&2
    cat "$work/router.err" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "e2e: router log:" >&2
    tail -n 40 "$work/router.err" >&2
fi
exit "$status"
