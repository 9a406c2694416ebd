# Sourced by profile.sh and abba.sh: the same work for docent-eval and llama-batched-bench.
# Expects n, questions and tokens to be set; defines the paths, the mean prompt length of the
# first $questions bundled questions as docent-eval renders them, and batched-bench's -npl list
# (ceil(questions / n) rounds of n sequences).
threads=${THREADS:-2}
model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
bundled=questions/korean_history_sample.jsonl
bin=target/release/docent-eval
batched=bench/work/crate-build/bin/llama-batched-bench
[ -x "$batched" ] || { echo "$batched is missing: run scripts/bench/build-tools.sh first" >&2; exit 2; }
prompt_tokens=$("$bin" prompts --model "$model" --questions "$bundled" --limit "$questions" |
  python3 -c 'import json, sys; t = [json.loads(l)["prompt_tokens"] for l in sys.stdin]; print(round(sum(t) / len(t)))')
batches=$(( (questions + n - 1) / n ))
npl=$(printf "$n,%.0s" $(seq "$batches")); npl=${npl%,}
batched_ctx=$(( n * (prompt_tokens + tokens) + 256 ))
