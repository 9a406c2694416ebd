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

# Exact versions, wheels only (a source distribution would run its build code on install): what
# the release's names resolved to when they were pinned (2026-12). The hashes are of the Linux
# x86_64 wheels; pip refuses any other file. cuBLAS is numbered apart from the toolkit (any 13.x
# runs on the 13.x runtime) and pinned by version only: its hash would mean fetching its 444 MB
# wheel just to record it. CUDA 12 is not published under these names (they start at 13.0).
case "$major.$minor" in
  13.0)
    hashed=(
      "nvidia-cuda-nvcc==13.0.88 --hash=sha256:56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
      "nvidia-nvvm==13.0.88 --hash=sha256:c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
      "nvidia-cuda-crt==13.0.88 --hash=sha256:2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
      "nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
      "nvidia-cuda-cccl==13.0.85 --hash=sha256:e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
    )
    unhashed=(nvidia-cublas==13.10.0.20)
    ;;
  *)
    echo "toolkit.sh: no pinned wheel versions for CUDA $major.$minor (pinned: 13.0); add its exact versions and hashes to scripts/cuda/toolkit.sh" >&2
    exit 2 ;;
esac

# Installed when a pinned version is missing (pip --target names each dist-info directory).
installed=yes
for spec in "${hashed[@]%% *}" "${unhashed[@]}"; do
  name=${spec%%==*}
  [ -d "$dir/${name//-/_}-${spec#*==}.dist-info" ] || installed=""
done
if [ -z "$installed" ] || [ ! -x "$root/bin/nvcc" ] || [ ! -e "$root/lib/libcublas.so.$major" ]; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  printf '%s\n' "${hashed[@]}" > "$wheels/requirements.txt"
  pip=(python3 -m pip --quiet --disable-pip-version-check)
  "${pip[@]}" download --no-deps --only-binary=:all: --require-hashes -r "$wheels/requirements.txt" -d "$wheels" >&2
  "${pip[@]}" download --no-deps --only-binary=:all: "${unhashed[@]}" -d "$wheels" >&2
  # One install from the checked files: a second --target install would skip (or, with
  # --upgrade, replace) the nvidia/ directory the first one made. --upgrade replaces an older one.
  "${pip[@]}" install --no-deps --no-index --upgrade --target "$dir" "$wheels"/*.whl >&2
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
