#!/usr/bin/env bash
# Packs what scripts/gpu/device-check.sh needs on a GPU machine that has no Rust, no network and
# no copy of this machine's build, into .device/ (ignored by git), and checks it stays under the
# 64 MiB a device call carries:
#   cuda-build.tar.xz  the CUDA build of docent-eval with its llama.cpp libraries (`make
#                      build-cuda`) and llama-batched-bench compiled against those same libraries;
#   donor.gguf         a tiny model whose tokenizer (SmolLM2's) the generated 8B-shaped model borrows;
#   whl/               the gguf package that scripts/make_gguf.py needs (numpy and the rest are there).
# On the GPU machine:
#   tar -xJf .device/cuda-build.tar.xz -C /tmp/b && cp .device/donor.gguf /tmp/b/ &&
#   pip install --target /tmp/site .device/whl/*.whl && PYTHONPATH=/tmp/site scripts/gpu/device-check.sh /tmp/b
set -euo pipefail
cd "$(dirname "$0")/../.."
rel=${CUDA_RELEASE:-target/cuda/release}
out=.device
limit_bytes=$((64 * 1024 * 1024))
[ -x "$rel/docent-eval" ] || { echo "no CUDA build in $rel: run \`make build-cuda\` first" >&2; exit 2; }
mkdir -p "$out/whl" bench/work

# llama-batched-bench from the crate's own llama.cpp tree (the crate ships no tools/: the source
# comes from the llama-cpp-python sdist, as in scripts/bench/build-tools.sh), linked against the
# CUDA build's shared libraries so both programs run the same llama.cpp.
sys_out=$(ls -dt "$rel"/build/llama-cpp-sys-2-*/out | head -1)
crate_src=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys, os
meta = json.load(sys.stdin)
pkg = next(p for p in meta["packages"] if p["name"] == "llama-cpp-sys-2")
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "llama.cpp"))')
LCP_VERSION=${LCP_VERSION:-0.3.36}
sdist=bench/work/llama-cpp-python-$LCP_VERSION
if [ ! -d "$sdist" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LCP_VERSION" -d bench/work
  tar -xzf "bench/work/llama_cpp_python-$LCP_VERSION.tar.gz" -C bench/work
  mv "bench/work/llama_cpp_python-$LCP_VERSION" "$sdist"
fi
tool=$sdist/vendor/llama.cpp/tools/batched-bench
if [ ! -x "$rel/llama-batched-bench" ] || [ "$rel/libllama.so" -nt "$rel/llama-batched-bench" ]; then
  common_libs=()
  for lib in llama-common llama-common-base cpp-httplib vendor-hash; do
    found=$(find "$sys_out/build" -name "lib$lib.a" | head -1)
    [ -n "$found" ] && common_libs+=("$found")
  done
  g++ -O2 -std=c++17 -fopenmp "$tool/batched-bench.cpp" "$tool/main.cpp" \
    -I "$crate_src/common" -I "$crate_src/include" -I "$crate_src/ggml/include" -I "$crate_src/vendor" \
    -Wl,--start-group "${common_libs[@]}" -Wl,--end-group \
    -L "$rel" -lllama-common -lllama -lggml -lggml-base -lpthread -Wl,-rpath,'$ORIGIN' -o "$rel/llama-batched-bench"
fi

# OpenMP's runtime travels too: a GPU machine's image may lack it.
cp -f "$(gcc -print-file-name=libgomp.so.1)" "$rel/libgomp.so.1"
# The build: the two programs and every shared library beside them (llama.cpp's backends are
# modules loaded from the binary's folder).
(cd "$rel" && tar -cf - docent-eval llama-batched-bench lib*.so*) | xz -T0 -6 >"$out/cuda-build.tar.xz"

python3 scripts/make_gguf.py --layers 1 --hidden 64 --heads 2 --kv-heads 1 --ffn 64 \
  --vocab-from models/SmolLM2-135M-Instruct.Q4_1.gguf --out "$out/donor.gguf" >/dev/null
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$out/whl" "gguf==$(python3 -c 'import gguf, importlib.metadata as m; print(m.version("gguf"))')"

size_bytes=$(du -cb "$out" | tail -1 | cut -f1)
echo "$out: $((size_bytes / 1024 / 1024)) MiB (limit 64 MiB)"
ls -la "$out" "$out/whl"
[ "$size_bytes" -lt "$limit_bytes" ] || { echo "$out is over the 64 MiB a device call carries" >&2; exit 1; }
