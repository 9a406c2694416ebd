#!/usr/bin/env bash
# Build the reference tools `make bench` compares docent-eval against, with the same CPU flags as
# the llama.cpp that llama-cpp-sys-2 compiles into docent-eval (GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C/
# BMI2 on, OpenMP, Release), into bench/work/:
#   llama-batched-bench, llama-perplexity
#                        the crate's own vendored llama.cpp (exact library match), with
#                        tools/batched-bench/ and tools/perplexity/ taken from the
#                        llama-cpp-python sdist (the crate ships no tools/ sources);
#                        llama-perplexity prints each choice's mean log-probability per token;
#   llama-server, libllama.so
#                        the llama-cpp-python sdist's full vendored tree (its own commit);
#   llama-cpp-python     the Python package from the same sdist, without a second llama.cpp
#                        build: it loads bench/work/lcp-build/bin/libllama.so (LLAMA_CPP_LIB_PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
LCP_VERSION=${LCP_VERSION:-0.3.36}
work=bench/work
mkdir -p "$work"
jobs=$(nproc)
flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
       -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_APP=OFF)

crate_src=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys, os
meta = json.load(sys.stdin)
pkg = next(p for p in meta["packages"] if p["name"] == "llama-cpp-sys-2")
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "llama.cpp"))')

if [ ! -d "$work/llama-cpp-python-$LCP_VERSION" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LCP_VERSION" -d "$work"
  tar -xzf "$work/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$work"
  mv "$work/llama_cpp_python-$LCP_VERSION" "$work/llama-cpp-python-$LCP_VERSION"
fi
sdist="$work/llama-cpp-python-$LCP_VERSION"
sdist_src="$sdist/vendor/llama.cpp"

if [ ! -x "$work/crate-build/bin/llama-batched-bench" ] || [ ! -x "$work/crate-build/bin/llama-perplexity" ]; then
  rm -rf "$work/crate-src" && cp -r "$crate_src" "$work/crate-src" && chmod -R u+w "$work/crate-src"
  for tool in batched-bench perplexity; do
    mkdir -p "$work/crate-src/tools/$tool"
    cp "$sdist_src"/tools/$tool/* "$work/crate-src/tools/$tool/"
  done
  # llama-perplexity --multiple-choice prints only the running accuracy; switch on its own
  # per-choice line (mean log-probability per token) so make bench-loglik can compare choices.
  sed -i 's|^\( *\)//LOG("    <%s> : %g\\n"|\1LOG("    <%s> : %g\\n"|' "$work/crate-src/tools/perplexity/perplexity.cpp"
  grep -q '^ *LOG("    <%s> : %g' "$work/crate-src/tools/perplexity/perplexity.cpp" ||
    { echo "perplexity.cpp: the per-choice log line was not found" >&2; exit 1; }
  # Build only these tools from the tools directory (the crate's copy lacks the others).
  printf 'add_subdirectory(batched-bench)\nadd_subdirectory(perplexity)\n' > "$work/crate-src/tools/CMakeLists.txt"
  cmake -S "$work/crate-src" -B "$work/crate-build" "${flags[@]}" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$work/crate-build" --target llama-batched-bench llama-perplexity -j "$jobs" >/dev/null
fi

# CRATE_TOOLS_ONLY=1: only the tools built from the crate's tree (make bench-loglik).
[ "${CRATE_TOOLS_ONLY:-}" = 1 ] && exit 0

if [ ! -x "$work/lcp-build/bin/llama-server" ]; then
  cmake -S "$sdist_src" -B "$work/lcp-build" "${flags[@]}" -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$work/lcp-build" --target llama-server llama -j "$jobs" >/dev/null
fi

if ! python3 -c 'import llama_cpp' 2>/dev/null; then
  CMAKE_ARGS="-DLLAMA_BUILD=OFF" python3 -m pip install --quiet "$sdist"
fi

ggml_version() {
  sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$1/ggml/CMakeLists.txt" | paste -sd.
}
# The crate package carries no llama.cpp git metadata: name the llama-cpp-rs commit it was
# published from (its submodule pins llama.cpp) and the ggml version; the sdist's CHANGELOG names
# its llama.cpp commit.
crate_commit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["git"]["sha1"][:10])' \
  "$(dirname "$crate_src")/.cargo_vcs_info.json" 2>/dev/null || echo unknown)
sdist_commit=$(sed -n "/^## \[$LCP_VERSION\]/,/^## /s/.*llama.cpp@\([0-9a-f]*\).*/\1/p" "$sdist/CHANGELOG.md" | head -1)
{
  echo "crate llama.cpp: llama-cpp-sys-2 $(basename "$(dirname "$crate_src")" | sed 's/llama-cpp-sys-2-//'), published from utilityai/llama-cpp-rs@$crate_commit (its llama.cpp submodule), ggml $(ggml_version "$crate_src"); docent-eval and llama-batched-bench are built from this tree"
  echo "sdist llama.cpp: llama-cpp-python $LCP_VERSION vendor/llama.cpp = ggml-org/llama.cpp@${sdist_commit:-unknown}, ggml $(ggml_version "$sdist_src") (the newest llama-cpp-python release, the closest to the crate's tree); llama-server and llama-cpp-python are built from it"
  echo "files differing between the two trees: src/ $(diff -rq "$crate_src/src" "$sdist_src/src" | wc -l), ggml/src/ $(diff -rq "$crate_src/ggml/src" "$sdist_src/ggml/src" | wc -l), include/ $(diff -rq "$crate_src/include" "$sdist_src/include" | wc -l)"
} > "$work/tools.txt"
cat "$work/tools.txt"
ls -la "$work/crate-build/bin/llama-batched-bench" "$work/crate-build/bin/llama-perplexity" "$work/lcp-build/bin/llama-server"
