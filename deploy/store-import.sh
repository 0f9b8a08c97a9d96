#!/bin/sh
# Loads the image's default examples into the store named by the config's [store] (the
# ROUTER_STORE_URL variable): the Compose `import` service and the Kubernetes Job run it on every
# deploy. `--skip-existing` imports only the examples whose ids the store does not hold yet (checked
# before anything is embedded), so a second run adds nothing and succeeds. Any failure (store
# unreachable, a bad line) fails the run.
set -eu
exec model-router store import --skip-existing "${1:-/usr/share/model-router/examples.jsonl}"
