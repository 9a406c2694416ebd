#!/usr/bin/env bash
# Where the time goes: sample docent-eval and llama-batched-bench with `perf record` on the same
# work (the first QUESTIONS bundled questions, TOKENS generated tokens each, end-of-sequence
# ignored, N sequences) and print both flat profiles side by side, by symbol.
#
#   scripts/bench/profile.sh [N] [QUESTIONS] [TOKENS]      (defaults: 2 16 64)
#
# Needs `perf` (Debian: linux-perf) and the tools from scripts/bench/build-tools.sh. Software
# cpu-clock sampling is used, so it also works in VMs without hardware counters.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2}
questions=${2:-16}
tokens=${3:-64}
out=${OUT:-bench/work/profile}
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
source scripts/bench/same-work.sh
mkdir -p "$out"

rm -f "$out/profile.db"*
RUST_LOG=docent_eval=info perf record -q -F 499 -o "$out/docent.perf" -- "$bin" run --model "$model" \
  --questions "$bundled" --db "$out/profile.db" --limit "$questions" --max-tokens "$tokens" --ignore-eos \
  --parallel "$n" --threads "$threads" 2>&1 | grep -E "decode loop|recording cost" || true
perf record -q -F 499 -o "$out/batched.perf" -- "$batched" -m "$model" -c "$batched_ctx" \
  -b 512 -ub 512 -npp "$prompt_tokens" -ntg "$tokens" -npl "$npl" -t "$threads" -tb "$threads" 2>&1 |
  grep -E "^\|" || true

# "share symbol", with the library named only where it is not llama.cpp itself (libgomp = OpenMP).
flat() {
  perf report -i "$1" --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -"${2:-18}" |
    sed -E 's/^ +([0-9.]+)% +([^ ]+) +\[[.k]\] +/\1 \2:/' |
    sed -E 's/ (docent-eval|llama-batched-bench|libggml[-a-z]*\.so[.0-9]*|libllama\.so[.0-9]*):/ /; s/ (lib[a-z]+)\.so[.0-9]*:/ \1:/'
}
echo
echo "N=$n, $questions questions, prompt ~$prompt_tokens tokens, $tokens generated, $threads threads"
echo "share of samples (%) by symbol — docent-eval | llama-batched-bench"
paste -d'|' <(flat "$out/docent.perf" | awk '{printf "%6.2f %-58.58s\n", $1, substr($0, index($0, $2))}') \
             <(flat "$out/batched.perf" | awk '{printf " %6.2f %-.60s\n", $1, substr($0, index($0, $2))}')
echo
echo "samples: docent-eval $(perf report -i "$out/docent.perf" --stdio 2>/dev/null | sed -n 's/^# Samples: \([0-9KM]*\).*/\1/p' | head -1)," \
     "llama-batched-bench $(perf report -i "$out/batched.perf" --stdio 2>/dev/null | sed -n 's/^# Samples: \([0-9KM]*\).*/\1/p' | head -1)"
