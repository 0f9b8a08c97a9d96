#!/usr/bin/env bash
# gpu-check on a lent GPU machine, in two halves.
#
# Here (Rust, no GPU):  scripts/gpu_check_device.sh --prepare
#   builds the CUDA binary (scripts/cuda_toolkit.sh's toolkit, target dir target/cuda), strips
#   it, and puts it with the model's tokenizer and config (not its 91 MB of weights: a GPU
#   machine takes at most 64 MiB of files) in target/gpu-carry/, ignored by git.
# There (GPU, no Rust, offline): scripts/gpu_check_device.sh [gpu-check flags...]
#   with target/gpu-carry carried; prints nvidia-smi and the driver's CUDA version, finds the
#   CUDA libraries the binary links (the driver's libcuda, cuBLAS, cuRAND, the runtime) in the
#   system toolkit or the Python packages' nvidia/*/lib folders, then runs
#   `model-router gpu-check --device cuda:0` on synthetic MiniLM-shaped weights with the real
#   tokenizer, and writes the JSON report, its log and the machine's description to $OUT.
#
# Through the device tool:
#   run(command="scripts/gpu_check_device.sh", carry=["target/gpu-carry"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
carry=target/gpu-carry

if [ "${1:-}" = "--prepare" ]; then
    set -e
    eval "$(scripts/cuda_toolkit.sh)"
    cargo build --release --locked --features cuda --target-dir target/cuda
    rm -rf "$carry"
    mkdir -p "$carry/model/1_Pooling"
    strip -o "$carry/model-router" target/cuda/release/model-router
    model=$(./target/release/model-router model fetch 2>/dev/null | tail -n 1)
    for f in config.json tokenizer.json sentence_bert_config.json 1_Pooling/config.json; do
        [ -f "$model/$f" ] && cp "$model/$f" "$carry/model/$f"
    done
    size=$(du -sb "$carry" | cut -f1)
    tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
    echo "carry: $carry, $((size / 1048576)) MiB (+ $((tree / 1048576)) MiB of tracked files; the limit is 64 MiB)"
    if [ $((size + tree)) -ge $((64 * 1048576)) ]; then
        echo "too large to carry" >&2
        exit 1
    fi
    exit 0
fi

out="${OUT:-target/gpu-check-out}"
mkdir -p "$out"
bin="$carry/model-router"
if [ ! -x "$bin" ]; then
    echo "no $bin: run scripts/gpu_check_device.sh --prepare on a Rust machine, then carry $carry" >&2
    exit 1
fi

{
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "nvidia-smi failed"
    echo "== GPU, driver, compute capability"
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1
    echo "== the driver's CUDA version"
    nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' || echo "unknown"
    echo "== nvcc"
    nvcc --version 2>&1 | tail -n 2 || echo "no nvcc"
} | tee "$out/machine.txt"

# The binary links the CUDA libraries by name (cudarc's dynamic linking): find each one the
# loader does not, in the usual places, then in the Python packages' nvidia/*/lib folders.
dirs=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu
    /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
while IFS= read -r d; do dirs+=("$d"); done < <(python3 -c '
import importlib.util, pathlib
spec = importlib.util.find_spec("nvidia")
for base in (spec.submodule_search_locations if spec else []):
    for lib in sorted(pathlib.Path(base).glob("*/lib")):
        print(lib)
' 2>/dev/null)
for lib in $(ldd "$bin" | awk '/not found/ {print $1}'); do
    found=""
    for d in "${dirs[@]}"; do
        if [ -e "$d/$lib" ]; then found=$d; break; fi
    done
    if [ -z "$found" ]; then
        found=$(find /usr /opt -name "$lib" -print -quit 2>/dev/null | xargs -r dirname)
    fi
    if [ -n "$found" ]; then
        export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
done
echo "== libraries"
ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found' | tee -a "$out/machine.txt"
if ldd "$bin" | grep -q 'not found'; then
    echo "some CUDA libraries are missing: see above" | tee -a "$out/machine.txt" >&2
    exit 1
fi

model_args=()
[ -d "$carry/model" ] && model_args=(--model "$carry/model")
echo "== model-router gpu-check --device cuda:0 ${model_args[*]} $*"
start=$(date +%s)
"$bin" --config data/router.toml --device cuda:0 "${model_args[@]}" gpu-check "$@" \
    >"$out/gpu-check.json" 2>"$out/gpu-check.log"
rc=$?
echo "exit code $rc after $(($(date +%s) - start)) s"
cat "$out/gpu-check.json"
tail -n 20 "$out/gpu-check.log"
exit $rc
