#!/usr/bin/env bash
# Fuzzes the live HTTP API against its own OpenAPI document (GET /openapi.json) with
# schemathesis: every operation, examples from the document plus generated bodies, headers and
# edge cases. It must find no 5xx, no response outside the document (status, content type,
# headers, body schema) and no response slower than --max-response-time (a hang).
#
# Builds nothing: it runs target/release/model-router (or $MODEL_ROUTER_BIN) in front of the
# local fake upstream (scripts/e2e_env.sh), with client keys on (so the example and feedback
# endpoints are exercised, on a temporary copy of the examples) and installs schemathesis into
# the virtualenv target/e2e-venv. The run is bounded: FUZZ_MAX_EXAMPLES generated cases per
# operation and phase (default 100), one worker, a fixed seed (FUZZ_SEED) so a failure
# reproduces. Prints the run's counts; exits non-zero on any failure or if the router does
# not stop cleanly on SIGTERM afterwards.
#
# Usage: cargo build --release && scripts/api_fuzz.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
who=fuzz
venv=${E2E_VENV:-$root/target/e2e-venv}
python=${PYTHON:-python3}
max_examples=${FUZZ_MAX_EXAMPLES:-100}
seed=${FUZZ_SEED:-20261204}
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "fuzz: installing schemathesis into $venv"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet schemathesis
fi

. "$root/scripts/e2e_env.sh"

# The router's own counters before and after: what the run made it answer.
counts() { "$python" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "$url/metrics" \
    | grep '^model_router_http_requests_total{' || true; }
counts > "$work/before.prom"
status=0
"$venv/bin/schemathesis" run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$max_examples" --seed "$seed" --workers 1 \
    --phases examples,coverage,fuzzing \
    --max-response-time 10 --request-timeout 20 \
    --header "Authorization: Bearer $E2E_ROUTER_KEYS" \
    --no-color || status=$?
# What reached the router, by endpoint and status (its own counters).
echo "fuzz: requests the router answered, by endpoint and status:"
counts > "$work/after.prom"
"$python" - "$work/before.prom" "$work/after.prom" <<'PY'
import re, sys
def read(path):
    pattern = r'endpoint="([^"]*)",status="([^"]*)"\} (\S+)'
    return {(e, s): float(n) for e, s, n in re.findall(pattern, open(path).read())}
before, after = read(sys.argv[1]), read(sys.argv[2])
rows = {k: int(n - before.get(k, 0)) for k, n in after.items() if n - before.get(k, 0) > 0}
for (endpoint, status), n in sorted(rows.items()):
    print(f"  {endpoint:28} {status}  {n:6}")
by = lambda c: sum(n for (_, s), n in rows.items() if s.startswith(c))
print(f"  total {sum(rows.values())}: 2xx {by('2')}, 4xx {by('4')}, 5xx {by('5')}")
PY
stop_router || status=1
exit "$status"
