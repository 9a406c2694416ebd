#!/usr/bin/env bash
# Two builds of docent-eval on the same work, in A-B-B-A order, so that a change's effect on speed
# is measured against the machine's drift (±10 % between identical runs here).
#   scripts/bench/compare-builds.sh OLD_BIN NEW_BIN [REPS]
# Work: the first QUESTIONS (16) bundled questions, exactly TOKENS (64) generated tokens each
# (--ignore-eos), at each --parallel in PARALLEL ("1 8"), THREADS (2) threads, answers discarded.
# Prints each measurement (the run's own "decode loop" seconds) and the median new/old ratio per N.
set -euo pipefail
old=$1 new=$2 reps=${3:-2}
questions=${QUESTIONS:-16} tokens=${TOKENS:-64} threads=${THREADS:-2}
model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
decode_seconds() { # BIN N
  "$1" run --model "$model" --questions questions/korean_history_sample.jsonl --db "$work/db.sqlite" \
    --limit "$questions" --max-tokens "$tokens" --ignore-eos --bench-discard-answers \
    --parallel "$2" --threads "$threads" 2>&1 >/dev/null |
    sed -n 's/.*decode loop: [0-9]* questions in \([0-9.]*\) s.*/\1/p'
  rm -f "$work"/db.sqlite*
}
for n in ${PARALLEL:-1 8}; do
  ratios=()
  for rep in $(seq "$reps"); do
    a1=$(decode_seconds "$old" "$n"); b1=$(decode_seconds "$new" "$n")
    b2=$(decode_seconds "$new" "$n"); a2=$(decode_seconds "$old" "$n")
    ratio=$(python3 -c "print(f'{($b1 + $b2) / ($a1 + $a2):.3f}')")
    echo "N=$n rep $rep: old $a1 $a2 s, new $b1 $b2 s, new/old $ratio"
    ratios+=("$ratio")
  done
  echo "N=$n median new/old: $(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c 'import sys; v=[float(l) for l in sys.stdin]; print(f"{sorted(v)[len(v)//2]:.3f}")')"
done
