#!/usr/bin/env bash
# End-to-end check of `model-router serve` with the official openai and anthropic Python SDKs.
#
# Builds nothing: it runs target/release/model-router (or $MODEL_ROUTER_BIN). Installs the
# `openai` and `anthropic` packages into a virtualenv (kept in target/e2e-venv between runs),
# starts the router in front of the local fake upstream (scripts/e2e_env.sh), runs
# scripts/openai_sdk_check.py and scripts/anthropic_sdk_check.py against it with only base_url
# changed, then stops the router with SIGTERM (it must exit 0: graceful shutdown).
#
# Usage: cargo build --release && scripts/e2e_sdk.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
who=e2e
venv=${E2E_VENV:-$root/target/e2e-venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, anthropic" 2>/dev/null; then
    echo "e2e: installing the openai and anthropic packages into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet openai anthropic
fi

. "$root/scripts/e2e_env.sh"

status=0
"$venv/bin/python" "$root/scripts/openai_sdk_check.py" --base-url "$url/v1" \
    --api-key "$E2E_ROUTER_KEYS" --fake-url "$fake_url" --upstream-key "$FAKE_UPSTREAM_KEY" || status=$?
"$venv/bin/python" "$root/scripts/anthropic_sdk_check.py" --base-url "$url" \
    --api-key "$E2E_ROUTER_KEYS" --fake-url "$fake_url" --upstream-key "$FAKE_UPSTREAM_KEY" || status=$?

stop_router || status=1
if [ "$status" -ne 0 ]; then
    echo "e2e: router log:" >&2
    tail -n 40 "$work/router.err" >&2
fi
exit "$status"
