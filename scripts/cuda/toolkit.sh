#!/usr/bin/env bash
# Installs the parts of the CUDA toolkit llama.cpp's CUDA build needs (nvcc, nvvm, the CUDA
# runtime, cuBLAS, CCCL and the CRT headers) from NVIDIA's PyPI wheels into a project-local
# directory, and makes it look like a toolkit root to CMake: unversioned library names for the
# linker and a link-time stub of the driver library (libcuda-stub.c). Idempotent; prints the
# toolkit root.
#   scripts/cuda/toolkit.sh DIR CUDA_MAJOR CUDA_MINOR
set -euo pipefail
dir=$1 major=$2 minor=$3
here=$(cd "$(dirname "$0")" && pwd)
root="$dir/nvidia/cu$major"
if [ ! -x "$root/bin/nvcc" ] || [ ! -e "$root/lib/libcublas.so.$major" ]; then
  # cuBLAS versions are numbered apart from the toolkit: any release of the major version.
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
    "nvidia-cuda-nvcc==$major.$minor.*" "nvidia-nvvm==$major.$minor.*" \
    "nvidia-cuda-crt==$major.$minor.*" "nvidia-cuda-runtime==$major.$minor.*" \
    "nvidia-cuda-cccl==$major.$minor.*" "nvidia-cublas==$major.*" >&2
fi
# nvcc.profile and CMake look for lib64.
ln -sfn lib "$root/lib64"
for lib in cudart cublas cublasLt; do
  ln -sf "lib$lib.so.$major" "$root/lib/lib$lib.so"
done
mkdir -p "$root/lib/stubs"
if [ ! -e "$root/lib/stubs/libcuda.so" ]; then
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$here/libcuda-stub.c"
fi
echo "$root"
