#!/usr/bin/env bash
# A CUDA toolkit for `cargo build --release --features cuda`, and the environment that uses it.
#
#   eval "$(scripts/cuda_toolkit.sh)"               # compiler, headers and the libraries to link
#   eval "$(scripts/cuda_toolkit.sh --compile-only)" # compiler and headers: enough for check/clippy
#   cargo build --release --features cuda --target-dir target/cuda
#
# Prints `export` lines on stdout (progress on stderr). With a system toolkit (nvcc on PATH, or
# /usr/local/cuda) it installs nothing and points the build at it. Otherwise it installs NVIDIA's
# toolkit wheels from the package index pip is configured for into target/cuda-toolkit, once:
# nvcc + ptxas (nvidia-cuda-nvcc), cicc and libdevice (nvidia-nvvm), the crt and runtime headers
# (nvidia-cuda-crt, nvidia-cuda-runtime), CCCL (nvidia-cuda-cccl), and for linking cuBLAS, cuRAND
# and NVRTC. The wheels ship versioned libraries only (libcublas.so.13), so the script adds the
# `libX.so` names the linker looks for, and, since no wheel carries the driver's link stub, it
# builds one: a libcuda.so.1 whose every driver entry point returns CUDA_ERROR_STUB_LIBRARY (34),
# as the toolkit's own lib/stubs/libcuda.so does. It is only on LD_LIBRARY_PATH when this machine
# has no driver; a machine with one loads the real libcuda.so.1.
#
# Why CUDA 13.0 (CUDA_TOOLKIT_VERSION): candle 0.11 links cudarc with `dynamic-linking` and
# `cuda-version-from-build-system`, so the binary names every driver and cuBLAS entry point of the
# toolkit version it was built with, and candle-kernels' PTX carries that nvcc's PTX ISA version.
# A driver older than the toolkit can then neither resolve the newer entry points nor JIT the
# newer PTX. The GPU machines our sessions are lent run driver 580 (CUDA 13.0) with CUDA 13
# libraries, so 13.0 builds what runs there and on any newer driver. CUDARC_CUDA_VERSION pins
# cudarc to the same version (the newest wheels, 13.4+, are past what cudarc 0.19 knows).
#
# Why CUDA_COMPUTE_CAP=80: candle-kernels compiles its kernels to PTX for this one compute
# capability, and the driver JIT-compiles PTX for any GPU of that capability or newer (A100, A10,
# L4, RTX 30/40, H100/H200 = sm_90, Blackwell), once per kernel module (cached under ~/.nv).
# 80 is also the lowest capability with the bf16 kernels. Set CUDA_COMPUTE_CAP=90 to target
# Hopper alone, or 75/70 for T4/V100.
set -euo pipefail

compile_only=false
case "${1:-}" in
"") ;;
--compile-only) compile_only=true ;;
-h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [--compile-only]" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
repo=$(pwd)
version="${CUDA_TOOLKIT_VERSION:-13.0}"
compute_cap="${CUDA_COMPUTE_CAP:-80}"
log() { printf '%s\n' "$*" >&2; }

# The driver's library, if this machine has one (the stub must not shadow it).
has_driver() {
    ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' ||
        [ -e /usr/local/nvidia/lib64/libcuda.so.1 ] || [ -e /usr/lib/wsl/lib/libcuda.so.1 ]
}

# A system toolkit: use it as it is.
system_root=""
if command -v nvcc >/dev/null 2>&1; then
    system_root=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
elif [ -x /usr/local/cuda/bin/nvcc ]; then
    system_root=/usr/local/cuda
fi
if [ -n "$system_root" ] && [ "$system_root" != "$repo/target/cuda-toolkit/nvidia/cu13" ]; then
    nvcc_version=$("$system_root/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1\2/p')
    log "using the system CUDA toolkit in $system_root (nvcc ${nvcc_version:0:2}.${nvcc_version:2})"
    cat <<EOF
export CUDA_ROOT='$system_root' CUDA_PATH='$system_root' CUDA_HOME='$system_root'
export PATH='$system_root/bin':"\$PATH"
export CUDARC_CUDA_VERSION='${nvcc_version:0:2}0${nvcc_version:2}0'
export CUDA_COMPUTE_CAP='$compute_cap'
EOF
    exit 0
fi

major=${version%%.*}
if [ "$major" != 13 ]; then
    echo "CUDA_TOOLKIT_VERSION=$version: only 13.x is installed from wheels (the 12.x nvcc wheel has no nvcc)" >&2
    exit 1
fi
prefix="$repo/target/cuda-toolkit"
root="$prefix/nvidia/cu$major"
compile_pkgs=("nvidia-cuda-nvcc==$version.*" "nvidia-nvvm==$version.*" "nvidia-cuda-crt==$version.*"
    "nvidia-cuda-runtime==$version.*" "nvidia-cuda-cccl==$version.*")
# cuRAND's version numbers are its own: 10.4.0 is the one of CUDA 13.0.
link_pkgs=("nvidia-cuda-nvrtc==$version.*" "nvidia-cublas==$version.*" "nvidia-curand>=10.4,<10.5")

# One pip call: `--target --upgrade` replaces the shared nvidia/ folder, so packages installed
# by separate calls would remove each other.
pkgs=("${compile_pkgs[@]}")
$compile_only || pkgs+=("${link_pkgs[@]}")
marker="$prefix/.installed"
if ! { [ -f "$marker" ] && grep -qxF -- "${pkgs[*]}" "$marker"; }; then
    # A full install also serves --compile-only: keep it.
    if ! { $compile_only && [ -f "$marker" ] && grep -qF -- "${compile_pkgs[*]}" "$marker"; }; then
        log "installing ${pkgs[*]} into $prefix"
        rm -rf "$prefix"
        mkdir -p "$prefix"
        python3 -m pip install --quiet --no-deps --no-compile --root-user-action=ignore --target "$prefix" "${pkgs[@]}" >&2
        printf '%s\n' "${pkgs[*]}" >"$marker"
    fi
fi
if ! $compile_only; then
    # The linker wants libX.so; the wheels ship libX.so.N.
    for lib in "$root"/lib/lib*.so.*; do
        base=$(basename "$lib")
        case "$base" in *.alt.so.* | libnvrtc-builtins*) continue ;; esac
        ln -sf "$base" "$root/lib/${base%%.so.*}.so"
    done
    stub="$root/lib/stubs/libcuda.so.1"
    if [ ! -f "$stub" ] || [ "$root/include/cuda.h" -nt "$stub" ]; then
        log "building the driver stub $stub from cuda.h"
        mkdir -p "$root/lib/stubs"
        # Every cu* function cuda.h declares, under its exported (_v2, _v3...) names too.
        grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$root/include/cuda.h" | sort -u |
            awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$root/lib/stubs/stub.c"
        cc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$stub" "$root/lib/stubs/stub.c"
        ln -sf libcuda.so.1 "$root/lib/stubs/libcuda.so"
    fi
fi

log "CUDA $version toolkit in $root (compute capability $compute_cap)"
cat <<EOF
export CUDA_ROOT='$root' CUDA_PATH='$root' CUDA_HOME='$root'
export PATH='$root/bin':"\$PATH"
export CPATH='$root/include':"\${CPATH:-}"
export CUDARC_CUDA_VERSION='${major}0${version#*.}0'
export CUDA_COMPUTE_CAP='$compute_cap'
EOF
if ! $compile_only; then
    libs="$root/lib"
    has_driver || libs="$libs:$root/lib/stubs"
    echo "export LIBRARY_PATH='$root/lib:$root/lib/stubs':\"\${LIBRARY_PATH:-}\""
    echo "export LD_LIBRARY_PATH='$libs':\"\${LD_LIBRARY_PATH:-}\""
fi
