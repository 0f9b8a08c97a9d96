#!/bin/sh
# Loads the image's default examples into the store named by the config's [store] (the
# ROUTER_STORE_URL variable), once: the Compose `import` service and the Kubernetes Job run it
# on every deploy. `model-router store import` is all or nothing and refuses a file whose ids
# the store holds already; that refusal means an earlier run imported them, so it counts as
# done (exit 0). Any other failure (store unreachable, bad line) fails the run.
set -u
file="${1:-/usr/share/model-router/examples.jsonl}"
out=$(model-router store import "$file" 2>&1)
status=$?
printf '%s\n' "$out"
if [ "$status" -ne 0 ]; then
    case $out in
    *"ids already in the store"*)
        echo "the store holds these examples already: nothing to import"
        exit 0
        ;;
    esac
fi
exit "$status"
