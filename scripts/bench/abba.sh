#!/usr/bin/env bash
# docent-eval against llama-batched-bench on the same work in A-B-B-A order, so that drift of this
# shared machine's speed cancels out instead of favouring whichever runs first:
#
#   scripts/bench/abba.sh [N] [ROUNDS] [QUESTIONS] [TOKENS]    (defaults: 16 3 16 64)
#
# Prints every time (docent-eval's decode loop; batched-bench's total for the same work) and the
# medians. Needs the tools from scripts/bench/build-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-16}
rounds=${2:-3}
questions=${3:-16}
tokens=${4:-64}
source scripts/bench/same-work.sh
db=$(mktemp -d)/abba.db
trap 'rm -rf "$(dirname "$db")"' EXIT

docent() {
  rm -f "$db"*
  RUST_LOG=docent_eval=info "$bin" run --model "$model" --questions "$bundled" --db "$db" --limit "$questions" \
    --max-tokens "$tokens" --ignore-eos --parallel "$n" --threads "$threads" 2>&1 |
    sed -n 's/.*decode loop: [0-9]* questions in \([0-9.]*\) s.*/\1/p'
}
batched_bench() {
  "$batched" -m "$model" -c "$batched_ctx" -b 512 -ub 512 -npp "$prompt_tokens" \
    -ntg "$tokens" -npl "$npl" -t "$threads" -tb "$threads" --output-format jsonl 2>/dev/null |
    python3 -c "import json, sys; print(round(sum(json.loads(l)['t'] for l in sys.stdin if l.startswith('{')) * $questions / ($batches * $n), 3))"
}

declare -a a b
for round in $(seq "$rounds"); do
  a+=("$(docent)"); echo "round $round  docent-eval         ${a[-1]} s"
  b+=("$(batched_bench)"); echo "round $round  llama-batched-bench ${b[-1]} s"
  b+=("$(batched_bench)"); echo "round $round  llama-batched-bench ${b[-1]} s"
  a+=("$(docent)"); echo "round $round  docent-eval         ${a[-1]} s"
done
python3 - "${a[*]}" "${b[*]}" "$n" "$questions" "$tokens" "$prompt_tokens" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
n, q, t, pp = sys.argv[3:7]
print(f"N={n}, {q} questions (mean prompt {pp} tokens), {t} generated tokens each: "
      f"docent-eval median {statistics.median(a):.2f} s, llama-batched-bench median {statistics.median(b):.2f} s, "
      f"ratio {statistics.median(a) / statistics.median(b):.3f}")
PY
